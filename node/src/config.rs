//! The node's TOML configuration file.
//!
//! ```toml
//! data_dir = "workspace/node0"            # RocksDB, keys, certificates
//! rpc_address = "127.0.0.1:8000"          # HTTPS for users, members, operators
//! node_address = "127.0.0.1:8100"         # mutual-TLS channel between nodes
//! service_cert = "workspace/service_cert.pem"  # start: written here; join: read from here
//! app = "samples/logging"                 # app bundle directory (or --app)
//! app_engine = "quickjs"                  # start only: overrides "engine" in the app's app.json
//! initial_users = ["workspace/user0_cert.pem"]  # start only: users of the new service
//! initial_members = ["workspace/member0_cert.pem"]  # start only: the consortium
//! constitution = "samples/constitution"   # start only: a .js file or a directory of them (default: built in)
//! gov_request_window_secs = 300           # signed governance requests older/newer than this are refused
//! join_target = "127.0.0.1:8000"          # join only: rpc address of any node of the service
//! max_body_bytes = 1048576
//! js_workers = 2
//! signature_interval_tx = 5000            # sign the Merkle root after this many entries
//! signature_interval_ms = 1000            # ... or after this long, whichever comes first
//! ledger_chunk_bytes = 5242880            # ledger files close at a signature past this size
//! ```
//!
//! Relative paths are relative to the directory the node was started in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub rpc_address: SocketAddr,
    pub node_address: SocketAddr,
    pub service_cert: PathBuf,
    #[serde(default)]
    pub app: Option<PathBuf>,
    /// `"v8"` or `"quickjs"`: the engine the seeded app runs on, whatever
    /// its `app.json` says (first start only, like `app`).
    #[serde(default)]
    pub app_engine: Option<String>,
    #[serde(default)]
    pub initial_users: Vec<PathBuf>,
    #[serde(default)]
    pub initial_members: Vec<PathBuf>,
    #[serde(default)]
    pub join_target: Option<String>,
    #[serde(default)]
    pub constitution: Option<PathBuf>,
    #[serde(default = "default_gov_request_window_secs")]
    pub gov_request_window_secs: i64,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default = "default_js_workers")]
    pub js_workers: usize,
    #[serde(default = "default_signature_interval_tx")]
    pub signature_interval_tx: u64,
    #[serde(default = "default_signature_interval_ms")]
    pub signature_interval_ms: u64,
    #[serde(default = "default_ledger_chunk_bytes")]
    pub ledger_chunk_bytes: u64,
    #[serde(default)]
    pub raft: RaftTimings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftTimings {
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_election_min_ms")]
    pub election_timeout_min_ms: u64,
    #[serde(default = "default_election_max_ms")]
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat_ms: default_heartbeat_ms(),
            election_timeout_min_ms: default_election_min_ms(),
            election_timeout_max_ms: default_election_max_ms(),
        }
    }
}

fn default_gov_request_window_secs() -> i64 {
    300
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_signature_interval_tx() -> u64 {
    5000
}
fn default_ledger_chunk_bytes() -> u64 {
    5 * 1024 * 1024
}
fn default_signature_interval_ms() -> u64 {
    1000
}
fn default_js_workers() -> usize {
    2
}
fn default_heartbeat_ms() -> u64 {
    charter_consensus::config::DEFAULT_HEARTBEAT_MS
}
fn default_election_min_ms() -> u64 {
    charter_consensus::config::DEFAULT_ELECTION_MIN_MS
}
fn default_election_max_ms() -> u64 {
    charter_consensus::config::DEFAULT_ELECTION_MAX_MS
}

impl NodeConfig {
    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let config: NodeConfig = toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.rpc_address == self.node_address {
            bail!(
                "rpc_address and node_address must differ (both are {})",
                self.rpc_address
            );
        }
        if self.signature_interval_tx == 0 || self.signature_interval_ms == 0 {
            bail!("signature_interval_tx and signature_interval_ms must be at least 1");
        }
        if self.js_workers == 0 {
            bail!("js_workers must be at least 1");
        }
        if let Some(engine) = &self.app_engine {
            if charter_js::Engine::from_name(engine).is_none() {
                bail!("app_engine must be \"v8\" or \"quickjs\", not {engine:?}");
            }
        }
        if self.max_body_bytes == 0 {
            bail!("max_body_bytes must be at least 1");
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0
            || r.election_timeout_min_ms <= r.heartbeat_ms
            || r.election_timeout_max_ms <= r.election_timeout_min_ms
        {
            bail!("raft timings must satisfy 0 < heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_minimal_config_with_defaults_and_rejects_typos() {
        let c: NodeConfig = toml::from_str(
            r#"data_dir = "d"
rpc_address = "127.0.0.1:8000"
node_address = "127.0.0.1:8100"
service_cert = "s.pem""#,
        )
        .unwrap();
        c.check().unwrap();
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert!(toml::from_str::<NodeConfig>("data_dir = \"d\"\nrpc_adress = \"x\"").is_err());
    }

    #[test]
    fn app_engine_is_v8_or_quickjs() {
        let base = "data_dir = \"d\"\nrpc_address = \"127.0.0.1:8000\"\nnode_address = \"127.0.0.1:8100\"\nservice_cert = \"s.pem\"\n";
        for (engine, ok) in [("v8", true), ("quickjs", true), ("rhino", false)] {
            let c: NodeConfig = toml::from_str(&format!("{base}app_engine = {engine:?}")).unwrap();
            assert_eq!(c.check().is_ok(), ok, "{engine}");
        }
    }
}
