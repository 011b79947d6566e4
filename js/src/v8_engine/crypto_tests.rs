//! The rest of the `ccf` API on V8, called from JS handlers: `ccf.crypto`,
//! `ccf.enableUntrustedDateTime`, `ccf.rpc.setApplyWrites`,
//! `getVersionOfPreviousWrite` and `ccf.consensus`.

use std::collections::BTreeMap;
use std::sync::Arc;

use charter_ledger::{Store, WriteSet};
use serde_json::{json, Value};

use super::*;
use crate::{ConsensusView, JsEngine};

fn bundle(source: &str, functions: &[&str]) -> Arc<AppBundle> {
    let mut endpoints = serde_json::Map::new();
    for f in functions {
        endpoints.insert(
            format!("/{f}"),
            json!({"post": {"js_module": "app.js", "js_function": f, "mode": "readwrite"}}),
        );
    }
    let meta = json!({ "endpoints": endpoints }).to_string();
    let mut modules = BTreeMap::new();
    modules.insert("app.js".to_string(), source.to_string());
    Arc::new(AppBundle::from_parts(&meta, modules).unwrap())
}

struct Fixture {
    engine: JsEngine,
    store: Arc<Store>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            engine: JsEngine::new(1, Limits::default()),
            store: Arc::new(Store::new()),
        }
    }

    async fn call(&self, b: &Arc<AppBundle>, f: &str) -> (JsResponse, charter_ledger::Tx) {
        let (ep, _) = b.find("post", &format!("/{f}")).unwrap();
        let request = JsRequest {
            method: "POST".into(),
            path: format!("/app/{f}"),
            url: format!("/app/{f}"),
            route: format!("/{f}"),
            caller: json!({"policy": "no_auth"}),
            ..Default::default()
        };
        self.engine
            .execute(b.clone(), ep, request, self.store.begin())
            .await
            .unwrap_or_else(|e| panic!("{f}: {e}"))
    }

    async fn json(&self, b: &Arc<AppBundle>, f: &str) -> Value {
        let (resp, _) = self.call(b, f).await;
        serde_json::from_slice(&resp.body)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&resp.body)))
    }
}

/// Helpers the JS tests share.
const JS_HELPERS: &str = r#"
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (s) => new Uint8Array(s.match(/../g).map((h) => parseInt(h, 16))).buffer;
const flip = (buf, i) => { const a = new Uint8Array(buf.slice(0)); a[i] ^= 1; return a.buffer; };
// Bytes in unpadded base64url text (-1 if it is not that).
const b64urlLen = (s) => (/^[A-Za-z0-9_-]*$/.test(s) ? Math.floor((s.length * 3) / 4) : -1);
function thrown(f) {
  try { f(); return "no exception"; } catch (e) { return e.name + ": " + e.message; }
}
"#;

#[tokio::test]
async fn crypto_signs_verifies_and_generates_from_js() {
    let fx = Fixture::new();
    let source = format!(
        r#"{JS_HELPERS}
        export function main() {{
            const c = ccf.crypto;
            const data = ccf.strToBuf("hello charter");
            const out = {{}};
            out.digest = hex(c.digest("SHA-256", ccf.strToBuf("abc")));
            out.digestView = hex(c.digest("SHA-256", new Uint8Array([97, 98, 99])));

            const ed = c.generateEddsaKeyPair("Curve25519");
            const edSig = c.sign({{name: "EdDSA"}}, ed.privateKey, data);
            out.ed = [
                typeof ed.privateKey, ed.publicKey.split("\n")[0], edSig.byteLength,
                c.verifySignature({{name: "EdDSA"}}, ed.publicKey, edSig, data),
                c.verifySignature({{name: "EdDSA"}}, ed.publicKey, flip(edSig, 3), data),
                c.verifySignature({{name: "EdDSA"}}, ed.publicKey, edSig, flip(data, 0)),
            ];

            const ec = c.generateEcdsaKeyPair("secp256r1");
            const alg = {{name: "ECDSA", hash: "SHA-256"}};
            const ecSig = c.sign(alg, ec.privateKey, data);
            out.ec = [
                ecSig.byteLength,
                c.verifySignature(alg, ec.publicKey, ecSig, data),
                c.verifySignature({{name: "ECDSA", hash: {{name: "SHA-256"}}}}, ec.publicKey, ecSig, data),
                c.verifySignature(alg, ec.publicKey, flip(ecSig, 40), data),
                c.verifySignature(alg, ec.publicKey, ecSig, ccf.strToBuf("other")),
            ];

            const pub = c.pubPemToJwk(ec.publicKey, "k1");
            const priv = c.pemToJwk(ec.privateKey);
            out.ecJwk = [pub.kty, pub.crv, pub.kid, b64urlLen(pub.x), b64urlLen(pub.y),
                         priv.x === pub.x, priv.y === pub.y, b64urlLen(priv.d), "kid" in priv];
            const edPub = c.pubPemToJwk(ed.publicKey);
            const edPriv = c.eddsaPemToJwk(ed.privateKey, "k2");
            out.edJwk = [edPub.kty, edPub.crv, "y" in edPub, edPriv.x === edPub.x, edPriv.kid,
                         b64urlLen(edPriv.d), c.pubEddsaPemToJwk(ed.publicKey).x === edPub.x];

            const aes = [128, 192, 256].map((n) => c.generateAesKey(n).byteLength);
            // RFC 5649 section 6, second example.
            const kek = unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
            const wrapped = c.wrapKey(unhex("466f7250617369"), kek, {{name: "AES-KWP"}});
            out.aes = [aes, hex(wrapped), hex(c.unwrapKey(wrapped, kek, {{name: "AES-KWP"}}))];
            out.bundle = [c.isValidX509CertBundle("nope"), c.isValidX509CertBundle(ec.publicKey)];
            return {{ body: out }};
        }}
        export function errors() {{
            const c = ccf.crypto;
            const data = ccf.strToBuf("x");
            const ec = c.generateEcdsaKeyPair("secp256r1");
            return {{ body: [
                thrown(() => c.sign({{name: "EdDSA"}}, "not a pem", data)),
                thrown(() => c.sign({{name: "ECDSA", hash: "SHA-256"}}, ec.publicKey, data)),
                thrown(() => c.sign({{name: "EdDSA"}}, ec.privateKey, data)),
                thrown(() => c.sign({{name: "RSASSA-PKCS1-v1_5", hash: "SHA-256"}}, ec.privateKey, data)),
                thrown(() => c.sign("EdDSA", ec.privateKey, data)),
                thrown(() => c.sign({{name: "EdDSA"}}, 42, data)),
                thrown(() => c.sign({{name: "EdDSA"}}, ec.privateKey, "a string")),
                thrown(() => c.verifySignature({{name: "ECDSA", hash: "SHA-256"}}, "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n", data, data)),
                thrown(() => c.digest("MD5", data)),
                thrown(() => c.generateAesKey(100)),
                thrown(() => c.generateAesKey(128.5)),
                thrown(() => c.generateAesKey("128")),
                thrown(() => c.wrapKey(data, c.generateAesKey(128), {{name: "RSA-OAEP"}})),
                thrown(() => c.wrapKey(data, new ArrayBuffer(5), {{name: "AES-KWP"}})),
                thrown(() => c.generateEcdsaKeyPair("secp384r1")),
                thrown(() => c.pemToJwk(ec.publicKey)),
                thrown(() => c.pubEddsaPemToJwk(ec.publicKey)),
                thrown(() => c.pubPemToJwk(ec.publicKey, 7)),
            ] }};
        }}"#
    );
    let b = bundle(&source, &["main", "errors"]);
    let out = fx.json(&b, "main").await;
    assert_eq!(
        out["digest"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(out["digestView"], out["digest"]);
    assert_eq!(
        out["ed"],
        json!([
            "string",
            "-----BEGIN PUBLIC KEY-----",
            64,
            true,
            false,
            false
        ])
    );
    assert_eq!(out["ec"], json!([64, true, true, false, false]));
    assert_eq!(
        out["ecJwk"],
        json!(["EC", "P-256", "k1", 32, 32, true, true, 32, false])
    );
    assert_eq!(
        out["edJwk"],
        json!(["OKP", "Ed25519", false, true, "k2", 32, true])
    );
    assert_eq!(
        out["aes"],
        json!([
            [16, 24, 32],
            "afbeb0f07dfbf5419200f2ccb50bb24f",
            "466f7250617369"
        ])
    );
    assert_eq!(out["bundle"], json!([false, false]));

    let errors = fx.json(&b, "errors").await;
    let expected = [
        "RangeError: invalid PEM",
        "RangeError: expected a private key PEM, got a PUBLIC KEY",
        "RangeError: EdDSA needs an Ed25519 key, got an EC P-256 key",
        "RangeError: unsupported signing algorithm \"RSASSA-PKCS1-v1_5\"",
        "TypeError: ccf.crypto.sign: the algorithm must be an object",
        "TypeError: the private key (PEM) must be a string",
        "TypeError: data must be an ArrayBuffer",
        "RangeError: invalid public key",
        "RangeError: unsupported digest algorithm \"MD5\"",
        "RangeError: invalid AES key size 100",
        "RangeError: invalid AES key size 128.5",
        "TypeError: the AES key size must be a number",
        "RangeError: unsupported key wrapping algorithm \"RSA-OAEP\", supported: AES-KWP",
        "RangeError: an AES-KWP wrapping key is 128, 192 or 256 bits, got 40",
        "RangeError: unsupported curve \"secp384r1\"",
        "RangeError: expected a private key PEM",
        "RangeError: ccf.crypto.pubEddsaPemToJwk needs an Ed25519 key",
        "TypeError: kid must be a string",
    ];
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), expected.len());
    for (got, want) in errors.iter().zip(expected) {
        let got = got.as_str().unwrap();
        assert!(got.starts_with(want), "got {got:?}, want {want:?}");
    }
}

#[tokio::test]
async fn crypto_verifies_against_a_certificate_from_js() {
    let fx = Fixture::new();
    // An OpenSSL P-256 key, its self-signed certificate, and an OpenSSL
    // signature of "hello charter" (P1363), as in crypto/tests.rs.
    let source = r#"
        const cert = `-----BEGIN CERTIFICATE-----
MIIBdDCCARmgAwIBAgIUJS2/W53FgJpjwlzRhQilwMoc8hQwCgYIKoZIzj0EAwIw
DzENMAsGA1UEAwwEdGVzdDAeFw0yNjEyMDQwOTI1MDJaFw0zNjEyMDEwOTI1MDJa
MA8xDTALBgNVBAMMBHRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQTF0WM
D0VNXFjtyyO15qxhD0fBTgDiTB/X1kaofsAOx77RMJsmNobDuBjux7QP5GMIzyCy
Ah71qZA2vIGAs7BTo1MwUTAdBgNVHQ4EFgQUybSOukxUxNGlQiRviIWalMiUeI8w
HwYDVR0jBBgwFoAUybSOukxUxNGlQiRviIWalMiUeI8wDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNJADBGAiEAzuphz7ftCFCGi6c9pLDdqSPYV8PRg3XdJoOB
WnG/ykgCIQD5NAuCY9PmlogCnFN9NAFuW19K6ga2uWIUfrUlD7OlWQ==
-----END CERTIFICATE-----
`;
        const sig = "36ebe82acd7c50de7d8e383cbc554c6674db3b5481867d7c218e493dbdfd4f36064c1b6d95613185deb80aa39ceca7b381ef02145ac15a42bb17da500dcfc4c5";
        const unhex = (s) => new Uint8Array(s.match(/../g).map((h) => parseInt(h, 16))).buffer;
        export function main() {
            const alg = {name: "ECDSA", hash: "SHA-256"};
            const c = ccf.crypto;
            return { body: [
                c.verifySignature(alg, cert, unhex(sig), ccf.strToBuf("hello charter")),
                c.verifySignature(alg, cert, unhex(sig), ccf.strToBuf("hello charter!")),
                c.isValidX509CertBundle(cert),
                c.isValidX509CertBundle(cert + cert),
                c.isValidX509CertBundle(cert.replace("MIIB", "MIIC")),
                c.pubPemToJwk(cert).x,
            ] };
        }"#;
    let b = bundle(source, &["main"]);
    assert_eq!(
        fx.json(&b, "main").await,
        json!([
            true,
            false,
            true,
            true,
            false,
            "ExdFjA9FTVxY7csjteasYQ9HwU4A4kwf19ZGqH7ADsc"
        ])
    );
}

#[tokio::test]
async fn the_clock_reads_zero_until_untrusted_time_is_enabled() {
    let fx = Fixture::new();
    let b = bundle(
        r#"
        class Stamp extends Date {}
        export function main() {
            const before = [
                Date.now(), new Date().getTime(), new Date().toISOString(), Date().includes("1970"),
                new Stamp().getTime(), new Stamp() instanceof Date, new Date(0).constructor === Date,
                new (new Date(5).constructor)().getTime(), new Date(1234).getTime(), Date.UTC(2000, 0),
            ];
            const previous = ccf.enableUntrustedDateTime(true);
            const after = [Date.now(), new Date().getTime(), new Stamp().getTime(), Date().includes("1970")];
            const again = ccf.enableUntrustedDateTime(false);
            let error;
            try { ccf.enableUntrustedDateTime("yes"); } catch (e) { error = e.name; }
            return { body: { before, previous, after, again, off: Date.now(), error } };
        }
        export function later() {
            return { body: [Date.now(), new Date().getTime()] };
        }"#,
        &["main", "later"],
    );
    let out = fx.json(&b, "main").await;
    assert_eq!(
        out["before"],
        json!([
            0,
            0,
            "1970-01-01T00:00:00.000Z",
            true,
            0,
            true,
            true,
            0,
            1234,
            946684800000u64
        ])
    );
    assert_eq!(out["previous"], false);
    let after = out["after"].as_array().unwrap();
    // Some time after 2024, i.e. the host's clock.
    for t in &after[..3] {
        assert!(t.as_f64().unwrap() > 1.7e12, "{out}");
    }
    assert_eq!(after[3], false);
    assert_eq!(out["again"], true);
    assert_eq!(out["off"], 0);
    assert_eq!(out["error"], "TypeError");
    // The next request starts with the clock at zero again.
    assert_eq!(fx.json(&b, "later").await, json!([0, 0]));
}

#[tokio::test]
async fn set_apply_writes_overrides_the_status_code() {
    let fx = Fixture::new();
    let b = bundle(
        r#"
        const m = () => ccf.kv["public:m"];
        export function forced() {
            m().set(ccf.strToBuf("k"), ccf.strToBuf("v"));
            ccf.rpc.setApplyWrites(true);
            return { statusCode: 400 };
        }
        export function dropped() {
            m().set(ccf.strToBuf("k"), ccf.strToBuf("v"));
            ccf.rpc.setApplyWrites(false);
            return { statusCode: 200 };
        }
        export function plain400() {
            m().set(ccf.strToBuf("k"), ccf.strToBuf("v"));
            return { statusCode: 400 };
        }
        export function plain200() {
            m().set(ccf.strToBuf("k"), ccf.strToBuf("v"));
            return {};
        }
        export function bad() {
            try { ccf.rpc.setApplyWrites(); } catch (e) { return { body: e.name }; }
        }"#,
        &["forced", "dropped", "plain400", "plain200", "bad"],
    );
    let (resp, tx) = fx.call(&b, "forced").await;
    assert_eq!(
        (resp.status, resp.apply_writes, resp.should_apply_writes()),
        (400, Some(true), true)
    );
    assert_eq!(
        tx.write_set().maps["public:m"].writes[&b"k".to_vec()],
        Some(b"v".to_vec())
    );
    let (resp, _) = fx.call(&b, "dropped").await;
    assert_eq!(
        (resp.status, resp.apply_writes, resp.should_apply_writes()),
        (200, Some(false), false)
    );
    let (resp, _) = fx.call(&b, "plain400").await;
    assert_eq!(
        (resp.apply_writes, resp.should_apply_writes()),
        (None, false)
    );
    let (resp, _) = fx.call(&b, "plain200").await;
    assert_eq!(
        (resp.apply_writes, resp.should_apply_writes()),
        (None, true)
    );
    let (resp, _) = fx.call(&b, "bad").await;
    assert_eq!(resp.body, b"TypeError");
}

#[tokio::test]
async fn version_of_previous_write_is_the_committed_seqno() {
    let fx = Fixture::new();
    let mut ws = WriteSet::default();
    ws.put("public:m", b"a", b"1");
    fx.store.apply(5, &ws);
    let mut ws = WriteSet::default();
    ws.put("public:m", b"b", b"2");
    fx.store.apply(6, &ws);
    let b = bundle(
        r#"export function main() {
            const m = ccf.kv["public:m"];
            const k = (s) => ccf.strToBuf(s);
            const out = [m.getVersionOfPreviousWrite(k("a")), m.getVersionOfPreviousWrite(new Uint8Array([98])),
                         m.getVersionOfPreviousWrite(k("none")) === undefined];
            m.set(k("a"), k("new"));
            out.push(m.getVersionOfPreviousWrite(k("a")));
            return { body: out };
        }"#,
        &["main"],
    );
    assert_eq!(fx.json(&b, "main").await, json!([5, 6, true, 5]));
}

struct FakeConsensus;

impl ConsensusView for FakeConsensus {
    fn last_committed(&self) -> (u64, u64) {
        (3, 42)
    }
    fn status(&self, view: u64, seqno: u64) -> &'static str {
        match (view, seqno) {
            (3, s) if s <= 42 => "Committed",
            (3, _) => "Pending",
            (v, _) if v < 3 => "Invalid",
            _ => "Unknown",
        }
    }
    fn view_for_seqno(&self, seqno: u64) -> Option<u64> {
        (seqno <= 42).then_some(if seqno < 10 { 2 } else { 3 })
    }
}

#[tokio::test]
async fn consensus_comes_from_the_node_or_is_not_available() {
    let fx = Fixture::new();
    let b = bundle(
        r#"export function main() {
            const c = ccf.consensus;
            return { body: [
                c.getLastCommittedTxId(),
                c.getStatusForTxId(3, 40), c.getStatusForTxId(3, 50), c.getStatusForTxId(1, 5), c.getStatusForTxId(9, 1),
                c.getViewForSeqno(5), c.getViewForSeqno(20), c.getViewForSeqno(100),
            ] };
        }
        export function bad() {
            const out = [];
            for (const f of [() => ccf.consensus.getStatusForTxId(-1, 2), () => ccf.consensus.getViewForSeqno("3"),
                             () => ccf.consensus.getViewForSeqno(1.5)]) {
                try { f(); out.push("no exception"); } catch (e) { out.push(e.name); }
            }
            return { body: out };
        }
        export function unattached() {
            try { ccf.consensus.getLastCommittedTxId(); } catch (e) { return { body: e.message }; }
        }"#,
        &["main", "bad", "unattached"],
    );
    let (resp, _) = fx.call(&b, "unattached").await;
    let message = String::from_utf8(resp.body).unwrap();
    assert!(message.contains("not available"), "{message}");

    fx.engine.set_consensus(Arc::new(FakeConsensus));
    assert_eq!(
        fx.json(&b, "main").await,
        json!([
            {"view": 3, "seqno": 42},
            "Committed",
            "Pending",
            "Invalid",
            "Unknown",
            2,
            3,
            null
        ])
    );
    assert_eq!(
        fx.json(&b, "bad").await,
        json!(["TypeError", "TypeError", "TypeError"])
    );
}
