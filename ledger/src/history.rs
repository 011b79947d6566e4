//! The ledger's history: one Merkle leaf per seqno, the signature entries
//! that sign its root, and the receipts they make possible.
//!
//! Every log entry (seqno 0, 1, 2, ...) is one leaf, whatever it carries:
//! an application transaction, a signature, or a Raft-internal entry
//! (membership change, a new leader's blank entry), whose write set is
//! empty. Keeping seqno = leaf index means no entry can be left out of
//! the signed history.
//!
//! A signature entry signs the root of the tree over the leaves
//! `0..=signed_seqno`, where `signed_seqno` is the last entry the primary
//! had applied when it signed (always below the signature's own seqno).
//! Every node checks, when it applies a signature entry, that the root in
//! it equals the root of its own tree at `signed_seqno`; a mismatch means
//! this node's history diverged, and applying stops.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{leaf_hash, Hash, MerkleError, MerkleTree, ProofStep};
use crate::receipt::{LeafComponentsJson, Receipt};

/// The map signature entries write to (CCF's name).
pub const SIGNATURES_MAP: &str = "public:ccf.internal.signatures";
/// The single key of [`SIGNATURES_MAP`].
pub const SIGNATURE_KEY: &[u8] = b"0";

/// The secret commit evidence is derived from. Every node of the service
/// holds it; it is revealed per transaction only inside receipts.
#[derive(Clone)]
pub struct CommitSecret([u8; 32]);

impl CommitSecret {
    pub fn new(bytes: [u8; 32]) -> Self {
        CommitSecret(bytes)
    }

    /// Derives the secret from other secret material (e.g. the service key).
    pub fn derive(material: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"charter commit evidence v1\0");
        h.update(material);
        CommitSecret(h.finalize().into())
    }

    /// `ce:<view>.<seqno>:<64 hex>`, CCF's commit evidence format. The
    /// nonce is SHA-256(secret ‖ view ‖ seqno): unguessable without the
    /// secret, so a leaf cannot be recomputed from public data alone.
    pub fn evidence(&self, view: u64, seqno: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(view.to_be_bytes());
        h.update(seqno.to_be_bytes());
        let nonce: Hash = h.finalize().into();
        format!("ce:{view}.{seqno}:{}", hex::encode(nonce))
    }
}

impl std::fmt::Debug for CommitSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitSecret(..)")
    }
}

/// What a leaf is made of, besides the commit evidence (derived).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafComponents {
    pub view: u64,
    pub write_set_digest: Hash,
    pub claims_digest: Option<Hash>,
}

/// The content of a signature entry (the value written to
/// [`SIGNATURES_MAP`]), in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord {
    /// The signing node.
    pub node_id: String,
    /// The view the signing primary was in.
    pub view: u64,
    /// The last seqno the signed root covers.
    pub seqno: u64,
    /// Root of the tree over leaves `0..=seqno`, hex.
    pub root: String,
    /// Ed25519 signature over the 32 root bytes, base64.
    pub signature: String,
    /// The signing node's certificate (PEM), endorsed by the service.
    pub cert: String,
}

impl SignatureRecord {
    pub fn root_bytes(&self) -> Option<Hash> {
        hex::decode(&self.root).ok()?.try_into().ok()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HistoryError {
    #[error("entry {seqno} arrived but the history expects seqno {expected} next")]
    Gap { seqno: u64, expected: u64 },
    #[error("signature entry {seqno} signs seqno {signed}, which is not before it")]
    SignsFuture { seqno: u64, signed: u64 },
    #[error("signature entry {seqno} has a malformed root {root:?}")]
    BadRoot { seqno: u64, root: String },
    #[error("signature entry {seqno}: signed root {signed} for seqno {signed_seqno} differs from this node's root {ours}; this node's history has diverged")]
    RootMismatch {
        seqno: u64,
        signed_seqno: u64,
        signed: String,
        ours: String,
    },
    #[error(transparent)]
    Tree(#[from] MerkleError),
}

/// Why no receipt can be given (yet).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptUnavailable {
    #[error("seqno {0} is not in this node's history yet")]
    Unknown(u64),
    #[error("seqno {0} is committed but no signature covers it yet")]
    NotSigned(u64),
    #[error(transparent)]
    Tree(#[from] MerkleError),
}

/// The Merkle tree over every entry, the components of every leaf, and the
/// signature entries: enough to produce a receipt for any transaction.
#[derive(Debug)]
pub struct History {
    secret: CommitSecret,
    tree: MerkleTree,
    /// Index = seqno.
    leaves: Vec<LeafComponents>,
    /// Signature entry seqno → what it signed.
    signatures: BTreeMap<u64, SignatureRecord>,
    /// Signed seqno → signature entry seqno, to find the first signature
    /// covering a transaction.
    by_signed: BTreeMap<u64, u64>,
}

impl History {
    pub fn new(secret: CommitSecret) -> Self {
        History {
            secret,
            tree: MerkleTree::new(),
            leaves: Vec::new(),
            signatures: BTreeMap::new(),
            by_signed: BTreeMap::new(),
        }
    }

    /// The next seqno this history expects.
    pub fn len(&self) -> u64 {
        self.leaves.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Root over leaves `0..=seqno`.
    pub fn root_through(&self, seqno: u64) -> Result<Hash, MerkleError> {
        self.tree.root_at(seqno + 1)
    }

    pub fn leaf_components(&self, seqno: u64) -> Option<&LeafComponents> {
        self.leaves.get(seqno as usize)
    }

    pub fn signature_at(&self, seqno: u64) -> Option<&SignatureRecord> {
        self.signatures.get(&seqno)
    }

    /// The newest signature entry: `(its seqno, record)`.
    pub fn last_signature(&self) -> Option<(u64, &SignatureRecord)> {
        self.signatures.iter().next_back().map(|(s, r)| (*s, r))
    }

    /// Every entry's leaf components and signature, in seqno order (for
    /// snapshots).
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = (u64, &LeafComponents, Option<&SignatureRecord>)> {
        self.leaves
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u64, c, self.signatures.get(&(i as u64))))
    }

    /// A copy of this history's secret, for building a fresh history.
    pub fn secret(&self) -> CommitSecret {
        self.secret.clone()
    }

    pub fn commit_evidence(&self, view: u64, seqno: u64) -> String {
        self.secret.evidence(view, seqno)
    }

    /// The leaf hash of `components` at `seqno`.
    pub fn leaf(&self, seqno: u64, components: &LeafComponents) -> Hash {
        let ce = self.secret.evidence(components.view, seqno);
        leaf_hash(
            &components.write_set_digest,
            &ce,
            &components.claims_digest.unwrap_or([0; 32]),
        )
    }

    /// Appends the leaf of entry `seqno`. A signature entry is checked
    /// against this node's own tree first; on mismatch nothing changes.
    pub fn append(
        &mut self,
        seqno: u64,
        components: LeafComponents,
        signature: Option<SignatureRecord>,
    ) -> Result<(), HistoryError> {
        if seqno != self.len() {
            return Err(HistoryError::Gap {
                seqno,
                expected: self.len(),
            });
        }
        if let Some(sig) = &signature {
            if sig.seqno >= seqno {
                return Err(HistoryError::SignsFuture {
                    seqno,
                    signed: sig.seqno,
                });
            }
            let signed = sig.root_bytes().ok_or_else(|| HistoryError::BadRoot {
                seqno,
                root: sig.root.clone(),
            })?;
            let ours = self.root_through(sig.seqno)?;
            if signed != ours {
                return Err(HistoryError::RootMismatch {
                    seqno,
                    signed_seqno: sig.seqno,
                    signed: sig.root.clone(),
                    ours: hex::encode(ours),
                });
            }
        }
        let leaf = self.leaf(seqno, &components);
        self.tree.append(leaf);
        self.leaves.push(components);
        if let Some(sig) = signature {
            self.by_signed.entry(sig.seqno).or_insert(seqno);
            self.signatures.insert(seqno, sig);
        }
        Ok(())
    }

    /// A receipt for the transaction at `seqno`: the first signature entry
    /// that covers it, and the path from its leaf to that signed root.
    /// A signature entry's own receipt has its signed root as the leaf and
    /// an empty proof.
    pub fn receipt(&self, seqno: u64) -> Result<Receipt, ReceiptUnavailable> {
        let components = self
            .leaf_components(seqno)
            .ok_or(ReceiptUnavailable::Unknown(seqno))?;
        if let Some(sig) = self.signatures.get(&seqno) {
            return Ok(Receipt {
                cert: sig.cert.clone(),
                node_id: sig.node_id.clone(),
                signature: sig.signature.clone(),
                proof: Vec::new(),
                leaf_components: None,
                leaf: Some(sig.root.clone()),
            });
        }
        let (_, sig_seqno) = self
            .by_signed
            .range(seqno..)
            .next()
            .ok_or(ReceiptUnavailable::NotSigned(seqno))?;
        let sig = &self.signatures[sig_seqno];
        let proof: Vec<ProofStep> = self.tree.path_to(seqno, sig.seqno + 1)?;
        Ok(Receipt {
            cert: sig.cert.clone(),
            node_id: sig.node_id.clone(),
            signature: sig.signature.clone(),
            proof,
            leaf_components: Some(LeafComponentsJson {
                write_set_digest: hex::encode(components.write_set_digest),
                commit_evidence: self.secret.evidence(components.view, seqno),
                claims_digest: hex::encode(components.claims_digest.unwrap_or([0; 32])),
            }),
            leaf: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::verify_path;
    use crate::receipt::leaf_of;

    fn comps(view: u64, n: u8) -> LeafComponents {
        LeafComponents {
            view,
            write_set_digest: [n; 32],
            claims_digest: None,
        }
    }

    fn history(n: u64) -> History {
        let mut h = History::new(CommitSecret::derive(b"test"));
        for s in 0..n {
            h.append(s, comps(2, s as u8), None).unwrap();
        }
        h
    }

    fn sig_for(h: &History, signed: u64) -> SignatureRecord {
        SignatureRecord {
            node_id: "1".into(),
            view: 2,
            seqno: signed,
            root: hex::encode(h.root_through(signed).unwrap()),
            signature: "c2ln".into(),
            cert: "cert".into(),
        }
    }

    #[test]
    fn commit_evidence_is_ccf_shaped_and_secret_dependent() {
        let a = CommitSecret::derive(b"a").evidence(3, 42);
        let b = CommitSecret::derive(b"b").evidence(3, 42);
        assert!(
            a.starts_with("ce:3.42:") && a.len() == "ce:3.42:".len() + 64,
            "{a}"
        );
        assert_ne!(a, b);
        assert_ne!(a, CommitSecret::derive(b"a").evidence(3, 43));
    }

    #[test]
    fn signatures_are_checked_against_our_own_tree() {
        let mut h = history(5);
        let good = sig_for(&h, 3);
        let mut bad = good.clone();
        bad.root = hex::encode([9u8; 32]);
        assert!(matches!(
            h.append(5, comps(2, 5), Some(bad)),
            Err(HistoryError::RootMismatch { .. })
        ));
        assert_eq!(h.len(), 5, "a rejected signature changes nothing");
        let mut future = good.clone();
        future.seqno = 5;
        assert!(matches!(
            h.append(5, comps(2, 5), Some(future)),
            Err(HistoryError::SignsFuture { .. })
        ));
        assert!(matches!(
            h.append(7, comps(2, 7), None),
            Err(HistoryError::Gap { .. })
        ));
        h.append(5, comps(2, 5), Some(good)).unwrap();
        assert_eq!(h.last_signature().map(|(s, _)| s), Some(5));
    }

    #[test]
    fn receipts_prove_inclusion_in_the_signed_root() {
        let mut h = history(5);
        assert_eq!(h.receipt(2), Err(ReceiptUnavailable::NotSigned(2)));
        assert_eq!(h.receipt(99), Err(ReceiptUnavailable::Unknown(99)));
        h.append(5, comps(2, 5), Some(sig_for(&h, 4))).unwrap();
        for s in 6..9 {
            h.append(s, comps(3, s as u8), None).unwrap();
        }
        h.append(9, comps(3, 9), Some(sig_for(&h, 8))).unwrap();
        for seqno in 0..9 {
            if seqno == 5 {
                continue;
            }
            let r = h.receipt(seqno).unwrap();
            let leaf = leaf_of(&r).unwrap();
            let signed = if seqno <= 4 { 4 } else { 8 };
            assert_eq!(
                verify_path(leaf, &r.proof),
                h.root_through(signed).unwrap(),
                "seqno {seqno}"
            );
        }
        // A signature entry's receipt: the root is the leaf, no proof.
        let r = h.receipt(5).unwrap();
        assert!(r.proof.is_empty());
        assert_eq!(
            r.leaf.as_deref(),
            Some(hex::encode(h.root_through(4).unwrap()).as_str())
        );
        // Seqno 9 (the last signature) is covered by itself only.
        assert!(h.receipt(9).is_ok());
    }
}
