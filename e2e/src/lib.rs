//! A harness for end-to-end tests: real `charter` processes on loopback,
//! each with its own data directory, talked to over real TLS.
//!
//! The binary is found next to the test executable (`target/<profile>/charter`,
//! which `cargo test --workspace` builds) or at `$CHARTER_BIN`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

/// `samples/bench`'s bombs (`GET /app/bomb/{kind}`) and the error code
/// each must get with its 500; loadgen's `--mode bombs` and the e2e test
/// use the same table.
pub const BENCH_BOMBS: [(&str, &str); 8] = [
    ("loop", "JSExecutionTimeExceeded"),
    ("heap", "JSHeapLimitExceeded"),
    ("array_buffers", "JSHeapLimitExceeded"),
    ("string_doubling", "JSHeapLimitExceeded"),
    ("recursion", "JSException"),
    ("deep_json", "JSException"),
    ("huge_response", "JSHeapLimitExceeded"),
    ("throw", "JSException"),
];

/// Polls `check` every 100 ms until it holds; panics naming `what` if it
/// does not within `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn charter_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CHARTER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/cluster-1234 -> target/debug/charter
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("charter")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct NodeProc {
    pub index: usize,
    pub rpc_port: u16,
    pub config: PathBuf,
    verb: &'static str,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{}", self.rpc_port, path)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(charter_bin())
            .args(["node", self.verb, "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("CHARTER_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with `cargo build`)",
                    charter_bin().display()
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether this node's process was started (and not killed or stopped).
    pub fn started(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    /// Client with the registered user's certificate.
    pub user: reqwest::Client,
    /// Client with no certificate.
    pub anonymous: reqwest::Client,
    pub service_cert: PathBuf,
    /// The consortium: `(certificate, private key)` of each initial member.
    pub members: Vec<(PathBuf, PathBuf)>,
}

/// An HTTPS client that trusts only the service certificate and, if given,
/// presents a client certificate.
pub fn client(
    service_cert: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<reqwest::Client> {
    let pem = std::fs::read(service_cert)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let certs = rustls_pemfile::certs(&mut std::fs::read(cert)?.as_slice())
                .collect::<Result<Vec<_>, _>>()?;
            let key = rustls_pemfile::private_key(&mut std::fs::read(key)?.as_slice())?
                .ok_or_else(|| anyhow!("no key in {}", key.display()))?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Options for a test cluster.
pub struct ClusterOptions {
    pub nodes: usize,
    pub app: PathBuf,
    pub max_body_bytes: usize,
    /// Extra TOML lines for every node's config (top-level keys).
    pub extra_config: String,
    /// How many initial members (each acks, becoming Active).
    pub members: usize,
    /// Whether the members open the service once the nodes are up.
    pub open: bool,
    /// How many of the configured nodes to start (the rest can be started
    /// later with [`Cluster::restart`]); all if `None`.
    pub start: Option<usize>,
}

impl ClusterOptions {
    pub fn new(nodes: usize) -> Self {
        ClusterOptions {
            nodes,
            app: repo_root().join("samples/logging"),
            max_body_bytes: 1024 * 1024,
            extra_config: String::new(),
            members: 1,
            open: true,
            start: None,
        }
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Creates a key and self-signed certificate with `charter gov keygen`.
pub fn keygen(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let out = Command::new(charter_bin())
        .args(["gov", "keygen", "--name", name, "--out"])
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!("keygen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((
        dir.join(format!("{name}_cert.pem")),
        dir.join(format!("{name}_privk.pem")),
    ))
}

impl Cluster {
    pub async fn start(opts: ClusterOptions) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let (user_cert, user_key) = keygen(dir.path(), "user0")?;
        let members = (0..opts.members)
            .map(|i| keygen(dir.path(), &format!("member{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let member_certs: Vec<&PathBuf> = members.iter().map(|(c, _)| c).collect();
        let service_cert = dir.path().join("service_cert.pem");
        let mut nodes = Vec::new();
        let first_rpc = free_port();
        for i in 0..opts.nodes {
            let rpc_port = if i == 0 { first_rpc } else { free_port() };
            let node_port = free_port();
            let mut config = format!(
                "data_dir = {:?}\nrpc_address = \"127.0.0.1:{rpc_port}\"\nnode_address = \"127.0.0.1:{node_port}\"\nservice_cert = {:?}\nmax_body_bytes = {}\n",
                dir.path().join(format!("node{i}")),
                service_cert,
                opts.max_body_bytes,
            );
            config.push_str(&opts.extra_config);
            config.push('\n');
            config.push_str("[raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 800\nelection_timeout_max_ms = 1600\n");
            let config = if i == 0 {
                format!(
                    "app = {:?}\ninitial_users = [{:?}]\ninitial_members = {:?}\n{config}",
                    opts.app, user_cert, member_certs
                )
            } else {
                format!("join_target = \"127.0.0.1:{first_rpc}\"\n{config}")
            };
            let path = dir.path().join(format!("node{i}.toml"));
            std::fs::write(&path, config)?;
            nodes.push(NodeProc {
                index: i,
                rpc_port,
                config: path,
                verb: if i == 0 { "start" } else { "join" },
                log: dir.path().join(format!("node{i}.log")),
                child: None,
            });
        }
        nodes[0].spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !service_cert.exists() {
            if Instant::now() > deadline || !nodes[0].is_running() {
                bail!("node 0 did not come up:\n{}", nodes[0].log_tail(30));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let user = client(&service_cert, Some((&user_cert, &user_key)))?;
        let anonymous = client(&service_cert, None)?;
        let mut cluster = Cluster {
            dir,
            nodes,
            user,
            anonymous,
            service_cert,
            members,
        };
        cluster.wait_for_voters(1, Duration::from_secs(60)).await?;
        for i in 1..opts.start.unwrap_or(opts.nodes).min(opts.nodes) {
            cluster.nodes[i].spawn()?;
            cluster
                .wait_for_voters(i + 1, Duration::from_secs(90))
                .await?;
        }
        if opts.open {
            cluster.open_service()?;
            cluster.wait_until_open(Duration::from_secs(30)).await?;
        }
        Ok(cluster)
    }

    /// Runs `charter gov ARGS` as member `member` against node 0; returns
    /// whether it succeeded, and its stdout and stderr.
    pub fn gov(&self, member: usize, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        self.gov_on(0, member, args)
    }

    /// [`Cluster::gov`] against node `node`.
    pub fn gov_on(
        &self,
        node: usize,
        member: usize,
        args: &[&str],
    ) -> anyhow::Result<(bool, String, String)> {
        let (cert, key) = &self.members[member];
        let out = Command::new(charter_bin())
            .arg("gov")
            .args(args)
            .arg("--server")
            .arg(self.nodes[node].url(""))
            .arg("--service-cert")
            .arg(&self.service_cert)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// [`Cluster::gov`] that must succeed and print JSON.
    pub fn gov_json(&self, member: usize, args: &[&str]) -> anyhow::Result<Value> {
        let (ok, out, err) = self.gov(member, args)?;
        if !ok {
            bail!("charter gov {args:?} failed: {err}{out}");
        }
        serde_json::from_str(&out).with_context(|| format!("charter gov {args:?} printed {out}"))
    }

    /// Waits until every running node has applied the opening.
    pub async fn wait_until_open(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].started() {
                continue;
            }
            loop {
                let open = self
                    .get_json(i, "/gov/service/info")
                    .await
                    .is_ok_and(|v| v["status"] == "Open");
                if open {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("node {i} did not see the service open within {limit:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Every member acks; member 0 proposes transition_service_to_open
    /// and a majority votes for it.
    pub fn open_service(&self) -> anyhow::Result<()> {
        for m in 0..self.members.len() {
            let (ok, out, err) = self.gov(m, &["ack"])?;
            if !ok {
                bail!("member {m} could not ack: {err}{out}");
            }
        }
        let created = self.gov_json(0, &["propose", "transition_service_to_open"])?;
        let id = created["proposalId"]
            .as_str()
            .ok_or_else(|| anyhow!("no proposalId in {created}"))?
            .to_string();
        let mut state = created["proposalState"].clone();
        let mut voter = 0;
        while state == "Open" && voter < self.members.len() {
            state = self.gov_json(voter, &["vote", &id, "accept"])?["proposalState"].clone();
            voter += 1;
        }
        if state != "Accepted" {
            bail!("transition_service_to_open ended {state}");
        }
        Ok(())
    }

    pub fn client_for(&self, cert: &Path, key: &Path) -> anyhow::Result<reqwest::Client> {
        client(&self.service_cert, Some((cert, key)))
    }

    pub async fn get_json(&self, node: usize, path: &str) -> anyhow::Result<Value> {
        let r = self
            .anonymous
            .get(self.nodes[node].url(path))
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!("GET {path} on node {node}: {status} {v}");
        }
        Ok(v)
    }

    /// Waits until some running node reports `n` voters and a primary.
    pub async fn wait_for_voters(&mut self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].is_running() {
                    continue;
                }
                if let Ok(v) = self.get_json(i, "/node/network").await {
                    let voters = v["nodes"]
                        .as_array()
                        .map(|a| a.iter().filter(|n| n["voter"] == true).count())
                        .unwrap_or(0);
                    if voters >= n && v["primary_id"].is_string() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- node {} ---\n{}", n.index, n.log_tail(20)))
                    .collect();
                bail!(
                    "cluster did not reach {n} voters within {limit:?}\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The index (in `nodes`) of the node every running node agrees is primary.
    pub async fn primary(&mut self, limit: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + limit;
        loop {
            let mut seen = Vec::new();
            for i in 0..self.nodes.len() {
                if !self.nodes[i].is_running() {
                    continue;
                }
                let Ok(v) = self.get_json(i, "/node/network").await else {
                    continue;
                };
                let Some(pid) = v["primary_id"].as_str() else {
                    continue;
                };
                let Some(addr) = v["nodes"]
                    .as_array()
                    .and_then(|a| a.iter().find(|n| n["node_id"] == pid))
                    .and_then(|n| n["rpc_address"].as_str().map(str::to_string))
                else {
                    continue;
                };
                seen.push(addr);
            }
            if let Some(first) = seen.first() {
                if seen.iter().all(|s| s == first) {
                    if let Some(i) = self
                        .nodes
                        .iter_mut()
                        .position(|n| format!("127.0.0.1:{}", n.rpc_port) == *first)
                    {
                        if self.nodes[i].is_running() {
                            return Ok(i);
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("no agreed primary within {limit:?} (saw {seen:?})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until node `i` has committed at least `seqno`.
    pub async fn wait_for_commit(
        &self,
        i: usize,
        seqno: u64,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(v) = self.get_json(i, "/node/commit").await {
                let s = v["transaction_id"]
                    .as_str()
                    .and_then(|t| t.split_once('.'))
                    .and_then(|(_, s)| s.parse::<u64>().ok())
                    .unwrap_or(0);
                if s >= seqno {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "node {i} did not commit seqno {seqno} within {limit:?}:\n{}",
                    self.nodes[i].log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].spawn()
    }

    /// Writes `{"id", "msg": "message <id>"}` to the logging app's `path`
    /// (e.g. `/app/log/private`) on node `node` and returns the
    /// transaction id. A write that meets a failover may be refused with
    /// 503 (nothing applied): it is retried, as a client would.
    pub async fn log_write(&self, node: usize, path: &str, id: u64) -> anyhow::Result<(u64, u64)> {
        for _ in 0..50 {
            let r = self
                .user
                .post(self.nodes[node].url(path))
                .json(&serde_json::json!({"id": id, "msg": format!("message {id}")}))
                .send()
                .await?;
            let status = r.status();
            let txid = txid_of(&r);
            let body = r.text().await?;
            if status == 503 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            anyhow::ensure!(status == 200, "write {id} on node {node}: {status} {body}");
            return txid.ok_or_else(|| anyhow!("write {id}: no transaction id header"));
        }
        bail!("write {id} on node {node} kept getting 503")
    }
}

/// `view.seqno` from a response's transaction id header.
pub fn txid_of(resp: &reqwest::Response) -> Option<(u64, u64)> {
    let v = resp
        .headers()
        .get("x-ms-ccf-transaction-id")?
        .to_str()
        .ok()?;
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}
