// ccf.crypto, ccf.consensus and getVersionOfPreviousWrite: host functions
// each engine binds itself, which must behave the same on both
// (js/tests/conformance.rs). Keys are random, so only what does not depend
// on them is returned (lengths, verification results, fixed-key outputs).
import { hex } from "./lib/util.js";

const unhex = (s) => new Uint8Array(s.match(/../g).map((h) => parseInt(h, 16))).buffer;

function flip(buf, i) {
  const copy = new Uint8Array(buf.slice(0));
  copy[i] ^= 1;
  return copy.buffer;
}

function attempt(f) {
  try {
    return f();
  } catch (e) {
    return e.name + ": " + e.message;
  }
}

// An OpenSSL P-256 key's self-signed certificate.
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

export function crypto_api() {
  const c = ccf.crypto;
  const data = ccf.strToBuf("hello charter");
  const other = ccf.strToBuf("hello charter!");

  const ed = c.generateEddsaKeyPair("curve25519");
  const edAlg = { name: "EdDSA" };
  const edSig = c.sign(edAlg, ed.privateKey, data);

  const ec = c.generateEcdsaKeyPair("secp256r1");
  const ecAlg = { name: "ECDSA", hash: "SHA-256" };
  const ecSig = c.sign(ecAlg, ec.privateKey, data);

  const jwk = c.pubPemToJwk(ec.publicKey, "k1");
  const priv = c.pemToJwk(ec.privateKey);

  // RFC 5649 section 6, second example.
  const kek = unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
  const wrapped = c.wrapKey(unhex("466f7250617369"), kek, { name: "AES-KWP" });

  return {
    body: {
      digest: hex(c.digest("SHA-256", ccf.strToBuf("abc"))),
      digestView: hex(c.digest("SHA-256", new Uint8Array([0x61, 0x62, 0x63]))),
      ed: [
        typeof ed.publicKey,
        ed.publicKey.split("\n")[0],
        edSig.byteLength,
        c.verifySignature(edAlg, ed.publicKey, edSig, data),
        c.verifySignature(edAlg, ed.publicKey, flip(edSig, 5), data),
        c.verifySignature(edAlg, ed.publicKey, edSig, other),
      ],
      ec: [
        ecSig.byteLength,
        c.verifySignature(ecAlg, ec.publicKey, ecSig, data),
        c.verifySignature({ name: "ECDSA", hash: { name: "SHA-256" } }, ec.publicKey, ecSig, data),
        c.verifySignature(ecAlg, ec.publicKey, flip(ecSig, 40), data),
        c.verifySignature(ecAlg, ec.publicKey, ecSig, other),
      ],
      aes: [128, 192, 256].map((n) => c.generateAesKey(n).byteLength),
      wrapped: hex(wrapped),
      unwrapped: hex(c.unwrapKey(wrapped, kek, { name: "AES-KWP" })),
      bundle: [
        c.isValidX509CertBundle(cert),
        c.isValidX509CertBundle(cert + cert),
        c.isValidX509CertBundle(cert.replace("MIIB", "MIIC")),
        c.isValidX509CertBundle("nope"),
        c.isValidX509CertBundle(ec.publicKey),
      ],
      certJwkX: c.pubPemToJwk(cert).x,
      jwk: [
        Object.keys(jwk).sort(),
        jwk.kty,
        jwk.crv,
        jwk.kid,
        jwk.x.length,
        jwk.y.length,
        priv.x === jwk.x && priv.y === jwk.y,
        "kid" in priv,
      ],
    },
  };
}

// The same wrong calls: same error type and message on both engines.
export function crypto_errors() {
  const c = ccf.crypto;
  const data = ccf.strToBuf("x");
  const ec = c.generateEcdsaKeyPair("secp256r1");
  return {
    body: [
      attempt(() => c.sign({ name: "EdDSA" }, "not a pem", data)),
      attempt(() => c.sign({ name: "ECDSA", hash: "SHA-256" }, ec.publicKey, data)),
      attempt(() => c.sign({ name: "EdDSA" }, ec.privateKey, data)),
      attempt(() => c.sign({ name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, ec.privateKey, data)),
      attempt(() => c.sign({ name: 7 }, ec.privateKey, data)),
      attempt(() => c.sign({ name: "ECDSA", hash: 7 }, ec.privateKey, data)),
      attempt(() => c.sign("EdDSA", ec.privateKey, data)),
      attempt(() => c.sign({ name: "EdDSA" }, 42, data)),
      attempt(() => c.sign({ name: "EdDSA" }, ec.privateKey, "a string")),
      attempt(() => c.verifySignature({ name: "ECDSA", hash: "SHA-256" }, ec.publicKey, "sig", data)),
      attempt(() => c.digest("MD5", data)),
      attempt(() => c.digest(1, data)),
      attempt(() => c.generateAesKey(100)),
      attempt(() => c.generateAesKey(128.5)),
      attempt(() => c.generateAesKey(-1)),
      attempt(() => c.generateAesKey(NaN)),
      attempt(() => c.generateAesKey("128")),
      attempt(() => c.generateAesKey()),
      attempt(() => c.wrapKey(data, c.generateAesKey(128), { name: "RSA-OAEP" })),
      attempt(() => c.wrapKey(data, new ArrayBuffer(5), { name: "AES-KWP" })),
      attempt(() => c.wrapKey("k", new ArrayBuffer(16), { name: "AES-KWP" })),
      attempt(() => c.unwrapKey(new ArrayBuffer(16), new ArrayBuffer(16), { name: "AES-KWP" })),
      attempt(() => c.generateEcdsaKeyPair("secp384r1")),
      attempt(() => c.generateEddsaKeyPair(25519)),
      attempt(() => c.pemToJwk(ec.publicKey)),
      attempt(() => c.pubEddsaPemToJwk(ec.publicKey)),
      attempt(() => c.pubPemToJwk(ec.publicKey, 7)),
      attempt(() => String(c.pubPemToJwk(ec.publicKey, null).kid === undefined)),
      attempt(() => c.isValidX509CertBundle(7)),
    ],
  };
}

// getVersionOfPreviousWrite on a seeded key, a missing key and bad args.
export function kv_version() {
  const m = ccf.kv["public:conformance.versions"];
  const before = m.getVersionOfPreviousWrite(ccf.strToBuf("seeded"));
  m.set(ccf.strToBuf("seeded"), ccf.strToBuf("new"));
  return {
    body: {
      seeded: before,
      afterOwnWrite: m.getVersionOfPreviousWrite(ccf.strToBuf("seeded")),
      view: m.getVersionOfPreviousWrite(new Uint8Array(ccf.strToBuf("seeded"))),
      missing: attempt(() => String(m.getVersionOfPreviousWrite(ccf.strToBuf("missing")))),
      otherMap: attempt(() => String(ccf.kv["public:nothing"].getVersionOfPreviousWrite(ccf.strToBuf("seeded")))),
      badKey: attempt(() => m.getVersionOfPreviousWrite("seeded")),
    },
  };
}

// ccf.consensus: answers from the node's ConsensusView, or the same error
// on both engines when there is none.
export function consensus_api() {
  const k = ccf.consensus;
  return {
    body: [
      attempt(() => k.getLastCommittedTxId()),
      attempt(() => k.getStatusForTxId(2, 10)),
      attempt(() => k.getStatusForTxId(2, 99)),
      attempt(() => k.getViewForSeqno(10)),
      attempt(() => k.getViewForSeqno(99)),
      attempt(() => k.getStatusForTxId("2", 10)),
      attempt(() => k.getStatusForTxId(2, -1)),
      attempt(() => k.getViewForSeqno(1.5)),
      attempt(() => k.getViewForSeqno()),
    ],
  };
}
