//! The key-value store and its transactions.
//!
//! State is a set of named maps (`public:records`, `public:ccf.gov.users.certs`,
//! ...) of byte keys to byte values. Two layers make up the state a
//! transaction sees:
//!
//! - *committed*: what the Raft state machine has applied, each key tagged
//!   with the seqno that last wrote it;
//! - *pending*: write sets that this node (as primary) has accepted and
//!   appended to the log but that are not yet applied. They are stacked in
//!   append order on top of the committed layer, so a new transaction sees
//!   the newest state.
//!
//! Concurrency control is optimistic. A [`Tx`] records the [`Version`] of
//! every key (and, for `size`/`for_each`, every map) it reads. [`Store::prepare`]
//! checks, under the store lock, that none of those versions changed; if one
//! did, the transaction conflicts and the caller re-executes it. If none
//! did, its write set joins the pending stack. The caller must hand pending
//! write sets to the log in the order `prepare` accepted them (it holds a
//! sequencer for that), which makes the result serializable: equivalent to
//! running the transactions one by one in log order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

pub type Key = Vec<u8>;
pub type Value = Vec<u8>;

/// What one map's part of a write set does: `Some(value)` writes, `None` removes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapWrites {
    pub writes: BTreeMap<Key, Option<Value>>,
}

/// All changes of one transaction, per map. Maps and keys are ordered, so
/// the encoding of a write set is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSet {
    pub maps: BTreeMap<String, MapWrites>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.maps.values().all(|m| m.writes.is_empty())
    }

    pub fn put(&mut self, map: &str, key: &[u8], value: &[u8]) {
        self.entry(map).insert(key.to_vec(), Some(value.to_vec()));
    }

    pub fn remove(&mut self, map: &str, key: &[u8]) {
        self.entry(map).insert(key.to_vec(), None);
    }

    fn entry(&mut self, map: &str) -> &mut BTreeMap<Key, Option<Value>> {
        &mut self.maps.entry(map.to_string()).or_default().writes
    }

    fn get(&self, map: &str, key: &[u8]) -> Option<&Option<Value>> {
        self.maps.get(map).and_then(|m| m.writes.get(key))
    }

    fn touches(&self, map: &str) -> bool {
        self.maps.get(map).is_some_and(|m| !m.writes.is_empty())
    }
}

/// The version of a key or map as a transaction observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Never written (or not since this node started).
    Absent,
    /// Last written by the committed entry with this seqno.
    Committed(u64),
    /// Last written by the pending write set with this id.
    Pending(PendingId),
}

/// Names a write set accepted by [`Store::prepare`] until it is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PendingId(pub u64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommitError {
    #[error("conflict: {map} was changed by another transaction after this one read it")]
    Conflict { map: String },
    #[error("this transaction is read-only and cannot write to {map}")]
    ReadOnly { map: String },
}

#[derive(Default)]
struct CommittedMap {
    /// `None` values are tombstones: a removed key keeps its version so a
    /// transaction that read it as absent still conflicts with a later set.
    entries: BTreeMap<Key, (Option<Value>, u64)>,
    /// Seqno of the last entry that wrote this map.
    version: u64,
}

#[derive(Default)]
struct State {
    committed: HashMap<String, CommittedMap>,
    last_applied: u64,
    pending: Vec<(PendingId, Arc<WriteSet>)>,
    next_pending: u64,
}

impl State {
    /// The pending layer as a transaction sees it: all of it, or none.
    fn pending(&self, include: bool) -> &[(PendingId, Arc<WriteSet>)] {
        if include {
            &self.pending
        } else {
            &[]
        }
    }

    fn key_version(&self, map: &str, key: &[u8], with_pending: bool) -> Version {
        for (id, ws) in self.pending(with_pending).iter().rev() {
            if ws.get(map, key).is_some() {
                return Version::Pending(*id);
            }
        }
        match self.committed.get(map).and_then(|m| m.entries.get(key)) {
            Some((_, seqno)) => Version::Committed(*seqno),
            None => Version::Absent,
        }
    }

    fn map_version(&self, map: &str, with_pending: bool) -> Version {
        for (id, ws) in self.pending(with_pending).iter().rev() {
            if ws.touches(map) {
                return Version::Pending(*id);
            }
        }
        match self.committed.get(map) {
            Some(m) => Version::Committed(m.version),
            None => Version::Absent,
        }
    }

    fn get(&self, map: &str, key: &[u8], with_pending: bool) -> Option<Value> {
        for (_, ws) in self.pending(with_pending).iter().rev() {
            if let Some(w) = ws.get(map, key) {
                return w.clone();
            }
        }
        self.committed
            .get(map)
            .and_then(|m| m.entries.get(key))
            .and_then(|(v, _)| v.clone())
    }

    /// The whole map as the newest state has it.
    fn map_contents(&self, map: &str, with_pending: bool) -> BTreeMap<Key, Value> {
        let mut out: BTreeMap<Key, Value> = self
            .committed
            .get(map)
            .map(|m| {
                m.entries
                    .iter()
                    .filter_map(|(k, (v, _))| v.as_ref().map(|v| (k.clone(), v.clone())))
                    .collect()
            })
            .unwrap_or_default();
        for (_, ws) in self.pending(with_pending) {
            if let Some(mw) = ws.maps.get(map) {
                apply_writes(&mut out, mw);
            }
        }
        out
    }
}

fn apply_writes(out: &mut BTreeMap<Key, Value>, mw: &MapWrites) {
    for (k, w) in &mw.writes {
        match w {
            Some(v) => {
                out.insert(k.clone(), v.clone());
            }
            None => {
                out.remove(k);
            }
        }
    }
}

/// The node's KV state. Cheap to share (`Arc<Store>`); all methods take `&self`.
#[derive(Default)]
pub struct Store {
    state: RwLock<State>,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in
        // a way later readers could observe as wrong (every update is a
        // plain insert), so poisoning is ignored.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a transaction over the newest state.
    pub fn begin(self: &Arc<Self>) -> Tx {
        Tx::new(self.clone(), false)
    }

    /// Starts a transaction that may only read, and reads only committed
    /// state: what it returns is never rolled back.
    pub fn begin_read_only(self: &Arc<Self>) -> Tx {
        Tx::new(self.clone(), true)
    }

    /// Seqno of the last applied (committed) entry.
    pub fn last_applied(&self) -> u64 {
        self.read().last_applied
    }

    /// The committed value of a key, ignoring pending writes.
    pub fn get_committed(&self, map: &str, key: &[u8]) -> Option<Value> {
        self.read()
            .committed
            .get(map)
            .and_then(|m| m.entries.get(key))
            .and_then(|(v, _)| v.clone())
    }

    /// The seqno of the last committed entry that wrote to `map` (0 if
    /// none): a cheap way to notice that a map changed.
    pub fn committed_map_version(&self, map: &str) -> u64 {
        self.read().committed.get(map).map_or(0, |m| m.version)
    }

    /// All committed entries of a map, ignoring pending writes.
    pub fn committed_map(&self, map: &str) -> BTreeMap<Key, Value> {
        let state = self.read();
        state
            .committed
            .get(map)
            .map(|m| {
                m.entries
                    .iter()
                    .filter_map(|(k, (v, _))| v.as_ref().map(|v| (k.clone(), v.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Applies a committed entry's write set. Entries must be applied in
    /// seqno order; an entry without a write set (Raft membership, blank)
    /// is applied with an empty one.
    pub fn apply(&self, seqno: u64, ws: &WriteSet) {
        let mut state = self.write();
        for (name, mw) in &ws.maps {
            if mw.writes.is_empty() {
                continue;
            }
            let map = state.committed.entry(name.clone()).or_default();
            for (k, w) in &mw.writes {
                map.entries.insert(k.clone(), (w.clone(), seqno));
            }
            map.version = seqno;
        }
        state.last_applied = seqno;
    }

    /// Replaces the whole committed state, e.g. when a snapshot is
    /// installed or the state is loaded from disk at startup. Pending write
    /// sets are dropped.
    pub fn reset(
        &self,
        last_applied: u64,
        entries: impl IntoIterator<Item = (String, Key, Value, u64)>,
    ) {
        let mut fresh = State {
            last_applied,
            ..State::default()
        };
        for (name, k, v, seqno) in entries {
            let map = fresh.committed.entry(name).or_default();
            map.entries.insert(k, (Some(v), seqno));
            map.version = map.version.max(seqno);
        }
        fresh.next_pending = self.read().next_pending;
        *self.write() = fresh;
    }

    /// Every committed live entry, as `(map, key, value, seqno)`, sorted by
    /// map then key.
    pub fn committed_entries(&self) -> Vec<(String, Key, Value, u64)> {
        let state = self.read();
        let mut names: Vec<&String> = state.committed.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            for (k, (v, seqno)) in &state.committed[name].entries {
                if let Some(v) = v {
                    out.push((name.clone(), k.clone(), v.clone(), *seqno));
                }
            }
        }
        out
    }

    /// Validates a transaction's reads against the newest state and, if
    /// they still hold, stacks its write set as pending. Returns the write
    /// set (empty for a transaction that wrote nothing, which is not
    /// stacked and needs no log entry).
    pub fn prepare(&self, tx: Tx) -> Result<(Option<PendingId>, Arc<WriteSet>), CommitError> {
        if tx.read_only {
            // It wrote nothing and read committed state only: nothing to check.
            return Ok((None, Arc::new(WriteSet::default())));
        }
        let mut state = self.write();
        for ((map, key), seen) in &tx.key_reads {
            if state.key_version(map, key, true) != *seen {
                return Err(CommitError::Conflict { map: map.clone() });
            }
        }
        for (map, seen) in &tx.map_reads {
            if state.map_version(map, true) != *seen {
                return Err(CommitError::Conflict { map: map.clone() });
            }
        }
        let ws = Arc::new(tx.writes);
        if ws.is_empty() {
            return Ok((None, ws));
        }
        let id = PendingId(state.next_pending);
        state.next_pending += 1;
        state.pending.push((id, ws.clone()));
        Ok((Some(id), ws))
    }

    /// Drops a pending write set: it has been applied (its writes now live
    /// in the committed layer) or it will never be (the append failed).
    pub fn release(&self, id: PendingId) {
        self.write().pending.retain(|(p, _)| *p != id);
    }

    /// Drops every pending write set, e.g. when this node stops being
    /// primary: what it appended will be applied through the log or not at all.
    pub fn release_all(&self) {
        self.write().pending.clear();
    }

    pub fn pending_count(&self) -> usize {
        self.read().pending.len()
    }
}

/// A transaction: reads see the newest state (plus the transaction's own
/// writes), writes are buffered until [`Store::prepare`].
pub struct Tx {
    store: Arc<Store>,
    read_only: bool,
    key_reads: HashMap<(String, Key), Version>,
    map_reads: HashMap<String, Version>,
    writes: WriteSet,
}

impl std::fmt::Debug for Tx {
    // Keys and values may be large or secret: show only the shape.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("read_only", &self.read_only)
            .field("key_reads", &self.key_reads.len())
            .field("map_reads", &self.map_reads.len())
            .field("written_maps", &self.writes.maps.len())
            .finish()
    }
}

impl Tx {
    fn new(store: Arc<Store>, read_only: bool) -> Self {
        Tx {
            store,
            read_only,
            key_reads: HashMap::new(),
            map_reads: HashMap::new(),
            writes: WriteSet::default(),
        }
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn get(&mut self, map: &str, key: &[u8]) -> Option<Value> {
        if let Some(w) = self.writes.get(map, key) {
            return w.clone();
        }
        let with_pending = !self.read_only;
        let state = self.store.read();
        let version = state.key_version(map, key, with_pending);
        self.key_reads
            .entry((map.to_string(), key.to_vec()))
            .or_insert(version);
        state.get(map, key, with_pending)
    }

    pub fn has(&mut self, map: &str, key: &[u8]) -> bool {
        self.get(map, key).is_some()
    }

    /// The seqno of the committed entry that wrote the value of `key` this
    /// transaction reads (CCF's `get_version_of_previous_write`). `None`
    /// when the key is absent or deleted, or its last write is still
    /// pending (no seqno yet). Ignores this transaction's own writes, and
    /// counts as a read of the key.
    pub fn committed_version(&mut self, map: &str, key: &[u8]) -> Option<u64> {
        let state = self.store.read();
        let now = state.key_version(map, key, !self.read_only);
        let read = *self
            .key_reads
            .entry((map.to_string(), key.to_vec()))
            .or_insert(now);
        let Version::Committed(seqno) = read else {
            return None;
        };
        // A tombstone at that seqno means the write was a delete.
        let deleted = state
            .committed
            .get(map)
            .and_then(|m| m.entries.get(key))
            .is_some_and(|(value, at)| *at == seqno && value.is_none());
        (!deleted).then_some(seqno)
    }

    pub fn set(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), CommitError> {
        self.check_writable(map)?;
        self.writes.put(map, key, value);
        Ok(())
    }

    pub fn delete(&mut self, map: &str, key: &[u8]) -> Result<(), CommitError> {
        self.check_writable(map)?;
        self.writes.remove(map, key);
        Ok(())
    }

    /// Removes every key of the map.
    pub fn clear(&mut self, map: &str) -> Result<(), CommitError> {
        self.check_writable(map)?;
        for key in self.entries(map).into_keys() {
            self.writes.remove(map, &key);
        }
        Ok(())
    }

    /// The whole map as this transaction sees it.
    pub fn entries(&mut self, map: &str) -> BTreeMap<Key, Value> {
        let mut out = {
            let with_pending = !self.read_only;
            let state = self.store.read();
            let version = state.map_version(map, with_pending);
            self.map_reads.entry(map.to_string()).or_insert(version);
            state.map_contents(map, with_pending)
        };
        if let Some(mw) = self.writes.maps.get(map) {
            apply_writes(&mut out, mw);
        }
        out
    }

    pub fn size(&mut self, map: &str) -> usize {
        self.entries(map).len()
    }

    pub fn write_set(&self) -> &WriteSet {
        &self.writes
    }

    fn check_writable(&self, map: &str) -> Result<(), CommitError> {
        if self.read_only {
            return Err(CommitError::ReadOnly {
                map: map.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "public:counter";

    fn store() -> Arc<Store> {
        Arc::new(Store::new())
    }

    fn read_u64(tx: &mut Tx, key: &[u8]) -> u64 {
        tx.get(M, key)
            .map(|v| u64::from_le_bytes(v.try_into().unwrap()))
            .unwrap_or(0)
    }

    /// Commits a prepared write set as the state machine would.
    fn commit(store: &Store, seqno: u64, prepared: (Option<PendingId>, Arc<WriteSet>)) {
        store.apply(seqno, &prepared.1);
        if let Some(id) = prepared.0 {
            store.release(id);
        }
    }

    /// Runs `increment` with retries, the way the node does.
    fn increment(store: &Arc<Store>) -> (Option<PendingId>, Arc<WriteSet>) {
        loop {
            let mut tx = store.begin();
            let n = read_u64(&mut tx, b"k");
            tx.set(M, b"k", &(n + 1).to_le_bytes()).unwrap();
            if let Ok(p) = store.prepare(tx) {
                return p;
            }
        }
    }

    #[test]
    fn read_modify_write_conflict_is_detected_and_retry_is_serial() {
        let s = store();
        // Two transactions read k = 0 concurrently.
        let mut a = s.begin();
        let mut b = s.begin();
        let va = read_u64(&mut a, b"k");
        let vb = read_u64(&mut b, b"k");
        a.set(M, b"k", &(va + 1).to_le_bytes()).unwrap();
        b.set(M, b"k", &(vb + 1).to_le_bytes()).unwrap();
        // The first to prepare wins; the second conflicts against the
        // pending (not yet committed) write.
        let pa = s.prepare(a).expect("first commits");
        assert_eq!(
            s.prepare(b).unwrap_err(),
            CommitError::Conflict { map: M.to_string() }
        );
        // The retry sees the pending write and builds on it.
        let pb = increment(&s);
        commit(&s, 1, pa);
        commit(&s, 2, pb);
        let mut check = s.begin_read_only();
        assert_eq!(
            read_u64(&mut check, b"k"),
            2,
            "result equals serial execution"
        );
    }

    #[test]
    fn conflict_against_committed_state() {
        let s = store();
        let mut a = s.begin();
        read_u64(&mut a, b"k");
        a.set(M, b"k", b"xxxxxxxx").unwrap();
        // Someone else's write commits in between.
        let mut ws = WriteSet::default();
        ws.put(M, b"k", &5u64.to_le_bytes());
        s.apply(1, &ws);
        assert!(matches!(s.prepare(a), Err(CommitError::Conflict { .. })));
    }

    #[test]
    fn blind_writes_and_disjoint_keys_do_not_conflict() {
        let s = store();
        let mut a = s.begin();
        let mut b = s.begin();
        a.get(M, b"x");
        a.set(M, b"x", b"1").unwrap();
        b.get(M, b"y");
        b.set(M, b"y", b"2").unwrap();
        let mut c = s.begin();
        c.set(M, b"x", b"3").unwrap(); // blind write: no read, no conflict
        assert!(s.prepare(a).is_ok());
        assert!(s.prepare(b).is_ok());
        assert!(s.prepare(c).is_ok());
        assert_eq!(s.pending_count(), 3);
    }

    #[test]
    fn reading_absent_then_someone_creates_it_conflicts() {
        let s = store();
        let mut a = s.begin();
        assert_eq!(a.get(M, b"new"), None);
        a.set(M, b"other", b"1").unwrap();
        let mut b = s.begin();
        b.set(M, b"new", b"1").unwrap();
        s.prepare(b).unwrap();
        assert!(s.prepare(a).is_err());
    }

    #[test]
    fn delete_then_recreate_is_still_a_conflict_for_an_absent_read() {
        let s = store();
        let mut ws = WriteSet::default();
        ws.put(M, b"k", b"1");
        s.apply(1, &ws);
        let mut ws = WriteSet::default();
        ws.remove(M, b"k");
        s.apply(2, &ws);
        let mut a = s.begin();
        assert_eq!(a.get(M, b"k"), None);
        a.set(M, b"z", b"1").unwrap();
        let mut ws = WriteSet::default();
        ws.put(M, b"k", b"2");
        s.apply(3, &ws);
        assert!(s.prepare(a).is_err());
    }

    #[test]
    fn size_and_for_each_conflict_with_any_write_to_the_map() {
        let s = store();
        let mut a = s.begin();
        assert_eq!(a.size(M), 0);
        a.set("public:other", b"n", b"0").unwrap();
        let mut b = s.begin();
        b.set(M, b"unrelated", b"1").unwrap();
        s.prepare(b).unwrap();
        assert!(s.prepare(a).is_err());
    }

    #[test]
    fn transaction_reads_its_own_writes_and_entries_merge_layers() {
        let s = store();
        let mut ws = WriteSet::default();
        ws.put(M, b"a", b"1");
        ws.put(M, b"b", b"2");
        s.apply(1, &ws);
        let mut p = s.begin();
        p.set(M, b"c", b"3").unwrap();
        s.prepare(p).unwrap();
        let mut tx = s.begin();
        tx.delete(M, b"a").unwrap();
        tx.set(M, b"d", b"4").unwrap();
        assert_eq!(tx.get(M, b"a"), None);
        assert_eq!(tx.get(M, b"d"), Some(b"4".to_vec()));
        let keys: Vec<Vec<u8>> = tx.entries(M).into_keys().collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        tx.clear(M).unwrap();
        assert_eq!(tx.size(M), 0);
    }

    #[test]
    fn committed_version_is_the_seqno_of_the_write_read() {
        let s = store();
        let mut ws = WriteSet::default();
        ws.put(M, b"a", b"1");
        ws.put(M, b"gone", b"1");
        s.apply(4, &ws);
        let mut ws = WriteSet::default();
        ws.remove(M, b"gone");
        s.apply(7, &ws);
        let mut tx = s.begin();
        assert_eq!(tx.committed_version(M, b"a"), Some(4));
        assert_eq!(tx.committed_version(M, b"gone"), None);
        assert_eq!(tx.committed_version(M, b"never"), None);
        // Own writes do not count; a pending write has no seqno yet.
        tx.set(M, b"a", b"2").unwrap();
        assert_eq!(tx.committed_version(M, b"a"), Some(4));
        let (id, _) = s.prepare(tx).unwrap();
        assert_eq!(s.begin().committed_version(M, b"a"), None);
        s.release(id.unwrap());
        // It is a read: a later write of the key conflicts.
        let mut tx = s.begin();
        tx.committed_version(M, b"a");
        tx.set(M, b"other", b"x").unwrap();
        let mut ws = WriteSet::default();
        ws.put(M, b"a", b"3");
        s.apply(9, &ws);
        assert!(s.prepare(tx).is_err());
    }

    #[test]
    fn read_only_transactions_refuse_writes() {
        let s = store();
        let mut tx = s.begin_read_only();
        assert!(matches!(
            tx.set(M, b"k", b"v"),
            Err(CommitError::ReadOnly { .. })
        ));
        assert!(tx.delete(M, b"k").is_err());
        let (id, ws) = s.prepare(tx).unwrap();
        assert!(id.is_none() && ws.is_empty());
    }

    #[test]
    fn released_pending_writes_disappear_and_reset_replaces_state() {
        let s = store();
        let mut tx = s.begin();
        tx.set(M, b"k", b"v").unwrap();
        let (id, _) = s.prepare(tx).unwrap();
        assert_eq!(s.begin().get(M, b"k"), Some(b"v".to_vec()));
        assert_eq!(
            s.begin_read_only().get(M, b"k"),
            None,
            "read-only sees committed only"
        );
        s.release(id.unwrap());
        assert_eq!(s.begin().get(M, b"k"), None, "failed append leaves nothing");
        s.reset(7, vec![(M.to_string(), b"x".to_vec(), b"y".to_vec(), 7)]);
        assert_eq!(s.last_applied(), 7);
        assert_eq!(s.get_committed(M, b"x"), Some(b"y".to_vec()));
        assert_eq!(s.committed_entries().len(), 1);
    }

    #[test]
    fn many_threads_incrementing_give_a_serial_result() {
        let s = store();
        // The sequencer: prepare and hand to the log (here: apply) in one
        // critical section, as the node does. Execution runs outside it.
        let seq = Arc::new(std::sync::Mutex::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                let seq = seq.clone();
                std::thread::spawn(move || {
                    let mut retries = 0;
                    for _ in 0..250 {
                        loop {
                            let mut tx = s.begin();
                            let n = read_u64(&mut tx, b"k");
                            tx.set(M, b"k", &(n + 1).to_le_bytes()).unwrap();
                            let mut last = seq.lock().unwrap();
                            match s.prepare(tx) {
                                Ok(p) => {
                                    *last += 1;
                                    commit(&s, *last, p);
                                    break;
                                }
                                Err(_) => retries += 1,
                            }
                        }
                    }
                    retries
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(read_u64(&mut s.begin(), b"k"), 1000);
        assert_eq!(s.last_applied(), 1000);
    }
}
