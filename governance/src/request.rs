//! Signed governance requests: COSE Sign1 envelopes (EdDSA) with CCF's
//! protected headers.
//!
//! | header | label | value |
//! |---|---|---|
//! | alg | 1 | -8 (EdDSA) |
//! | kid | 4 | the member id (hex text, as bytes or text) |
//! | message type | `"ccf.gov.msg.type"` | `proposal`, `ballot`, `withdrawal`, `ack`, `state_digest` |
//! | created at | `"ccf.gov.msg.created_at"` | Unix seconds |
//! | proposal id | `"ccf.gov.msg.proposal_id"` | for ballots and withdrawals |
//!
//! A request is accepted when its signer is a registered member in an
//! allowed state, the signature verifies with that member's certificate,
//! `created_at` lies within the freshness window of the node's clock, and
//! the same request has not been seen within that window (the recently
//! seen requests live in a replicated table, so a replay is refused by
//! every node, not just the one that saw the original).

use charter_ledger::cbor::Value;
use charter_ledger::cose::{self, CoseSign1};
use charter_ledger::Tx;
use sha2::{Digest, Sha256};

use crate::tables::{MEMBERS_CERTS, MEMBERS_INFO, RECENT_REQUESTS};
use crate::GovError;

pub const MSG_TYPE: &str = "ccf.gov.msg.type";
pub const MSG_CREATED_AT: &str = "ccf.gov.msg.created_at";
pub const MSG_PROPOSAL_ID: &str = "ccf.gov.msg.proposal_id";

/// A request that passed every check.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub member_id: String,
    pub msg_type: String,
    pub created_at: i64,
    pub proposal_id: Option<String>,
    pub payload: Vec<u8>,
    /// SHA-256 of the signed content (protected header and payload).
    pub digest: [u8; 32],
}

/// What a request must be.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub msg_type: &'a str,
    /// Member states allowed to send it.
    pub member_states: &'a [&'a str],
    /// The node's clock, Unix seconds.
    pub now: i64,
    /// How far `created_at` may be from `now`, in seconds.
    pub window_secs: i64,
}

fn unauthorized(code: &'static str, message: impl Into<String>) -> GovError {
    GovError::new(401, code, message)
}

fn text_header<'a>(msg: &'a CoseSign1, label: &str) -> Option<&'a Value> {
    msg.protected_header(&Value::text(label))
}

/// Checks `envelope` and records it as seen (in `tx`).
pub fn verify(tx: &mut Tx, envelope: &[u8], expect: Expect) -> Result<SignedRequest, GovError> {
    let msg = CoseSign1::parse(envelope).map_err(|e| {
        GovError::bad_request(
            "InvalidCoseSign1",
            format!("the body is not a COSE Sign1 envelope: {e}"),
        )
    })?;
    let member_id = match msg.protected_header(&Value::Int(cose::KID)) {
        Some(Value::Bytes(b)) => String::from_utf8(b.clone())
            .map_err(|_| GovError::bad_request("InvalidCoseSign1", "kid is not UTF-8 text"))?,
        Some(Value::Text(t)) => t.clone(),
        Some(_) => {
            return Err(GovError::bad_request(
                "InvalidCoseSign1",
                "kid must be the member id, as bytes or text",
            ))
        }
        None => {
            return Err(GovError::bad_request(
                "InvalidCoseSign1",
                "the protected header has no kid (the member id)",
            ))
        }
    };
    let msg_type = match text_header(&msg, MSG_TYPE) {
        Some(Value::Text(t)) => t.clone(),
        _ => {
            return Err(GovError::bad_request(
                "InvalidCoseSign1",
                format!("the protected header has no text {MSG_TYPE:?}"),
            ))
        }
    };
    if msg_type != expect.msg_type {
        return Err(GovError::bad_request(
            "InvalidCoseSign1",
            format!(
                "{MSG_TYPE} is {msg_type:?}, this endpoint takes {:?}",
                expect.msg_type
            ),
        ));
    }
    let created_at = match text_header(&msg, MSG_CREATED_AT) {
        Some(Value::Int(t)) => *t,
        _ => {
            return Err(GovError::bad_request(
                "InvalidCoseSign1",
                format!("the protected header has no integer {MSG_CREATED_AT:?} (Unix seconds)"),
            ))
        }
    };
    let proposal_id = match text_header(&msg, MSG_PROPOSAL_ID) {
        Some(Value::Text(t)) => Some(t.clone()),
        None => None,
        Some(_) => {
            return Err(GovError::bad_request(
                "InvalidCoseSign1",
                format!("{MSG_PROPOSAL_ID} must be text"),
            ))
        }
    };

    // Who signed, and may they?
    let cert = tx.get(MEMBERS_CERTS, member_id.as_bytes()).ok_or_else(|| {
        unauthorized(
            "InvalidAuthenticationInfo",
            format!("{member_id:?} is not a member of this service"),
        )
    })?;
    let cert = String::from_utf8_lossy(&cert).into_owned();
    let status = member_status(tx, &member_id);
    if !expect.member_states.contains(&status.as_str()) {
        return Err(GovError::new(
            403,
            "AuthorizationFailed",
            format!(
                "member {member_id} is {status}; a {msg_type} needs a member that is {}",
                expect.member_states.join(" or ")
            ),
        ));
    }
    let key = charter_ledger::receipt::ed25519_key_of_pem(&cert)
        .map_err(|e| GovError::internal(format!("member {member_id}'s certificate: {e}")))?;
    msg.verify_ed25519(&key, None).map_err(|e| {
        unauthorized(
            "InvalidAuthenticationInfo",
            format!("the signature does not verify with member {member_id}'s certificate: {e}"),
        )
    })?;
    let payload = msg.payload.clone().ok_or_else(|| {
        GovError::bad_request("InvalidCoseSign1", "the envelope has a detached payload")
    })?;

    // Fresh, and not seen before.
    if created_at < expect.now - expect.window_secs {
        return Err(GovError::bad_request(
            "InvalidCreatedAt",
            format!(
                "created_at {created_at} is stale: more than {} s before the node's clock ({})",
                expect.window_secs, expect.now
            ),
        ));
    }
    if created_at > expect.now + expect.window_secs {
        return Err(GovError::bad_request(
            "InvalidCreatedAt",
            format!(
                "created_at {created_at} is in the future: more than {} s after the node's clock ({})",
                expect.window_secs, expect.now
            ),
        ));
    }
    // The digest covers what the member signed (protected header and
    // payload), not the envelope's bytes: re-wrapping the same signed
    // content (untagged, another unprotected header) is still a replay.
    let digest = signed_content_digest(&msg.protected_bytes, &payload);
    let seen_key = format!("{:020}:{}", created_at.max(0), hex::encode(digest));
    if tx.has(RECENT_REQUESTS, seen_key.as_bytes()) {
        return Err(GovError::bad_request(
            "RequestReplayed",
            "this exact signed request was already received; sign a new one",
        ));
    }
    forget_old_requests(tx, expect.now - expect.window_secs)?;
    tx.set(RECENT_REQUESTS, seen_key.as_bytes(), msg_type.as_bytes())
        .map_err(|e| GovError::internal(e.to_string()))?;

    Ok(SignedRequest {
        member_id,
        msg_type,
        created_at,
        proposal_id,
        payload,
        digest,
    })
}

/// SHA-256 over the signed content, length-prefixed so no two
/// (protected, payload) pairs share an input.
fn signed_content_digest(protected: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((protected.len() as u64).to_be_bytes());
    h.update(protected);
    h.update(payload);
    h.finalize().into()
}

/// Drops the seen-request records older than the window: a request that
/// old is refused as stale anyway.
fn forget_old_requests(tx: &mut Tx, oldest: i64) -> Result<(), GovError> {
    let cutoff = format!("{:020}:", oldest.max(0));
    let old: Vec<Vec<u8>> = tx
        .entries(RECENT_REQUESTS)
        .into_keys()
        .take_while(|k| k.as_slice() < cutoff.as_bytes())
        .collect();
    for k in old {
        tx.delete(RECENT_REQUESTS, &k)
            .map_err(|e| GovError::internal(e.to_string()))?;
    }
    Ok(())
}

/// A member's status, `"Unknown"` if it has none.
pub fn member_status(tx: &mut Tx, member_id: &str) -> String {
    tx.get(MEMBERS_INFO, member_id.as_bytes())
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
        .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string))
        .unwrap_or_else(|| "Unknown".to_string())
}

/// Builds a signed request (the CLI and tests use this).
pub fn sign(
    key: &ed25519_dalek::SigningKey,
    member_id: &str,
    msg_type: &str,
    created_at: i64,
    proposal_id: Option<&str>,
    payload: &[u8],
) -> Vec<u8> {
    let mut protected = vec![
        (Value::Int(cose::ALG), Value::Int(cose::EDDSA)),
        (
            Value::Int(cose::KID),
            Value::Bytes(member_id.as_bytes().to_vec()),
        ),
        (Value::text(MSG_TYPE), Value::text(msg_type)),
        (Value::text(MSG_CREATED_AT), Value::Int(created_at)),
    ];
    if let Some(id) = proposal_id {
        protected.push((Value::text(MSG_PROPOSAL_ID), Value::text(id)));
    }
    CoseSign1::sign_ed25519(protected, vec![], payload, false, key)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use charter_ledger::{Store, WriteSet};
    use ed25519_dalek::pkcs8::DecodePrivateKey;

    use super::*;
    use crate::{MEMBER_ACCEPTED, MEMBER_ACTIVE};

    struct Member {
        id: String,
        key: ed25519_dalek::SigningKey,
    }

    fn member(store: &Store, seqno: u64, status: &str) -> Member {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["member".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let id = crate::cert_id_pem(&cert).unwrap();
        let mut ws = WriteSet::default();
        ws.put(MEMBERS_CERTS, id.as_bytes(), cert.as_bytes());
        let info = serde_json::json!({ "status": status }).to_string();
        ws.put(MEMBERS_INFO, id.as_bytes(), info.as_bytes());
        store.apply(seqno, &ws);
        Member {
            id,
            key: ed25519_dalek::SigningKey::from_pkcs8_der(&key.serialize_der()).unwrap(),
        }
    }

    const NOW: i64 = 1_800_000_000;

    fn expect(msg_type: &str) -> Expect<'_> {
        Expect {
            msg_type,
            member_states: &[MEMBER_ACTIVE],
            now: NOW,
            window_secs: 300,
        }
    }

    fn check(store: &Arc<Store>, envelope: &[u8], e: Expect) -> Result<SignedRequest, GovError> {
        let mut tx = store.begin();
        let r = verify(&mut tx, envelope, e);
        if r.is_ok() {
            // What the node does after a successful step: commit.
            let (_, ws) = store.prepare(tx).unwrap();
            store.apply(store.last_applied() + 1, &ws);
            store.release_all();
        }
        r
    }

    #[test]
    fn a_good_request_passes_once_and_its_replay_is_refused() {
        let store = Arc::new(Store::new());
        let m = member(&store, 1, MEMBER_ACTIVE);
        let env = sign(&m.key, &m.id, "ballot", NOW - 10, Some("p1"), b"{}");
        let r = check(&store, &env, expect("ballot")).unwrap();
        assert_eq!(
            (r.member_id.as_str(), r.proposal_id.as_deref()),
            (m.id.as_str(), Some("p1"))
        );
        let err = check(&store, &env, expect("ballot")).unwrap_err();
        assert_eq!((err.status, err.code), (400, "RequestReplayed"));
        // The same signed content re-wrapped (untagged, with an extra
        // unprotected header) is the same request.
        let msg = CoseSign1::parse(&env).unwrap();
        let rewrapped = charter_ledger::cbor::encode(&Value::Array(vec![
            Value::Bytes(msg.protected_bytes.clone()),
            Value::Map(vec![(Value::Int(99), Value::text("noise"))]),
            Value::Bytes(msg.payload.clone().unwrap()),
            Value::Bytes(msg.signature.clone()),
        ]));
        let err = check(&store, &rewrapped, expect("ballot")).unwrap_err();
        assert_eq!(err.code, "RequestReplayed");
    }

    #[test]
    fn each_bad_request_is_refused_with_its_own_code() {
        let store = Arc::new(Store::new());
        let m = member(&store, 1, MEMBER_ACTIVE);
        let newbie = member(&store, 2, MEMBER_ACCEPTED);
        let other = member(&Store::new(), 1, MEMBER_ACTIVE);
        let code = |env: &[u8], e: Expect| check(&store, env, e).unwrap_err().code;
        let p = b"{}";
        assert_eq!(code(b"garbage", expect("proposal")), "InvalidCoseSign1");
        assert_eq!(
            code(
                &sign(&m.key, &m.id, "ballot", NOW, None, p),
                expect("proposal")
            ),
            "InvalidCoseSign1",
            "wrong message type"
        );
        assert_eq!(
            code(
                &sign(&m.key, &m.id, "proposal", NOW - 301, None, p),
                expect("proposal")
            ),
            "InvalidCreatedAt"
        );
        assert_eq!(
            code(
                &sign(&m.key, &m.id, "proposal", NOW + 301, None, p),
                expect("proposal")
            ),
            "InvalidCreatedAt"
        );
        assert_eq!(
            code(
                &sign(&other.key, &other.id, "proposal", NOW, None, p),
                expect("proposal")
            ),
            "InvalidAuthenticationInfo",
            "unknown member"
        );
        assert_eq!(
            code(
                &sign(&other.key, &m.id, "proposal", NOW, None, p),
                expect("proposal")
            ),
            "InvalidAuthenticationInfo",
            "signed by another key than kid names"
        );
        assert_eq!(
            code(
                &sign(&newbie.key, &newbie.id, "proposal", NOW, None, p),
                expect("proposal")
            ),
            "AuthorizationFailed",
            "an Accepted member may not propose"
        );
        let mut ack = expect("ack");
        ack.member_states = &[MEMBER_ACCEPTED, MEMBER_ACTIVE];
        assert!(check(
            &store,
            &sign(&newbie.key, &newbie.id, "ack", NOW, None, p),
            ack
        )
        .is_ok());
        assert_eq!(
            store.committed_map(RECENT_REQUESTS).len(),
            1,
            "only the good one is recorded"
        );
    }

    #[test]
    fn seen_requests_are_forgotten_once_they_would_be_stale() {
        let store = Arc::new(Store::new());
        let m = member(&store, 1, MEMBER_ACTIVE);
        let old = sign(&m.key, &m.id, "proposal", NOW - 200, None, b"{}");
        check(&store, &old, expect("proposal")).unwrap();
        let later = Expect {
            now: NOW + 200,
            ..expect("proposal")
        };
        let fresh = sign(&m.key, &m.id, "proposal", NOW + 150, None, b"{}");
        check(&store, &fresh, later).unwrap();
        let seen = store.committed_map(RECENT_REQUESTS);
        assert_eq!(
            seen.len(),
            1,
            "the record older than the window was dropped"
        );
        assert_eq!(
            check(&store, &old, later).unwrap_err().code,
            "InvalidCreatedAt",
            "and the old request is refused as stale instead"
        );
    }
}
