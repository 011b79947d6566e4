//! The cryptography behind `ccf.crypto`, engine-neutral: plain functions
//! over bytes and strings that both engines bind (V8 in
//! `v8_engine/crypto_bindings.rs`).
//!
//! Names, arguments and results follow CCF's JS API:
//!
//! - [`digest`]: `"SHA-256"` only;
//! - [`sign`] / [`verify_signature`]: EdDSA (Ed25519) and ECDSA P-256 with
//!   SHA-256. ECDSA signatures are IEEE P1363 (`r || s`, 64 bytes), as
//!   CCF's `sign` returns and its `verifySignature` expects (WebCrypto's
//!   encoding), not DER;
//! - [`generate_eddsa_key_pair`], [`generate_ecdsa_key_pair`]: PEM pairs,
//!   PKCS#8 (`PRIVATE KEY`) and SubjectPublicKeyInfo (`PUBLIC KEY`);
//! - [`generate_aes_key`], [`wrap_key`] / [`unwrap_key`] (AES-KWP, RFC 5649);
//! - [`is_valid_x509_cert_bundle`];
//! - [`pub_pem_to_jwk`], [`pem_to_jwk`]: JWKs (RFC 7517/8037) with
//!   base64url fields without padding.
//!
//! Keys come as PEM: private keys as PKCS#8 (`PRIVATE KEY`, as OpenSSL
//! writes them) or SEC1 (`EC PRIVATE KEY`); public keys as
//! SubjectPublicKeyInfo (`PUBLIC KEY`) or inside an X.509 certificate
//! (`CERTIFICATE`). Only the first PEM block is used. RSA, other curves
//! and encrypted keys are refused with a clear message.
//!
//! Nothing here panics on input: every failure is an `Err` with a message
//! meant for the app developer, which the engines throw as a JS
//! `RangeError` (argument *types* are checked by the bindings and throw a
//! `TypeError`).

use base64::Engine as _;
use pkcs8::der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef};
use pkcs8::der::{Decode, Encode, Reader, SliceReader, TagMode, TagNumber};
use pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use pkcs8::PrivateKeyInfo;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING, ED25519,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What every function here returns: a message for the app on failure.
pub type CryptoResult<T> = Result<T, String>;

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The signing algorithms of `ccf.crypto.sign` / `verifySignature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// `{name: "EdDSA"}`: Ed25519 (any `hash` is ignored, as in CCF).
    EdDsa,
    /// `{name: "ECDSA", hash: "SHA-256"}`: ECDSA over P-256.
    EcdsaSha256,
}

impl SigningAlgorithm {
    /// The algorithm named by a JS algorithm object's `name` and `hash`.
    pub fn parse(name: &str, hash: Option<&str>) -> CryptoResult<SigningAlgorithm> {
        match name {
            "EdDSA" => Ok(SigningAlgorithm::EdDsa),
            "ECDSA" => match hash {
                Some("SHA-256") => Ok(SigningAlgorithm::EcdsaSha256),
                Some(other) => Err(format!(
                    "unsupported hash algorithm {other:?} for ECDSA, supported: SHA-256"
                )),
                None => {
                    Err("ECDSA needs a hash algorithm: {name: \"ECDSA\", hash: \"SHA-256\"}".into())
                }
            },
            other => Err(format!(
                "unsupported signing algorithm {other:?}, supported: EdDSA, ECDSA"
            )),
        }
    }
}

/// A public key Charter can verify with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    /// The uncompressed point, `04 || x || y` (65 bytes).
    P256(Vec<u8>),
    Ed25519([u8; 32]),
}

/// A private key Charter can sign with, with its public half.
#[derive(Clone)]
enum PrivateKey {
    P256 { d: [u8; 32], public: Vec<u8> },
    Ed25519 { seed: [u8; 32], public: [u8; 32] },
}

impl PublicKey {
    fn kind(&self) -> &'static str {
        match self {
            PublicKey::P256(_) => "an EC P-256 key",
            PublicKey::Ed25519(_) => "an Ed25519 key",
        }
    }
}

impl PrivateKey {
    fn kind(&self) -> &'static str {
        match self {
            PrivateKey::P256 { .. } => "an EC P-256 key",
            PrivateKey::Ed25519 { .. } => "an Ed25519 key",
        }
    }
}

// ---------------------------------------------------------------------------
// PEM

/// The first PEM block of `pem`: its label and DER contents.
fn first_pem_block(pem: &str) -> CryptoResult<(String, Vec<u8>)> {
    match x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()).next() {
        Some(Ok(block)) => Ok((block.label, block.contents)),
        Some(Err(e)) => Err(format!("invalid PEM: {e}")),
        None => Err("invalid PEM: no \"-----BEGIN ...-----\" block found".into()),
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII, so 64-byte chunks are 64-character lines.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn der_error<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("invalid {what}: {e}")
}

// ---------------------------------------------------------------------------
// Key parsing

fn parse_public_key(pem: &str) -> CryptoResult<PublicKey> {
    let (label, der) = first_pem_block(pem)?;
    match label.as_str() {
        "PUBLIC KEY" => public_key_from_spki(&der),
        "CERTIFICATE" => {
            let (_, cert) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| format!("invalid X.509 certificate: {e}"))?;
            public_key_from_spki(cert.tbs_certificate.subject_pki.raw)
        }
        l if l.ends_with("PRIVATE KEY") => Err(format!(
            "expected a public key or certificate PEM, got a {l} (pass the public key)"
        )),
        l => Err(format!(
            "unsupported PEM block {l:?}: expected PUBLIC KEY or CERTIFICATE"
        )),
    }
}

fn public_key_from_spki(der: &[u8]) -> CryptoResult<PublicKey> {
    let spki = SubjectPublicKeyInfoRef::try_from(der).map_err(der_error("public key"))?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("invalid public key: the key is not a whole number of bytes")?;
    match spki.algorithm.oid {
        OID_EC_PUBLIC_KEY => {
            check_p256(&spki.algorithm)?;
            if key.len() != 65 || key[0] != 4 {
                return Err(
                    "only uncompressed P-256 public keys (65 bytes starting with 0x04) are supported"
                        .into(),
                );
            }
            Ok(PublicKey::P256(key.to_vec()))
        }
        OID_ED25519 => <[u8; 32]>::try_from(key)
            .map(PublicKey::Ed25519)
            .map_err(|_| format!("an Ed25519 public key is 32 bytes, got {}", key.len())),
        oid => Err(unsupported_key_type(oid)),
    }
}

fn unsupported_key_type(oid: ObjectIdentifier) -> String {
    if oid == OID_RSA {
        "RSA keys are not supported, supported: EC P-256 (secp256r1), Ed25519".into()
    } else {
        format!("unsupported key type {oid}, supported: EC P-256 (secp256r1), Ed25519")
    }
}

fn check_p256(algorithm: &AlgorithmIdentifierRef) -> CryptoResult<()> {
    match algorithm.parameters_oid() {
        Ok(OID_P256) => Ok(()),
        Ok(curve) => Err(format!(
            "unsupported EC curve {curve}, supported: P-256 (secp256r1)"
        )),
        Err(_) => Err("EC key without a named curve; supported: P-256 (secp256r1)".into()),
    }
}

fn parse_private_key(pem: &str) -> CryptoResult<PrivateKey> {
    let (label, der) = first_pem_block(pem)?;
    match label.as_str() {
        "PRIVATE KEY" => {
            let info = PrivateKeyInfo::try_from(der.as_slice()).map_err(der_error("PKCS#8 key"))?;
            match info.algorithm.oid {
                OID_EC_PUBLIC_KEY => {
                    check_p256(&info.algorithm)?;
                    let ec = EcPrivateKey::from_der(info.private_key)?;
                    if ec.curve.is_some_and(|c| c != OID_P256) {
                        return Err("the EC key's curve parameters disagree".into());
                    }
                    p256_private_key(ec.d, ec.public.or(info.public_key))
                }
                OID_ED25519 => {
                    let seed = OctetStringRef::from_der(info.private_key)
                        .map_err(der_error("Ed25519 private key"))?;
                    let seed = <[u8; 32]>::try_from(seed.as_bytes()).map_err(|_| {
                        format!(
                            "an Ed25519 private key is 32 bytes, got {}",
                            seed.as_bytes().len()
                        )
                    })?;
                    ed25519_private_key(seed, info.public_key)
                }
                oid => Err(unsupported_key_type(oid)),
            }
        }
        "EC PRIVATE KEY" => {
            let ec = EcPrivateKey::from_der(&der)?;
            match ec.curve {
                Some(OID_P256) => p256_private_key(ec.d, ec.public),
                Some(curve) => Err(format!(
                    "unsupported EC curve {curve}, supported: P-256 (secp256r1)"
                )),
                None => Err("EC key without a named curve; supported: P-256 (secp256r1)".into()),
            }
        }
        "ENCRYPTED PRIVATE KEY" => Err("encrypted private keys are not supported".into()),
        "RSA PRIVATE KEY" => Err(unsupported_key_type(OID_RSA)),
        "PUBLIC KEY" | "CERTIFICATE" => Err(format!(
            "expected a private key PEM, got a {label} (pass the private key)"
        )),
        l => Err(format!(
            "unsupported PEM block {l:?}: expected PRIVATE KEY or EC PRIVATE KEY"
        )),
    }
}

/// SEC1's `ECPrivateKey` (RFC 5915).
struct EcPrivateKey<'a> {
    d: &'a [u8],
    curve: Option<ObjectIdentifier>,
    public: Option<&'a [u8]>,
}

impl<'a> EcPrivateKey<'a> {
    fn from_der(der: &'a [u8]) -> CryptoResult<EcPrivateKey<'a>> {
        let parse = || -> pkcs8::der::Result<EcPrivateKey<'a>> {
            let mut reader = SliceReader::new(der)?;
            let key = reader.sequence(|r| {
                let version = u8::decode(r)?;
                if version != 1 {
                    return Err(pkcs8::der::Tag::Integer.value_error());
                }
                let d = OctetStringRef::decode(r)?.as_bytes();
                let curve =
                    r.context_specific::<ObjectIdentifier>(TagNumber::N0, TagMode::Explicit)?;
                let public =
                    r.context_specific::<BitStringRef<'a>>(TagNumber::N1, TagMode::Explicit)?;
                Ok(EcPrivateKey {
                    d,
                    curve,
                    public: public.and_then(|p| p.as_bytes()),
                })
            })?;
            reader.finish(key)
        };
        parse().map_err(der_error("EC private key"))
    }
}

fn p256_private_key(d: &[u8], public: Option<&[u8]>) -> CryptoResult<PrivateKey> {
    if d.is_empty() || d.len() > 32 {
        return Err(format!("a P-256 private key is 32 bytes, got {}", d.len()));
    }
    // Some encoders drop leading zero bytes.
    let mut scalar = [0u8; 32];
    scalar[32 - d.len()..].copy_from_slice(d);
    let public = public.ok_or(
        "the EC private key does not include its public key, which Charter needs \
         (OpenSSL includes it by default, e.g. `openssl pkey -in key.pem`)",
    )?;
    // Checks the scalar's range and that the public key is its own.
    EcdsaKeyPair::from_private_key_and_public_key(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &scalar,
        public,
        &SystemRandom::new(),
    )
    .map_err(|e| format!("invalid EC P-256 private key: {e}"))?;
    Ok(PrivateKey::P256 {
        d: scalar,
        public: public.to_vec(),
    })
}

fn ed25519_private_key(seed: [u8; 32], public: Option<&[u8]>) -> CryptoResult<PrivateKey> {
    let pair = match public {
        Some(public) => Ed25519KeyPair::from_seed_and_public_key(&seed, public),
        None => Ed25519KeyPair::from_seed_unchecked(&seed),
    }
    .map_err(|e| format!("invalid Ed25519 private key: {e}"))?;
    let public = <[u8; 32]>::try_from(pair.public_key().as_ref())
        .map_err(|_| "invalid Ed25519 public key length".to_string())?;
    Ok(PrivateKey::Ed25519 { seed, public })
}

// ---------------------------------------------------------------------------
// Key encoding

fn spki_der(key: &PublicKey) -> CryptoResult<Vec<u8>> {
    let curve = OID_P256;
    let (algorithm, bytes) = match key {
        PublicKey::P256(point) => (
            AlgorithmIdentifierRef {
                oid: OID_EC_PUBLIC_KEY,
                parameters: Some(AnyRef::from(&curve)),
            },
            point.as_slice(),
        ),
        PublicKey::Ed25519(k) => (
            AlgorithmIdentifierRef {
                oid: OID_ED25519,
                parameters: None,
            },
            k.as_slice(),
        ),
    };
    let spki = SubjectPublicKeyInfoRef {
        algorithm,
        subject_public_key: BitStringRef::from_bytes(bytes).map_err(der_error("public key"))?,
    };
    spki.to_der().map_err(der_error("public key"))
}

/// PKCS#8 v1 for an Ed25519 seed, the form OpenSSL writes.
fn ed25519_pkcs8_der(seed: &[u8; 32]) -> CryptoResult<Vec<u8>> {
    let inner = OctetStringRef::new(seed)
        .and_then(|s| s.to_der())
        .map_err(der_error("private key"))?;
    let info = PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: OID_ED25519,
            parameters: None,
        },
        &inner,
    );
    info.to_der().map_err(der_error("private key"))
}

// ---------------------------------------------------------------------------
// The API

/// `ccf.crypto.digest(algorithm, data)`: only `"SHA-256"`.
pub fn digest(algorithm: &str, data: &[u8]) -> CryptoResult<Vec<u8>> {
    match algorithm {
        "SHA-256" => Ok(Sha256::digest(data).to_vec()),
        other => Err(format!(
            "unsupported digest algorithm {other:?}, supported: SHA-256"
        )),
    }
}

/// `ccf.crypto.sign(algorithm, privateKeyPem, data)`. EdDSA gives the
/// 64-byte Ed25519 signature; ECDSA the 64-byte IEEE P1363 `r || s`.
pub fn sign(
    algorithm: SigningAlgorithm,
    private_key_pem: &str,
    data: &[u8],
) -> CryptoResult<Vec<u8>> {
    let key = parse_private_key(private_key_pem)?;
    match (algorithm, &key) {
        (SigningAlgorithm::EdDsa, PrivateKey::Ed25519 { seed, .. }) => {
            let pair = Ed25519KeyPair::from_seed_unchecked(seed)
                .map_err(|e| format!("invalid Ed25519 private key: {e}"))?;
            Ok(pair.sign(data).as_ref().to_vec())
        }
        (SigningAlgorithm::EcdsaSha256, PrivateKey::P256 { d, public }) => {
            let rng = SystemRandom::new();
            let pair = EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                d,
                public,
                &rng,
            )
            .map_err(|e| format!("invalid EC P-256 private key: {e}"))?;
            pair.sign(&rng, data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".to_string())
        }
        (algorithm, key) => Err(mismatch(algorithm, key.kind())),
    }
}

fn mismatch(algorithm: SigningAlgorithm, got: &str) -> String {
    match algorithm {
        SigningAlgorithm::EdDsa => format!("EdDSA needs an Ed25519 key, got {got}"),
        SigningAlgorithm::EcdsaSha256 => format!("ECDSA needs an EC P-256 key, got {got}"),
    }
}

/// `ccf.crypto.verifySignature(algorithm, keyPem, signature, data)`:
/// whether `signature` is valid for `data` under the public key (or the
/// certificate's key) in `key_pem`. A malformed signature is `Ok(false)`;
/// an unusable key or algorithm is an `Err`.
pub fn verify_signature(
    algorithm: SigningAlgorithm,
    key_pem: &str,
    signature: &[u8],
    data: &[u8],
) -> CryptoResult<bool> {
    let key = parse_public_key(key_pem)?;
    let valid = match (algorithm, &key) {
        (SigningAlgorithm::EdDsa, PublicKey::Ed25519(k)) => {
            UnparsedPublicKey::new(&ED25519, k).verify(data, signature)
        }
        (SigningAlgorithm::EcdsaSha256, PublicKey::P256(point)) => {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(data, signature)
        }
        (algorithm, key) => return Err(mismatch(algorithm, key.kind())),
    };
    Ok(valid.is_ok())
}

/// A key pair as `generate*KeyPair` returns it: `{privateKey, publicKey}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPairPem {
    /// PKCS#8, `-----BEGIN PRIVATE KEY-----`.
    pub private_key: String,
    /// SubjectPublicKeyInfo, `-----BEGIN PUBLIC KEY-----`.
    pub public_key: String,
}

/// `ccf.crypto.generateEddsaKeyPair(curve)`: `"curve25519"` (CCF's
/// spelling; `"Curve25519"` is accepted too) gives an Ed25519 pair.
pub fn generate_eddsa_key_pair(curve: &str) -> CryptoResult<KeyPairPem> {
    if !curve.eq_ignore_ascii_case("curve25519") {
        return Err(format!(
            "unsupported curve {curve:?} for EdDSA, supported: curve25519"
        ));
    }
    let rng = SystemRandom::new();
    let mut seed = [0u8; 32];
    rng.fill(&mut seed)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    let PrivateKey::Ed25519 { public, .. } = ed25519_private_key(seed, None)? else {
        return Err("internal error: not an Ed25519 key".into());
    };
    Ok(KeyPairPem {
        private_key: pem_encode("PRIVATE KEY", &ed25519_pkcs8_der(&seed)?),
        public_key: pem_encode("PUBLIC KEY", &spki_der(&PublicKey::Ed25519(public))?),
    })
}

/// `ccf.crypto.generateEcdsaKeyPair(curve)`: `"secp256r1"` (P-256) only.
pub fn generate_ecdsa_key_pair(curve: &str) -> CryptoResult<KeyPairPem> {
    if curve != "secp256r1" {
        return Err(format!(
            "unsupported curve {curve:?} for ECDSA, supported: secp256r1"
        ));
    }
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "cannot generate an EC P-256 key".to_string())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| format!("cannot load the generated EC key: {e}"))?;
    let public = PublicKey::P256(pair.public_key().as_ref().to_vec());
    Ok(KeyPairPem {
        private_key: pem_encode("PRIVATE KEY", pkcs8.as_ref()),
        public_key: pem_encode("PUBLIC KEY", &spki_der(&public)?),
    })
}

/// `ccf.crypto.generateAesKey(size)`: `size` random bits, 128, 192 or 256.
pub fn generate_aes_key(size_bits: u32) -> CryptoResult<Vec<u8>> {
    if !matches!(size_bits, 128 | 192 | 256) {
        return Err(format!(
            "invalid AES key size {size_bits}, supported: 128, 192, 256"
        ));
    }
    let mut key = vec![0u8; size_bits as usize / 8];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    Ok(key)
}

fn unsupported_wrap(algorithm: &str) -> String {
    format!("unsupported key wrapping algorithm {algorithm:?}, supported: AES-KWP")
}

/// `ccf.crypto.wrapKey(key, wrappingKey, {name})`: only `"AES-KWP"` (AES
/// key wrap with padding, RFC 5649) with a 128, 192 or 256-bit wrapping
/// key. The result is 8 bytes longer than `key` rounded up to 8.
pub fn wrap_key(key: &[u8], wrapping_key: &[u8], algorithm: &str) -> CryptoResult<Vec<u8>> {
    if algorithm != "AES-KWP" {
        return Err(unsupported_wrap(algorithm));
    }
    if key.is_empty() {
        return Err("the key to wrap is empty".into());
    }
    let wrapped = match wrapping_key.len() {
        16 => aes_kw::KekAes128::try_from(wrapping_key).map(|k| k.wrap_with_padding_vec(key)),
        24 => aes_kw::KekAes192::try_from(wrapping_key).map(|k| k.wrap_with_padding_vec(key)),
        32 => aes_kw::KekAes256::try_from(wrapping_key).map(|k| k.wrap_with_padding_vec(key)),
        n => return Err(aes_key_size(n)),
    };
    match wrapped {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) | Err(e) => Err(format!("AES-KWP failed: {e}")),
    }
}

/// `ccf.crypto.unwrapKey(wrappedKey, unwrappingKey, {name})`: the inverse
/// of [`wrap_key`]; an integrity check failure is an `Err`.
pub fn unwrap_key(wrapped: &[u8], unwrapping_key: &[u8], algorithm: &str) -> CryptoResult<Vec<u8>> {
    if algorithm != "AES-KWP" {
        return Err(unsupported_wrap(algorithm));
    }
    let unwrapped =
        match unwrapping_key.len() {
            16 => aes_kw::KekAes128::try_from(unwrapping_key)
                .map(|k| k.unwrap_with_padding_vec(wrapped)),
            24 => aes_kw::KekAes192::try_from(unwrapping_key)
                .map(|k| k.unwrap_with_padding_vec(wrapped)),
            32 => aes_kw::KekAes256::try_from(unwrapping_key)
                .map(|k| k.unwrap_with_padding_vec(wrapped)),
            n => return Err(aes_key_size(n)),
        };
    match unwrapped {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) | Err(e) => Err(format!(
            "AES-KWP unwrap failed (wrong key or corrupted data): {e}"
        )),
    }
}

fn aes_key_size(bytes: usize) -> String {
    format!(
        "an AES-KWP wrapping key is 128, 192 or 256 bits, got {}",
        bytes * 8
    )
}

/// `ccf.crypto.isValidX509CertBundle(pem)`: true when `pem` holds at least
/// one certificate and every PEM block in it is a well-formed X.509
/// certificate. Never fails: bad input is `false`.
pub fn is_valid_x509_cert_bundle(pem: &str) -> bool {
    let mut certs = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let Ok(block) = block else { return false };
        if block.label != "CERTIFICATE" {
            return false;
        }
        match x509_parser::parse_x509_certificate(&block.contents) {
            // Nothing may follow the certificate's DER.
            Ok(([], _)) => certs += 1,
            _ => return false,
        }
    }
    certs > 0
}

/// A JSON Web Key as `pubPemToJwk` / `pemToJwk` return it: EC P-256
/// (`kty: "EC"`, `crv: "P-256"`, `x`, `y`) or Ed25519 (`kty: "OKP"`,
/// `crv: "Ed25519"`, `x`), with `d` for private keys. Coordinates and keys
/// are base64url without padding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    pub kty: &'static str,
    pub crv: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    pub x: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
}

impl Jwk {
    /// The JWK as JSON text (absent fields left out).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    fn public(key: &PublicKey, kid: Option<&str>) -> Jwk {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let kid = kid.map(str::to_string);
        match key {
            // `point` is 65 bytes: checked when it was parsed.
            PublicKey::P256(point) => Jwk {
                kty: "EC",
                crv: "P-256",
                kid,
                x: b64(point.get(1..33).unwrap_or_default()),
                y: Some(b64(point.get(33..65).unwrap_or_default())),
                d: None,
            },
            PublicKey::Ed25519(k) => Jwk {
                kty: "OKP",
                crv: "Ed25519",
                kid,
                x: b64(k),
                y: None,
                d: None,
            },
        }
    }
}

/// `ccf.crypto.pubPemToJwk(pem, kid?)`: the JWK of a public key (or of a
/// certificate's key), EC P-256 or Ed25519.
pub fn pub_pem_to_jwk(pem: &str, kid: Option<&str>) -> CryptoResult<Jwk> {
    Ok(Jwk::public(&parse_public_key(pem)?, kid))
}

/// `ccf.crypto.pemToJwk(privatePem, kid?)`: the JWK of a private key, with
/// `d` (the P-256 scalar, or the Ed25519 seed).
pub fn pem_to_jwk(private_pem: &str, kid: Option<&str>) -> CryptoResult<Jwk> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    Ok(match parse_private_key(private_pem)? {
        PrivateKey::P256 { d, public } => Jwk {
            d: Some(b64(&d)),
            ..Jwk::public(&PublicKey::P256(public), kid)
        },
        PrivateKey::Ed25519 { seed, public } => Jwk {
            d: Some(b64(&seed)),
            ..Jwk::public(&PublicKey::Ed25519(public), kid)
        },
    })
}

#[cfg(test)]
mod tests;
