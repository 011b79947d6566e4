//! COSE receipts (RFC 9942, COSE Receipts) in the CCF profile
//! (draft-ietf-scitt-receipts-ccf-profile), signed by the **service** key,
//! and their offline verification with nothing but the service
//! certificate.
//!
//! A COSE receipt is a tagged COSE_Sign1 (see [`crate::cose`]):
//!
//! ```text
//! 18([
//!   protected: << {
//!     1: -8,                        ; alg: EdDSA (Ed25519)
//!     4: h'<64 hex chars, ASCII>',  ; kid: see below
//!     395: 2,                       ; vds: CCF_LEDGER_SHA256
//!     "ccf.v1": {"txid": "V.S"}     ; last transaction the signed root covers
//!   } >>,
//!   unprotected: {
//!     396: {                        ; vdp: verifiable data structure proofs
//!       -1: [ << ccf-inclusion-proof >> ]   ; inclusion proofs (one)
//!     }
//!   },
//!   payload: nil,                   ; detached: the 32-byte Merkle root
//!   signature: h'<64 bytes>'        ; Ed25519 by the service key
//! ])
//!
//! ccf-inclusion-proof = {
//!   1: [ write_set_digest: bstr(32),      ; internal-transaction-hash
//!        commit_evidence: tstr,           ; internal-evidence, "ce:V.S:<hex>"
//!        claims_digest: bstr(32) ],       ; data-hash (zeros if none)
//!   2: [ [left: bool, sibling: bstr(32)], ... ]   ; leaf to root
//! }
//! ```
//!
//! The **kid** is the lowercase hex SHA-256 of the service public key's
//! DER SubjectPublicKeyInfo, as ASCII bytes (CCF's convention). It changes
//! only with the service key.
//!
//! The protected header holds no timestamp: Ed25519 is deterministic, so
//! every node holding the service key produces byte-identical receipts.
//!
//! The signed payload is the root of the tree through the last seqno a
//! committed signature entry signed: the same root the JSON receipt's node
//! signature covers. The payload is detached, so a verifier has to
//! recompute it from the leaf and path.
//!
//! **Signature transactions** get no COSE receipt (as in CCF): their JSON
//! receipt proves the signed root itself, which has no leaf components and
//! no path, so it does not fit `ccf-inclusion-proof`.
//!
//! Verification, in order (each failure names its check, as in
//! [`crate::receipt`]):
//! 1. **format**: a COSE_Sign1 with `alg: -8`, `vds: 2`, a nil payload and
//!    at least one inclusion proof, each a bstr-wrapped map with a leaf
//!    (`1`) and a path (`2`);
//! 2. **leaf**: each leaf is `[bstr(32), "ce:V.S:<64 hex>", bstr(32)]`;
//!    the leaf hash is SHA-256(write_set_digest ‖ SHA-256(commit_evidence)
//!    ‖ claims_digest);
//! 3. **proof**: each path element is `[bool, bstr(32)]`; folding a path
//!    over its leaf gives a root; every proof gives the same root;
//! 4. **signature**: the `kid`, if present, names the service
//!    certificate's key, and that key's Ed25519 signature verifies with the
//!    recomputed root as the detached payload.

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::cbor::{self, Value};
use crate::cose::{CoseError, CoseSign1, ALG, EDDSA, KID};
use crate::history::{History, ReceiptUnavailable};
use crate::merkle::{leaf_hash, verify_path, Hash, ProofStep};
use crate::receipt::{check_commit_evidence, ed25519_key_of_pem, ReceiptError};
use crate::TxId;

/// Header label: verifiable data structure (RFC 9942).
pub const VDS: i64 = 395;
/// Header label: verifiable data structure proofs (RFC 9942).
pub const VDP: i64 = 396;
/// Key of the inclusion proofs in the [`VDP`] map (RFC 9942).
pub const INCLUSION_PROOFS: i64 = -1;
/// `vds` value of a CCF ledger with SHA-256 (the CCF profile).
pub const CCF_LEDGER_SHA256: i64 = 2;
/// Protected header label of CCF's own parameters.
pub const CCF_V1: &str = "ccf.v1";
/// Key in [`CCF_V1`]: the last transaction the signed root covers.
pub const CCF_TXID: &str = "txid";
/// `ccf-inclusion-proof` keys.
pub const PROOF_LEAF: i64 = 1;
pub const PROOF_PATH: i64 = 2;

/// The components of a transaction's leaf, as a COSE receipt carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub write_set_digest: Hash,
    pub commit_evidence: String,
    /// Zeros when the transaction set no claims.
    pub claims_digest: Hash,
}

impl Leaf {
    pub fn hash(&self) -> Hash {
        leaf_hash(
            &self.write_set_digest,
            &self.commit_evidence,
            &self.claims_digest,
        )
    }
}

/// Why no COSE receipt can be given for a transaction.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoseReceiptUnavailable {
    #[error(transparent)]
    History(#[from] ReceiptUnavailable),
    #[error("seqno {0} is a signature transaction: COSE receipts cover transactions with leaf components only; ask for the JSON receipt (application/json)")]
    SignatureTransaction(u64),
    #[error("the history is inconsistent: {0}")]
    Inconsistent(String),
}

/// The DER SubjectPublicKeyInfo of an Ed25519 public key (RFC 8410).
fn ed25519_spki_der(key: &VerifyingKey) -> Vec<u8> {
    const PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    der
}

/// The receipt's `kid` for a service key: lowercase hex SHA-256 of its
/// DER SubjectPublicKeyInfo, as ASCII bytes.
pub fn kid(key: &VerifyingKey) -> Vec<u8> {
    hex::encode(Sha256::digest(ed25519_spki_der(key))).into_bytes()
}

fn leaf_value(leaf: &Leaf) -> Value {
    Value::Array(vec![
        Value::Bytes(leaf.write_set_digest.to_vec()),
        Value::Text(leaf.commit_evidence.clone()),
        Value::Bytes(leaf.claims_digest.to_vec()),
    ])
}

fn path_value(proof: &[ProofStep]) -> Value {
    Value::Array(
        proof
            .iter()
            .map(|step| {
                let left = matches!(step, ProofStep::Left(_));
                Value::Array(vec![Value::Bool(left), Value::Bytes(step.hash().to_vec())])
            })
            .collect(),
    )
}

/// Builds the COSE receipt of one transaction: its leaf, the path from it
/// to `root` (`verify_path(leaf.hash(), proof) == root`), the last
/// transaction `root` covers (`signed_txid`), signed with the service key.
pub fn build(
    leaf: &Leaf,
    proof: &[ProofStep],
    root: &Hash,
    signed_txid: TxId,
    service_key: &SigningKey,
) -> Vec<u8> {
    debug_assert_eq!(&verify_path(leaf.hash(), proof), root);
    let inclusion = Value::Map(vec![
        (Value::Int(PROOF_LEAF), leaf_value(leaf)),
        (Value::Int(PROOF_PATH), path_value(proof)),
    ]);
    let protected = vec![
        (Value::Int(ALG), Value::Int(EDDSA)),
        (
            Value::Int(KID),
            Value::Bytes(kid(&service_key.verifying_key())),
        ),
        (Value::Int(VDS), Value::Int(CCF_LEDGER_SHA256)),
        (
            Value::text(CCF_V1),
            Value::Map(vec![(
                Value::text(CCF_TXID),
                Value::Text(signed_txid.to_string()),
            )]),
        ),
    ];
    let unprotected = vec![(
        Value::Int(VDP),
        Value::Map(vec![(
            Value::Int(INCLUSION_PROOFS),
            Value::Array(vec![Value::Bytes(cbor::encode(&inclusion))]),
        )]),
    )];
    CoseSign1::sign_ed25519(protected, unprotected, root, true, service_key)
}

/// The COSE receipt of the transaction at `seqno`, from the same signature
/// and path as [`History::receipt`].
pub fn from_history(
    history: &History,
    seqno: u64,
    service_key: &SigningKey,
) -> Result<Vec<u8>, CoseReceiptUnavailable> {
    let components = *history
        .leaf_components(seqno)
        .ok_or(ReceiptUnavailable::Unknown(seqno))?;
    if history.signature_at(seqno).is_some() {
        return Err(CoseReceiptUnavailable::SignatureTransaction(seqno));
    }
    let json = history.receipt(seqno)?;
    let leaf = Leaf {
        write_set_digest: components.write_set_digest,
        commit_evidence: history.commit_evidence(components.view, seqno),
        claims_digest: components.claims_digest.unwrap_or([0; 32]),
    };
    let root = verify_path(leaf.hash(), &json.proof);
    // The signature entry the JSON receipt used: the first one after
    // `seqno` that covers it (signature entries come shortly after what
    // they sign, so this scan is short).
    let sig = (seqno + 1..history.len())
        .filter_map(|s| history.signature_at(s))
        .find(|sig| sig.seqno >= seqno && sig.signature == json.signature)
        .ok_or_else(|| {
            CoseReceiptUnavailable::Inconsistent(format!(
                "no signature entry after seqno {seqno} matches its receipt"
            ))
        })?;
    if sig.root_bytes() != Some(root) {
        return Err(CoseReceiptUnavailable::Inconsistent(format!(
            "the path of seqno {seqno} leads to {}, not the signed root {}",
            hex::encode(root),
            sig.root
        )));
    }
    let view = history
        .leaf_components(sig.seqno)
        .map(|c| c.view)
        .ok_or(ReceiptUnavailable::Unknown(sig.seqno))?;
    Ok(build(
        &leaf,
        &json.proof,
        &root,
        TxId::new(view, sig.seqno),
        service_key,
    ))
}

fn hash32(v: &Value) -> Option<Hash> {
    v.as_bytes()?.try_into().ok()
}

/// Decodes one `ccf-inclusion-proof` and folds it to a root.
fn root_of_proof(index: usize, proof: &Value) -> Result<Hash, ReceiptError> {
    let format = |what: &str| ReceiptError::Format(format!("inclusion proof {index}: {what}"));
    let leaf_err = |what: &str| ReceiptError::Leaf(format!("inclusion proof {index}: {what}"));
    let proof_err = |what: String| ReceiptError::Proof(format!("inclusion proof {index}: {what}"));
    let bytes = proof
        .as_bytes()
        .ok_or_else(|| format("not a byte string"))?;
    let proof = cbor::decode(bytes).map_err(|e| format(&e.to_string()))?;
    if proof.as_map().is_none() {
        return Err(format("not a map"));
    }
    let leaf = proof
        .map_get(&Value::Int(PROOF_LEAF))
        .ok_or_else(|| format("no leaf (1)"))?;
    let path = proof
        .map_get(&Value::Int(PROOF_PATH))
        .ok_or_else(|| format("no path (2)"))?;

    let leaf = match leaf.as_array() {
        Some([ws, ce, claims]) => {
            let write_set_digest = hash32(ws).ok_or_else(|| {
                leaf_err("internal-transaction-hash (write_set_digest) is not 32 bytes")
            })?;
            let commit_evidence = ce
                .as_text()
                .ok_or_else(|| leaf_err("internal-evidence (commit_evidence) is not text"))?;
            if commit_evidence.is_empty() || commit_evidence.len() > 1024 {
                return Err(leaf_err("internal-evidence must be 1 to 1024 bytes"));
            }
            check_commit_evidence(commit_evidence).map_err(|e| leaf_err(&e))?;
            let claims_digest = hash32(claims)
                .ok_or_else(|| leaf_err("data-hash (claims_digest) is not 32 bytes"))?;
            Leaf {
                write_set_digest,
                commit_evidence: commit_evidence.to_string(),
                claims_digest,
            }
        }
        _ => return Err(leaf_err("the leaf is not an array of 3 elements")),
    };

    let path = path
        .as_array()
        .ok_or_else(|| proof_err("the path is not an array".into()))?;
    let mut steps = Vec::with_capacity(path.len());
    for (i, element) in path.iter().enumerate() {
        let step = match element.as_array() {
            Some([Value::Bool(left), hash]) => {
                let hash = hash32(hash)
                    .ok_or_else(|| proof_err(format!("path element {i}: hash is not 32 bytes")))?;
                if *left {
                    ProofStep::Left(hash)
                } else {
                    ProofStep::Right(hash)
                }
            }
            _ => {
                return Err(proof_err(format!(
                    "path element {i} is not [left: bool, hash: bstr]"
                )))
            }
        };
        steps.push(step);
    }
    Ok(verify_path(leaf.hash(), &steps))
}

/// Verifies a COSE receipt against the service certificate (PEM). Returns
/// the root the receipt proves inclusion in.
pub fn verify(bytes: &[u8], service_cert_pem: &str) -> Result<Hash, ReceiptError> {
    let format = ReceiptError::Format;
    let msg = CoseSign1::parse(bytes).map_err(|e| format(e.to_string()))?;
    match msg.protected_header(&Value::Int(ALG)) {
        Some(Value::Int(EDDSA)) => {}
        other => {
            return Err(format(format!(
                "alg must be EdDSA (-8) in the protected header, got {other:?}"
            )))
        }
    }
    match msg.protected_header(&Value::Int(VDS)) {
        Some(Value::Int(CCF_LEDGER_SHA256)) => {}
        other => {
            return Err(format(format!(
                "vds (395) must be CCF_LEDGER_SHA256 (2) in the protected header, got {other:?}"
            )))
        }
    }
    if let Some(ccf) = msg.protected_header(&Value::text(CCF_V1)) {
        let txid = ccf
            .map_get(&Value::text(CCF_TXID))
            .and_then(Value::as_text)
            .ok_or_else(|| format("\"ccf.v1\" must be a map with a \"txid\" string".into()))?;
        txid.parse::<TxId>()
            .map_err(|e| format(format!("\"ccf.v1\" txid: {e}")))?;
    }
    if msg.payload.is_some() {
        return Err(format(
            "the payload must be detached (nil): the root is recomputed from the proof".into(),
        ));
    }
    let proofs = msg
        .unprotected_header(&Value::Int(VDP))
        .ok_or_else(|| format("no verifiable data structure proofs (396)".into()))?
        .map_get(&Value::Int(INCLUSION_PROOFS))
        .and_then(Value::as_array)
        .ok_or_else(|| format("no inclusion proofs (396 / -1)".into()))?;
    if proofs.is_empty() {
        return Err(format("the inclusion proof list is empty".into()));
    }

    let mut root = None;
    for (i, proof) in proofs.iter().enumerate() {
        let r = root_of_proof(i, proof)?;
        match root {
            None => root = Some(r),
            Some(first) if first != r => {
                return Err(ReceiptError::Proof(format!(
                    "inclusion proof {i} leads to root {}, proof 0 to {}",
                    hex::encode(r),
                    hex::encode(first)
                )))
            }
            Some(_) => {}
        }
    }
    let root = root.ok_or_else(|| format("no inclusion proof".into()))?;

    let key = ed25519_key_of_pem(service_cert_pem)
        .map_err(|e| ReceiptError::Signature(format!("service cert: {e}")))?;
    if let Some(k) = msg.protected_header(&Value::Int(KID)) {
        if k.as_bytes() != Some(kid(&key).as_slice()) {
            return Err(ReceiptError::Signature(
                "the receipt's kid does not name this service certificate's key".into(),
            ));
        }
    }
    msg.verify_ed25519(&key, Some(&root)).map_err(|e| match e {
        CoseError::BadSignature => ReceiptError::Signature(format!(
            "the service's signature does not match the root {} computed from the leaf and proof",
            hex::encode(root)
        )),
        other => ReceiptError::Signature(other.to_string()),
    })?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{CommitSecret, LeafComponents, SignatureRecord};
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ED25519};

    /// A service: its certificate (PEM) and its signing key.
    fn service() -> (String, SigningKey) {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let signing = SigningKey::from_pkcs8_der(&key.serialize_der()).unwrap();
        (cert.pem(), signing)
    }

    fn comps(view: u64, s: u64) -> LeafComponents {
        LeafComponents {
            view,
            write_set_digest: [s as u8; 32],
            claims_digest: s.is_multiple_of(3).then_some([s as u8 ^ 0xff; 32]),
        }
    }

    /// The JSON receipts' node signature is irrelevant to COSE receipts;
    /// the history only needs records with the right roots.
    fn sig_for(h: &History, view: u64, signed: u64) -> SignatureRecord {
        SignatureRecord {
            node_id: "1".into(),
            view,
            seqno: signed,
            root: hex::encode(h.root_through(signed).unwrap()),
            signature: format!("sig-{signed}"),
            cert: "cert".into(),
        }
    }

    /// Entries 0..=20: signatures at 6 (through 4: 5 was in flight), 12
    /// (through 11) and 20 (through 19), a view change at 9.
    fn history() -> History {
        let mut h = History::new(CommitSecret::derive(b"svc"));
        for s in 0..=20u64 {
            let view = if s < 9 { 2 } else { 3 };
            let sig = match s {
                6 => Some(sig_for(&h, 2, 4)),
                12 => Some(sig_for(&h, 3, 11)),
                20 => Some(sig_for(&h, 3, 19)),
                _ => None,
            };
            h.append(s, comps(view, s), sig).unwrap();
        }
        h
    }

    fn txid_of(bytes: &[u8]) -> String {
        let m = CoseSign1::parse(bytes).unwrap();
        m.protected_header(&Value::text(CCF_V1))
            .and_then(|c| c.map_get(&Value::text(CCF_TXID)))
            .and_then(Value::as_text)
            .unwrap()
            .to_string()
    }

    #[test]
    fn receipts_from_history_verify_and_match_the_json_receipts() {
        let (cert, key) = service();
        let h = history();
        for seqno in 0..20u64 {
            if [6, 12].contains(&seqno) {
                continue;
            }
            let bytes = from_history(&h, seqno, &key).unwrap();
            let root = verify(&bytes, &cert).unwrap_or_else(|e| panic!("seqno {seqno}: {e}"));
            let (signed, txid) = match seqno {
                0..=4 => (4, "2.4"),
                5..=11 => (11, "3.11"),
                _ => (19, "3.19"),
            };
            assert_eq!(root, h.root_through(signed).unwrap(), "seqno {seqno}");
            // The JSON receipt proves the same root.
            let json = h.receipt(seqno).unwrap();
            assert_eq!(crate::receipt::root_of(&json).unwrap(), root);
            assert_eq!(txid_of(&bytes), txid);
            // Deterministic: every node holding the key gives these bytes.
            assert_eq!(from_history(&h, seqno, &key).unwrap(), bytes);
        }
        // The layout, as documented.
        let bytes = from_history(&h, 3, &key).unwrap();
        let m = CoseSign1::parse(&bytes).unwrap();
        let labels: Vec<&Value> = m.protected.iter().map(|(k, _)| k).collect();
        assert_eq!(
            labels,
            [
                &Value::Int(1),
                &Value::Int(4),
                &Value::Int(395),
                &Value::text("ccf.v1")
            ]
        );
        assert_eq!(
            m.protected_header(&Value::Int(KID))
                .and_then(Value::as_bytes),
            Some(kid(&key.verifying_key()).as_slice())
        );
        assert_eq!(m.payload, None);
        let proofs = m.unprotected_header(&Value::Int(VDP)).unwrap();
        let proof = proofs
            .map_get(&Value::Int(INCLUSION_PROOFS))
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(proof.len(), 1);
        let proof = cbor::decode(proof[0].as_bytes().unwrap()).unwrap();
        let leaf = proof.map_get(&Value::Int(PROOF_LEAF)).unwrap();
        let json = h.receipt(3).unwrap();
        let lc = json.leaf_components.unwrap();
        assert_eq!(
            leaf,
            &Value::Array(vec![
                Value::Bytes(hex::decode(lc.write_set_digest).unwrap()),
                Value::Text(lc.commit_evidence),
                Value::Bytes(hex::decode(lc.claims_digest).unwrap()),
            ])
        );
        assert_eq!(
            proof
                .map_get(&Value::Int(PROOF_PATH))
                .and_then(Value::as_array)
                .map(<[_]>::len),
            Some(json.proof.len())
        );
    }

    #[test]
    fn what_has_no_cose_receipt() {
        let (_, key) = service();
        let h = history();
        for s in [6, 12, 20] {
            assert_eq!(
                from_history(&h, s, &key),
                Err(CoseReceiptUnavailable::SignatureTransaction(s))
            );
        }
        assert_eq!(
            from_history(&h, 99, &key),
            Err(ReceiptUnavailable::Unknown(99).into())
        );
        let mut h = history();
        h.append(21, comps(3, 21), None).unwrap();
        assert_eq!(
            from_history(&h, 21, &key),
            Err(ReceiptUnavailable::NotSigned(21).into())
        );
    }

    #[test]
    fn every_flipped_byte_fails_naming_a_check() {
        let (cert, key) = service();
        let h = history();
        let bytes = from_history(&h, 7, &key).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x40] {
                let mut bad = bytes.clone();
                bad[i] ^= mask;
                let err = verify(&bad, &cert)
                    .err()
                    .unwrap_or_else(|| panic!("byte {i} ^ {mask:#x} still verifies"));
                seen.insert(err.check());
            }
        }
        // Each kind of damage is caught, named after its check.
        for check in ["format", "leaf", "signature"] {
            assert!(seen.contains(check), "no flip failed {check}: {seen:?}");
        }

        // Specific parts, and the check each failure names.
        let m = CoseSign1::parse(&bytes).unwrap();
        let json = h.receipt(7).unwrap();
        let lc = json.leaf_components.clone().unwrap();
        let at = |needle: &[u8]| {
            bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
        };
        let flip = |i: usize, mask: u8| {
            let mut bad = bytes.clone();
            bad[i] ^= mask;
            verify(&bad, &cert).unwrap_err().check()
        };
        let wsd = hex::decode(&lc.write_set_digest).unwrap();
        let ce = lc.commit_evidence.as_bytes();
        let sibling = json.proof[0].hash();
        // A leaf digest or a path hash: another root, so the signature
        // fails over it.
        assert_eq!(flip(at(&wsd) + 5, 0x01), "signature");
        assert_eq!(flip(at(sibling) + 31, 0x01), "signature");
        // The commit evidence's nonce made non-hex: a malformed leaf.
        assert_eq!(flip(at(ce) + ce.len() - 1, 0x40), "leaf");
        // A path element's direction flag made a non-bool: the proof.
        let first_step = at(sibling) - 3;
        assert!(bytes[first_step] == 0xf4 || bytes[first_step] == 0xf5);
        // (0xf6 is null: well-formed CBOR, but not a bool.)
        assert_eq!(flip(first_step, bytes[first_step] ^ 0xf6), "proof");
        assert_eq!(flip(first_step, 0x01), "signature");
        // The protected header's content, and the signature itself.
        assert_eq!(flip(at(&m.protected_bytes) + 10, 0x01), "signature");
        assert_eq!(flip(at(&m.signature), 0x01), "signature");
        // The COSE tag.
        assert_eq!(flip(0, 0x01), "format");
    }

    #[test]
    fn several_proofs_must_agree() {
        let (cert, key) = service();
        let h = history();
        let one = |seqno: u64| {
            let bytes = from_history(&h, seqno, &key).unwrap();
            let m = CoseSign1::parse(&bytes).unwrap();
            m.unprotected_header(&Value::Int(VDP))
                .and_then(|v| v.map_get(&Value::Int(INCLUSION_PROOFS)))
                .and_then(Value::as_array)
                .unwrap()[0]
                .clone()
        };
        let resign = |proofs: Vec<Value>, root: &Hash| {
            let m = CoseSign1::parse(&from_history(&h, 1, &key).unwrap()).unwrap();
            CoseSign1::sign_ed25519(
                m.protected.clone(),
                vec![(
                    Value::Int(VDP),
                    Value::Map(vec![(Value::Int(INCLUSION_PROOFS), Value::Array(proofs))]),
                )],
                root,
                true,
                &key,
            )
        };
        let r4 = h.root_through(4).unwrap();
        // Two transactions under the same root: valid.
        let both = resign(vec![one(1), one(3)], &r4);
        assert_eq!(verify(&both, &cert), Ok(r4));
        // Under different roots: the proofs disagree.
        let mixed = resign(vec![one(1), one(8)], &r4);
        assert_eq!(verify(&mixed, &cert).unwrap_err().check(), "proof");
        // No proof at all.
        let none = resign(vec![], &r4);
        assert_eq!(verify(&none, &cert).unwrap_err().check(), "format");
    }

    #[test]
    fn another_service_key_fails_the_signature() {
        let (cert, _) = service();
        let (_, rogue) = service();
        let h = history();
        let bytes = from_history(&h, 2, &rogue).unwrap();
        let err = verify(&bytes, &cert).unwrap_err();
        assert_eq!(err.check(), "signature", "{err}");
        // Without a kid to give it away, the signature itself fails.
        let m = CoseSign1::parse(&bytes).unwrap();
        let protected: Vec<_> = m
            .protected
            .iter()
            .filter(|(k, _)| *k != Value::Int(KID))
            .cloned()
            .collect();
        let root = h.root_through(4).unwrap();
        let no_kid = CoseSign1::sign_ed25519(protected, m.unprotected, &root, true, &rogue);
        let err = verify(&no_kid, &cert).unwrap_err();
        assert_eq!(err.check(), "signature", "{err}");
        assert!(err.to_string().contains("does not match the root"), "{err}");
    }

    #[test]
    fn build_agrees_with_from_history() {
        let (cert, key) = service();
        let h = history();
        let c = *h.leaf_components(8).unwrap();
        let leaf = Leaf {
            write_set_digest: c.write_set_digest,
            commit_evidence: h.commit_evidence(c.view, 8),
            claims_digest: c.claims_digest.unwrap_or([0; 32]),
        };
        let proof = h.receipt(8).unwrap().proof;
        let root = h.root_through(11).unwrap();
        let bytes = build(&leaf, &proof, &root, TxId::new(3, 11), &key);
        assert_eq!(bytes, from_history(&h, 8, &key).unwrap());
        assert_eq!(verify(&bytes, &cert), Ok(root));
    }

    #[test]
    fn garbage_fails_cleanly() {
        let (cert, key) = service();
        let h = history();
        let good = from_history(&h, 2, &key).unwrap();
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            b"{}".to_vec(),
            b"\x00".to_vec(),
            vec![0xd2],
            vec![0xd2, 0x84],
            cbor::encode(&Value::Null),
            good[..good.len() - 1].to_vec(),
            [good.as_slice(), &[0]].concat(),
        ];
        // A signed Sign1 with an attached payload, or the wrong vds.
        let m = CoseSign1::parse(&good).unwrap();
        let root = h.root_through(4).unwrap();
        inputs.push(CoseSign1::sign_ed25519(
            m.protected.clone(),
            m.unprotected.clone(),
            &root,
            false,
            &key,
        ));
        let wrong_vds: Vec<_> = m
            .protected
            .iter()
            .map(|(k, v)| {
                if *k == Value::Int(VDS) {
                    (k.clone(), Value::Int(1))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect();
        inputs.push(CoseSign1::sign_ed25519(
            wrong_vds,
            m.unprotected.clone(),
            &root,
            true,
            &key,
        ));
        for input in &inputs {
            let err = verify(input, &cert).unwrap_err();
            assert_eq!(err.check(), "format", "{input:?}: {err}");
        }
        // A bad service certificate is a signature failure, not a panic.
        assert_eq!(
            verify(&good, "not a cert").unwrap_err().check(),
            "signature"
        );
    }
}
