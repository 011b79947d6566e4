//! The receiving side of the Raft RPCs, independent of any HTTP framework:
//! the node's node-to-node server routes a POST body here and sends back
//! the bytes (status 200) or maps [`RpcError`] to a status.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{NodeId, Raft, TypeConfig};
use crate::wire::SnapshotChunk;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The body is not a valid request: answer 400.
    #[error("bad raft request body: {0}")]
    BadRequest(String),
    /// The response could not be encoded: answer 500.
    #[error("internal error: {0}")]
    Internal(String),
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(body).map_err(|e| RpcError::BadRequest(e.to_string()))
}

/// Encodes the whole `Result`: a Raft error (e.g. this node shutting down)
/// is a normal answer the caller re-raises, not a transport failure.
fn encode<T: Serialize>(result: &T) -> Result<Vec<u8>, RpcError> {
    serde_json::to_vec(result).map_err(|e| RpcError::Internal(e.to_string()))
}

/// `POST /raft/append`.
pub async fn handle_append(raft: &Raft, body: &[u8]) -> Result<Vec<u8>, RpcError> {
    let req: AppendEntriesRequest<TypeConfig> = parse(body)?;
    encode(&raft.append_entries(req).await)
}

/// `POST /raft/vote`.
pub async fn handle_vote(raft: &Raft, body: &[u8]) -> Result<Vec<u8>, RpcError> {
    let req: VoteRequest<NodeId> = parse(body)?;
    encode(&raft.vote(req).await)
}

/// `POST /raft/snapshot`: one chunk of a snapshot; the last one installs it.
pub async fn handle_snapshot(raft: &Raft, body: &[u8]) -> Result<Vec<u8>, RpcError> {
    let chunk: SnapshotChunk = parse(body)?;
    let req: InstallSnapshotRequest<TypeConfig> = chunk.into();
    encode(&raft.install_snapshot(req).await)
}
