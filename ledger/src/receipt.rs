//! Receipts in CCF's JSON form, and their offline verification with
//! nothing but the service certificate.
//!
//! ```json
//! {"cert": "<node certificate PEM>", "node_id": "1",
//!  "signature": "<base64 Ed25519 signature over the root>",
//!  "proof": [{"left": "<hex>"}, {"right": "<hex>"}],
//!  "leaf_components": {"write_set_digest": "<hex>",
//!                      "commit_evidence": "ce:2.15:<hex>",
//!                      "claims_digest": "<hex>"}}
//! ```
//!
//! A signature transaction's receipt has `"leaf": "<hex root>"` instead of
//! `leaf_components`, and an empty proof.
//!
//! Verification, in order (each failure names its check):
//! 1. **leaf**: the leaf components are well formed; the leaf is
//!    SHA-256(write_set_digest ‖ SHA-256(commit_evidence) ‖ claims_digest);
//! 2. **proof**: folding the proof steps over the leaf gives the root;
//! 3. **signature**: the node's Ed25519 key (from `cert`) signed that root;
//! 4. **endorsement**: `cert` is signed by the service certificate's key.
//!
//! A tampered leaf or proof gives a different root, which the signature
//! then does not match: that failure is reported as a signature failure
//! over the computed root, since nothing else can tell them apart.

use serde::{Deserialize, Serialize};

use crate::merkle::{leaf_hash, verify_path, Hash, ProofStep};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafComponentsJson {
    pub write_set_digest: String,
    pub commit_evidence: String,
    pub claims_digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub cert: String,
    pub node_id: String,
    pub signature: String,
    pub proof: Vec<ProofStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_components: Option<LeafComponentsJson>,
    /// For signature transactions: the signed root itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
}

/// Which check of a receipt failed, and why.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    #[error("receipt: {0}")]
    Format(String),
    #[error("leaf: {0}")]
    Leaf(String),
    #[error("proof: {0}")]
    Proof(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("endorsement: {0}")]
    Endorsement(String),
}

impl ReceiptError {
    /// The name of the failed check: `leaf`, `proof`, `signature`,
    /// `endorsement` (or `format`).
    pub fn check(&self) -> &'static str {
        match self {
            ReceiptError::Format(_) => "format",
            ReceiptError::Leaf(_) => "leaf",
            ReceiptError::Proof(_) => "proof",
            ReceiptError::Signature(_) => "signature",
            ReceiptError::Endorsement(_) => "endorsement",
        }
    }
}

fn hex32(what: &str, s: &str) -> Result<Hash, String> {
    let bytes = hex::decode(s).map_err(|e| format!("{what} is not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{what} must be 32 bytes, got {}", b.len()))
}

/// Checks the commit evidence looks like `ce:<view>.<seqno>:<64 hex>`.
pub(crate) fn check_commit_evidence(ce: &str) -> Result<(), String> {
    let rest = ce
        .strip_prefix("ce:")
        .ok_or_else(|| format!("commit_evidence {ce:?} does not start with \"ce:\""))?;
    let (txid, nonce) = rest
        .split_once(':')
        .ok_or_else(|| format!("commit_evidence {ce:?} is not ce:<view>.<seqno>:<hex>"))?;
    txid.parse::<crate::TxId>()
        .map_err(|e| format!("commit_evidence: {e}"))?;
    hex32("commit_evidence nonce", nonce)?;
    Ok(())
}

/// The leaf a receipt claims: from its components, or the `leaf` field of
/// a signature transaction's receipt.
pub fn leaf_of(receipt: &Receipt) -> Result<Hash, ReceiptError> {
    match (&receipt.leaf_components, &receipt.leaf) {
        (Some(c), None) => {
            let ws = hex32("write_set_digest", &c.write_set_digest).map_err(ReceiptError::Leaf)?;
            let claims = hex32("claims_digest", &c.claims_digest).map_err(ReceiptError::Leaf)?;
            check_commit_evidence(&c.commit_evidence).map_err(ReceiptError::Leaf)?;
            Ok(leaf_hash(&ws, &c.commit_evidence, &claims))
        }
        (None, Some(leaf)) => {
            if !receipt.proof.is_empty() {
                return Err(ReceiptError::Proof(
                    "a signature receipt must have an empty proof".into(),
                ));
            }
            hex32("leaf", leaf).map_err(ReceiptError::Leaf)
        }
        (Some(_), Some(_)) => Err(ReceiptError::Leaf(
            "both leaf and leaf_components are present".into(),
        )),
        (None, None) => Err(ReceiptError::Leaf(
            "neither leaf nor leaf_components is present".into(),
        )),
    }
}

/// The root the receipt's leaf and proof lead to.
pub fn root_of(receipt: &Receipt) -> Result<Hash, ReceiptError> {
    Ok(verify_path(leaf_of(receipt)?, &receipt.proof))
}

/// Verifies a receipt against the service certificate (PEM). Returns the
/// root the receipt proves inclusion in.
pub fn verify(receipt: &Receipt, service_cert_pem: &str) -> Result<Hash, ReceiptError> {
    let root = root_of(receipt)?;
    let node_key = ed25519_key_of_pem(&receipt.cert)
        .map_err(|e| ReceiptError::Signature(format!("node cert: {e}")))?;
    check_root_signature(&node_key, &root, &receipt.signature)?;
    check_endorsement(&receipt.cert, service_cert_pem).map_err(ReceiptError::Endorsement)?;
    Ok(root)
}

/// Verifies many receipts against one service certificate, remembering
/// which node certificates it has already seen endorsed (an auditor
/// checking a batch of receipts re-checks each node's endorsement once).
pub struct ReceiptVerifier {
    service_cert_pem: String,
    endorsed: std::collections::HashMap<String, ed25519_dalek::VerifyingKey>,
}

impl ReceiptVerifier {
    pub fn new(service_cert_pem: &str) -> Self {
        ReceiptVerifier {
            service_cert_pem: service_cert_pem.to_string(),
            endorsed: std::collections::HashMap::new(),
        }
    }

    /// The same checks as [`verify`], in the same order.
    pub fn verify(&mut self, receipt: &Receipt) -> Result<Hash, ReceiptError> {
        if let Some(key) = self.endorsed.get(&receipt.cert) {
            let root = root_of(receipt)?;
            check_root_signature(key, &root, &receipt.signature)?;
            return Ok(root);
        }
        let root = verify(receipt, &self.service_cert_pem)?;
        if let Ok(key) = ed25519_key_of_pem(&receipt.cert) {
            self.endorsed.insert(receipt.cert.clone(), key);
        }
        Ok(root)
    }
}

impl ReceiptVerifier {
    /// Verifies a batch of receipts; the answer for each is what
    /// [`ReceiptVerifier::verify`] would give. The root signatures of
    /// receipts whose node certificate is already known are checked
    /// together with Ed25519 batch verification (one multi-scalar
    /// multiplication for the whole batch, about twice as fast per
    /// signature); if the batch fails, each is checked alone to name the
    /// bad ones.
    pub fn verify_batch(&mut self, receipts: &[Receipt]) -> Vec<Result<Hash, ReceiptError>> {
        let mut out: Vec<Option<Result<Hash, ReceiptError>>> = vec![None; receipts.len()];
        let mut batch: Vec<(
            usize,
            Hash,
            ed25519_dalek::Signature,
            ed25519_dalek::VerifyingKey,
        )> = Vec::new();
        for (i, r) in receipts.iter().enumerate() {
            let Some(key) = self.endorsed.get(&r.cert).copied() else {
                out[i] = Some(self.verify(r));
                continue;
            };
            let prepared = root_of(r).and_then(|root| {
                decode_signature(&r.signature)
                    .map(|sig| (root, sig))
                    .map_err(ReceiptError::Signature)
            });
            match prepared {
                Ok((root, sig)) => batch.push((i, root, sig, key)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let messages: Vec<&[u8]> = batch.iter().map(|(_, root, _, _)| &root[..]).collect();
        let signatures: Vec<ed25519_dalek::Signature> = batch.iter().map(|b| b.2).collect();
        let keys: Vec<ed25519_dalek::VerifyingKey> = batch.iter().map(|b| b.3).collect();
        let all_good =
            !batch.is_empty() && ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok();
        for (i, root, _, key) in &batch {
            out[*i] = Some(if all_good {
                Ok(*root)
            } else {
                check_root_signature(key, root, &receipts[*i].signature).map(|()| *root)
            });
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ReceiptError::Format("not verified".into()))))
            .collect()
    }
}

fn check_root_signature(
    key: &ed25519_dalek::VerifyingKey,
    root: &Hash,
    signature: &str,
) -> Result<(), ReceiptError> {
    let signature = decode_signature(signature).map_err(ReceiptError::Signature)?;
    key.verify_strict(root, &signature).map_err(|_| {
        ReceiptError::Signature(format!(
            "the node's signature does not match the root {} computed from the leaf and proof",
            hex::encode(root)
        ))
    })
}

fn decode_signature(b64: &str) -> Result<ed25519_dalek::Signature, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("an Ed25519 signature is 64 bytes, got {}", b.len()))?;
    Ok(ed25519_dalek::Signature::from_bytes(&bytes))
}

/// The DER of the first certificate in a PEM document.
fn pem_der(pem: &str) -> Result<Vec<u8>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if pem.label != "CERTIFICATE" {
        return Err(format!("PEM block is {:?}, not CERTIFICATE", pem.label));
    }
    Ok(pem.contents)
}

const ED25519_OID: &str = "1.3.101.112";

fn ed25519_key(
    cert: &x509_parser::certificate::X509Certificate,
) -> Result<ed25519_dalek::VerifyingKey, String> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return Err(format!(
            "key algorithm {} is not Ed25519",
            spki.algorithm.algorithm
        ));
    }
    let bytes: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| "Ed25519 public key is not 32 bytes".to_string())?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|e| format!("bad Ed25519 public key: {e}"))
}

/// The Ed25519 public key in a PEM certificate.
pub fn ed25519_key_of_pem(pem: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let der = pem_der(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    ed25519_key(&cert)
}

/// Checks that `cert_pem` is signed by the key of `issuer_pem`.
pub fn check_endorsement(cert_pem: &str, issuer_pem: &str) -> Result<(), String> {
    let der = pem_der(cert_pem).map_err(|e| format!("node cert: {e}"))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| format!("node cert: {e}"))?;
    let issuer_der = pem_der(issuer_pem).map_err(|e| format!("service cert: {e}"))?;
    let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der)
        .map_err(|e| format!("service cert: {e}"))?;
    let key = ed25519_key(&issuer).map_err(|e| format!("service cert: {e}"))?;
    if cert.signature_algorithm.algorithm.to_id_string() != ED25519_OID {
        return Err("the node certificate is not signed with Ed25519".into());
    }
    let sig: [u8; 64] = cert
        .signature_value
        .data
        .as_ref()
        .try_into()
        .map_err(|_| "the node certificate's signature is not 64 bytes".to_string())?;
    let tbs: &[u8] = cert.tbs_certificate.as_ref();
    key.verify_strict(tbs, &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| {
            "the node certificate was not endorsed by this service's certificate".to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{CommitSecret, History, LeafComponents, SignatureRecord};
    use base64::Engine;
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    use ed25519_dalek::Signer;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ED25519};

    struct Service {
        cert_pem: String,
        key: KeyPair,
        params: CertificateParams,
    }

    fn service() -> Service {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.clone().self_signed(&key).unwrap();
        Service {
            cert_pem: cert.pem(),
            key,
            params,
        }
    }

    /// A node key and its certificate endorsed by `by`.
    fn node(by: &Service) -> (ed25519_dalek::SigningKey, String) {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let issuer = by.params.clone().self_signed(&by.key).unwrap();
        let cert = CertificateParams::new(vec!["n".to_string()])
            .unwrap()
            .signed_by(&key, &issuer, &by.key)
            .unwrap();
        let signing = ed25519_dalek::SigningKey::from_pkcs8_der(&key.serialize_der()).unwrap();
        (signing, cert.pem())
    }

    /// A history of 6 entries signed at seqno 6 by `key`/`cert`.
    fn signed_history(key: &ed25519_dalek::SigningKey, cert: &str) -> History {
        let mut h = History::new(CommitSecret::derive(b"svc"));
        for s in 0..6u64 {
            let c = LeafComponents {
                view: 2,
                write_set_digest: [s as u8; 32],
                claims_digest: if s == 3 { Some([7; 32]) } else { None },
            };
            h.append(s, c, None).unwrap();
        }
        let root = h.root_through(5).unwrap();
        let sig = SignatureRecord {
            node_id: "1".into(),
            view: 2,
            seqno: 5,
            root: hex::encode(root),
            signature: base64::engine::general_purpose::STANDARD.encode(key.sign(&root).to_bytes()),
            cert: cert.to_string(),
        };
        let c = LeafComponents {
            view: 2,
            write_set_digest: [6; 32],
            claims_digest: None,
        };
        h.append(6, c, Some(sig)).unwrap();
        h
    }

    #[test]
    fn genuine_receipts_verify_and_tampering_names_the_check() {
        let svc = service();
        let (key, cert) = node(&svc);
        let h = signed_history(&key, &cert);
        for seqno in 0..=6 {
            let r = h.receipt(seqno).unwrap();
            let json = serde_json::to_string(&r).unwrap();
            let back: Receipt = serde_json::from_str(&json).unwrap();
            assert_eq!(
                verify(&back, &svc.cert_pem).unwrap(),
                h.root_through(5).unwrap(),
                "seqno {seqno}"
            );
        }

        let r = h.receipt(3).unwrap();
        // A flipped digit in each leaf field.
        let flip = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            let i = b.len() - 1;
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            String::from_utf8(b).unwrap()
        };
        let mut bad = r.clone();
        let lc = bad.leaf_components.as_mut().unwrap();
        lc.write_set_digest = flip(&lc.write_set_digest);
        assert_eq!(
            verify(&bad, &svc.cert_pem).unwrap_err().check(),
            "signature"
        );
        let mut bad = r.clone();
        let lc = bad.leaf_components.as_mut().unwrap();
        lc.commit_evidence = flip(&lc.commit_evidence);
        assert_eq!(
            verify(&bad, &svc.cert_pem).unwrap_err().check(),
            "signature"
        );
        let mut bad = r.clone();
        bad.leaf_components.as_mut().unwrap().claims_digest = "zz".into();
        assert_eq!(verify(&bad, &svc.cert_pem).unwrap_err().check(), "leaf");
        let mut bad = r.clone();
        bad.leaf_components.as_mut().unwrap().commit_evidence = "ce:nope".into();
        assert_eq!(verify(&bad, &svc.cert_pem).unwrap_err().check(), "leaf");
        // A proof step flipped, or two steps swapped.
        let mut bad = r.clone();
        bad.proof[0] = match bad.proof[0] {
            ProofStep::Left(h) => ProofStep::Right(h),
            ProofStep::Right(h) => ProofStep::Left(h),
        };
        assert_eq!(
            verify(&bad, &svc.cert_pem).unwrap_err().check(),
            "signature"
        );
        let mut bad = r.clone();
        bad.proof.swap(0, 1);
        assert_eq!(
            verify(&bad, &svc.cert_pem).unwrap_err().check(),
            "signature"
        );
        // The signature itself.
        let mut bad = r.clone();
        bad.signature = base64::engine::general_purpose::STANDARD.encode([1u8; 64]);
        assert_eq!(
            verify(&bad, &svc.cert_pem).unwrap_err().check(),
            "signature"
        );
        // Checked against another service's certificate.
        let other = service();
        assert_eq!(
            verify(&r, &other.cert_pem).unwrap_err().check(),
            "endorsement"
        );
    }

    #[test]
    fn the_caching_verifier_agrees_with_verify() {
        let svc = service();
        let (key, cert) = node(&svc);
        let h = signed_history(&key, &cert);
        let mut v = ReceiptVerifier::new(&svc.cert_pem);
        for seqno in 0..=6 {
            let r = h.receipt(seqno).unwrap();
            assert_eq!(v.verify(&r).unwrap(), verify(&r, &svc.cert_pem).unwrap());
            let mut bad = r.clone();
            bad.signature = base64::engine::general_purpose::STANDARD.encode([1u8; 64]);
            assert_eq!(v.verify(&bad).unwrap_err().check(), "signature");
        }
        let mut other = ReceiptVerifier::new(&service().cert_pem);
        assert_eq!(
            other.verify(&h.receipt(1).unwrap()).unwrap_err().check(),
            "endorsement"
        );
        assert_eq!(
            other.verify(&h.receipt(1).unwrap()).unwrap_err().check(),
            "endorsement",
            "never cached"
        );
    }

    #[test]
    fn batch_verification_agrees_with_one_at_a_time() {
        let svc = service();
        let (key, cert) = node(&svc);
        let h = signed_history(&key, &cert);
        let good: Vec<Receipt> = (0..=6).map(|s| h.receipt(s).unwrap()).collect();
        let mut v = ReceiptVerifier::new(&svc.cert_pem);
        let results = v.verify_batch(&good);
        for (r, got) in good.iter().zip(&results) {
            assert_eq!(got.as_ref().unwrap(), &verify(r, &svc.cert_pem).unwrap());
        }
        // One bad signature and one bad proof in a batch: exactly those fail.
        let mut batch = good.clone();
        batch[2].signature = base64::engine::general_purpose::STANDARD.encode([1u8; 64]);
        match batch[4].proof.first_mut() {
            Some(ProofStep::Left(h) | ProofStep::Right(h)) => h[0] ^= 1,
            None => panic!("receipt 4 should have a proof"),
        }
        let results = v.verify_batch(&batch);
        for (i, got) in results.iter().enumerate() {
            match i {
                2 | 4 => assert_eq!(
                    got.as_ref().unwrap_err().check(),
                    "signature",
                    "receipt {i}"
                ),
                _ => assert!(got.is_ok(), "receipt {i}: {got:?}"),
            }
        }
        // Against another service, every receipt fails endorsement.
        let mut other = ReceiptVerifier::new(&service().cert_pem);
        assert!(other
            .verify_batch(&good)
            .iter()
            .all(|r| r.as_ref().unwrap_err().check() == "endorsement"));
    }

    #[test]
    fn a_node_the_service_never_endorsed_fails_endorsement() {
        let svc = service();
        let rogue_service = service();
        let (key, cert) = node(&rogue_service);
        let h = signed_history(&key, &cert);
        let r = h.receipt(2).unwrap();
        assert_eq!(
            verify(&r, &svc.cert_pem).unwrap_err().check(),
            "endorsement"
        );
        assert!(verify(&r, &rogue_service.cert_pem).is_ok());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let svc = service();
        for text in [
            "{}",
            "[]",
            "null",
            r#"{"cert":"x","node_id":"1","signature":"","proof":[]}"#,
        ] {
            if let Ok(r) = serde_json::from_str::<Receipt>(text) {
                assert!(verify(&r, &svc.cert_pem).is_err());
            }
        }
        let r = Receipt {
            cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            node_id: "1".into(),
            signature: "AAAA".into(),
            proof: vec![],
            leaf_components: None,
            leaf: Some(hex::encode([0u8; 32])),
        };
        assert!(verify(&r, &svc.cert_pem).is_err());
        assert!(verify(&r, "not a cert").is_err());
    }
}
