//! A running node: its identity, its Raft instance and storage, the KV
//! store, the JS engine and app, and how it comes up (start a new service,
//! join one, or resume from its data directory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use charter_consensus::{EntryPayload, LogStore, Network, NodeAddr, Raft, ViewHistory};
use charter_js::{AppBundle, JsEngine, Limits};
use charter_ledger::history::{CommitSecret, History};
use charter_ledger::{EntryKind, LedgerEntry, Store, Tx, TxId};
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::identity::{self, Identity};
use crate::tables;

/// Persisted in `DATA_DIR/node.json`: what a restart needs to resume.
#[derive(Debug, Serialize, Deserialize)]
struct NodeFile {
    node_id: u64,
}

pub struct Node {
    pub id: u64,
    pub config: NodeConfig,
    pub raft: Raft,
    pub store: Arc<Store>,
    pub log: LogStore,
    pub views: ViewHistory,
    /// The Merkle history of committed entries (receipts, signatures).
    pub history: Arc<std::sync::Mutex<History>>,
    pub engine: Arc<JsEngine>,
    pub app: RwLock<Option<Arc<AppBundle>>>,
    pub identity: Identity,
    pub service: Identity,
    /// mutual-TLS client for node-to-node calls (Raft and forwarding).
    pub peers: reqwest::Client,
    /// Orders `Store::prepare` + append so the log order is the order in
    /// which transactions were validated.
    sequencer: tokio::sync::Mutex<()>,
    /// One join at a time, so node ids are unique.
    join_lock: tokio::sync::Mutex<()>,
    /// Nodes this primary is waiting to promote to voter.
    promoting: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// Set once governance has retired this node: it stops taking part in
    /// Raft and refuses app and governance traffic (its state goes stale).
    pub retired: std::sync::atomic::AtomicBool,
}

/// The largest ledger entry one transaction may make. A JS handler can
/// write any amount to the kv within its heap limit; an entry past the
/// ledger's frame limit (1 GiB) could be written but not audited, and one
/// of hundreds of MiB stalls replication and commit for everyone.
pub const MAX_TRANSACTION_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CommitFailure {
    #[error("conflict with a concurrent transaction")]
    Conflict,
    #[error("this node is not the primary")]
    NotPrimary,
    #[error("the write was not committed in time: {0}")]
    Timeout(String),
    #[error("the transaction's ledger entry would be {bytes} bytes, more than the limit of {MAX_TRANSACTION_BYTES}")]
    TooLarge { bytes: usize },
    #[error("{0}")]
    Internal(String),
}

/// What a joining node sends.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub csr: String,
    pub node_address: String,
    pub rpc_address: String,
}

/// What the primary answers a joining node.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: u64,
    pub node_cert: String,
    /// `Trusted`, or `Pending` until governance trusts the node
    /// (`transition_node_to_trusted`); the node asks again until then.
    pub status: String,
    /// Shared with every node the service trusts; only sent to a Trusted
    /// node.
    pub service_key: Option<String>,
}

fn paths(data_dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        data_dir.join("node.json"),
        data_dir.join("node_key.pem"),
        data_dir.join("node_cert.pem"),
        data_dir.join("service_cert.pem"),
        data_dir.join("service_key.pem"),
    )
}

/// Whether this data directory already holds a node.
pub fn has_state(data_dir: &Path) -> bool {
    data_dir.join("node.json").exists()
}

fn hosts_of(config: &NodeConfig) -> Vec<String> {
    vec![
        config.rpc_address.ip().to_string(),
        config.node_address.ip().to_string(),
    ]
}

fn save_identity(
    config: &NodeConfig,
    node_id: u64,
    node: &Identity,
    service: &Identity,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let (file, key, cert, scert, skey) = paths(&config.data_dir);
    identity::write_private(&key, &node.key_pem)?;
    identity::write_public(&cert, &node.cert_pem)?;
    identity::write_public(&scert, &service.cert_pem)?;
    identity::write_private(&skey, &service.key_pem)?;
    // node.json last: its presence means the identity is complete.
    identity::write_public(&file, &serde_json::to_string(&NodeFile { node_id })?)?;
    Ok(())
}

fn load_identity(config: &NodeConfig) -> anyhow::Result<(u64, Identity, Identity)> {
    let (file, key, cert, scert, skey) = paths(&config.data_dir);
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let nf: NodeFile = serde_json::from_str(&read(&file)?)
        .with_context(|| format!("parsing {}", file.display()))?;
    Ok((
        nf.node_id,
        Identity {
            key_pem: read(&key)?,
            cert_pem: read(&cert)?,
        },
        Identity {
            key_pem: read(&skey)?,
            cert_pem: read(&scert)?,
        },
    ))
}

impl Node {
    /// Opens storage and Raft for an identity that is already on disk.
    async fn open(config: NodeConfig, app_dir: Option<PathBuf>) -> anyhow::Result<Arc<Node>> {
        let (id, identity, service) = load_identity(&config)?;
        let store = Arc::new(Store::new());
        // Every node holding the service key derives the same secret.
        let secret = CommitSecret::derive(service.key_pem.as_bytes());
        let history = charter_consensus::HistoryConfig {
            secret,
            ledger_dir: config.data_dir.join("ledger"),
            chunk_bytes: config.ledger_chunk_bytes,
        };
        let (log, sm) =
            charter_consensus::open(&config.data_dir.join("raft"), store.clone(), Some(history))
                .await
                .context("opening the node's RocksDB storage")?;
        let views = sm.view_history();
        let history = sm
            .history()
            .ok_or_else(|| anyhow!("the state machine keeps no ledger history"))?;
        let peers = crate::tls::reqwest_client(
            crate::tls::node_to_node_client(&identity, &service.cert_pem)?,
            Duration::from_secs(30),
        )?;
        let raft_config = charter_consensus::raft_config(
            config.raft.heartbeat_ms,
            config.raft.election_timeout_min_ms,
            config.raft.election_timeout_max_ms,
        )
        .map_err(|e| anyhow!("invalid [raft] timings in the config: {e}"))?;
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            Network::new(peers.clone()),
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| anyhow!("starting Raft: {e}"))?;
        if app_dir.is_some() || config.app.is_some() {
            tracing::debug!("the app comes from the service's governance tables; `app` only seeds a new service");
        }
        let app = None;
        let engine = Arc::new(JsEngine::new(config.js_workers, Limits::default()));
        let node = Arc::new(Node {
            id,
            config,
            raft,
            store,
            log,
            views,
            history,
            engine,
            app: RwLock::new(app),
            identity,
            service,
            peers,
            sequencer: tokio::sync::Mutex::new(()),
            join_lock: tokio::sync::Mutex::new(()),
            promoting: std::sync::Mutex::new(Default::default()),
            retired: std::sync::atomic::AtomicBool::new(false),
        });
        node.engine
            .set_consensus(crate::consensus_view::NodeConsensus::new(&node));
        node.clone().watch_leadership();
        crate::watch::spawn(node.clone());
        crate::signatures::spawn(node.clone())?;
        Ok(node)
    }

    /// `charter node start`: a new service, or resume.
    pub async fn start(config: NodeConfig, app_dir: Option<PathBuf>) -> anyhow::Result<Arc<Node>> {
        if has_state(&config.data_dir) {
            tracing::info!("resuming node from {}", config.data_dir.display());
            let node = Node::open(config, app_dir).await?;
            node.publish_service_cert()?;
            return Ok(node);
        }
        tracing::info!("creating a new service in {}", config.data_dir.display());
        let service = identity::new_service_identity()?;
        let (node_key, csr) = identity::new_node_key_and_csr(&hosts_of(&config))?;
        let node_cert = identity::endorse_node(&csr, &service)?;
        let node_identity = Identity {
            key_pem: node_key,
            cert_pem: node_cert,
        };
        // Read the initial users, members, constitution and app before
        // anything is written, so a typo in the config leaves no
        // half-created service behind.
        let users = read_certs(&config.initial_users, "initial user")?;
        let members = read_certs(&config.initial_members, "initial member")?;
        let constitution = read_constitution(config.constitution.as_deref())?;
        let app = match app_dir.clone().or_else(|| config.app.clone()) {
            Some(dir) => {
                let (meta, modules) = read_app(&dir)?;
                let meta = match &config.app_engine {
                    Some(engine) => with_engine(&meta, engine)?,
                    None => meta,
                };
                Some((meta, modules))
            }
            None => None,
        };
        save_identity(&config, 1, &node_identity, &service)?;
        let node = Node::open(config, app_dir).await?;
        let mut nodes = BTreeMap::new();
        nodes.insert(node.id, node.own_addr());
        node.raft
            .initialize(nodes)
            .await
            .map_err(|e| anyhow!("initialising Raft: {e}"))?;
        node.wait_until_ready_primary(Duration::from_secs(30))
            .await?;
        // Genesis: the service's first transaction.
        let id = node.id;
        let own = node.own_info_json();
        let service_cert = node.service.cert_pem.clone();
        let members: Vec<(String, Option<serde_json::Value>)> =
            members.into_iter().map(|m| (m, None)).collect();
        node.write_internal(move |tx| {
            let genesis = charter_governance::service::Genesis {
                service_cert_pem: &service_cert,
                constitution: &constitution,
                members: &members,
                users: &users,
                app: app.clone(),
            };
            charter_governance::service::genesis(tx, &genesis)
                .map_err(|e| anyhow!("writing the genesis transaction: {e}"))?;
            tables::set_node(tx, id, &own)
        })
        .await?;
        node.publish_service_cert()?;
        Ok(node)
    }

    /// `charter node join`: join an existing service, or resume.
    pub async fn join(config: NodeConfig, app_dir: Option<PathBuf>) -> anyhow::Result<Arc<Node>> {
        if has_state(&config.data_dir) {
            tracing::info!("resuming node from {}", config.data_dir.display());
            return Node::open(config, app_dir).await;
        }
        let target = config
            .join_target
            .clone()
            .ok_or_else(|| anyhow!("`join_target` is missing from the config: the rpc address of a node of the service"))?;
        let service_cert = std::fs::read_to_string(&config.service_cert).with_context(|| {
            format!(
                "reading the service certificate {}",
                config.service_cert.display()
            )
        })?;
        let (node_key, csr) = identity::new_node_key_and_csr(&hosts_of(&config))?;
        let client = crate::tls::reqwest_client(
            crate::tls::service_client(&service_cert, None)?,
            Duration::from_secs(30),
        )?;
        let request = JoinRequest {
            csr,
            node_address: config.node_address.to_string(),
            rpc_address: config.rpc_address.to_string(),
        };
        let mut deadline = Instant::now() + Duration::from_secs(60);
        let mut announced_pending = false;
        let response: JoinResponse = loop {
            let attempt = client
                .post(format!("https://{target}/node/join"))
                .json(&request)
                .send()
                .await;
            match attempt {
                Ok(r) if r.status().is_success() => {
                    let resp: JoinResponse = r.json().await.context("parsing the join response")?;
                    if resp.service_key.is_some() {
                        break resp;
                    }
                    if !announced_pending {
                        tracing::info!(
                            node_id = resp.node_id,
                            "joined as {}: waiting for the consortium to trust this node (transition_node_to_trusted)",
                            resp.status
                        );
                        announced_pending = true;
                    }
                    // Pending nodes wait as long as governance takes.
                    deadline = Instant::now() + Duration::from_secs(60);
                }
                Ok(r) if r.status().is_client_error() => {
                    bail!(
                        "the service refused to let this node join: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )
                }
                Ok(r) => tracing::info!("join: {} answered {}; retrying", target, r.status()),
                Err(e) => tracing::info!("join: cannot reach {target} ({e}); retrying"),
            }
            if Instant::now() > deadline {
                bail!("could not join the service at {target} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        tracing::info!("joined as node {}", response.node_id);
        let node_identity = Identity {
            key_pem: node_key,
            cert_pem: response.node_cert,
        };
        let service = Identity {
            key_pem: response.service_key.unwrap_or_default(),
            cert_pem: service_cert,
        };
        save_identity(&config, response.node_id, &node_identity, &service)?;
        Node::open(config, app_dir).await
    }

    fn publish_service_cert(&self) -> anyhow::Result<()> {
        if let Some(dir) = self.config.service_cert.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        identity::write_public(&self.config.service_cert, &self.service.cert_pem)
    }

    pub fn own_addr(&self) -> NodeAddr {
        NodeAddr {
            node_to_node: self.config.node_address.to_string(),
            rpc: self.config.rpc_address.to_string(),
        }
    }

    fn own_info_json(&self) -> serde_json::Value {
        tables::node_info(&self.identity.cert_pem, &self.own_addr(), "Trusted")
    }

    pub fn app(&self) -> Option<Arc<AppBundle>> {
        self.app.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn metrics(&self) -> openraft::RaftMetrics<u64, NodeAddr> {
        self.raft.metrics().borrow().clone()
    }

    pub fn is_primary(&self) -> bool {
        self.metrics().current_leader == Some(self.id)
    }

    /// A primary is ready for read-write transactions once it has applied
    /// every entry of earlier views in its log (its own first entry of the
    /// view is applied): before that, its state could miss writes that
    /// will still commit, and a transaction validated against it could
    /// lose an update.
    pub fn is_ready_primary(&self) -> bool {
        let m = self.metrics();
        m.current_leader == Some(self.id)
            && m.state == openraft::ServerState::Leader
            && m.last_applied
                .is_some_and(|l| l.leader_id.term == m.current_term)
    }

    pub async fn wait_until_ready_primary(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while !self.is_ready_primary() {
            if Instant::now() > deadline {
                bail!("this node did not become a ready primary within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The current primary's address, waiting out an election for a while.
    pub async fn primary(&self, limit: Duration) -> Option<(u64, NodeAddr)> {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.metrics();
            if let Some(leader) = m.current_leader {
                if let Some(addr) = m.membership_config.membership().get_node(&leader) {
                    return Some((leader, addr.clone()));
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The id of the last committed (and applied) transaction.
    pub fn committed_txid(&self) -> TxId {
        let seqno = self.store.last_applied();
        TxId::new(self.views.view_for_seqno(seqno).unwrap_or(0), seqno)
    }

    /// Validates `tx`, appends its write set to the log and waits until it
    /// is committed and applied here. A transaction that wrote nothing
    /// commits at once, as of the state it read.
    pub async fn commit(&self, tx: Tx) -> Result<TxId, CommitFailure> {
        self.commit_entry(tx, EntryKind::Transaction, None).await
    }

    /// [`Node::commit`] for any kind of entry, with an optional claims digest.
    pub async fn commit_entry(
        &self,
        tx: Tx,
        kind: EntryKind,
        claims_digest: Option<[u8; 32]>,
    ) -> Result<TxId, CommitFailure> {
        let read_only = tx.is_read_only();
        let guard = self.sequencer.lock().await;
        if !read_only && !self.is_ready_primary() {
            return Err(CommitFailure::NotPrimary);
        }
        let (pending, ws) = self
            .store
            .prepare(tx)
            .map_err(|_| CommitFailure::Conflict)?;
        let Some(pending) = pending else {
            drop(guard);
            return Ok(self.committed_txid());
        };
        let entry = LedgerEntry {
            kind,
            claims_digest,
            write_set: (*ws).clone(),
        };
        let encoded = entry.encode();
        if encoded.len() > MAX_TRANSACTION_BYTES {
            self.store.release(pending);
            return Err(CommitFailure::TooLarge {
                bytes: encoded.len(),
            });
        }
        let payload = EntryPayload(encoded);
        let receiver = match self.raft.client_write_ff(payload).await {
            Ok(r) => r,
            Err(e) => {
                self.store.release(pending);
                return Err(CommitFailure::Internal(format!("Raft stopped: {e}")));
            }
        };
        drop(guard);
        let outcome = tokio::time::timeout(Duration::from_secs(30), receiver).await;
        self.store.release(pending);
        match outcome {
            Ok(Ok(Ok(resp))) => Ok(TxId::new(resp.log_id.leader_id.term, resp.log_id.index)),
            Ok(Ok(Err(openraft::error::ClientWriteError::ForwardToLeader(_)))) => {
                Err(CommitFailure::NotPrimary)
            }
            Ok(Ok(Err(e))) => Err(CommitFailure::Internal(e.to_string())),
            Ok(Err(_)) => Err(CommitFailure::Timeout(
                "Raft dropped the write (leadership changed?)".into(),
            )),
            Err(_) => Err(CommitFailure::Timeout("no commit within 30 s".into())),
        }
    }

    /// Runs an internal read-write transaction on the primary, retrying on
    /// conflict.
    pub async fn write_internal<F>(&self, f: F) -> anyhow::Result<TxId>
    where
        F: Fn(&mut Tx) -> anyhow::Result<()>,
    {
        for _ in 0..20 {
            let mut tx = self.store.begin();
            f(&mut tx)?;
            match self.commit(tx).await {
                Ok(id) => return Ok(id),
                Err(CommitFailure::Conflict) => continue,
                Err(e) => bail!("internal transaction failed: {e}"),
            }
        }
        bail!("internal transaction kept conflicting")
    }

    /// Drops pending write sets whenever this node stops being primary.
    fn watch_leadership(self: Arc<Self>) {
        let mut rx = self.raft.metrics();
        tokio::spawn(async move {
            let mut was_leader = false;
            while rx.changed().await.is_ok() {
                let is_leader = rx.borrow().current_leader == Some(self.id);
                if was_leader && !is_leader {
                    tracing::info!("no longer primary: dropping pending transactions");
                    self.store.release_all();
                }
                if is_leader && !was_leader {
                    tracing::info!(view = rx.borrow().current_term, "became primary");
                }
                was_leader = is_leader;
            }
        });
    }

    /// The primary's side of a join: endorse the node, add it as a learner,
    /// record it, and promote it to voter once it has caught up.
    pub async fn admit(self: &Arc<Self>, req: JoinRequest) -> anyhow::Result<JoinResponse> {
        let _one_at_a_time = self.join_lock.lock().await;
        let addr = NodeAddr {
            node_to_node: req.node_address.clone(),
            rpc: req.rpc_address.clone(),
        };
        req.node_address
            .parse::<std::net::SocketAddr>()
            .map_err(|_| anyhow!("node_address {:?} is not host:port", req.node_address))?;
        req.rpc_address
            .parse::<std::net::SocketAddr>()
            .map_err(|_| anyhow!("rpc_address {:?} is not host:port", req.rpc_address))?;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let csr_key = identity::csr_public_key(&req.csr)?;
        if let Some((id, _)) = membership
            .nodes()
            .find(|(_, a)| a.node_to_node == addr.node_to_node)
        {
            // A pending node asking again, with the same key: tell it
            // where it stands.
            let id = *id;
            let info = self
                .store
                .get_committed(tables::NODES_INFO, id.to_string().as_bytes())
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
                .ok_or_else(|| {
                    anyhow!(
                        "node {id} uses node_address {} but is not recorded yet; retry",
                        addr.node_to_node
                    )
                })?;
            let cert = info["cert"].as_str().unwrap_or_default().to_string();
            if identity::cert_public_key(&cert)? != csr_key {
                bail!("node {id} already uses node_address {}", addr.node_to_node);
            }
            let status = info["status"].as_str().unwrap_or_default().to_string();
            if status == tables::NODE_RETIRED {
                bail!("node {id} has been retired from the service; it cannot rejoin");
            }
            return Ok(JoinResponse {
                node_id: id,
                node_cert: cert,
                service_key: (status == tables::NODE_TRUSTED).then(|| self.service.key_pem.clone()),
                status,
            });
        }
        let node_id = membership.nodes().map(|(id, _)| *id).max().unwrap_or(0) + 1;
        let node_cert = identity::endorse_node(&req.csr, &self.service)?;
        // While the service is Opening, nodes join without a vote (as in
        // CCF); once it is Open, governance must trust each new node.
        let status = if tables::service_is_open(&self.store) {
            tables::NODE_PENDING
        } else {
            tables::NODE_TRUSTED
        };
        self.raft
            .add_learner(node_id, addr.clone(), false)
            .await
            .map_err(|e| anyhow!("adding node {node_id} as a learner: {e}"))?;
        let info = tables::node_info(&node_cert, &addr, status);
        self.write_internal(move |tx| tables::set_node(tx, node_id, &info))
            .await?;
        tracing::info!(
            node_id,
            status,
            "node joined as a learner; once Trusted it becomes a voter when caught up"
        );
        Ok(JoinResponse {
            node_id,
            node_cert,
            service_key: (status == tables::NODE_TRUSTED).then(|| self.service.key_pem.clone()),
            status: status.to_string(),
        })
    }

    /// Promotes a Trusted learner to voter once it has caught up (at most
    /// one waiter per node).
    pub fn promote_in_background(self: Arc<Self>, node_id: u64) {
        {
            let mut promoting = self.promoting.lock().unwrap_or_else(|e| e.into_inner());
            if !promoting.insert(node_id) {
                return;
            }
        }
        tokio::spawn(async move {
            self.clone().promote_when_caught_up(node_id).await;
            self.promoting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&node_id);
        });
    }

    async fn promote_when_caught_up(self: Arc<Self>, node_id: u64) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let m = self.metrics();
            if m.current_leader != Some(self.id) {
                tracing::warn!(
                    node_id,
                    "lost primary role before promoting node; the operator must retry the join"
                );
                return;
            }
            let target = m.last_applied.map(|l| l.index).unwrap_or(0);
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&node_id).cloned().flatten())
                .map(|l| l.index)
                .unwrap_or(0);
            if matched + 10 < target {
                continue;
            }
            let mut ids = std::collections::BTreeSet::new();
            ids.insert(node_id);
            match self
                .raft
                .change_membership(openraft::ChangeMembers::AddVoterIds(ids), false)
                .await
            {
                Ok(_) => {
                    tracing::info!(node_id, "node is now a voter");
                    return;
                }
                Err(e) => tracing::info!(node_id, "promotion not yet possible: {e}"),
            }
        }
        tracing::error!(
            node_id,
            "node did not catch up within 300 s; it stays a learner"
        );
    }
}

/// The constitution a new service starts with: the `.js` file, or every
/// `.js` file of the directory in name order, or the built-in default.
pub fn read_constitution(path: Option<&Path>) -> anyhow::Result<String> {
    let Some(path) = path else {
        return Ok(charter_governance::qjs::DEFAULT_CONSTITUTION.to_string());
    };
    let source = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading constitution directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "js"))
            .collect();
        files.sort();
        let mut out = String::new();
        for f in files {
            out.push_str(
                &std::fs::read_to_string(&f)
                    .with_context(|| format!("reading constitution file {}", f.display()))?,
            );
            out.push('\n');
        }
        out
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading constitution {}", path.display()))?
    };
    charter_governance::qjs::Constitution::new(
        source.clone(),
        charter_governance::qjs::GovLimits::default(),
    )
    .check()
    .map_err(|e| anyhow!("constitution {}: {e}", path.display()))?;
    Ok(source)
}

/// An app bundle directory as `app.json` text and module sources, checked.
pub fn read_app(
    dir: &Path,
) -> anyhow::Result<(String, std::collections::BTreeMap<String, String>)> {
    let bundle =
        AppBundle::load(dir).map_err(|e| anyhow!("loading app bundle {}: {e}", dir.display()))?;
    let meta = std::fs::read_to_string(dir.join("app.json"))
        .with_context(|| format!("reading {}", dir.join("app.json").display()))?;
    let modules = bundle
        .modules()
        .map(|(name, src)| (name.to_string(), src.to_string()))
        .collect();
    Ok((meta, modules))
}

/// `app.json` text with its `"engine"` set to `engine` (`app_engine` in
/// the config), so one bundle can be run on either engine.
fn with_engine(app_json: &str, engine: &str) -> anyhow::Result<String> {
    let mut meta: serde_json::Value =
        serde_json::from_str(app_json).context("app.json is not JSON")?;
    let Some(obj) = meta.as_object_mut() else {
        bail!("app.json is not a JSON object");
    };
    obj.insert("engine".into(), serde_json::Value::String(engine.into()));
    Ok(meta.to_string())
}

fn read_certs(paths: &[PathBuf], what: &str) -> anyhow::Result<Vec<String>> {
    paths
        .iter()
        .map(|p| {
            let pem = std::fs::read_to_string(p)
                .with_context(|| format!("reading {what} certificate {}", p.display()))?;
            identity::pem_to_der(&pem)
                .with_context(|| format!("{what} certificate {}", p.display()))?;
            Ok(pem)
        })
        .collect()
}
