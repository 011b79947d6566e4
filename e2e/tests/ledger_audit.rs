//! `charter ledger audit` on real nodes' ledger directories: all three pass
//! and agree on the root; damaged copies fail naming the seqno.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use charter_e2e::{charter_bin, Cluster, ClusterOptions};
use serde_json::{json, Value};

/// Runs the audit with `--json`; returns (exit success, parsed output).
fn audit(dir: &Path, service_cert: &Path) -> (bool, Value) {
    let out = Command::new(charter_bin())
        .args(["ledger", "audit"])
        .arg(dir)
        .arg("--service-cert")
        .arg(service_cert)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "audit output is not JSON ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn committed_chunks(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".committed"))
        .collect();
    v.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        name.trim_start_matches("ledger_")
            .split('-')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });
    v
}

fn failed_seqno(v: &Value) -> Option<u64> {
    v["failure"]["seqno"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_passes_on_every_node_and_catches_damage() -> anyhow::Result<()> {
    let mut opts = ClusterOptions::new(3);
    opts.extra_config =
        "signature_interval_ms = 100\nsignature_interval_tx = 40\nledger_chunk_bytes = 8192".into();
    let mut c = Cluster::start(opts).await?;
    for batch in 0..15u64 {
        let futures = (0..20u64).map(|k| {
            let id = batch * 20 + k;
            let c = &c;
            async move {
                let r = c
                    .user
                    .post(c.nodes[(id % 3) as usize].url("/app/log/public"))
                    .json(&json!({"id": id, "msg": format!("message {id} {}", "x".repeat(64))}))
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "write {id}: {}", r.status());
                anyhow::Ok(())
            }
        });
        for r in futures::future::join_all(futures).await {
            r?;
        }
    }
    // Quiet: every node has committed the same last entry (a signature).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        for i in 0..3 {
            seen.push(
                c.get_json(i, "/node/commit").await?["transaction_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = c.get_json(0, "/node/commit").await?["transaction_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if seen.iter().all(|s| *s == seen[0]) && again == seen[0] {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "nodes did not settle: {seen:?}");
    }

    // A live node's directory audits (read-only).
    let ledger = |i: usize| c.dir.path().join(format!("node{i}/ledger"));
    let (ok, live) = audit(&ledger(0), &c.service_cert);
    assert!(ok, "{live}");

    for node in &mut c.nodes {
        node.stop();
    }
    let mut roots = Vec::new();
    for i in 0..3 {
        let (ok, v) = audit(&ledger(i), &c.service_cert);
        assert!(ok, "node {i}: {v}");
        let r = &v["report"];
        assert!(r["entries"].as_u64().unwrap() > 300, "{v}");
        assert!(r["signatures"].as_u64().unwrap() > 3, "{v}");
        assert!(r["files"].as_u64().unwrap() > 2, "small chunks: {v}");
        assert_eq!(r["unsigned_tail"], 0, "the last entry is a signature: {v}");
        roots.push((r["root"].clone(), r["last_seqno"].clone()));
    }
    assert!(
        roots.iter().all(|r| *r == roots[0]),
        "nodes disagree: {roots:?}"
    );

    let scratch = c.dir.path().join("scratch");
    let fresh = |name: &str| {
        let d = scratch.join(name);
        copy_dir(&ledger(0), &d);
        d
    };

    // One flipped byte in the middle of a committed chunk.
    let d = fresh("flip");
    let chunk = &committed_chunks(&d)[1];
    let mut bytes = std::fs::read(chunk)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(chunk, &bytes)?;
    let (ok, v) = audit(&d, &c.service_cert);
    assert!(!ok && failed_seqno(&v).is_some(), "flipped byte: {v}");

    // A committed chunk cut short.
    let d = fresh("truncate");
    let chunk = &committed_chunks(&d)[1];
    let bytes = std::fs::read(chunk)?;
    std::fs::write(chunk, &bytes[..bytes.len() - 10])?;
    let (ok, v) = audit(&d, &c.service_cert);
    assert!(!ok && failed_seqno(&v).is_some(), "truncated: {v}");

    // Two entries swapped.
    let d = fresh("reorder");
    let chunk = &committed_chunks(&d)[1];
    let bytes = std::fs::read(chunk)?;
    let (_, n1) = charter_ledger::files::decode_frame(&bytes)?;
    let (_, n2) = charter_ledger::files::decode_frame(&bytes[n1..])?;
    let mut swapped = bytes[n1..n1 + n2].to_vec();
    swapped.extend_from_slice(&bytes[..n1]);
    swapped.extend_from_slice(&bytes[n1 + n2..]);
    std::fs::write(chunk, &swapped)?;
    let (ok, v) = audit(&d, &c.service_cert);
    assert!(
        !ok && v["failure"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("expected seqno"),
        "reordered: {v}"
    );

    // A missing chunk.
    let d = fresh("missing");
    let gone = committed_chunks(&d)[1].clone();
    std::fs::remove_file(&gone)?;
    let (ok, v) = audit(&d, &c.service_cert);
    assert!(
        !ok && v["failure"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("missing"),
        "missing chunk: {v}"
    );

    // The wrong service certificate.
    let (ok, v) = audit(
        &ledger(1),
        &charter_e2e::keygen(c.dir.path(), "stranger")?.0,
    );
    assert!(
        !ok && v["failure"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("endorsement"),
        "{v}"
    );

    // Garbage and empty directories: a clear error, no panic.
    let d = scratch.join("garbage");
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("ledger_0-5.committed"), b"this is not a ledger")?;
    let (ok, v) = audit(&d, &c.service_cert);
    assert!(!ok && failed_seqno(&v) == Some(0), "{v}");
    let d = scratch.join("empty");
    std::fs::create_dir_all(&d)?;
    let (ok, v) = audit(&d, &c.service_cert);
    assert!(!ok, "{v}");
    Ok(())
}
