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

impl RaftNetwork<TypeConfig> for NetworkConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(PATH_APPEND, &rpc, &option).await
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
