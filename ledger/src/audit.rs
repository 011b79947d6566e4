//! Offline audit of a ledger directory: re-parse every entry, recompute
//! every leaf and root, check every signature and its node's endorsement.
//! Needs nothing but the files and the service certificate, and only
//! reads, so it can run on a live node's directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::entry::{EntryKind, LedgerEntry};
use crate::files::{decode_frame, list_chunks, Chunk, FrameError};
use crate::history::{SignatureRecord, SIGNATURES_MAP, SIGNATURE_KEY};
use crate::merkle::{Hash, MerkleTree};
use crate::receipt::{check_endorsement, ed25519_key_of_pem};

/// What a successful audit found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub files: usize,
    pub bytes: u64,
    pub entries: u64,
    pub signatures: u64,
    pub last_seqno: Option<u64>,
    /// The last seqno covered by a verified signature.
    pub last_signed_seqno: Option<u64>,
    /// The seqno of the last signature entry.
    pub last_signature_seqno: Option<u64>,
    /// Entries after the last signature entry (not yet covered by one).
    pub unsigned_tail: u64,
    /// Root of the tree over every entry, hex.
    pub root: String,
    /// Root the last signature signed, hex.
    pub signed_root: Option<String>,
}

/// The first problem found: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{} in {} at byte {offset}: {reason}", seqno.map_or("before any entry".to_string(), |s| format!("seqno {s}")), file.display())]
pub struct AuditFailure {
    pub seqno: Option<u64>,
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// SHA-256 over the entry's write set encoding, which is the entry's
/// encoding after its fixed header (see `crate::entry`).
fn write_set_digest_of(entry_bytes: &[u8], entry: &LedgerEntry) -> Hash {
    let header = 3 + if entry.claims_digest.is_some() { 32 } else { 0 };
    Sha256::digest(&entry_bytes[header.min(entry_bytes.len())..]).into()
}

fn empty_write_set_digest() -> Hash {
    crate::entry::write_set_digest(&crate::WriteSet::default())
}

fn leaf(write_set_digest: &Hash, commit_evidence_digest: &Hash, claims: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(write_set_digest);
    h.update(commit_evidence_digest);
    h.update(claims);
    h.finalize().into()
}

/// Audits `dir`. `progress(done_bytes, total_bytes)` is called as it goes.
pub fn audit(
    dir: &Path,
    service_cert_pem: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<AuditReport, AuditFailure> {
    let fail = |seqno: Option<u64>, file: &Path, offset: u64, reason: String| AuditFailure {
        seqno,
        file: file.to_path_buf(),
        offset,
        reason,
    };
    let chunks = list_chunks(dir)
        .map_err(|e| fail(None, dir, 0, format!("cannot list the directory: {e}")))?;
    if chunks.is_empty() {
        return Err(fail(
            None,
            dir,
            0,
            "no ledger files (ledger_*) in this directory".into(),
        ));
    }
    let total: u64 = chunks
        .iter()
        .map(|c| std::fs::metadata(&c.path).map(|m| m.len()).unwrap_or(0))
        .sum();
    let empty_ws = empty_write_set_digest();
    let mut tree = MerkleTree::new();
    let mut endorsed: HashSet<String> = HashSet::new();
    let mut report = AuditReport {
        files: chunks.len(),
        bytes: 0,
        entries: 0,
        signatures: 0,
        last_seqno: None,
        last_signed_seqno: None,
        last_signature_seqno: None,
        unsigned_tail: 0,
        root: String::new(),
        signed_root: None,
    };
    let mut expected: u64 = 0;
    let last_index = chunks.len() - 1;
    for (i, Chunk { path, first, last }) in chunks.iter().enumerate() {
        if *first != expected {
            let reason = if *first > expected {
                format!(
                    "seqnos {expected}..{} are missing: no chunk file holds them",
                    first - 1
                )
            } else {
                format!("this chunk starts at seqno {first}, which an earlier chunk already holds")
            };
            return Err(fail(Some(expected), path, 0, reason));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| fail(Some(expected), path, 0, format!("cannot read: {e}")))?;
        let mut at = 0usize;
        while at < bytes.len() {
            let (frame, n) = match decode_frame(&bytes[at..]) {
                Ok(f) => f,
                // The newest chunk of a live node may end in an entry
                // still being written.
                Err(FrameError::Truncated(_)) if i == last_index && last.is_none() => break,
                Err(e) => return Err(fail(Some(expected), path, at as u64, e.to_string())),
            };
            let offset = at as u64;
            if frame.seqno != expected {
                return Err(fail(
                    Some(expected),
                    path,
                    offset,
                    format!("expected seqno {expected}, found {}", frame.seqno),
                ));
            }
            let seqno = frame.seqno;
            let (ws_digest, claims, signature) = match &frame.entry {
                None => (empty_ws, [0u8; 32], None),
                Some(entry_bytes) => {
                    let entry = LedgerEntry::decode(entry_bytes).map_err(|e| {
                        fail(Some(seqno), path, offset, format!("bad ledger entry: {e}"))
                    })?;
                    let signature = match entry.kind {
                        EntryKind::Signature => {
                            let value = entry
                                .write_set
                                .maps
                                .get(SIGNATURES_MAP)
                                .and_then(|m| m.writes.get(SIGNATURE_KEY))
                                .and_then(|v| v.as_ref())
                                .ok_or_else(|| {
                                    fail(
                                        Some(seqno),
                                        path,
                                        offset,
                                        "signature entry without a signature".into(),
                                    )
                                })?;
                            let record: SignatureRecord =
                                serde_json::from_slice(value).map_err(|e| {
                                    fail(
                                        Some(seqno),
                                        path,
                                        offset,
                                        format!("unreadable signature: {e}"),
                                    )
                                })?;
                            Some(record)
                        }
                        EntryKind::Transaction => None,
                    };
                    (
                        write_set_digest_of(entry_bytes, &entry),
                        entry.claims_digest.unwrap_or([0; 32]),
                        signature,
                    )
                }
            };
            if let Some(sig) = &signature {
                check_signature(&tree, sig, seqno, service_cert_pem, &mut endorsed)
                    .map_err(|reason| fail(Some(seqno), path, offset, reason))?;
                report.signatures += 1;
                report.last_signed_seqno = Some(sig.seqno);
                report.last_signature_seqno = Some(seqno);
                report.signed_root = Some(sig.root.clone());
                // Paths below the signed point are never needed again.
                let _ = tree.flush_to(sig.seqno);
            }
            tree.append(leaf(&ws_digest, &frame.commit_evidence_digest, &claims));
            report.entries += 1;
            report.last_seqno = Some(seqno);
            expected = seqno + 1;
            at += n;
            report.bytes += n as u64;
            if report.entries.is_multiple_of(4096) {
                progress(report.bytes, total);
            }
        }
        if let Some(last) = last {
            if report.last_seqno != Some(*last) {
                return Err(fail(
                    report.last_seqno.map(|s| s + 1),
                    path,
                    bytes.len() as u64,
                    format!(
                        "the file name says it ends at seqno {last}, its entries end at {:?}",
                        report.last_seqno
                    ),
                ));
            }
        }
    }
    progress(report.bytes, total);
    report.unsigned_tail = match (report.last_seqno, report.last_signature_seqno) {
        (Some(l), Some(s)) => l - s,
        (Some(l), None) => l + 1,
        _ => 0,
    };
    report.root = hex::encode(tree.root());
    Ok(report)
}

fn check_signature(
    tree: &MerkleTree,
    sig: &SignatureRecord,
    seqno: u64,
    service_cert_pem: &str,
    endorsed: &mut HashSet<String>,
) -> Result<(), String> {
    if sig.seqno >= seqno {
        return Err(format!(
            "signature signs seqno {}, which is not before it",
            sig.seqno
        ));
    }
    let ours = tree
        .root_at(sig.seqno + 1)
        .map_err(|e| format!("cannot compute the root at seqno {}: {e}", sig.seqno))?;
    if sig.root_bytes() != Some(ours) {
        return Err(format!(
            "signed root {} differs from the recomputed root {} over seqnos 0..={}",
            sig.root,
            hex::encode(ours),
            sig.seqno
        ));
    }
    let key =
        ed25519_key_of_pem(&sig.cert).map_err(|e| format!("signing node certificate: {e}"))?;
    let bytes = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&sig.signature)
            .map_err(|e| format!("signature is not base64: {e}"))?
    };
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| "signature is not 64 bytes".to_string())?;
    key.verify_strict(&ours, &ed25519_dalek::Signature::from_bytes(&bytes))
        .map_err(|_| {
            format!(
                "node {}'s signature over the root does not verify",
                sig.node_id
            )
        })?;
    if !endorsed.contains(&sig.cert) {
        check_endorsement(&sig.cert, service_cert_pem).map_err(|e| format!("endorsement: {e}"))?;
        endorsed.insert(sig.cert.clone());
    }
    Ok(())
}
