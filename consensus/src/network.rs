//! Raft RPCs to other nodes: JSON over the node-to-node HTTPS channel.
//!
//! A response body is the JSON of `Result<Response, RaftError>`: the
//! remote Raft's own error travels back and is re-raised here as a
//! [`RemoteError`], exactly as if the call had been local.

use std::error::Error;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::AnyError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{NodeAddr, NodeId, TypeConfig};
use crate::wire::{SnapshotChunk, PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, NodeAddr, RaftError<NodeId, E>>>;

/// Creates connections to peers. The client must already be set up for
/// mutual TLS with this node's certificate and the service's trust roots.
#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
}

impl Network {
    pub fn new(client: reqwest::Client) -> Self {
        Network { client }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> NetworkConnection {
        // reqwest pools connections per host inside the shared client, so a
        // "connection" here is just the target's address.
        NetworkConnection {
            client: self.client.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// RPCs to one peer.
pub struct NetworkConnection {
    client: reqwest::Client,
    target: NodeId,
    node: NodeAddr,
}

impl NetworkConnection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let url = format!("https://{}{}", self.node.node_to_node, path);
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let resp = self
            .client
            .post(&url)
            .timeout(option.hard_ttl())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(&url, e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.transport_error(&url, e))?;
        if !status.is_success() {
            // The peer is up but cannot serve Raft right now (starting,
            // shutting down, or refusing us): back off rather than retry at
            // once.
            let msg = format!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(256)])
            );
            return Err(RPCError::Unreachable(Unreachable::from(AnyError::error(
                msg,
            ))));
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&bytes).map_err(|e| {
                RPCError::Network(NetworkError::from(AnyError::error(format!(
                    "{url}: undecodable response: {e}"
                ))))
            })?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    /// Connection failures make openraft back off (`Unreachable`); other
    /// failures (timeouts, a connection dropped mid-request) are retried on
    /// the next heartbeat or replication round (`NetworkError`).
    fn transport_error<E: Error>(
        &self,
        url: &str,
        e: reqwest::Error,
    ) -> RPCError<NodeId, NodeAddr, RaftError<NodeId, E>> {
        tracing::debug!(target = self.target, %url, error = %e, "raft rpc failed");
        let err = AnyError::error(format!("{url}: {e}"));
        if e.is_connect() {
            RPCError::Unreachable(Unreachable::from(err))
        } else {
            RPCError::Network(NetworkError::from(err))
        }
    }
}

/// Entry payload bytes sent in one AppendEntries. openraft gives each
/// AppendEntries one heartbeat interval to complete; a batch of several
/// megabytes does not make it, is retried forever, and the followers start
/// elections. So a large batch is cut here, and the rest follows at once
/// in the next round (openraft's `PartialSuccess`).
pub const MAX_APPEND_PAYLOAD_BYTES: usize = 256 * 1024;

/// How many of `entries` to send: up to the byte budget, at least one.
fn entries_that_fit(entries: &[crate::types::Entry]) -> usize {
    let mut bytes = 0;
    for (i, e) in entries.iter().enumerate() {
        bytes += match &e.payload {
            openraft::EntryPayload::Normal(p) => p.0.len(),
            _ => 0,
        };
        if i > 0 && bytes > MAX_APPEND_PAYLOAD_BYTES {
            return i;
        }
    }
    entries.len()
}

impl RaftNetwork<TypeConfig> for NetworkConnection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let keep = entries_that_fit(&rpc.entries);
        if keep == rpc.entries.len() {
            return self.call(PATH_APPEND, &rpc, &option).await;
        }
        rpc.entries.truncate(keep);
        let last_sent = rpc.entries.last().map(|e| e.log_id);
        match self.call(PATH_APPEND, &rpc, &option).await? {
            AppendEntriesResponse::Success => Ok(AppendEntriesResponse::PartialSuccess(last_sent)),
            other => Ok(other),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(PATH_SNAPSHOT, &SnapshotChunk::from(rpc), &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(PATH_VOTE, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Entry, EntryPayload};

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(EntryPayload(vec![0; bytes])),
        }
    }

    #[test]
    fn large_batches_are_cut_but_never_to_nothing() {
        assert_eq!(entries_that_fit(&[]), 0);
        let small: Vec<Entry> = (1..=100).map(|i| entry(i, 100)).collect();
        assert_eq!(entries_that_fit(&small), 100);
        let big: Vec<Entry> = (1..=6).map(|i| entry(i, 1 << 20)).collect();
        assert_eq!(
            entries_that_fit(&big),
            1,
            "one oversized entry still goes alone"
        );
        let mixed = vec![
            entry(1, 200 * 1024),
            entry(2, 50 * 1024),
            entry(3, 50 * 1024),
        ];
        assert_eq!(entries_that_fit(&mixed), 2);
    }
}
