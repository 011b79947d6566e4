//! RocksDB-backed Raft storage: one database, four column families.
//!
//! | column family | key                          | value                         |
//! |---------------|------------------------------|-------------------------------|
//! | `log`         | log index (u64 big-endian)   | the openraft entry, JSON      |
//! | `raft_meta`   | `vote`, `committed`, `last_purged` | JSON                    |
//! | `sm_kv`       | map name (length-prefixed) ++ key | seqno (u64 BE) ++ value  |
//! | `history`     | seqno (u64 BE)               | the entry's Merkle leaf components and signature (see `history_store`) |
//! | `sm_meta`     | `last_applied`, `membership`, `views`, `snapshot` (meta + data) | JSON / bytes |
//!
//! One database (rather than one per store) means one write-ahead log: a
//! write batch that spans column families is atomic, and syncing the WAL
//! for one write makes every earlier write durable too. The log store relies
//! on the latter: its appends, vote and purge writes are synced, the state
//! machine's are not (a crash can only lose state-machine writes that are
//! newer than the last synced log write, and those are re-applied from the
//! log, which still holds them because purging is itself a synced write that
//! comes after them).
//!
//! Big-endian log keys sort numerically, so range scans and "last entry"
//! are plain RocksDB iterations.

use std::path::Path;
use std::sync::Arc;

use charter_ledger::history::CommitSecret;
use charter_ledger::Store;
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use crate::log_store::LogStore;
pub use crate::state_machine::{SnapshotBuilder, StateMachine, ViewHistory};
use crate::types::StorageError;

pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_RAFT_META: &str = "raft_meta";
pub(crate) const CF_SM_KV: &str = "sm_kv";
pub(crate) const CF_SM_META: &str = "sm_meta";
pub(crate) const CF_HISTORY: &str = "history";

const ALL_CFS: [&str; 5] = [CF_LOG, CF_RAFT_META, CF_SM_KV, CF_SM_META, CF_HISTORY];

/// Opens (creating if needed) the Raft database in `dir` and loads the
/// persisted applied state into `store`, so a restarted node serves its
/// state before Raft has even started.
///
/// The returned stores are what [`openraft::Raft::new`] takes; take the
/// [`ViewHistory`] handle ([`StateMachine::view_history`]) and, if needed,
/// a clone of the [`LogStore`] (for [`LogStore::term_at`]) before handing
/// them over.
///
/// With `history`, the state machine also keeps the ledger history (one
/// Merkle leaf per entry, signatures checked against it), persists it, and
/// writes the ledger files; without, it keeps none (storage tests).
pub async fn open(
    dir: &Path,
    store: Arc<Store>,
    history: Option<HistoryConfig>,
) -> Result<(LogStore, StateMachine), StorageError> {
    let dir = dir.to_path_buf();
    // Opening RocksDB and loading the whole KV state is blocking disk work.
    tokio::task::spawn_blocking(move || open_blocking(&dir, store, history))
        .await
        .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, &e))?
}

/// [`open`] for callers outside an async context.
pub fn open_blocking(
    dir: &Path,
    store: Arc<Store>,
    history: Option<HistoryConfig>,
) -> Result<(LogStore, StateMachine), StorageError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, dir, cfs)
        .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, &e))?;
    let db = Arc::new(db);
    let log = LogStore::new(db.clone());
    let sm = StateMachine::load(db, store, history)?;
    Ok((log, sm))
}

/// What the state machine needs to keep the ledger history and files.
pub struct HistoryConfig {
    /// Commit evidence is derived from it (every node holds the same).
    pub secret: CommitSecret,
    /// Where the ledger chunk files go.
    pub ledger_dir: std::path::PathBuf,
    /// A chunk is closed at the first signature past this size.
    pub chunk_bytes: u64,
}

/// The column family handle; all of them are created at open, so a missing
/// one means the database is not ours (or is damaged).
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, StorageError> {
    db.cf_handle(name).ok_or_else(|| {
        StorageError::from(StorageIOError::new(
            ErrorSubject::Store,
            ErrorVerb::Read,
            AnyError::error(format!("column family {name} is missing")),
        ))
    })
}

pub(crate) fn io_error<E: std::error::Error + 'static>(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: &E,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

pub(crate) fn io_msg(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    msg: impl ToString,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::error(msg)).into()
}

pub(crate) fn to_json<T: Serialize>(
    subject: ErrorSubject<u64>,
    value: &T,
) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| io_error(subject, ErrorVerb::Write, &e))
}

pub(crate) fn from_json<T: DeserializeOwned>(
    subject: ErrorSubject<u64>,
    bytes: &[u8],
) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| io_error(subject, ErrorVerb::Read, &e))
}

/// Reads and decodes one JSON value from a column family.
pub(crate) fn get_json<T: DeserializeOwned>(
    db: &DB,
    cf_name: &str,
    key: &[u8],
    subject: ErrorSubject<u64>,
) -> Result<Option<T>, StorageError> {
    let handle = cf(db, cf_name)?;
    match db
        .get_pinned_cf(handle, key)
        .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?
    {
        Some(bytes) => Ok(Some(from_json(subject, &bytes)?)),
        None => Ok(None),
    }
}

pub(crate) fn write_options(sync: bool) -> rocksdb::WriteOptions {
    let mut w = rocksdb::WriteOptions::default();
    w.set_sync(sync);
    w
}
