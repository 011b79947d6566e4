//! Auditor-side throughput: receipt verification, and a full audit of a
//! generated ledger beside raw SHA-256 over the same bytes.
//!
//! `cargo bench -p charter-ledger` (results in docs/benchmarks.md).
//! `AUDIT_ENTRIES` sets the generated ledger's size (default 1,000,000).

use std::time::{Duration, Instant};

use base64::Engine;
use charter_ledger::files::{Frame, LedgerWriter};
use charter_ledger::history::{
    CommitSecret, History, LeafComponents, SignatureRecord, SIGNATURES_MAP, SIGNATURE_KEY,
};
use charter_ledger::receipt::{verify, Receipt, ReceiptVerifier};
use charter_ledger::{EntryKind, LedgerEntry, WriteSet};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::Signer;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ED25519};
use sha2::{Digest, Sha256};

struct Identities {
    service_pem: String,
    node_key: ed25519_dalek::SigningKey,
    node_pem: String,
}

fn identities() -> Identities {
    let service_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let service = params.self_signed(&service_key).unwrap();
    let node_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let node = CertificateParams::new(vec!["n".to_string()])
        .unwrap()
        .signed_by(&node_key, &service, &service_key)
        .unwrap();
    Identities {
        service_pem: service.pem(),
        node_key: ed25519_dalek::SigningKey::from_pkcs8_der(&node_key.serialize_der()).unwrap(),
        node_pem: node.pem(),
    }
}

fn record(ids: &Identities, seqno: u64, root: [u8; 32]) -> SignatureRecord {
    SignatureRecord {
        node_id: "1".into(),
        view: 2,
        seqno,
        root: hex::encode(root),
        signature: base64::engine::general_purpose::STANDARD
            .encode(ids.node_key.sign(&root).to_bytes()),
        cert: ids.node_pem.clone(),
    }
}

fn receipts(c: &mut Criterion) {
    let ids = identities();
    let mut h = History::new(CommitSecret::derive(b"bench"));
    let n = 100_000u64;
    for s in 0..n {
        let comps = LeafComponents {
            view: 2,
            write_set_digest: Sha256::digest(s.to_be_bytes()).into(),
            claims_digest: None,
        };
        h.append(s, comps, None).unwrap();
    }
    let root = h.root_through(n - 1).unwrap();
    let comps = LeafComponents {
        view: 2,
        write_set_digest: [0; 32],
        claims_digest: None,
    };
    h.append(n, comps, Some(record(&ids, n - 1, root))).unwrap();
    let sample: Vec<Receipt> = (0..64).map(|i| h.receipt(i * 1499).unwrap()).collect();
    let mut group = c.benchmark_group("receipt");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("verify_json_receipt_100k_tree", |b| {
        b.iter(|| {
            i = (i + 1) % sample.len();
            verify(&sample[i], &ids.service_pem).unwrap()
        })
    });
    // A batch verifier checks each node's endorsement once.
    let mut verifier = ReceiptVerifier::new(&ids.service_pem);
    group.bench_function("verify_json_receipt_100k_tree_batch", |b| {
        b.iter(|| {
            i = (i + 1) % sample.len();
            verifier.verify(&sample[i]).unwrap()
        })
    });
    // Batches of 64, signatures checked with Ed25519 batch verification.
    group.throughput(Throughput::Elements(sample.len() as u64));
    group.bench_function("verify_json_receipt_100k_tree_batch64", |b| {
        b.iter(|| {
            let results = verifier.verify_batch(&sample);
            assert!(results.iter().all(|r| r.is_ok()));
        })
    });
    // The floor: one Ed25519 signature check on its own.
    let key = charter_ledger::receipt::ed25519_key_of_pem(&sample[0].cert).unwrap();
    let sig = {
        let bytes: [u8; 64] = base64::engine::general_purpose::STANDARD
            .decode(&sample[0].signature)
            .unwrap()
            .try_into()
            .unwrap();
        ed25519_dalek::Signature::from_bytes(&bytes)
    };
    group.throughput(Throughput::Elements(1));
    group.bench_function("ed25519_verify_strict_alone", |b| {
        b.iter(|| key.verify_strict(&root, &sig).unwrap())
    });
    group.finish();
}

/// Writes a ledger of `n` entries (a small write set each, a signature
/// every 5,000) to a temp dir.
fn generate_ledger(ids: &Identities, n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LedgerWriter::open(dir.path(), 5 * 1024 * 1024).unwrap();
    let mut history = History::new(CommitSecret::derive(b"bench"));
    let mut since_sig = 0;
    for seqno in 0..n {
        let (entry, sig) = if since_sig == 5000 {
            since_sig = 0;
            let rec = record(ids, seqno - 1, history.root_through(seqno - 1).unwrap());
            let mut ws = WriteSet::default();
            ws.put(
                SIGNATURES_MAP,
                SIGNATURE_KEY,
                &serde_json::to_vec(&rec).unwrap(),
            );
            (
                LedgerEntry {
                    kind: EntryKind::Signature,
                    claims_digest: None,
                    write_set: ws,
                },
                Some(rec),
            )
        } else {
            since_sig += 1;
            let mut ws = WriteSet::default();
            ws.put(
                "public:records",
                &seqno.to_be_bytes(),
                format!("message number {seqno}").as_bytes(),
            );
            (LedgerEntry::transaction(ws), None)
        };
        let bytes = entry.encode();
        let comps = LeafComponents {
            view: 2,
            write_set_digest: charter_ledger::entry::write_set_digest(&entry.write_set),
            claims_digest: None,
        };
        let is_sig = sig.is_some();
        history.append(seqno, comps, sig).unwrap();
        let ce = history.commit_evidence(2, seqno);
        let frame = Frame {
            view: 2,
            seqno,
            commit_evidence_digest: Sha256::digest(ce.as_bytes()).into(),
            entry: Some(bytes),
        };
        writer.append(&frame, is_sig).unwrap();
    }
    dir
}

fn audit(c: &mut Criterion) {
    let n: u64 = std::env::var("AUDIT_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let ids = identities();
    let started = Instant::now();
    let dir = generate_ledger(&ids, n);
    eprintln!("generated {n} entries in {:.1?}", started.elapsed());
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let mut group = c.benchmark_group("audit");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(n));
    group.bench_function(format!("audit_{n}_entries"), |b| {
        b.iter(|| {
            charter_ledger::audit::audit(dir.path(), &ids.service_pem, &mut |_, _| {}).unwrap()
        })
    });
    // The same bytes through SHA-256 alone: the floor for any audit.
    let files: Vec<Vec<u8>> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(format!("sha256_same_{bytes}_bytes"), |b| {
        b.iter(|| {
            let mut h = Sha256::new();
            for f in &files {
                h.update(f);
            }
            h.finalize()
        })
    });
    group.finish();
}

criterion_group!(benches, receipts, audit);
criterion_main!(benches);
