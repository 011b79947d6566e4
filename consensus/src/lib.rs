//! Raft for Charter, on openraft 0.9 (storage-v2):
//!
//! - [`types`]: the type configuration ([`TypeConfig`]), entry payload
//!   (an encoded `charter_ledger::LedgerEntry`), node addresses;
//! - [`storage`]: the log store and state machine in one RocksDB database
//!   ([`storage::open`]), the view history used for transaction status;
//! - [`network`]: Raft RPCs to peers over the node-to-node HTTPS channel;
//! - [`server`]: the handlers the node's node-to-node server calls;
//! - [`config`]: openraft settings.
//!
//! Putting it together (in the node):
//!
//! ```ignore
//! let (log, sm) = charter_consensus::open(&dir, store.clone()).await?;
//! let views = sm.view_history();
//! let log_reader = log.clone(); // for term_at
//! let config = Arc::new(charter_consensus::raft_config(100, 800, 1600)?);
//! let raft = Raft::new(node_id, config, Network::new(client), log, sm).await?;
//! ```

// openraft's own error types (StorageError, ConfigError) are large; every
// storage function must return them, so boxing ours would not help.
#![allow(clippy::result_large_err)]

pub mod config;
pub mod history_store;
mod log_store;
pub mod network;
pub mod server;
mod state_machine;
pub mod storage;
pub mod types;
mod wire;

pub use config::{default_raft_config, raft_config};
pub use network::{Network, NetworkConnection};
pub use server::{handle_append, handle_snapshot, handle_vote, RpcError};
pub use storage::{
    open, open_blocking, HistoryConfig, LogStore, SnapshotBuilder, StateMachine, ViewHistory,
};
pub use types::{EntryPayload, NodeAddr, NodeId, Raft, TypeConfig, WriteResponse};
pub use wire::{PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};

#[cfg(test)]
mod tests;
