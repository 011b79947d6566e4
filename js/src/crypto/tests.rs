//! `crypto.rs` against keys, certificates and signatures made by OpenSSL
//! 3.0 (so what OpenSSL writes loads here), RFC test vectors, and round
//! trips through its own key generation.

use base64::Engine as _;

use super::*;

/// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
const EC_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkkDHDRu/pPLWg87U
jM2jWSW+vaddZONV5M1rfBy5Q/mhRANCAAQTF0WMD0VNXFjtyyO15qxhD0fBTgDi
TB/X1kaofsAOx77RMJsmNobDuBjux7QP5GMIzyCyAh71qZA2vIGAs7BT
-----END PRIVATE KEY-----
";
/// The same key as SEC1 (`openssl ec -in key.pem`).
const EC_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIJJAxw0bv6Ty1oPO1IzNo1klvr2nXWTjVeTNa3wcuUP5oAoGCCqGSM49
AwEHoUQDQgAEExdFjA9FTVxY7csjteasYQ9HwU4A4kwf19ZGqH7ADse+0TCbJjaG
w7gY7se0D+RjCM8gsgIe9amQNryBgLOwUw==
-----END EC PRIVATE KEY-----
";
const EC_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEExdFjA9FTVxY7csjteasYQ9HwU4A
4kwf19ZGqH7ADse+0TCbJjaGw7gY7se0D+RjCM8gsgIe9amQNryBgLOwUw==
-----END PUBLIC KEY-----
";
/// A self-signed certificate for the same key.
const EC_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBdDCCARmgAwIBAgIUJS2/W53FgJpjwlzRhQilwMoc8hQwCgYIKoZIzj0EAwIw
DzENMAsGA1UEAwwEdGVzdDAeFw0yNjEyMDQwOTI1MDJaFw0zNjEyMDEwOTI1MDJa
MA8xDTALBgNVBAMMBHRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQTF0WM
D0VNXFjtyyO15qxhD0fBTgDiTB/X1kaofsAOx77RMJsmNobDuBjux7QP5GMIzyCy
Ah71qZA2vIGAs7BTo1MwUTAdBgNVHQ4EFgQUybSOukxUxNGlQiRviIWalMiUeI8w
HwYDVR0jBBgwFoAUybSOukxUxNGlQiRviIWalMiUeI8wDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNJADBGAiEAzuphz7ftCFCGi6c9pLDdqSPYV8PRg3XdJoOB
WnG/ykgCIQD5NAuCY9PmlogCnFN9NAFuW19K6ga2uWIUfrUlD7OlWQ==
-----END CERTIFICATE-----
";
/// The key's scalar and point, from `openssl ec -noout -text`.
const EC_D: &str = "9240c70d1bbfa4f2d683ced48ccda35925bebda75d64e355e4cd6b7c1cb943f9";
const EC_POINT: &str = "041317458c0f454d5c58edcb23b5e6ac610f47c14e00e24c1fd7d646a87ec00ec7bed1309b263686c3b818eec7b40fe46308cf20b2021ef5a99036bc8180b3b053";
/// `openssl dgst -sha256 -sign` of MSG with the key: DER's r and s, as
/// P1363 `r || s`.
const EC_SIG_P1363: &str = "36ebe82acd7c50de7d8e383cbc554c6674db3b5481867d7c218e493dbdfd4f36064c1b6d95613185deb80aa39ceca7b381ef02145ac15a42bb17da500dcfc4c5";

/// `openssl genpkey -algorithm ED25519` (PKCS#8 v1, no public key).
const ED_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIBkQRM8N9KnWmqxkLfbmyYL9dM96yfjb58s5QbSZB5y5
-----END PRIVATE KEY-----
";
const ED_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAuLP/HhD3o1EKplB2Zm4aOiAgXvmXMnti2FvaxM8HjyM=
-----END PUBLIC KEY-----
";
const ED_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBLjCB4aADAgECAhQMT2je1QtVQwMGTJzxk3EnChvRNjAFBgMrZXAwDTELMAkG
A1UEAwwCZWQwHhcNMjYxMjA0MDkyNjI2WhcNMzYxMjAxMDkyNjI2WjANMQswCQYD
VQQDDAJlZDAqMAUGAytlcAMhALiz/x4Q96NRCqZQdmZuGjogIF75lzJ7Ythb2sTP
B48jo1MwUTAdBgNVHQ4EFgQUDASr4DYTBgvRx6zj1k173rIoffwwHwYDVR0jBBgw
FoAUDASr4DYTBgvRx6zj1k173rIoffwwDwYDVR0TAQH/BAUwAwEB/zAFBgMrZXAD
QQCg0G2wg+pKZ7HZ+t+0QhUmD7/dfeB5E/XxFkxesIbyLCxb0sV+LDUXOFtgSC/V
/vcpibRaRVswSPryDrdcZWsF
-----END CERTIFICATE-----
";
const ED_SEED: &str = "191044cf0df4a9d69aac642df6e6c982fd74cf7ac9f8dbe7cb3941b499079cb9";
const ED_PUBLIC: &str = "b8b3ff1e10f7a3510aa65076666e1a3a20205ef997327b62d85bdac4cf078f23";
/// `openssl pkeyutl -sign -rawin` of MSG with the key (Ed25519 is
/// deterministic, so `sign` must give exactly this).
const ED_SIG: &str = "12cda247d8765069cdc996b681d938d91e0965c1c855c90cac799a19f49bf3b83accf929d501b68b97cb78ff4581fe3f232e4eee3f2dbba1edcd3ba866133e08";

const MSG: &[u8] = b"hello charter";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn b64url(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn flipped(bytes: &[u8], i: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[i] ^= 1;
    out
}

const EDDSA: SigningAlgorithm = SigningAlgorithm::EdDsa;
const ECDSA: SigningAlgorithm = SigningAlgorithm::EcdsaSha256;

#[test]
fn digest_is_sha256() {
    assert_eq!(
        digest("SHA-256", b"abc").unwrap(),
        hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    assert!(digest("SHA-1", b"abc").unwrap_err().contains("SHA-256"));
}

#[test]
fn algorithms_parse_like_ccf() {
    assert_eq!(SigningAlgorithm::parse("EdDSA", None), Ok(EDDSA));
    assert_eq!(SigningAlgorithm::parse("ECDSA", Some("SHA-256")), Ok(ECDSA));
    assert!(SigningAlgorithm::parse("ECDSA", None).is_err());
    assert!(SigningAlgorithm::parse("ECDSA", Some("SHA-384"))
        .unwrap_err()
        .contains("SHA-384"));
    assert!(
        SigningAlgorithm::parse("RSASSA-PKCS1-v1_5", Some("SHA-256"))
            .unwrap_err()
            .contains("unsupported signing algorithm")
    );
}

#[test]
fn ed25519_signs_exactly_like_openssl_and_verifies_its_signatures() {
    assert_eq!(sign(EDDSA, ED_PKCS8, MSG).unwrap(), hex(ED_SIG));
    let sig = hex(ED_SIG);
    assert!(verify_signature(EDDSA, ED_PUB, &sig, MSG).unwrap());
    assert!(verify_signature(EDDSA, ED_CERT, &sig, MSG).unwrap());
    assert!(!verify_signature(EDDSA, ED_PUB, &flipped(&sig, 10), MSG).unwrap());
    assert!(!verify_signature(EDDSA, ED_PUB, &sig, &flipped(MSG, 0)).unwrap());
    assert!(!verify_signature(EDDSA, ED_PUB, &sig[..63], MSG).unwrap());
}

#[test]
fn ecdsa_verifies_openssl_signatures_and_its_own() {
    let theirs = hex(EC_SIG_P1363);
    for key in [EC_PUB, EC_CERT] {
        assert!(verify_signature(ECDSA, key, &theirs, MSG).unwrap());
        assert!(!verify_signature(ECDSA, key, &flipped(&theirs, 40), MSG).unwrap());
        assert!(!verify_signature(ECDSA, key, &theirs, &flipped(MSG, 3)).unwrap());
    }
    for private in [EC_PKCS8, EC_SEC1] {
        let ours = sign(ECDSA, private, MSG).unwrap();
        assert_eq!(ours.len(), 64, "P1363 r || s");
        assert!(verify_signature(ECDSA, EC_PUB, &ours, MSG).unwrap());
        assert!(verify_signature(ECDSA, EC_CERT, &ours, MSG).unwrap());
        assert!(!verify_signature(ECDSA, EC_PUB, &flipped(&ours, 0), MSG).unwrap());
        assert!(!verify_signature(ECDSA, EC_PUB, &flipped(&ours, 63), MSG).unwrap());
    }
    // A DER signature is not what CCF's API takes.
    assert!(!verify_signature(ECDSA, EC_PUB, &[0x30; 70], MSG).unwrap());
}

#[test]
fn algorithm_and_key_must_match() {
    assert!(sign(EDDSA, EC_PKCS8, MSG)
        .unwrap_err()
        .contains("EdDSA needs an Ed25519 key"));
    assert!(sign(ECDSA, ED_PKCS8, MSG)
        .unwrap_err()
        .contains("ECDSA needs an EC P-256 key"));
    assert!(verify_signature(EDDSA, EC_PUB, &[0; 64], MSG).is_err());
    assert!(verify_signature(ECDSA, ED_CERT, &[0; 64], MSG).is_err());
}

#[test]
fn generated_key_pairs_load_back_and_round_trip() {
    let ed = generate_eddsa_key_pair("curve25519").unwrap();
    let ed2 = generate_eddsa_key_pair("Curve25519").unwrap();
    assert_ne!(ed.private_key, ed2.private_key);
    assert!(ed.private_key.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(ed.public_key.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let sig = sign(EDDSA, &ed.private_key, MSG).unwrap();
    assert!(verify_signature(EDDSA, &ed.public_key, &sig, MSG).unwrap());
    assert!(!verify_signature(EDDSA, &ed2.public_key, &sig, MSG).unwrap());

    let ec = generate_ecdsa_key_pair("secp256r1").unwrap();
    let sig = sign(ECDSA, &ec.private_key, MSG).unwrap();
    assert!(verify_signature(ECDSA, &ec.public_key, &sig, MSG).unwrap());
    assert!(!verify_signature(ECDSA, EC_PUB, &sig, MSG).unwrap());

    // The private JWK is the public one plus d.
    for pair in [&ed, &ec] {
        let public = pub_pem_to_jwk(&pair.public_key, None).unwrap();
        let private = pem_to_jwk(&pair.private_key, None).unwrap();
        assert!(private.d.is_some());
        assert_eq!(Jwk { d: None, ..private }, public);
    }

    assert!(generate_eddsa_key_pair("x25519").is_err());
    assert!(generate_ecdsa_key_pair("secp384r1")
        .unwrap_err()
        .contains("secp256r1"));
}

#[test]
fn generated_pems_are_the_standard_der_forms() {
    // Same prefixes OpenSSL writes: PKCS#8 v1 and SPKI.
    let ed = generate_eddsa_key_pair("curve25519").unwrap();
    let (_, der) = first_pem_block(&ed.private_key).unwrap();
    assert_eq!(der.len(), 48);
    assert_eq!(der[..16], hex("302e020100300506032b657004220420")[..]);
    let (_, der) = first_pem_block(&ed.public_key).unwrap();
    assert_eq!(der[..12], hex("302a300506032b6570032100")[..]);
    let ec = generate_ecdsa_key_pair("secp256r1").unwrap();
    let (_, der) = first_pem_block(&ec.public_key).unwrap();
    assert_eq!(
        der[..26],
        hex("3059301306072a8648ce3d020106082a8648ce3d030107034200")[..]
    );
    assert_eq!(der.len(), 26 + 65);
    // PEM lines are at most 64 characters.
    assert!(ec.private_key.lines().all(|l| l.len() <= 64));
}

#[test]
fn jwks_carry_the_key_bytes() {
    let ec = pem_to_jwk(EC_PKCS8, Some("my-kid")).unwrap();
    assert_eq!(
        (ec.kty, ec.crv, ec.kid.as_deref()),
        ("EC", "P-256", Some("my-kid"))
    );
    let point = hex(EC_POINT);
    assert_eq!(b64url(&ec.x), point[1..33]);
    assert_eq!(b64url(ec.y.as_deref().unwrap()), point[33..]);
    assert_eq!(b64url(ec.d.as_deref().unwrap()), hex(EC_D));
    assert!(!ec.x.contains('=') && !ec.x.contains('+') && !ec.x.contains('/'));
    assert_eq!(pem_to_jwk(EC_SEC1, Some("my-kid")).unwrap(), ec);
    let public = pub_pem_to_jwk(EC_PUB, None).unwrap();
    assert_eq!(
        public,
        Jwk {
            d: None,
            kid: None,
            ..ec.clone()
        }
    );
    assert_eq!(pub_pem_to_jwk(EC_CERT, None).unwrap(), public);

    let ed = pem_to_jwk(ED_PKCS8, None).unwrap();
    assert_eq!((ed.kty, ed.crv, ed.y.as_deref()), ("OKP", "Ed25519", None));
    assert_eq!(b64url(&ed.x), hex(ED_PUBLIC));
    assert_eq!(b64url(ed.d.as_deref().unwrap()), hex(ED_SEED));
    assert_eq!(
        pub_pem_to_jwk(ED_PUB, Some("k")).unwrap(),
        Jwk {
            d: None,
            kid: Some("k".into()),
            ..ed.clone()
        }
    );
    assert_eq!(pub_pem_to_jwk(ED_CERT, None).unwrap().x, ed.x);

    // JSON leaves absent fields out.
    let json: serde_json::Value = serde_json::from_str(&ed.to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": ed.x, "d": ed.d})
    );

    // The wrong half is refused.
    assert!(pub_pem_to_jwk(EC_PKCS8, None)
        .unwrap_err()
        .contains("public key"));
    assert!(pem_to_jwk(EC_PUB, None)
        .unwrap_err()
        .contains("private key"));
}

#[test]
fn bad_pems_and_keys_are_errors() {
    let rsa = "-----BEGIN PUBLIC KEY-----
MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBANfgLniYFn2evCcKOdtAoDHo2uY1MMHS
ULOmlZpFngtpeGtq2mXhuSE1XDNh6n67reFcA82TjcSBR+mK2/0cdLsCAwEAAQ==
-----END PUBLIC KEY-----
";
    let cases: [(&str, &str); 8] = [
        ("", "no \"-----BEGIN"),
        ("not a pem", "no \"-----BEGIN"),
        (
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
            "invalid PEM",
        ),
        (
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n",
            "invalid public key",
        ),
        (
            "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEExdF\n",
            "invalid PEM",
        ),
        (rsa, "RSA keys are not supported"),
        (
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
            "invalid X.509",
        ),
        (
            "-----BEGIN FOO-----\nMAA=\n-----END FOO-----\n",
            "unsupported PEM block",
        ),
    ];
    for (pem, expected) in cases {
        let e = verify_signature(ECDSA, pem, &[0; 64], MSG).unwrap_err();
        assert!(e.contains(expected), "{pem:?}: {e}");
        assert!(pub_pem_to_jwk(pem, None).is_err());
    }
    let private_cases: [(&str, &str); 5] = [
        ("", "no \"-----BEGIN"),
        (
            "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
            "invalid PKCS#8",
        ),
        (
            "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n",
            "invalid EC private key",
        ),
        (
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "encrypted",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n",
            "RSA",
        ),
    ];
    for (pem, expected) in private_cases {
        let e = sign(EDDSA, pem, MSG).unwrap_err();
        assert!(e.contains(expected), "{pem:?}: {e}");
        assert!(pem_to_jwk(pem, None).is_err());
    }
    // An EC key whose public half is not its own.
    let der = first_pem_block(EC_SEC1).unwrap().1;
    let mut tampered = der.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let pem = pem_encode("EC PRIVATE KEY", &tampered);
    assert!(sign(ECDSA, &pem, MSG)
        .unwrap_err()
        .contains("invalid EC P-256 private key"));
    // An EC key without its public half.
    let mut bare = vec![0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
    bare.extend(hex(EC_D));
    bare.extend(hex("a00a06082a8648ce3d030107"));
    let pem = pem_encode("EC PRIVATE KEY", &bare);
    assert!(sign(ECDSA, &pem, MSG)
        .unwrap_err()
        .contains("does not include its public key"));
}

#[test]
fn aes_keys_have_the_requested_size() {
    for bits in [128, 192, 256] {
        let a = generate_aes_key(bits).unwrap();
        assert_eq!(a.len() * 8, bits as usize);
        assert_ne!(a, generate_aes_key(bits).unwrap());
    }
    for bits in [0, 64, 512, 129] {
        assert!(generate_aes_key(bits)
            .unwrap_err()
            .contains("invalid AES key size"));
    }
}

#[test]
fn aes_kwp_matches_rfc_5649() {
    // RFC 5649 section 6: both examples, 192-bit KEK.
    let kek = hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
    let key20 = hex("c37b7e6492584340bed12207808941155068f738");
    let wrapped20 = hex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a");
    assert_eq!(wrap_key(&key20, &kek, "AES-KWP").unwrap(), wrapped20);
    assert_eq!(unwrap_key(&wrapped20, &kek, "AES-KWP").unwrap(), key20);
    let key7 = hex("466f7250617369");
    let wrapped7 = hex("afbeb0f07dfbf5419200f2ccb50bb24f");
    assert_eq!(wrap_key(&key7, &kek, "AES-KWP").unwrap(), wrapped7);
    assert_eq!(unwrap_key(&wrapped7, &kek, "AES-KWP").unwrap(), key7);
    // Tampering is detected.
    assert!(unwrap_key(&flipped(&wrapped20, 5), &kek, "AES-KWP").is_err());
    assert!(unwrap_key(&wrapped20, &flipped(&kek, 0), "AES-KWP").is_err());
}

#[test]
fn aes_kwp_round_trips_with_every_kek_size_and_refuses_bad_input() {
    for bits in [128, 192, 256] {
        let kek = generate_aes_key(bits).unwrap();
        let key = generate_aes_key(256).unwrap();
        let wrapped = wrap_key(&key, &kek, "AES-KWP").unwrap();
        assert_eq!(wrapped.len(), 40);
        assert_eq!(unwrap_key(&wrapped, &kek, "AES-KWP").unwrap(), key);
    }
    let kek = [7u8; 32];
    assert!(wrap_key(b"k", &kek, "RSA-OAEP")
        .unwrap_err()
        .contains("unsupported"));
    assert!(wrap_key(b"k", &kek, "AES-KW")
        .unwrap_err()
        .contains("unsupported"));
    assert!(wrap_key(b"k", &[0; 15], "AES-KWP")
        .unwrap_err()
        .contains("got 120"));
    assert!(wrap_key(b"", &kek, "AES-KWP")
        .unwrap_err()
        .contains("empty"));
    assert!(unwrap_key(&[1, 2, 3], &kek, "AES-KWP").is_err());
    assert!(unwrap_key(&[], &kek, "AES-KWP").is_err());
}

#[test]
fn cert_bundles() {
    assert!(is_valid_x509_cert_bundle(EC_CERT));
    assert!(is_valid_x509_cert_bundle(&format!("{EC_CERT}{ED_CERT}")));
    assert!(is_valid_x509_cert_bundle(&format!(
        "\n{EC_CERT}\n\n{ED_CERT}\n"
    )));
    assert!(!is_valid_x509_cert_bundle(""));
    assert!(!is_valid_x509_cert_bundle("garbage"));
    assert!(!is_valid_x509_cert_bundle(EC_PUB));
    assert!(!is_valid_x509_cert_bundle(&format!("{EC_CERT}{EC_PUB}")));
    let truncated = EC_CERT.replace(
        "WnG/ykgCIQD5NAuCY9PmlogCnFN9NAFuW19K6ga2uWIUfrUlD7OlWQ==\n",
        "",
    );
    assert!(!is_valid_x509_cert_bundle(&truncated));
    let corrupt = EC_CERT.replacen("MIIB", "MIIC", 1);
    assert!(!is_valid_x509_cert_bundle(&corrupt));
}
