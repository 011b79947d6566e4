//! The ledger: Charter's key-value store and the entries that carry its
//! changes through consensus.
//!
//! - [`kv`]: named maps of byte keys and values, transactions with read and
//!   write sets, optimistic concurrency against the newest state (committed
//!   plus appended-but-uncommitted).
//! - [`entry`]: the deterministic binary encoding of a ledger entry (what
//!   travels in the Raft log and what an auditor parses).
//! - [`txid`]: transaction ids, `<view>.<seqno>`.
//! - [`files`]: ledger chunk files (the only I/O this crate does);
//! - [`audit`]: offline audit of a ledger directory;
//! - [`history`]: one Merkle leaf per seqno, signature entries, receipts;
//! - [`receipt`]: CCF's JSON receipt and its offline verification;
//! - [`cose_receipt`]: COSE receipts (RFC 9942, CCF profile), signed by
//!   the service key, and their offline verification;
//! - [`cose`], [`cbor`]: COSE_Sign1 with Ed25519, and the minimal strict
//!   CBOR it needs;
//! - [`merkle`]: the Merkle tree over transaction leaves (CCF's shape and
//!   hashes), its inclusion paths (receipt proofs) and its snapshot form.
//!
//! This crate does no I/O but its own ledger files, and knows nothing of
//! Raft, JS or HTTP.

pub mod audit;
pub mod cbor;
pub mod cose;
pub mod cose_receipt;
pub mod entry;
pub mod files;
pub mod history;
pub mod kv;
pub mod merkle;
pub mod receipt;
pub mod txid;

pub use entry::{EntryError, EntryKind, LedgerEntry};
pub use kv::{CommitError, MapWrites, PendingId, Store, Tx, Version, WriteSet};
pub use merkle::{leaf_hash, verify_path, MerkleError, MerkleTree, ProofStep};
pub use txid::TxId;
