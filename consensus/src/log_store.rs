//! The Raft log, vote and commit index in RocksDB.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use crate::storage::{
    cf, from_json, get_json, io_error, io_msg, to_json, write_options, CF_LOG, CF_RAFT_META,
};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Sorts after every 8-byte index key: the exclusive end of "to the end of
/// the log" ranges.
const PAST_LAST_KEY: [u8; 9] = [0xff; 9];

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        io_msg(
            ErrorSubject::Logs,
            ErrorVerb::Read,
            "log key is not 8 bytes",
        )
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// The Raft log. Cheap to clone (it shares the database), so the node can
/// keep one for [`LogStore::term_at`] while openraft owns another.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    /// The term of the entry at `index`, if the log holds it (it may have
    /// been purged after a snapshot, or never written). Used to tell whether
    /// a transaction id `view.seqno` that is not committed yet is still
    /// pending (its entry is in the log with that term) or lost.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        match self.entry_at(index) {
            Ok(entry) => entry.map(|e| e.log_id.leader_id.term),
            Err(e) => {
                tracing::error!(index, error = %e, "reading log entry for term_at");
                None
            }
        }
    }

    fn entry_at(&self, index: u64) -> Result<Option<Entry>, StorageError> {
        let handle = cf(&self.db, CF_LOG)?;
        let subject = ErrorSubject::LogIndex(index);
        match self
            .db
            .get_pinned_cf(handle, index_key(index))
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?
        {
            Some(bytes) => Ok(Some(from_json(subject, &bytes)?)),
            None => Ok(None),
        }
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let handle = cf(&self.db, CF_LOG)?;
        match self.db.iterator_cf(handle, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) =
                    item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
                let entry: Entry = from_json(ErrorSubject::Logs, &value)?;
                Ok(Some(entry.log_id))
            }
        }
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<u64>,
        sync: bool,
    ) -> Result<(), StorageError> {
        let handle = cf(&self.db, CF_RAFT_META)?;
        let bytes = to_json(subject.clone(), value)?;
        self.db
            .put_cf_opt(handle, key, bytes, &write_options(sync))
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))
    }

    fn write_synced(
        &self,
        batch: WriteBatch,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        self.db
            .write_opt(batch, &write_options(true))
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let handle = cf(&self.db, CF_LOG)?;
        let from = index_key(start);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(handle, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) =
                item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            let index = key_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            out.push(from_json(ErrorSubject::LogIndex(index), &value)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> =
            get_json(&self.db, CF_RAFT_META, KEY_LAST_PURGED, ErrorSubject::Logs)?;
        // An empty log after a purge still "ends" at the purged id.
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // Synced: a node must never forget a vote it granted, or it could
        // vote twice in one term after a crash.
        self.put_meta(KEY_VOTE, vote, ErrorSubject::Vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        get_json(&self.db, CF_RAFT_META, KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: it is only a hint that lets a restarted node re-apply
        // committed entries before hearing from a leader; losing the newest
        // value is harmless.
        self.put_meta(KEY_COMMITTED, &committed, ErrorSubject::Store, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(
            get_json::<Option<LogId>>(&self.db, CF_RAFT_META, KEY_COMMITTED, ErrorSubject::Store)?
                .flatten(),
        )
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let handle = cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = to_json(ErrorSubject::Log(entry.log_id), &entry)?;
            batch.put_cf(handle, index_key(entry.log_id.index), bytes);
        }
        // openraft counts an entry as acknowledged (toward commit) once the
        // callback fires, so the write must be on disk first.
        self.write_synced(batch, ErrorSubject::Logs)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating log from");
        let handle = cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(handle, &index_key(log_id.index)[..], &PAST_LAST_KEY[..]);
        self.write_synced(batch, ErrorSubject::Logs)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging log up to");
        let log = cf(&self.db, CF_LOG)?;
        let meta = cf(&self.db, CF_RAFT_META)?;
        let mut batch = WriteBatch::default();
        // The purged id is recorded in the same atomic batch, so the log
        // state is consistent whatever point a crash hits.
        batch.put_cf(meta, KEY_LAST_PURGED, to_json(ErrorSubject::Logs, &log_id)?);
        // [0, index) by range, then index itself: no `index + 1` overflow.
        batch.delete_range_cf(log, index_key(0), index_key(log_id.index));
        batch.delete_cf(log, index_key(log_id.index));
        self.write_synced(batch, ErrorSubject::Logs)
    }
}
