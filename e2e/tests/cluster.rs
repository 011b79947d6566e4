//! The spine: 3 real nodes, writes spread over all of them, failover after
//! SIGKILL of the primary, and the killed node catching up.

use std::time::Duration;

use charter_e2e::{txid_of, Cluster, ClusterOptions};

async fn write(c: &Cluster, node: usize, id: u64) -> anyhow::Result<(u64, u64)> {
    c.log_write(node, "/app/log/private", id).await
}

async fn read(c: &Cluster, node: usize, id: u64) -> anyhow::Result<String> {
    let r = c
        .user
        .get(c.nodes[node].url(&format!("/app/log/private?id={id}")))
        .send()
        .await?;
    let status = r.status();
    anyhow::ensure!(txid_of(&r).is_some(), "read has no transaction id header");
    let v: serde_json::Value = r.json().await?;
    anyhow::ensure!(status == 200, "read {id} on node {node}: {status} {v}");
    Ok(v["msg"].as_str().unwrap_or_default().to_string())
}

async fn tx_status(c: &Cluster, node: usize, txid: (u64, u64)) -> anyhow::Result<String> {
    let v = c
        .get_json(
            node,
            &format!("/node/tx?transaction_id={}.{}", txid.0, txid.1),
        )
        .await?;
    Ok(v["status"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_fail_over_and_catch_up() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOptions::new(3)).await?;

    // 100 writes spread over all nodes, 10 in flight at a time: writes that
    // land on backups are forwarded to the primary.
    let mut txids = Vec::new();
    for batch in 0..10u64 {
        let futures = (0..10u64).map(|k| {
            let id = batch * 10 + k;
            let c = &c;
            async move { write(c, (id % 3) as usize, id).await }
        });
        for r in futures::future::join_all(futures).await {
            txids.push(r?);
        }
    }
    let last = txids.iter().map(|t| t.1).max().unwrap();
    let mut seqnos: Vec<u64> = txids.iter().map(|t| t.1).collect();
    seqnos.sort();
    seqnos.dedup();
    assert_eq!(seqnos.len(), 100, "every write got its own seqno");

    // Every node applies every write.
    for node in 0..3 {
        c.wait_for_commit(node, last, Duration::from_secs(30))
            .await?;
        for id in 0..100 {
            assert_eq!(
                read(&c, node, id).await?,
                format!("message {id}"),
                "node {node} id {id}"
            );
        }
        assert_eq!(tx_status(&c, node, txids[0]).await?, "Committed");
    }
    // A transaction id that never existed in that view is not Committed.
    let (v, s) = txids[0];
    assert_ne!(tx_status(&c, 0, (v + 1000, s)).await?, "Committed");

    // SIGKILL the primary; the others elect a new one.
    let old = c.primary(Duration::from_secs(10)).await?;
    c.nodes[old].kill();
    let new = c.primary(Duration::from_secs(30)).await?;
    assert_ne!(new, old);

    // Every acknowledged write survives, on both remaining nodes.
    let alive: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    for &node in &alive {
        c.wait_for_commit(node, last, Duration::from_secs(30))
            .await?;
        for id in 0..100 {
            assert_eq!(read(&c, node, id).await?, format!("message {id}"));
        }
    }

    // New writes succeed, through the new primary and through the backup.
    let mut newest = 0;
    for id in 100..110u64 {
        let node = alive[(id % 2) as usize];
        let (view, seqno) = write(&c, node, id).await?;
        assert!(view > txids[0].0, "new writes are in a later view");
        newest = newest.max(seqno);
    }

    // The killed node restarts from its RocksDB files and catches up.
    c.restart(old)?;
    c.wait_for_commit(old, newest, Duration::from_secs(60))
        .await?;
    for id in 0..110 {
        assert_eq!(
            read(&c, old, id).await?,
            format!("message {id}"),
            "restarted node, id {id}"
        );
    }
    // The old view's writes are still Committed everywhere, including on the
    // restarted node.
    for node in 0..3 {
        assert_eq!(tx_status(&c, node, txids[50]).await?, "Committed");
    }
    Ok(())
}
