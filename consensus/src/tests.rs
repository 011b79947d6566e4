//! Storage tests (including openraft's own storage suite) and an
//! in-process three-node cluster whose RPCs go through the JSON handlers of
//! [`crate::server`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use charter_ledger::{LedgerEntry, Store, WriteSet};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    AnyError, CommittedLeaderId, EntryPayload as RaftPayload, Membership, RaftLogReader,
    RaftSnapshotBuilder,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tempfile::TempDir;

use crate::types::{Entry, LogId, StorageError, Vote};
use crate::wire::SnapshotChunk;
use crate::*;

const M: &str = "public:records";

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: RaftPayload::Blank,
    }
}

fn write_entry(term: u64, index: u64, key: &str, value: Option<&str>) -> Entry {
    let mut ws = WriteSet::default();
    match value {
        Some(v) => ws.put(M, key.as_bytes(), v.as_bytes()),
        None => ws.remove(M, key.as_bytes()),
    }
    Entry {
        log_id: log_id(term, index),
        payload: RaftPayload::Normal(EntryPayload(LedgerEntry::transaction(ws).encode())),
    }
}

fn membership_entry(term: u64, index: u64, ids: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = ids.iter().copied().collect();
    let nodes: BTreeMap<u64, NodeAddr> = ids
        .iter()
        .map(|id| {
            (
                *id,
                NodeAddr {
                    node_to_node: format!("127.0.0.1:{}", 9000 + id),
                    rpc: format!("127.0.0.1:{}", 8000 + id),
                },
            )
        })
        .collect();
    Entry {
        log_id: log_id(term, index),
        payload: RaftPayload::Membership(Membership::new(vec![voters], nodes)),
    }
}

/// Appends and waits for the flush callback, as openraft does.
async fn append(log: &mut LogStore, entries: Vec<Entry>) -> Result<(), StorageError> {
    log.blocking_append(entries).await
}

fn value(store: &Store, key: &str) -> Option<String> {
    store
        .get_committed(M, key.as_bytes())
        .map(|v| String::from_utf8(v).unwrap())
}

// ---------------------------------------------------------------------------
// openraft's storage suite
// ---------------------------------------------------------------------------

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let (log, sm) = open(dir.path(), Arc::new(Store::new()), None).await?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}

// ---------------------------------------------------------------------------
// Log store
// ---------------------------------------------------------------------------

#[tokio::test]
async fn log_entries_and_vote_survive_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let (mut log, _sm) = open(dir.path(), Arc::new(Store::new()), None)
            .await
            .unwrap();
        append(
            &mut log,
            vec![
                blank(1, 1),
                write_entry(1, 2, "a", Some("1")),
                write_entry(2, 3, "b", Some("2")),
            ],
        )
        .await
        .unwrap();
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
        log.save_committed(Some(log_id(1, 2))).await.unwrap();
    }
    let (mut log, _sm) = open(dir.path(), Arc::new(Store::new()), None)
        .await
        .unwrap();
    let entries = log.try_get_log_entries(1..4).await.unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[1], write_entry(1, 2, "a", Some("1")));
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 2)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 3)));
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(log.term_at(3), Some(2));
    assert_eq!(log.term_at(2), Some(1));
    assert_eq!(log.term_at(4), None);
}

#[tokio::test]
async fn truncate_and_purge() {
    let dir = TempDir::new().unwrap();
    let (mut log, _sm) = open(dir.path(), Arc::new(Store::new()), None)
        .await
        .unwrap();
    append(&mut log, (1..=10).map(|i| blank(1, i)).collect())
        .await
        .unwrap();

    log.truncate(log_id(1, 8)).await.unwrap();
    let all = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 7))
    );

    log.purge(log_id(1, 3)).await.unwrap();
    let all = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(all.first().map(|e| e.log_id.index), Some(4));
    assert_eq!(log.term_at(3), None);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 7)));

    // Purging everything leaves the log "ending" at the purged id, also
    // after a restart.
    log.purge(log_id(1, 7)).await.unwrap();
    drop(log);
    drop(_sm);
    let (mut log, _sm) = open(dir.path(), Arc::new(Store::new()), None)
        .await
        .unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 7)));
    assert_eq!(state.last_log_id, Some(log_id(1, 7)));
    assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------
// State machine
// ---------------------------------------------------------------------------

#[tokio::test]
async fn apply_updates_the_store_and_survives_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let store = Arc::new(Store::new());
        let (_log, mut sm) = open(dir.path(), store.clone(), None).await.unwrap();
        let resp = sm
            .apply(vec![
                membership_entry(1, 1, &[1, 2, 3]),
                blank(1, 2),
                write_entry(1, 3, "a", Some("1")),
                write_entry(1, 4, "b", Some("2")),
                write_entry(2, 5, "a", None),
                write_entry(2, 6, "c", Some("3")),
            ])
            .await
            .unwrap();
        assert_eq!(resp.len(), 6);
        assert_eq!(resp[5], WriteResponse { view: 2, seqno: 6 });
        assert_eq!(value(&store, "a"), None);
        assert_eq!(value(&store, "b").as_deref(), Some("2"));
        assert_eq!(store.last_applied(), 6);
    }
    let store = Arc::new(Store::new());
    let (_log, mut sm) = open(dir.path(), store.clone(), None).await.unwrap();
    assert_eq!(store.last_applied(), 6);
    assert_eq!(value(&store, "a"), None);
    assert_eq!(value(&store, "b").as_deref(), Some("2"));
    assert_eq!(value(&store, "c").as_deref(), Some("3"));
    assert_eq!(
        store.committed_entries(),
        vec![
            (M.to_string(), b"b".to_vec(), b"2".to_vec(), 4),
            (M.to_string(), b"c".to_vec(), b"3".to_vec(), 6)
        ]
    );
    let (last, membership) = sm.applied_state().await.unwrap();
    assert_eq!(last, Some(log_id(2, 6)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
    assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(sm.view_history().history(), vec![(1, 1), (2, 5)]);
}

#[tokio::test]
async fn undecodable_entry_is_applied_empty() {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(Store::new());
    let (_log, mut sm) = open(dir.path(), store.clone(), None).await.unwrap();
    let bad = Entry {
        log_id: log_id(1, 2),
        payload: RaftPayload::Normal(EntryPayload(vec![9, 9, 9])),
    };
    let resp = sm
        .apply(vec![write_entry(1, 1, "a", Some("1")), bad])
        .await
        .unwrap();
    assert_eq!(resp.len(), 2);
    assert_eq!(store.last_applied(), 2);
    assert_eq!(value(&store, "a").as_deref(), Some("1"));
}

#[tokio::test]
async fn view_history_answers_views() {
    let dir = TempDir::new().unwrap();
    let (_log, mut sm) = open(dir.path(), Arc::new(Store::new()), None)
        .await
        .unwrap();
    let views = sm.view_history();
    assert_eq!(views.view_for_seqno(0), None);
    assert_eq!(views.last_applied(), None);
    sm.apply(vec![
        blank(1, 1),
        write_entry(1, 2, "a", Some("1")),
        blank(3, 3),
    ])
    .await
    .unwrap();
    sm.apply(vec![write_entry(3, 4, "a", Some("2")), blank(4, 5)])
        .await
        .unwrap();
    assert_eq!(views.view_for_seqno(0), None, "before the first entry");
    assert_eq!(views.view_for_seqno(1), Some(1));
    assert_eq!(views.view_for_seqno(2), Some(1));
    assert_eq!(views.view_for_seqno(3), Some(3));
    assert_eq!(views.view_for_seqno(4), Some(3));
    assert_eq!(views.view_for_seqno(5), Some(4));
    assert_eq!(views.view_for_seqno(6), None, "not applied yet");
    assert_eq!(views.last_applied(), Some((4, 5)));
    assert_eq!(views.history(), vec![(1, 1), (3, 3), (4, 5)]);
}

#[tokio::test]
async fn snapshot_build_and_install_reproduce_the_state() {
    let dir_a = TempDir::new().unwrap();
    let store_a = Arc::new(Store::new());
    let (_log_a, mut sm_a) = open(dir_a.path(), store_a.clone(), None).await.unwrap();
    sm_a.apply(vec![
        membership_entry(1, 1, &[1, 2]),
        write_entry(1, 2, "a", Some("1")),
        write_entry(2, 3, "b", Some("2")),
        write_entry(2, 4, "a", None),
    ])
    .await
    .unwrap();
    let snap = sm_a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(2, 4)));
    let current = sm_a.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);
    assert_eq!(current.snapshot.get_ref(), snap.snapshot.get_ref());

    // The state moves on after the build; the snapshot does not.
    sm_a.apply(vec![write_entry(3, 5, "z", Some("late"))])
        .await
        .unwrap();

    let dir_b = TempDir::new().unwrap();
    {
        let store_b = Arc::new(Store::new());
        let (_log_b, mut sm_b) = open(dir_b.path(), store_b.clone(), None).await.unwrap();
        // Stale state that the snapshot must replace entirely.
        sm_b.apply(vec![write_entry(1, 1, "stale", Some("x"))])
            .await
            .unwrap();
        let mut data = sm_b.begin_receiving_snapshot().await.unwrap();
        *data = Cursor::new(snap.snapshot.get_ref().clone());
        sm_b.install_snapshot(&snap.meta, data).await.unwrap();
        assert_eq!(value(&store_b, "stale"), None);
        assert_eq!(value(&store_b, "b").as_deref(), Some("2"));
        assert_eq!(store_b.last_applied(), 4);
        assert_eq!(sm_b.view_history().history(), vec![(1, 1), (2, 3)]);
        assert_eq!(sm_b.view_history().view_for_seqno(2), Some(1));
        assert_eq!(
            sm_b.get_current_snapshot().await.unwrap().unwrap().meta,
            snap.meta
        );
    }
    // And the installed state is what a restart loads.
    let store_b = Arc::new(Store::new());
    let (_log_b, mut sm_b) = open(dir_b.path(), store_b.clone(), None).await.unwrap();
    assert_eq!(
        store_b.committed_entries(),
        vec![(M.to_string(), b"b".to_vec(), b"2".to_vec(), 3)]
    );
    assert_eq!(sm_b.applied_state().await.unwrap().0, Some(log_id(2, 4)));
    assert_eq!(sm_b.view_history().history(), vec![(1, 1), (2, 3)]);
}

#[tokio::test]
async fn damaged_snapshot_data_is_an_error_not_a_panic() {
    let dir_a = TempDir::new().unwrap();
    let (_log, mut sm) = open(dir_a.path(), Arc::new(Store::new()), None)
        .await
        .unwrap();
    sm.apply(vec![write_entry(1, 1, "a", Some("1"))])
        .await
        .unwrap();
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let good = snap.snapshot.get_ref().clone();

    let dir_b = TempDir::new().unwrap();
    let store_b = Arc::new(Store::new());
    let (_log_b, mut sm_b) = open(dir_b.path(), store_b.clone(), None).await.unwrap();
    let mut cases: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
    cases.push([good.clone(), vec![0]].concat());
    let mut huge_count = good.clone();
    // Overwrite the entry count with an absurd value.
    let header_len = u32::from_be_bytes(good[8..12].try_into().unwrap()) as usize;
    huge_count[12 + header_len..20 + header_len].copy_from_slice(&u64::MAX.to_be_bytes());
    cases.push(huge_count);
    for bad in cases {
        let r = sm_b
            .install_snapshot(&snap.meta, Box::new(Cursor::new(bad)))
            .await;
        assert!(r.is_err());
    }
    assert_eq!(store_b.last_applied(), 0);
    assert!(sm_b.get_current_snapshot().await.unwrap().is_none());
}

// ---------------------------------------------------------------------------
// An in-process cluster over the server handlers
// ---------------------------------------------------------------------------

/// Routes RPCs to in-process nodes through `server::handle_*`, with JSON
/// bodies both ways, so the wire encoding is exercised too.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<HashMap<u64, Raft>>>,
}

enum Kind {
    Append,
    Vote,
    Snapshot,
}

struct RouterConn {
    router: Router,
    target: u64,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = RouterConn;
    async fn new_client(&mut self, target: u64, _node: &NodeAddr) -> RouterConn {
        RouterConn {
            router: self.clone(),
            target,
        }
    }
}

type Rpc<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, NodeAddr, RaftError<u64, E>>>;

impl RouterConn {
    async fn call<Req, Resp, E>(&self, req: &Req, kind: Kind) -> Rpc<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let raft = self.router.nodes.lock().unwrap().get(&self.target).cloned();
        let Some(raft) = raft else {
            return Err(RPCError::Unreachable(Unreachable::from(AnyError::error(
                "no such node",
            ))));
        };
        let body = serde_json::to_vec(req).unwrap();
        let out = match kind {
            Kind::Append => handle_append(&raft, &body).await,
            Kind::Vote => handle_vote(&raft, &body).await,
            Kind::Snapshot => handle_snapshot(&raft, &body).await,
        }
        .unwrap();
        let res: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&out).unwrap();
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for RouterConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<u64>> {
        self.call(&rpc, Kind::Append).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(&SnapshotChunk::from(rpc), Kind::Snapshot).await
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, _option: RPCOption) -> Rpc<VoteResponse<u64>> {
        self.call(&rpc, Kind::Vote).await
    }
}

struct TestNode {
    raft: Raft,
    store: Arc<Store>,
    views: ViewHistory,
    log: LogStore,
    _dir: TempDir,
}

async fn start_node(router: &Router, id: u64) -> TestNode {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(Store::new());
    let (log, sm) = open(dir.path(), store.clone(), None).await.unwrap();
    let views = sm.view_history();
    let config = Arc::new(raft_config(50, 300, 600).unwrap());
    let raft = Raft::new(id, config, router.clone(), log.clone(), sm)
        .await
        .unwrap();
    router.nodes.lock().unwrap().insert(id, raft.clone());
    TestNode {
        raft,
        store,
        views,
        log,
        _dir: dir,
    }
}

fn addr(id: u64) -> NodeAddr {
    NodeAddr {
        node_to_node: format!("node{id}"),
        rpc: format!("rpc{id}"),
    }
}

async fn put(raft: &Raft, key: &str, v: &str) -> WriteResponse {
    let mut ws = WriteSet::default();
    ws.put(M, key.as_bytes(), v.as_bytes());
    let payload = EntryPayload(LedgerEntry::transaction(ws).encode());
    raft.client_write(payload).await.unwrap().data
}

async fn wait_applied(node: &TestNode, index: u64) {
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(index), "applied")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_a_late_learner_catches_up_by_snapshot() {
    let router = Router::default();
    let n1 = start_node(&router, 1).await;
    let n2 = start_node(&router, 2).await;
    let n3 = start_node(&router, 3).await;
    let members: BTreeMap<u64, NodeAddr> = [1, 2, 3].into_iter().map(|id| (id, addr(id))).collect();
    n1.raft.initialize(members).await.unwrap();
    n1.raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "n1 leads")
        .await
        .unwrap();

    let mut last = WriteResponse::default();
    for i in 0..20 {
        last = put(&n1.raft, &format!("k{i}"), &format!("v{i}")).await;
    }
    for n in [&n1, &n2, &n3] {
        wait_applied(n, last.seqno).await;
        assert_eq!(value(&n.store, "k19").as_deref(), Some("v19"));
        assert_eq!(n.views.view_for_seqno(last.seqno), Some(last.view));
        assert_eq!(n.log.term_at(last.seqno), Some(last.view));
    }

    // Snapshot, and drop the log it covers, so a new node can only catch up
    // by receiving the snapshot.
    n1.raft.trigger().snapshot().await.unwrap();
    n1.raft
        .wait(Some(Duration::from_secs(10)))
        .snapshot(
            openraft::LogId::new(CommittedLeaderId::new(last.view, 1), last.seqno),
            "snapshot",
        )
        .await
        .unwrap();
    n1.raft.trigger().purge_log(last.seqno).await.unwrap();
    n1.raft
        .wait(Some(Duration::from_secs(10)))
        .purged(
            Some(openraft::LogId::new(
                CommittedLeaderId::new(last.view, 1),
                last.seqno,
            )),
            "purged",
        )
        .await
        .unwrap();

    let n4 = start_node(&router, 4).await;
    n1.raft.add_learner(4, addr(4), true).await.unwrap();
    let after = put(&n1.raft, "after", "snapshot").await;
    wait_applied(&n4, after.seqno).await;
    assert_eq!(value(&n4.store, "k0").as_deref(), Some("v0"));
    assert_eq!(value(&n4.store, "after").as_deref(), Some("snapshot"));
    assert_eq!(n4.views.history(), n1.views.history());
    assert_eq!(
        n4.log.term_at(last.seqno),
        None,
        "covered by the snapshot, not in the log"
    );

    for n in [&n1, &n2, &n3, &n4] {
        n.raft.shutdown().await.unwrap();
    }
}
