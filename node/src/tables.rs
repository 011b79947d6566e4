//! The governance and internal tables the node itself reads and writes,
//! under CCF's names so CCF apps and constitutions find them.

use charter_consensus::NodeAddr;
use charter_ledger::Tx;

pub use charter_governance::{
    MEMBERS_CERTS, NODES_INFO, NODE_PENDING, NODE_RETIRED, NODE_TRUSTED, SERVICE_INFO,
    SERVICE_OPEN, SINGLETON_KEY, USERS_CERTS,
};

pub fn node_info(cert_pem: &str, addr: &NodeAddr, status: &str) -> serde_json::Value {
    serde_json::json!({
        "cert": cert_pem,
        "status": status,
        "rpc_address": addr.rpc,
        "node_address": addr.node_to_node,
    })
}

pub fn set_node(tx: &mut Tx, node_id: u64, info: &serde_json::Value) -> anyhow::Result<()> {
    tx.set(
        NODES_INFO,
        node_id.to_string().as_bytes(),
        info.to_string().as_bytes(),
    )?;
    Ok(())
}

/// A node's status in `public:ccf.gov.nodes.info`, from committed state.
pub fn node_status(store: &charter_ledger::Store, node_id: u64) -> Option<String> {
    let v = store.get_committed(NODES_INFO, node_id.to_string().as_bytes())?;
    let v: serde_json::Value = serde_json::from_slice(&v).ok()?;
    v.get("status")?.as_str().map(str::to_string)
}

/// Whether the service has been opened by governance (committed state).
pub fn service_is_open(store: &charter_ledger::Store) -> bool {
    store
        .get_committed(SERVICE_INFO, SINGLETON_KEY)
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
        .is_some_and(|v| v.get("status").and_then(|s| s.as_str()) == Some(SERVICE_OPEN))
}
