//! Makes governance take effect: watches the committed governance tables
//! and changes the running node to match, on every node.
//!
//! - `public:ccf.gov.modules` / `endpoints` / `js_app_engine` → the JS app
//!   is rebuilt and replaced (new requests use it; running ones finish on
//!   the old one);
//! - `public:ccf.gov.js_runtime_options` → the JS engine's limits;
//! - `public:ccf.gov.nodes.info` → on the primary only: a node marked
//!   Trusted becomes a Raft voter once caught up, a Retired one leaves the
//!   membership.
//!
//! Polling the tables' versions (cheap: one read lock per table) keeps
//! this independent of how the state got there: applied entries, a
//! snapshot, or a restart that reloaded RocksDB.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use charter_governance::{ENDPOINTS, JS_APP_ENGINE, JS_RUNTIME_OPTIONS, MODULES, SINGLETON_KEY};
use charter_js::{AppBundle, Limits};

use crate::node::Node;
use crate::tables;

const POLL: Duration = Duration::from_millis(50);

/// The range the node holds app limits to, whatever governance sets.
const MIN_HEAP_BYTES: usize = 1024 * 1024;
const MAX_HEAP_BYTES: usize = 4 * 1024 * 1024 * 1024;
const MIN_STACK_BYTES: usize = 64 * 1024;
const MAX_STACK_BYTES: usize = 64 * 1024 * 1024;
const MAX_EXECUTION_TIME_MS: u64 = 60_000;

pub fn spawn(node: Arc<Node>) {
    tokio::spawn(async move {
        let mut app_version = None;
        let mut limits_version = None;
        let mut nodes_version = None;
        let mut was_primary = false;
        loop {
            let app_now = (
                node.store.committed_map_version(MODULES),
                node.store.committed_map_version(ENDPOINTS),
                node.store.committed_map_version(JS_APP_ENGINE),
            );
            if app_version != Some(app_now) {
                app_version = Some(app_now);
                reload_app(&node);
            }
            let limits_now = node.store.committed_map_version(JS_RUNTIME_OPTIONS);
            if limits_version != Some(limits_now) {
                limits_version = Some(limits_now);
                reload_limits(&node);
            }
            // A new primary re-checks the nodes even if the table did not
            // change: its predecessor may have died mid-promotion.
            let primary = node.is_ready_primary();
            let nodes_now = (
                node.store.committed_map_version(tables::NODES_INFO),
                node.metrics().membership_config.log_id().map(|l| l.index),
            );
            if primary && (nodes_version != Some(nodes_now) || !was_primary) {
                nodes_version = Some(nodes_now);
                reconcile_membership(&node).await;
            }
            was_primary = primary;
            if !node.retired.load(Ordering::Relaxed)
                && tables::node_status(&node.store, node.id).as_deref()
                    == Some(tables::NODE_RETIRED)
            {
                node.retired.store(true, Ordering::Relaxed);
                tracing::warn!("governance retired this node: it refuses app and governance requests and leaves Raft once the membership no longer holds it; then stop it and delete its data directory");
            }
            // Raft stays up until the membership change that removes this
            // node is in its log: the primary may still need this node's
            // vote to commit that change.
            if node.retired.load(Ordering::Relaxed) {
                let still_member = node
                    .metrics()
                    .membership_config
                    .membership()
                    .nodes()
                    .any(|(id, _)| *id == node.id);
                if !still_member {
                    tracing::warn!("this retired node is out of the membership; stopping Raft");
                    if let Err(e) = node.raft.shutdown().await {
                        tracing::warn!("stopping Raft on the retired node: {e}");
                    }
                    return;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    });
}

fn reload_app(node: &Node) {
    let mut tx = node.store.begin_read_only();
    let bundle = match charter_governance::service::js_app(&mut tx) {
        None => None,
        Some((meta, modules)) => match AppBundle::from_parts(&meta, modules) {
            Ok(b) => Some(Arc::new(b)),
            Err(e) => {
                tracing::error!("the app in the governance tables does not load ({e}); /app answers 404 until it is fixed");
                None
            }
        },
    };
    tracing::info!(
        installed = bundle.is_some(),
        engine = bundle.as_ref().map(|b| b.engine().as_str()),
        "JS app (re)loaded from governance"
    );
    *node.app.write().unwrap_or_else(|e| e.into_inner()) = bundle;
}

fn reload_limits(node: &Node) {
    let Some(raw) = node.store.get_committed(JS_RUNTIME_OPTIONS, SINGLETON_KEY) else {
        return;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw) else {
        tracing::error!("public:ccf.gov.js_runtime_options is not JSON; limits unchanged");
        return;
    };
    let d = Limits::default();
    let num = |k: &str| v.get(k).and_then(|x| x.as_u64());
    // Whatever a constitution lets through, the node keeps the limits in a
    // range it can live with: a 60 s handler already holds a worker long.
    let limits = Limits {
        max_heap_bytes: num("max_heap_bytes")
            .map_or(d.max_heap_bytes, |x| x as usize)
            .clamp(MIN_HEAP_BYTES, MAX_HEAP_BYTES),
        max_stack_bytes: num("max_stack_bytes")
            .map_or(d.max_stack_bytes, |x| x as usize)
            .clamp(MIN_STACK_BYTES, MAX_STACK_BYTES),
        max_execution_time_ms: num("max_execution_time_ms")
            .unwrap_or(d.max_execution_time_ms)
            .clamp(1, MAX_EXECUTION_TIME_MS),
        return_exception_details: v
            .get("return_exception_details")
            .and_then(|x| x.as_bool())
            .unwrap_or(d.return_exception_details),
        log_exception_details: v
            .get("log_exception_details")
            .and_then(|x| x.as_bool())
            .unwrap_or(d.log_exception_details),
    };
    tracing::info!(?limits, "JS runtime limits set by governance");
    node.engine.set_limits(limits);
}

/// Primary only: Trusted nodes become voters, Retired nodes leave.
async fn reconcile_membership(node: &Arc<Node>) {
    let m = node.metrics();
    let membership = m.membership_config.membership().clone();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
    for id in &members {
        match tables::node_status(&node.store, *id).as_deref() {
            Some(tables::NODE_TRUSTED) if !voters.contains(id) => {
                node.clone().promote_in_background(*id);
            }
            Some(tables::NODE_RETIRED) if *id != node.id => {
                let mut ids = BTreeSet::new();
                ids.insert(*id);
                let change = if voters.contains(id) {
                    openraft::ChangeMembers::RemoveVoters(ids)
                } else {
                    openraft::ChangeMembers::RemoveNodes(ids)
                };
                match node.raft.change_membership(change, false).await {
                    Ok(_) => {
                        tracing::info!(node_id = id, "retired node removed from the membership")
                    }
                    Err(e) => {
                        tracing::warn!(node_id = id, "could not remove retired node yet: {e}")
                    }
                }
            }
            _ => {}
        }
    }
}
