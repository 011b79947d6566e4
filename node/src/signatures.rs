//! The primary signs the ledger's Merkle root: after
//! `signature_interval_tx` new entries or `signature_interval_ms`, whichever
//! comes first. A signature is itself an entry (kind `Signature`, writing
//! `public:ccf.internal.signatures`); once it commits, every entry it covers
//! has a receipt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use charter_ledger::history::{SignatureRecord, SIGNATURES_MAP, SIGNATURE_KEY};
use charter_ledger::EntryKind;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::Signer;

use crate::node::Node;

/// Runs for the life of the node; signs only while it is the primary.
pub fn spawn(node: Arc<Node>) -> anyhow::Result<()> {
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&node.identity.key_pem)
        .map_err(|e| anyhow::anyhow!("the node key is not an Ed25519 PKCS#8 key: {e}"))?;
    let interval = Duration::from_millis(node.config.signature_interval_ms);
    let every_tx = node.config.signature_interval_tx;
    // Check often enough to honour both intervals closely.
    let tick = (interval / 4).clamp(Duration::from_millis(5), Duration::from_millis(100));
    tokio::spawn(async move {
        let mut unsigned_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(tick).await;
            if !node.is_ready_primary() {
                unsigned_since = None;
                continue;
            }
            // What is applied and not yet covered by a signature?
            let (applied, signed, last_sig_entry) = {
                let h = node.history.lock().unwrap_or_else(|e| e.into_inner());
                let Some(applied) = h.len().checked_sub(1) else {
                    continue;
                };
                match h.last_signature() {
                    Some((at, sig)) => (applied, Some(sig.seqno), Some(at)),
                    None => (applied, None, None),
                }
            };
            if all_covered(applied, last_sig_entry.zip(signed)) {
                unsigned_since = None;
                continue;
            }
            let since = *unsigned_since.get_or_insert_with(Instant::now);
            let new_entries = applied - signed.unwrap_or(0);
            if new_entries < every_tx && since.elapsed() < interval {
                continue;
            }
            match sign(&node, &key, applied).await {
                Ok(()) => unsigned_since = None,
                Err(e) => tracing::warn!("signing the ledger failed (will retry): {e}"),
            }
        }
    });
    Ok(())
}

/// Whether every entry through `applied` is a signature or covered by one,
/// given the last signature entry's seqno and the seqno it signed through.
/// A signature covers what was applied when it was made, so entries
/// appended while it was being committed sit between what it signed and
/// itself: they need another signature even if no write follows.
fn all_covered(applied: u64, last_signature: Option<(u64, u64)>) -> bool {
    match last_signature {
        Some((at, signed_through)) => applied <= at && signed_through + 1 >= at,
        None => false,
    }
}

async fn sign(node: &Node, key: &ed25519_dalek::SigningKey, through: u64) -> anyhow::Result<()> {
    let root = node
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .root_through(through)?;
    let record = SignatureRecord {
        node_id: node.id.to_string(),
        view: node.metrics().current_term,
        seqno: through,
        root: hex::encode(root),
        signature: base64::engine::general_purpose::STANDARD.encode(key.sign(&root).to_bytes()),
        cert: node.identity.cert_pem.clone(),
    };
    let mut tx = node.store.begin();
    tx.set(SIGNATURES_MAP, SIGNATURE_KEY, &serde_json::to_vec(&record)?)?;
    let id = node
        .commit_entry(tx, EntryKind::Signature, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::debug!(%id, through, "signed the ledger");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::all_covered;

    #[test]
    fn entries_between_a_signature_and_what_it_signed_need_another_signature() {
        // Nothing signed yet.
        assert!(!all_covered(0, None));
        // Signature at 5 over 0..=4, nothing after it.
        assert!(all_covered(5, Some((5, 4))));
        // A write after the signature.
        assert!(!all_covered(6, Some((5, 4))));
        // Signature at 9 signed through 6: 7 and 8 were appended while it
        // was committed and are not covered, though 9 is the newest entry.
        assert!(!all_covered(9, Some((9, 6))));
        // The follow-up signature at 10 over 0..=9 covers them.
        assert!(all_covered(10, Some((10, 9))));
    }
}
