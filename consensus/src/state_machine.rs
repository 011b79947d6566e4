//! The Raft state machine: applies committed ledger entries to the node's
//! [`Store`] and persists the result in RocksDB, keeps the view history,
//! and builds and installs snapshots.

use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};

use charter_ledger::files::{Frame, LedgerWriter};
use charter_ledger::history::{CommitSecret, History};
use charter_ledger::kv::{Key, Value};
use charter_ledger::{Store, WriteSet};
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload as RaftPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder,
};
use rocksdb::{IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::history_store::{self, HistoryRecord};
use crate::storage::{
    cf, from_json, get_json, io_error, io_msg, to_json, write_options, HistoryConfig, CF_HISTORY,
    CF_SM_KV, CF_SM_META,
};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig, WriteResponse,
};

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_VIEWS: &[u8] = b"views";
/// The current snapshot: u32 BE length of the meta JSON, the meta JSON,
/// then the snapshot data. One key, so reading it is never torn.
const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// Every `sm_kv` key starts with a u32 map-name length below this (map
/// names are far shorter than 4 GiB), so `[.., END)` covers the whole
/// column family.
const KV_END: [u8; 4] = [0xff; 4];

/// `(view, first seqno of that view)`, oldest first.
type ViewStarts = Vec<(u64, u64)>;

/// One committed KV entry: map, key, value, seqno that last wrote it.
type KvEntry = (String, Key, Value, u64);

fn kv_key(map: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + map.len() + key.len());
    out.extend_from_slice(&(map.len() as u32).to_be_bytes());
    out.extend_from_slice(map.as_bytes());
    out.extend_from_slice(key);
    out
}

fn kv_value(seqno: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&seqno.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_kv(key: &[u8], value: &[u8]) -> Result<KvEntry, String> {
    let mut k = ByteReader::new(key);
    let map = k.string()?;
    let key = k.rest().to_vec();
    let mut v = ByteReader::new(value);
    let seqno = v.u64()?;
    Ok((map, key, v.rest().to_vec(), seqno))
}

// ---------------------------------------------------------------------------
// View history
// ---------------------------------------------------------------------------

#[derive(Default)]
struct ViewState {
    /// `(view, first seqno of that view)` for every view that has applied
    /// entries, in ascending order of both.
    starts: Vec<(u64, u64)>,
    last_applied: Option<LogId>,
}

/// Which view (Raft term) each applied seqno belongs to. A read-only,
/// cheaply cloned handle onto the state machine's copy.
///
/// CCF reports a committed transaction `V.S` as `Committed` only if the
/// entry at seqno `S` was written in view `V`; otherwise `V.S` was lost to
/// a leader change and is `Invalid`.
#[derive(Clone, Default)]
pub struct ViewHistory {
    inner: Arc<RwLock<ViewState>>,
}

impl ViewHistory {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, ViewState> {
        // Updates replace whole fields, so a panicked writer cannot leave a
        // half-written state: ignoring poisoning is safe.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, starts: Vec<(u64, u64)>, last_applied: Option<LogId>) {
        let mut w = self.inner.write().unwrap_or_else(|e| e.into_inner());
        w.starts = starts;
        w.last_applied = last_applied;
    }

    /// The view of the applied entry at `seqno`, or `None` if `seqno` is not
    /// applied yet (then the log, see `LogStore::term_at`, knows more).
    pub fn view_for_seqno(&self, seqno: u64) -> Option<u64> {
        let state = self.read();
        if seqno > state.last_applied?.index {
            return None;
        }
        let after = state.starts.partition_point(|(_, first)| *first <= seqno);
        after.checked_sub(1).map(|i| state.starts[i].0)
    }

    /// `(view, first seqno)` of every view with applied entries, oldest first.
    pub fn history(&self) -> Vec<(u64, u64)> {
        self.read().starts.clone()
    }

    /// `(view, seqno)` of the last applied entry: the transaction id of the
    /// state a read on this node sees.
    pub fn last_applied(&self) -> Option<(u64, u64)> {
        self.read()
            .last_applied
            .map(|l| (l.leader_id.term, l.index))
    }
}

/// Adds `view` starting at `seqno` if it is new. Returns whether it changed.
fn extend_views(starts: &mut Vec<(u64, u64)>, view: u64, seqno: u64) -> bool {
    match starts.last() {
        Some((last, _)) if *last == view => false,
        Some((last, _)) if *last > view => {
            // Raft never applies an entry of an older term after a newer
            // one; keep the history monotonic rather than corrupt lookups.
            tracing::error!(
                view,
                seqno,
                last,
                "applied entry has an older view than its predecessor"
            );
            false
        }
        _ => {
            starts.push((view, seqno));
            true
        }
    }
}

// ---------------------------------------------------------------------------
// Snapshot format
// ---------------------------------------------------------------------------

const SNAPSHOT_MAGIC: &[u8; 8] = b"CHSNAP01";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotHeader {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    views: Vec<(u64, u64)>,
    /// The ledger history up to `last_applied`, one record per seqno
    /// (empty when the state machine keeps no history).
    #[serde(default)]
    history: Vec<HistoryRecord>,
}

/// Snapshot data: magic, u32 BE header length, header JSON, u64 BE entry
/// count, then per entry (sorted by map then key) the map name, key and
/// value as u32-length-prefixed bytes and the u64 BE seqno. The same state
/// always gives the same bytes.
fn encode_snapshot(header: &SnapshotHeader, entries: &[KvEntry]) -> Result<Vec<u8>, StorageError> {
    let header = to_json(ErrorSubject::Snapshot(None), header)?;
    let mut out = Vec::new();
    out.extend_from_slice(SNAPSHOT_MAGIC);
    put_bytes(&mut out, &header);
    out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
    for (map, key, value, seqno) in entries {
        put_bytes(&mut out, map.as_bytes());
        put_bytes(&mut out, key);
        put_bytes(&mut out, value);
        out.extend_from_slice(&seqno.to_be_bytes());
    }
    Ok(out)
}

fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotHeader, Vec<KvEntry>), String> {
    let mut r = ByteReader::new(bytes);
    if r.take(SNAPSHOT_MAGIC.len())? != SNAPSHOT_MAGIC {
        return Err("not a Charter snapshot (bad magic)".into());
    }
    let header: SnapshotHeader =
        serde_json::from_slice(r.bytes()?).map_err(|e| format!("snapshot header: {e}"))?;
    let count = r.u64()?;
    // Each entry takes at least 20 bytes, which bounds the allocation by
    // the input size whatever the count claims.
    let mut entries = Vec::with_capacity(count.min((bytes.len() / 20) as u64) as usize);
    for _ in 0..count {
        let map = r.string()?;
        let key = r.bytes()?.to_vec();
        let value = r.bytes()?.to_vec();
        let seqno = r.u64()?;
        entries.push((map, key, value, seqno));
    }
    if !r.rest().is_empty() {
        return Err("trailing bytes after snapshot entries".into());
    }
    Ok((header, entries))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// Bounds-checked reading of untrusted bytes (disk or peer).
struct ByteReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> ByteReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        ByteReader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let at = self.at;
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| format!("string at byte {at} is not UTF-8"))
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.at..];
        self.at = self.bytes.len();
        out
    }
}

fn encode_stored_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Result<Vec<u8>, StorageError> {
    let meta = to_json(ErrorSubject::Snapshot(Some(meta.signature())), meta)?;
    let mut out = Vec::with_capacity(4 + meta.len() + data.len());
    put_bytes(&mut out, &meta);
    out.extend_from_slice(data);
    Ok(out)
}

fn read_stored_snapshot(db: &DB) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
    let handle = cf(db, CF_SM_META)?;
    let subject = ErrorSubject::Snapshot(None);
    let Some(bytes) = db
        .get_pinned_cf(handle, KEY_SNAPSHOT)
        .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?
    else {
        return Ok(None);
    };
    let mut r = ByteReader::new(&bytes);
    let meta_bytes = r
        .bytes()
        .map_err(|e| io_msg(subject.clone(), ErrorVerb::Read, e))?;
    let meta: SnapshotMeta = from_json(subject, meta_bytes)?;
    Ok(Some((meta, r.rest().to_vec())))
}

fn snapshot_id(last: Option<LogId>) -> String {
    // Unique per build, so two snapshots of the same state are still told
    // apart (openraft uses the id to match snapshot chunks).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    match last {
        Some(l) => format!("{}-{}-{nanos}", l.leader_id.term, l.index),
        None => format!("empty-{nanos}"),
    }
}

// ---------------------------------------------------------------------------
// State machine
// ---------------------------------------------------------------------------

/// The Raft state machine. Owns the RocksDB copy of the applied state; the
/// caller's [`Store`] is kept equal to it.
pub struct StateMachine {
    db: Arc<DB>,
    store: Arc<Store>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    views: ViewHistory,
    /// The Merkle history of applied entries, shared with the node (which
    /// signs its root and serves receipts from it).
    history: Option<Arc<Mutex<History>>>,
    /// The ledger chunk files committed entries are appended to.
    ledger: Option<LedgerWriter>,
    /// Serialises "is this snapshot newer than the stored one, then store
    /// it" between snapshot builds (which run on their own task) and
    /// installs.
    snapshot_lock: Arc<Mutex<()>>,
}

impl StateMachine {
    /// Loads the persisted applied state and puts it into `store`.
    pub(crate) fn load(
        db: Arc<DB>,
        store: Arc<Store>,
        config: Option<HistoryConfig>,
    ) -> Result<Self, StorageError> {
        let subject = ErrorSubject::StateMachine;
        let last_applied: Option<LogId> =
            get_json(&db, CF_SM_META, KEY_LAST_APPLIED, subject.clone())?;
        let membership: StoredMembership =
            get_json(&db, CF_SM_META, KEY_MEMBERSHIP, subject.clone())?.unwrap_or_default();
        let starts: Vec<(u64, u64)> =
            get_json(&db, CF_SM_META, KEY_VIEWS, subject.clone())?.unwrap_or_default();

        let handle = cf(&db, CF_SM_KV)?;
        let mut entries = Vec::new();
        for item in db.iterator_cf(handle, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?;
            entries
                .push(decode_kv(&k, &v).map_err(|e| io_msg(subject.clone(), ErrorVerb::Read, e))?);
        }
        tracing::info!(
            last_applied = ?last_applied,
            keys = entries.len(),
            "loaded applied state"
        );
        store.reset(last_applied.map(|l| l.index).unwrap_or(0), entries);

        let (history, ledger) = match config {
            Some(config) => {
                let history = load_history(&db, config.secret, last_applied)?;
                let ledger =
                    LedgerWriter::open(&config.ledger_dir, config.chunk_bytes).map_err(|e| {
                        io_msg(
                            subject.clone(),
                            ErrorVerb::Read,
                            format!(
                                "opening the ledger files in {}: {e}",
                                config.ledger_dir.display()
                            ),
                        )
                    })?;
                (Some(Arc::new(Mutex::new(history))), Some(ledger))
            }
            None => (None, None),
        };
        let views = ViewHistory::default();
        views.set(starts, last_applied);
        Ok(StateMachine {
            db,
            store,
            last_applied,
            membership,
            views,
            history,
            ledger,
            snapshot_lock: Arc::new(Mutex::new(())),
        })
    }

    /// The view history handle; keep a clone before handing the state
    /// machine to openraft.
    pub fn view_history(&self) -> ViewHistory {
        self.views.clone()
    }

    /// The store this state machine applies to.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The ledger history handle, if this state machine keeps one; keep a
    /// clone before handing the state machine to openraft.
    pub fn history(&self) -> Option<Arc<Mutex<History>>> {
        self.history.clone()
    }
}

/// Replays the persisted history records; they must cover exactly the
/// applied entries.
fn load_history(
    db: &DB,
    secret: CommitSecret,
    last_applied: Option<LogId>,
) -> Result<History, StorageError> {
    let subject = ErrorSubject::StateMachine;
    let handle = cf(db, CF_HISTORY)?;
    let mut history = History::new(secret);
    for item in db.iterator_cf(handle, IteratorMode::Start) {
        let (k, v) = item.map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?;
        let seqno = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| {
            io_msg(
                subject.clone(),
                ErrorVerb::Read,
                "history key is not 8 bytes",
            )
        })?);
        let record = history_store::decode_record(&v).map_err(|e| {
            io_msg(
                subject.clone(),
                ErrorVerb::Read,
                format!("history record {seqno}: {e}"),
            )
        })?;
        history_store::append(&mut history, seqno, &record).map_err(|e| {
            io_msg(
                subject.clone(),
                ErrorVerb::Read,
                format!("replaying the history: {e}"),
            )
        })?;
    }
    let expected = last_applied.map(|l| l.index + 1).unwrap_or(0);
    if history.len() != expected {
        return Err(io_msg(
            subject,
            ErrorVerb::Read,
            format!(
                "the ledger history has {} entries but {} are applied; the data directory is incomplete",
                history.len(),
                expected
            ),
        ));
    }
    Ok(history)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<WriteResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let kv = cf(&self.db, CF_SM_KV)?;
        let meta = cf(&self.db, CF_SM_META)?;
        let mut batch = WriteBatch::default();
        let mut applied: Vec<(u64, WriteSet)> = Vec::new();
        let mut responses = Vec::new();
        let mut starts = self.views.history();
        let mut views_changed = false;
        let mut membership: Option<StoredMembership> = None;
        let mut last = None;
        let history_cf = cf(&self.db, CF_HISTORY)?;
        // Held for the whole batch: the history moves with the KV state.
        let history = self.history.clone();
        let mut history = history
            .as_ref()
            .map(|h| h.lock().unwrap_or_else(|e| e.into_inner()));

        for entry in entries {
            let log_id = entry.log_id;
            let seqno = log_id.index;
            let view = log_id.leader_id.term;
            let (ws, record, entry_bytes) = match entry.payload {
                RaftPayload::Blank => {
                    (WriteSet::default(), history_store::empty_record(view), None)
                }
                RaftPayload::Normal(payload) => {
                    let d = history_store::decode_entry(view, seqno, &payload.0);
                    // An undecodable entry is applied as empty, and recorded so.
                    let bytes = d.decoded.then_some(payload.0);
                    (d.write_set, d.record, bytes)
                }
                RaftPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(log_id), m));
                    (WriteSet::default(), history_store::empty_record(view), None)
                }
            };
            if let Some(history) = history.as_mut() {
                // A signature that does not match our own tree means this
                // node diverged: stop applying, loudly, rather than go on.
                history_store::append(history, seqno, &record).map_err(|e| {
                    tracing::error!(%log_id, "ledger history check failed: {e}");
                    io_msg(ErrorSubject::Apply(log_id), ErrorVerb::Write, e)
                })?;
                batch.put_cf(
                    history_cf,
                    history_store::history_key(seqno),
                    history_store::encode_record(&record),
                );
                if let Some(ledger) = self.ledger.as_mut() {
                    let evidence = history.commit_evidence(view, seqno);
                    let frame = Frame {
                        view,
                        seqno,
                        commit_evidence_digest: Sha256::digest(evidence.as_bytes()).into(),
                        entry: entry_bytes,
                    };
                    // Before the state moves: a crash in between re-applies
                    // the entry, and the writer skips what it already has.
                    ledger
                        .append(&frame, record.signature.is_some())
                        .map_err(|e| {
                            tracing::error!(%log_id, "writing the ledger file failed: {e}");
                            io_error(ErrorSubject::Apply(log_id), ErrorVerb::Write, &e)
                        })?;
                }
            }
            for (map, writes) in &ws.maps {
                for (key, write) in &writes.writes {
                    let k = kv_key(map, key);
                    match write {
                        Some(value) => batch.put_cf(kv, k, kv_value(seqno, value)),
                        None => batch.delete_cf(kv, k),
                    }
                }
            }
            views_changed |= extend_views(&mut starts, log_id.leader_id.term, seqno);
            responses.push(WriteResponse {
                view: log_id.leader_id.term,
                seqno,
            });
            applied.push((seqno, ws));
            last = Some(log_id);
        }
        let Some(last) = last else {
            return Ok(responses);
        };

        let subject = ErrorSubject::Apply(last);
        if let Some(ledger) = self.ledger.as_ref() {
            // The files are durable before the applied state moves past them.
            ledger
                .sync()
                .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, &e))?;
        }
        batch.put_cf(meta, KEY_LAST_APPLIED, to_json(subject.clone(), &last)?);
        if let Some(m) = &membership {
            batch.put_cf(meta, KEY_MEMBERSHIP, to_json(subject.clone(), m)?);
        }
        if views_changed {
            batch.put_cf(meta, KEY_VIEWS, to_json(subject.clone(), &starts)?);
        }
        // Not synced; see the module docs of `storage` for why that is safe.
        self.db
            .write_opt(batch, &write_options(false))
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))?;

        // Only now, with the batch written, does the in-memory state move:
        // it is never ahead of what a restart would load.
        for (seqno, ws) in &applied {
            self.store.apply(*seqno, ws);
        }
        self.last_applied = Some(last);
        if let Some(m) = membership {
            self.membership = m;
        }
        self.views.set(starts, self.last_applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // Openraft runs the builder on its own task while entries keep being
        // applied, so it gets a copy of the state as of now. The in-memory
        // store equals what is in RocksDB and is the cheaper place to copy
        // it from.
        SnapshotBuilder {
            db: self.db.clone(),
            header: SnapshotHeader {
                last_applied: self.last_applied,
                membership: self.membership.clone(),
                views: self.views.history(),
                history: match &self.history {
                    Some(h) => h
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entries()
                        .map(|(_, c, sig)| HistoryRecord {
                            components: *c,
                            signature: sig.cloned(),
                        })
                        .collect(),
                    None => Vec::new(),
                },
            },
            entries: self.store.committed_entries(),
            snapshot_lock: self.snapshot_lock.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        tracing::info!(%meta, "installing snapshot");
        let data = snapshot.into_inner();
        let db = self.db.clone();
        let lock = self.snapshot_lock.clone();
        let owned_meta = meta.clone();
        let secret = self
            .history
            .as_ref()
            .map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).secret());
        // Decoding and writing a whole state is blocking work.
        let installed = tokio::task::spawn_blocking(move || {
            install_blocking(&db, &lock, &owned_meta, data, secret)
        })
        .await
        .map_err(|e| {
            io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                &e,
            )
        })??;

        self.store.reset(
            meta.last_log_id.map(|l| l.index).unwrap_or(0),
            installed.entries,
        );
        if let (Some(shared), Some(history)) = (&self.history, installed.history) {
            *shared.lock().unwrap_or_else(|e| e.into_inner()) = history;
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.views.set(installed.views, self.last_applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(
            read_stored_snapshot(&self.db)?.map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }),
        )
    }
}

/// Replaces the persisted applied state with the snapshot's. Returns the
/// view history and entries for the in-memory state.
/// The state an installed snapshot leaves behind, for the in-memory copies.
struct Installed {
    views: ViewStarts,
    entries: Vec<KvEntry>,
    history: Option<History>,
}

fn install_blocking(
    db: &DB,
    lock: &Mutex<()>,
    meta: &SnapshotMeta,
    data: Vec<u8>,
    secret: Option<CommitSecret>,
) -> Result<Installed, StorageError> {
    let subject = ErrorSubject::Snapshot(Some(meta.signature()));
    let (header, entries) =
        decode_snapshot(&data).map_err(|e| io_msg(subject.clone(), ErrorVerb::Read, e))?;
    if header.last_applied != meta.last_log_id || header.membership != meta.last_membership {
        return Err(io_msg(
            subject,
            ErrorVerb::Read,
            "snapshot data does not match its meta (last log id or membership)",
        ));
    }
    let kv = cf(db, CF_SM_KV)?;
    let sm_meta = cf(db, CF_SM_META)?;
    let history_cf = cf(db, CF_HISTORY)?;
    let mut batch = WriteBatch::default();
    // The snapshot's history is replayed (checking every signature in it)
    // before anything is written.
    let history = match secret {
        Some(secret) => {
            let mut history = History::new(secret);
            for (seqno, record) in header.history.iter().enumerate() {
                history_store::append(&mut history, seqno as u64, record).map_err(|e| {
                    io_msg(
                        subject.clone(),
                        ErrorVerb::Read,
                        format!("snapshot history: {e}"),
                    )
                })?;
                batch.put_cf(
                    history_cf,
                    history_store::history_key(seqno as u64),
                    history_store::encode_record(record),
                );
            }
            let expected = meta.last_log_id.map(|l| l.index + 1).unwrap_or(0);
            if history.len() != expected {
                return Err(io_msg(
                    subject,
                    ErrorVerb::Read,
                    format!(
                        "snapshot history has {} entries, expected {expected}",
                        history.len()
                    ),
                ));
            }
            Some(history)
        }
        None => None,
    };
    // One atomic batch: a crash leaves either the old state or the new.
    batch.delete_range_cf(kv, &[][..], &KV_END[..]);
    for (map, key, value, seqno) in &entries {
        batch.put_cf(kv, kv_key(map, key), kv_value(*seqno, value));
    }
    batch.put_cf(
        sm_meta,
        KEY_LAST_APPLIED,
        to_json(subject.clone(), &meta.last_log_id)?,
    );
    batch.put_cf(
        sm_meta,
        KEY_MEMBERSHIP,
        to_json(subject.clone(), &meta.last_membership)?,
    );
    batch.put_cf(sm_meta, KEY_VIEWS, to_json(subject.clone(), &header.views)?);
    batch.put_cf(sm_meta, KEY_SNAPSHOT, encode_stored_snapshot(meta, &data)?);
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    // Synced: the log may be purged up to this snapshot right after.
    db.write_opt(batch, &write_options(true))
        .map_err(|e| io_error(subject, ErrorVerb::Write, &e))?;
    Ok(Installed {
        views: header.views,
        entries,
        history,
    })
}

/// Builds a snapshot from a copy of the state taken by
/// [`RaftStateMachine::get_snapshot_builder`].
pub struct SnapshotBuilder {
    db: Arc<DB>,
    header: SnapshotHeader,
    entries: Vec<KvEntry>,
    snapshot_lock: Arc<Mutex<()>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let header = std::mem::take(&mut self.header);
        let entries = std::mem::take(&mut self.entries);
        let db = self.db.clone();
        let lock = self.snapshot_lock.clone();
        tokio::task::spawn_blocking(move || build_blocking(&db, &lock, header, entries))
            .await
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, &e))?
    }
}

fn build_blocking(
    db: &DB,
    lock: &Mutex<()>,
    header: SnapshotHeader,
    entries: Vec<KvEntry>,
) -> Result<Snapshot, StorageError> {
    let data = encode_snapshot(&header, &entries)?;
    let meta = SnapshotMeta {
        last_log_id: header.last_applied,
        last_membership: header.membership,
        snapshot_id: snapshot_id(header.last_applied),
    };
    let handle = cf(db, CF_SM_META)?;
    {
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        // An install of a newer snapshot may have happened while this one
        // was being built; never replace a newer current snapshot.
        let stored = read_stored_snapshot(db)?;
        let newer = match &stored {
            Some((m, _)) => m.last_log_id <= meta.last_log_id,
            None => true,
        };
        if newer {
            let subject = ErrorSubject::Snapshot(Some(meta.signature()));
            db.put_cf_opt(
                handle,
                KEY_SNAPSHOT,
                encode_stored_snapshot(&meta, &data)?,
                &write_options(true),
            )
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))?;
        }
    }
    tracing::info!(%meta, bytes = data.len(), "built snapshot");
    Ok(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    })
}
