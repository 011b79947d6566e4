//! What `ccf.consensus` reads in JS handlers: this node's view of Raft,
//! given to the JS engine as a [`ConsensusView`].

use std::sync::{Arc, Weak};

use charter_js::ConsensusView;
use charter_ledger::TxId;

use crate::node::Node;

/// The node, held weakly: the engine lives inside the node, so a strong
/// reference would keep both alive forever. Once the node is gone the
/// answers are those of an empty ledger.
pub struct NodeConsensus(Weak<Node>);

impl NodeConsensus {
    pub fn new(node: &Arc<Node>) -> Arc<NodeConsensus> {
        Arc::new(NodeConsensus(Arc::downgrade(node)))
    }
}

impl ConsensusView for NodeConsensus {
    fn last_committed(&self) -> (u64, u64) {
        match self.0.upgrade() {
            Some(node) => {
                let id = node.committed_txid();
                (id.view, id.seqno)
            }
            None => (0, 0),
        }
    }

    fn status(&self, view: u64, seqno: u64) -> &'static str {
        match self.0.upgrade() {
            Some(node) => crate::rpc::tx_status(&node, TxId::new(view, seqno)),
            None => "Unknown",
        }
    }

    fn view_for_seqno(&self, seqno: u64) -> Option<u64> {
        // Only seqnos this node has applied (committed) have a known view.
        let node = self.0.upgrade()?;
        if seqno == 0 || seqno > node.store.last_applied() {
            return None;
        }
        node.views.view_for_seqno(seqno)
    }
}
