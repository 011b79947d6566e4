//! The openraft type configuration Charter runs with, and the small types
//! it is made of.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a Raft log entry carries for the application: the bytes of an
/// encoded [`charter_ledger::LedgerEntry`].
///
/// It stays encoded on purpose: the ledger entry's encoding is what the
/// Merkle tree and an offline auditor hash, so the bytes must travel through
/// Raft unchanged rather than being re-encoded on every node.
///
/// In serde (the log on disk, the node-to-node JSON) it is a base64 string,
/// which is about a quarter of the size JSON gives a byte array.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPayload(#[serde(with = "b64")] pub Vec<u8>);

impl fmt::Debug for EntryPayload {
    // Entries can be large; logs only need their size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryPayload({} bytes)", self.0.len())
    }
}

impl fmt::Display for EntryPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What applying one log entry returns to the `client_write` caller on the
/// leader: the transaction id the entry got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResponse {
    /// The Raft term of the entry (CCF's "view").
    pub view: u64,
    /// The Raft log index of the entry (CCF's "seqno").
    pub seqno: u64,
}

/// Where a node can be reached. Stored in Raft membership, so every node
/// learns every other node's addresses from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeAddr {
    /// `host:port` of the node-to-node (mutual TLS) HTTPS server.
    pub node_to_node: String,
    /// `host:port` of the client-facing HTTPS server.
    pub rpc: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{node_to_node: {}, rpc: {}}}",
            self.node_to_node, self.rpc
        )
    }
}

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Charter's Raft type configuration.
    pub TypeConfig:
        D = EntryPayload,
        R = WriteResponse,
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeAddr>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeAddr>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// serde helper: `Vec<u8>` as a standard base64 string.
pub(crate) mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_a_base64_string() {
        let p = EntryPayload(vec![0, 1, 2, 255]);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"AAEC/w==\"");
        assert_eq!(serde_json::from_str::<EntryPayload>(&json).unwrap(), p);
        assert!(serde_json::from_str::<EntryPayload>("\"not base64!\"").is_err());
    }
}
