//! COSE_Sign1 (RFC 9052 §4.2) with EdDSA over Ed25519 (algorithm -8), and
//! nothing else.
//!
//! ```text
//! COSE_Sign1 = #6.18([ protected: bstr .cbor header_map / bstr .size 0,
//!                      unprotected: header_map,
//!                      payload: bstr / nil,      ; nil = detached
//!                      signature: bstr ])
//! ```
//!
//! The signature is Ed25519 over the CBOR encoding of
//! `Sig_structure = ["Signature1", protected, external_aad = h'', payload]`
//! (§4.4), where `protected` is the protected header's bytes exactly as
//! they appear in the message.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::cbor::{self, CborError, Value};

/// Header label: algorithm.
pub const ALG: i64 = 1;
/// Header label: key identifier.
pub const KID: i64 = 4;
/// Algorithm: EdDSA (here always Ed25519).
pub const EDDSA: i64 = -8;
/// CBOR tag of a COSE_Sign1 message.
pub const TAG_SIGN1: u64 = 18;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoseError {
    #[error("malformed COSE_Sign1: {0}")]
    Malformed(String),
    #[error("malformed COSE_Sign1: {0}")]
    Cbor(#[from] CborError),
    #[error("unsupported COSE algorithm: {0} (only EdDSA, -8, is supported)")]
    UnsupportedAlg(String),
    #[error("the COSE_Sign1 has no payload and none was supplied (detached payload)")]
    MissingPayload,
    #[error("the COSE_Sign1 carries a payload and a detached one was supplied too")]
    PayloadConflict,
    #[error("the COSE_Sign1 signature does not verify with this key")]
    BadSignature,
}

/// A parsed COSE_Sign1 message.
#[derive(Debug, Clone, PartialEq)]
pub struct CoseSign1 {
    /// The protected header exactly as serialized (what is signed).
    pub protected_bytes: Vec<u8>,
    /// The protected header, decoded.
    pub protected: Vec<(Value, Value)>,
    pub unprotected: Vec<(Value, Value)>,
    /// `None` when the payload is detached.
    pub payload: Option<Vec<u8>>,
    pub signature: Vec<u8>,
}

fn find<'a>(map: &'a [(Value, Value)], label: &Value) -> Option<&'a Value> {
    map.iter().find(|(k, _)| k == label).map(|(_, v)| v)
}

/// The bytes Ed25519 signs: the encoded Sig_structure.
fn to_be_signed(protected_bytes: &[u8], payload: &[u8]) -> Vec<u8> {
    cbor::encode(&Value::Array(vec![
        Value::text("Signature1"),
        Value::Bytes(protected_bytes.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ]))
}

impl CoseSign1 {
    /// Parses a COSE_Sign1, tagged (18) or untagged.
    pub fn parse(bytes: &[u8]) -> Result<Self, CoseError> {
        let value = cbor::decode(bytes)?;
        let items = match value {
            Value::Tag(TAG_SIGN1, inner) => match *inner {
                Value::Array(items) => items,
                _ => return Err(CoseError::Malformed("tag 18 must wrap an array".into())),
            },
            Value::Tag(t, _) => {
                return Err(CoseError::Malformed(format!(
                    "tag {t} is not COSE_Sign1 (18)"
                )))
            }
            Value::Array(items) => items,
            _ => return Err(CoseError::Malformed("not an array".into())),
        };
        let [protected, unprotected, payload, signature]: [Value; 4] =
            items.try_into().map_err(|items: Vec<Value>| {
                CoseError::Malformed(format!("{} elements, not 4", items.len()))
            })?;
        let protected_bytes = match protected {
            Value::Bytes(b) => b,
            _ => {
                return Err(CoseError::Malformed(
                    "the protected header is not a byte string".into(),
                ))
            }
        };
        let protected = if protected_bytes.is_empty() {
            Vec::new()
        } else {
            match cbor::decode(&protected_bytes)? {
                Value::Map(m) => m,
                _ => {
                    return Err(CoseError::Malformed(
                        "the protected header does not wrap a map".into(),
                    ))
                }
            }
        };
        let unprotected = match unprotected {
            Value::Map(m) => m,
            _ => {
                return Err(CoseError::Malformed(
                    "the unprotected header is not a map".into(),
                ))
            }
        };
        // Compared by encoding (one encoding per value): linear, whatever
        // the sizes.
        let protected_labels: std::collections::HashSet<Vec<u8>> =
            protected.iter().map(|(k, _)| cbor::encode(k)).collect();
        if let Some((label, _)) = unprotected
            .iter()
            .find(|(k, _)| protected_labels.contains(&cbor::encode(k)))
        {
            return Err(CoseError::Malformed(format!(
                "header {label:?} is both protected and unprotected"
            )));
        }
        let payload = match payload {
            Value::Bytes(b) => Some(b),
            Value::Null => None,
            _ => {
                return Err(CoseError::Malformed(
                    "the payload is neither a byte string nor nil".into(),
                ))
            }
        };
        let signature = match signature {
            Value::Bytes(b) => b,
            _ => {
                return Err(CoseError::Malformed(
                    "the signature is not a byte string".into(),
                ))
            }
        };
        Ok(CoseSign1 {
            protected_bytes,
            protected,
            unprotected,
            payload,
            signature,
        })
    }

    pub fn protected_header(&self, label: &Value) -> Option<&Value> {
        find(&self.protected, label)
    }

    pub fn unprotected_header(&self, label: &Value) -> Option<&Value> {
        find(&self.unprotected, label)
    }

    /// Verifies the Ed25519 signature. The protected header must say
    /// `alg: -8`. The payload is the attached one, or `detached_payload`
    /// when the message's payload is nil (giving both is an error).
    pub fn verify_ed25519(
        &self,
        key: &VerifyingKey,
        detached_payload: Option<&[u8]>,
    ) -> Result<(), CoseError> {
        match self.protected_header(&Value::Int(ALG)) {
            Some(Value::Int(EDDSA)) => {}
            Some(other) => return Err(CoseError::UnsupportedAlg(format!("{other:?}"))),
            None => {
                return Err(CoseError::UnsupportedAlg(
                    "no algorithm in the protected header".into(),
                ))
            }
        }
        let payload = match (&self.payload, detached_payload) {
            (Some(p), None) => p.as_slice(),
            (None, Some(p)) => p,
            (None, None) => return Err(CoseError::MissingPayload),
            (Some(_), Some(_)) => return Err(CoseError::PayloadConflict),
        };
        let signature: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| CoseError::BadSignature)?;
        key.verify_strict(
            &to_be_signed(&self.protected_bytes, payload),
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .map_err(|_| CoseError::BadSignature)
    }

    /// Signs `payload` and returns the tagged COSE_Sign1. `alg: -8` is put
    /// first in the protected header unless it is already there. With
    /// `detached`, the payload is signed but not included (nil).
    /// Ed25519 is deterministic: the same inputs give the same bytes.
    pub fn sign_ed25519(
        protected: Vec<(Value, Value)>,
        unprotected: Vec<(Value, Value)>,
        payload: &[u8],
        detached: bool,
        key: &SigningKey,
    ) -> Vec<u8> {
        let mut protected = protected;
        if find(&protected, &Value::Int(ALG)).is_none() {
            protected.insert(0, (Value::Int(ALG), Value::Int(EDDSA)));
        }
        let protected_bytes = cbor::encode(&Value::Map(protected));
        let signature = key.sign(&to_be_signed(&protected_bytes, payload));
        let message = Value::Array(vec![
            Value::Bytes(protected_bytes),
            Value::Map(unprotected),
            if detached {
                Value::Null
            } else {
                Value::Bytes(payload.to_vec())
            },
            Value::Bytes(signature.to_bytes().to_vec()),
        ]);
        cbor::encode(&Value::Tag(TAG_SIGN1, Box::new(message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn sample(detached: bool) -> Vec<u8> {
        CoseSign1::sign_ed25519(
            vec![(Value::Int(KID), Value::Bytes(b"k1".to_vec()))],
            vec![(Value::Int(33), Value::text("note"))],
            b"hello",
            detached,
            &key(1),
        )
    }

    #[test]
    fn sign_parse_verify() {
        let bytes = sample(false);
        assert_eq!(bytes[0], 0xd2, "tagged 18");
        let m = CoseSign1::parse(&bytes).unwrap();
        assert_eq!(
            m.protected_header(&Value::Int(ALG)),
            Some(&Value::Int(EDDSA))
        );
        assert_eq!(m.protected[0].0, Value::Int(ALG), "alg comes first");
        assert_eq!(
            m.protected_header(&Value::Int(KID))
                .and_then(Value::as_bytes),
            Some(&b"k1"[..])
        );
        assert_eq!(
            m.unprotected_header(&Value::Int(33)),
            Some(&Value::text("note"))
        );
        assert_eq!(m.payload.as_deref(), Some(&b"hello"[..]));
        let vk = key(1).verifying_key();
        m.verify_ed25519(&vk, None).unwrap();
        assert_eq!(
            m.verify_ed25519(&vk, Some(b"hello")),
            Err(CoseError::PayloadConflict)
        );
        assert_eq!(
            m.verify_ed25519(&key(2).verifying_key(), None),
            Err(CoseError::BadSignature)
        );
        // Deterministic.
        assert_eq!(sample(false), bytes);
        // Untagged is accepted too.
        let untagged = match cbor::decode(&bytes).unwrap() {
            Value::Tag(_, inner) => cbor::encode(&inner),
            _ => unreachable!(),
        };
        CoseSign1::parse(&untagged)
            .unwrap()
            .verify_ed25519(&vk, None)
            .unwrap();
    }

    #[test]
    fn detached_payloads() {
        let m = CoseSign1::parse(&sample(true)).unwrap();
        assert_eq!(m.payload, None);
        let vk = key(1).verifying_key();
        m.verify_ed25519(&vk, Some(b"hello")).unwrap();
        assert_eq!(m.verify_ed25519(&vk, None), Err(CoseError::MissingPayload));
        assert_eq!(
            m.verify_ed25519(&vk, Some(b"hellp")),
            Err(CoseError::BadSignature)
        );
    }

    #[test]
    fn an_existing_alg_is_kept_and_others_are_refused() {
        let bytes = CoseSign1::sign_ed25519(
            vec![(Value::Int(ALG), Value::Int(-7))],
            vec![],
            b"x",
            false,
            &key(1),
        );
        let m = CoseSign1::parse(&bytes).unwrap();
        assert_eq!(m.protected.len(), 1);
        assert!(matches!(
            m.verify_ed25519(&key(1).verifying_key(), None),
            Err(CoseError::UnsupportedAlg(_))
        ));
        // No alg at all (an empty protected header).
        let msg = Value::Array(vec![
            Value::Bytes(vec![]),
            Value::Map(vec![]),
            Value::Bytes(b"x".to_vec()),
            Value::Bytes(vec![0; 64]),
        ]);
        let m = CoseSign1::parse(&cbor::encode(&msg)).unwrap();
        assert!(m.protected.is_empty());
        assert!(matches!(
            m.verify_ed25519(&key(1).verifying_key(), None),
            Err(CoseError::UnsupportedAlg(_))
        ));
    }

    /// The byte range of `needle` in `bytes`.
    fn locate(bytes: &[u8], needle: &[u8]) -> std::ops::Range<usize> {
        let start = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        start..start + needle.len()
    }

    #[test]
    fn tampering_with_any_signed_part_fails() {
        let bytes = sample(false);
        let vk = key(1).verifying_key();
        let good = CoseSign1::parse(&bytes).unwrap();
        // The unprotected header is, by design, not signed.
        let unprotected = locate(&bytes, &cbor::encode(&Value::Map(good.unprotected.clone())));
        for i in (0..bytes.len()).filter(|i| !unprotected.contains(i)) {
            for mask in [0x01, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= mask;
                let result = CoseSign1::parse(&bad).and_then(|m| m.verify_ed25519(&vk, None));
                assert!(result.is_err(), "byte {i} ^ {mask:#x} still verifies");
            }
        }
        // Content changes in the protected header (the kid), the payload
        // and the signature are signature failures.
        for needle in [&b"k1"[..], b"hello", &good.signature] {
            let i = locate(&bytes, needle).start;
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                CoseSign1::parse(&bad).unwrap().verify_ed25519(&vk, None),
                Err(CoseError::BadSignature),
                "byte {i}"
            );
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        let sig = Value::Bytes(vec![0; 64]);
        let cases = vec![
            Value::Int(1),
            Value::Tag(17, Box::new(Value::Array(vec![]))),
            Value::Tag(TAG_SIGN1, Box::new(Value::Int(1))),
            Value::Array(vec![Value::Bytes(vec![]), Value::Map(vec![])]),
            // Protected header not a bstr, or not wrapping a map.
            Value::Array(vec![
                Value::Map(vec![]),
                Value::Map(vec![]),
                Value::Null,
                sig.clone(),
            ]),
            Value::Array(vec![
                Value::Bytes(vec![0x01]),
                Value::Map(vec![]),
                Value::Null,
                sig.clone(),
            ]),
            Value::Array(vec![
                Value::Bytes(vec![0xa1]),
                Value::Map(vec![]),
                Value::Null,
                sig.clone(),
            ]),
            // Unprotected not a map; payload of the wrong type; signature
            // not a bstr.
            Value::Array(vec![
                Value::Bytes(vec![]),
                Value::Array(vec![]),
                Value::Null,
                sig.clone(),
            ]),
            Value::Array(vec![
                Value::Bytes(vec![]),
                Value::Map(vec![]),
                Value::text("p"),
                sig.clone(),
            ]),
            Value::Array(vec![
                Value::Bytes(vec![]),
                Value::Map(vec![]),
                Value::Null,
                Value::Null,
            ]),
            // The same label protected and unprotected.
            Value::Array(vec![
                Value::Bytes(cbor::encode(&Value::Map(vec![(
                    Value::Int(ALG),
                    Value::Int(EDDSA),
                )]))),
                Value::Map(vec![(Value::Int(ALG), Value::Int(EDDSA))]),
                Value::Null,
                sig.clone(),
            ]),
        ];
        for case in cases {
            let err = CoseSign1::parse(&cbor::encode(&case)).unwrap_err();
            assert!(
                matches!(err, CoseError::Malformed(_) | CoseError::Cbor(_)),
                "{case:?}: {err:?}"
            );
        }
        assert!(matches!(
            CoseSign1::parse(b""),
            Err(CoseError::Cbor(CborError::Truncated { .. }))
        ));
        // A short signature is a bad signature, not a panic.
        let msg = Value::Array(vec![
            Value::Bytes(cbor::encode(&Value::Map(vec![(
                Value::Int(ALG),
                Value::Int(EDDSA),
            )]))),
            Value::Map(vec![]),
            Value::Bytes(b"x".to_vec()),
            Value::Bytes(vec![1, 2, 3]),
        ]);
        let m = CoseSign1::parse(&cbor::encode(&msg)).unwrap();
        assert_eq!(
            m.verify_ed25519(&key(1).verifying_key(), None),
            Err(CoseError::BadSignature)
        );
    }
}
