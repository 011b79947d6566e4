//! What travels between nodes: the paths, and the JSON bodies where
//! openraft's own serde form is not good enough.

use openraft::raft::InstallSnapshotRequest;
use serde::{Deserialize, Serialize};

use crate::types::{b64, SnapshotMeta, TypeConfig, Vote};

/// Path of the AppendEntries RPC on the node-to-node server.
pub const PATH_APPEND: &str = "/raft/append";
/// Path of the RequestVote RPC.
pub const PATH_VOTE: &str = "/raft/vote";
/// Path of the InstallSnapshot RPC (one chunk per request).
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";

/// An InstallSnapshot chunk. openraft's request serializes its data as a
/// JSON array of numbers (about 3.5 bytes per byte); base64 is 1.33.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotChunk {
    vote: Vote,
    meta: SnapshotMeta,
    offset: u64,
    #[serde(with = "b64")]
    data: Vec<u8>,
    done: bool,
}

impl From<InstallSnapshotRequest<TypeConfig>> for SnapshotChunk {
    fn from(r: InstallSnapshotRequest<TypeConfig>) -> Self {
        SnapshotChunk {
            vote: r.vote,
            meta: r.meta,
            offset: r.offset,
            data: r.data,
            done: r.done,
        }
    }
}

impl From<SnapshotChunk> for InstallSnapshotRequest<TypeConfig> {
    fn from(c: SnapshotChunk) -> Self {
        InstallSnapshotRequest {
            vote: c.vote,
            meta: c.meta,
            offset: c.offset,
            data: c.data,
            done: c.done,
        }
    }
}
