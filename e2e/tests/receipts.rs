//! Receipts from a live 3-node cluster: every sampled one verifies offline
//! (in-process and with `charter verify receipt`), across a leader change;
//! tampered receipts fail naming the check. COSE receipts of a sample prove
//! the same roots as their JSON receipts.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use charter_e2e::{charter_bin, Cluster, ClusterOptions};
use charter_ledger::cose_receipt;
use charter_ledger::receipt::{self, Receipt};
use serde_json::{json, Value};

async fn write(c: &Cluster, node: usize, id: u64) -> anyhow::Result<(u64, u64)> {
    c.log_write(node, "/app/log/public", id).await
}

/// Polls `/app/receipt` until the transaction is signed.
async fn fetch_receipt(c: &Cluster, node: usize, txid: (u64, u64)) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .user
            .get(c.nodes[node].url(&format!(
                "/app/receipt?transaction_id={}.{}",
                txid.0, txid.1
            )))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        match status.as_u16() {
            200 => return Ok(body),
            202 => {}
            _ => anyhow::bail!("receipt {txid:?} on node {node}: {status} {body}"),
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "receipt {txid:?} on node {node} never became available: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/app/receipt` with `Accept: application/cose` until the
/// transaction is signed; returns the COSE receipt's bytes.
async fn fetch_cose_receipt(c: &Cluster, node: usize, txid: (u64, u64)) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .user
            .get(c.nodes[node].url(&format!(
                "/app/receipt?transaction_id={}.{}",
                txid.0, txid.1
            )))
            .header("accept", "application/cose")
            .send()
            .await?;
        let status = r.status();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r.bytes().await?.to_vec();
        match status.as_u16() {
            200 => {
                anyhow::ensure!(
                    content_type == "application/cose",
                    "COSE receipt {txid:?} on node {node} has content-type {content_type:?}"
                );
                return Ok(body);
            }
            202 => {}
            _ => anyhow::bail!(
                "COSE receipt {txid:?} on node {node}: {status} {}",
                String::from_utf8_lossy(&body)
            ),
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "COSE receipt {txid:?} on node {node} never became available"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Python verifier from docs/auditing.md, written to `dir`.
fn python_verifier(dir: &Path) -> std::path::PathBuf {
    let doc = std::fs::read_to_string(charter_e2e::repo_root().join("docs/auditing.md")).unwrap();
    let start = doc
        .find("```python\n")
        .expect("docs/auditing.md has a python block")
        + "```python\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let path = dir.join("verify_receipt.py");
    std::fs::write(&path, &doc[start..end]).unwrap();
    path
}

/// Runs the Python verifier; returns (exit success, stdout).
fn python_verify(
    script: &Path,
    dir: &Path,
    name: &str,
    receipt: &Value,
    service_cert: &Path,
) -> (bool, String) {
    let file = dir.join(name);
    std::fs::write(&file, receipt.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(script)
        .arg(&file)
        .arg(service_cert)
        .output()
        .expect("python3 (scripts/setup installs the cryptography package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("Traceback"),
        "the Python verifier crashed: {stderr}"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs `charter verify receipt`; returns (exit success, stdout).
fn cli_verify(dir: &Path, name: &str, receipt: &Value, service_cert: &Path) -> (bool, String) {
    cli_verify_bytes(dir, name, receipt.to_string().as_bytes(), service_cert)
}

/// Runs `charter verify receipt` on a file of these bytes (JSON or COSE).
fn cli_verify_bytes(dir: &Path, name: &str, receipt: &[u8], service_cert: &Path) -> (bool, String) {
    let file = dir.join(name);
    std::fs::write(&file, receipt).unwrap();
    let out = Command::new(charter_bin())
        .args(["verify", "receipt"])
        .arg(&file)
        .arg("--service-cert")
        .arg(service_cert)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_verify_offline_across_a_leader_change() -> anyhow::Result<()> {
    let mut opts = ClusterOptions::new(3);
    opts.extra_config = "signature_interval_ms = 100\nsignature_interval_tx = 50".into();
    let mut c = Cluster::start(opts).await?;
    let service_cert = std::fs::read_to_string(&c.service_cert)?;

    // 1,000 writes spread over every node, 20 in flight.
    let mut txids = Vec::new();
    for batch in 0..50u64 {
        let futures = (0..20u64).map(|k| {
            let id = batch * 20 + k;
            let c = &c;
            async move { write(c, (id % 3) as usize, id).await }
        });
        for r in futures::future::join_all(futures).await {
            txids.push(r?);
        }
    }

    // A sample, each fetched from a different node, verifies in-process;
    // some also through the CLI.
    let python = python_verifier(c.dir.path());
    let mut roots = std::collections::BTreeSet::new();
    for (k, txid) in txids.iter().step_by(97).enumerate() {
        let v = fetch_receipt(&c, k % 3, *txid).await?;
        let r: Receipt = serde_json::from_value(v.clone())?;
        let root =
            receipt::verify(&r, &service_cert).map_err(|e| anyhow::anyhow!("{txid:?}: {e}"))?;
        roots.insert(root);
        // The independent verifier agrees, root and all.
        let (ok, out) = python_verify(&python, c.dir.path(), "p.json", &v, &c.service_cert);
        assert!(
            ok && out.contains(&hex::encode(root)),
            "{txid:?}: python says {out}"
        );
        if k % 4 == 0 {
            let (ok, out) = cli_verify(c.dir.path(), "r.json", &v, &c.service_cert);
            assert!(ok && out.starts_with("valid"), "{txid:?}: {out}");
        }
        // Every other one as a COSE receipt, from another node: the same
        // root, signed by the service key.
        if k % 2 == 0 {
            let cose = fetch_cose_receipt(&c, (k + 1) % 3, *txid).await?;
            let cose_root = cose_receipt::verify(&cose, &service_cert)
                .map_err(|e| anyhow::anyhow!("COSE {txid:?}: {e}"))?;
            assert_eq!(cose_root, root, "{txid:?}: COSE and JSON roots differ");
            if k % 4 == 0 {
                let (ok, out) = cli_verify_bytes(c.dir.path(), "r.cose", &cose, &c.service_cert);
                assert!(
                    ok && out.contains(&hex::encode(root)),
                    "COSE {txid:?}: {out}"
                );
            }
        }
    }
    assert!(roots.len() > 1, "1,000 writes span several signatures");

    // Tampering is caught, naming the check.
    let good = fetch_receipt(&c, 0, txids[500]).await?;
    let mut bad = good.clone();
    let wsd = bad["leaf_components"]["write_set_digest"]
        .as_str()
        .unwrap()
        .to_string();
    // Change the first hex digit.
    let first = if wsd.starts_with('0') { '1' } else { '0' };
    let flipped = format!("{first}{}", &wsd[1..]);
    bad["leaf_components"]["write_set_digest"] = json!(flipped);
    let (ok, out) = cli_verify(c.dir.path(), "bad1.json", &bad, &c.service_cert);
    assert!(!ok && out.contains("signature"), "{out}");
    let (ok, out) = python_verify(&python, c.dir.path(), "pbad1.json", &bad, &c.service_cert);
    assert!(!ok && out.contains("signature"), "python: {out}");
    let mut bad = good.clone();
    bad["leaf_components"]["commit_evidence"] = json!("ce:garbage");
    let (ok, out) = cli_verify(c.dir.path(), "bad2.json", &bad, &c.service_cert);
    assert!(!ok && out.contains("leaf"), "{out}");
    let other_service = c.dir.path().join("other_cert.pem");
    charter_e2e::keygen(c.dir.path(), "other")?;
    std::fs::rename(c.dir.path().join("other_cert.pem"), &other_service).ok();
    let (ok, out) = cli_verify(c.dir.path(), "good.json", &good, &other_service);
    assert!(!ok && out.contains("endorsement"), "{out}");
    let (ok, out) = python_verify(&python, c.dir.path(), "pgood.json", &good, &other_service);
    assert!(!ok && out.contains("endorsement"), "python: {out}");

    // Tampered COSE receipts fail with the CLI, naming the check; so does a
    // genuine one against another service's certificate.
    let cose = fetch_cose_receipt(&c, 2, txids[500]).await?;
    let mut bad = cose.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01; // the signature's last byte
    let (ok, out) = cli_verify_bytes(c.dir.path(), "bad1.cose", &bad, &c.service_cert);
    assert!(!ok && out.contains("signature"), "{out}");
    let mut bad = cose.clone();
    bad[0] ^= 0x01; // the COSE_Sign1 tag
    let (ok, out) = cli_verify_bytes(c.dir.path(), "bad2.cose", &bad, &c.service_cert);
    assert!(!ok && out.contains("format"), "{out}");
    let (ok, out) = cli_verify_bytes(c.dir.path(), "good.cose", &cose, &other_service);
    assert!(!ok && out.contains("signature"), "{out}");

    // Bad requests for receipts.
    let r = c
        .anonymous
        .get(c.nodes[0].url("/app/receipt?transaction_id=2.5"))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    let r = c
        .user
        .get(c.nodes[0].url("/app/receipt?transaction_id=nope"))
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let r = c
        .user
        .get(c.nodes[0].url("/app/receipt?transaction_id=99.999999"))
        .send()
        .await?;
    assert_eq!(r.status(), 404);

    // A leader change: old receipts still verify, new writes get receipts
    // signed by the new primary.
    let old = c.primary(Duration::from_secs(10)).await?;
    c.nodes[old].kill();
    let new = c.primary(Duration::from_secs(30)).await?;
    let alive: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let mut later = Vec::new();
    for id in 1000..1020u64 {
        later.push(write(&c, alive[(id % 2) as usize], id).await?);
    }
    for txid in [txids[0], txids[999], later[0], later[19]] {
        let v = fetch_receipt(&c, new, txid).await?;
        let r: Receipt = serde_json::from_value(v)?;
        receipt::verify(&r, &service_cert)
            .map_err(|e| anyhow::anyhow!("{txid:?} after failover: {e}"))?;
    }
    assert!(
        later[0].0 > txids[0].0,
        "the new writes are in a later view"
    );
    Ok(())
}
