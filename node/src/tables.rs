//! The governance and internal tables the node itself reads and writes,
//! under CCF's names so CCF apps and constitutions find them.

use charter_consensus::NodeAddr;
use charter_ledger::Tx;

use crate::identity;

pub use charter_governance::{MEMBERS_CERTS, NODES_INFO, SERVICE_INFO, USERS_CERTS};
/// The single key of the single-value service info map.
pub const SERVICE_KEY: &[u8] = b"service";

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

/// The service's first transaction: its certificate, initial users and
/// members, and the first node.
pub fn genesis(
    tx: &mut Tx,
    service_cert_pem: &str,
    users: &[String],
    members: &[String],
    node_id: u64,
    node: &serde_json::Value,
) -> anyhow::Result<()> {
    let info = serde_json::json!({"status": "Open", "cert": service_cert_pem});
    tx.set(SERVICE_INFO, SERVICE_KEY, info.to_string().as_bytes())?;
    for pem in users {
        tx.set(
            USERS_CERTS,
            identity::cert_id_pem(pem)?.as_bytes(),
            pem.as_bytes(),
        )?;
    }
    for pem in members {
        tx.set(
            MEMBERS_CERTS,
            identity::cert_id_pem(pem)?.as_bytes(),
            pem.as_bytes(),
        )?;
    }
    set_node(tx, node_id, node)
}
