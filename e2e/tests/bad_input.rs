//! Bad input gets a clear 4xx (or a 500 for a failing handler) with CCF's
//! JSON error shape, and changes nothing; handlers that try to take the
//! node down (samples/bench's bombs) get a clean 500 on both JS engines.

use std::time::Duration;

use charter_e2e::{eventually, keygen, repo_root, Cluster, ClusterOptions, BENCH_BOMBS};
use serde_json::{json, Value};

async fn error_of(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("error body is JSON");
    let code = v["error"]["code"].as_str().expect("error.code").to_string();
    let message = v["error"]["message"]
        .as_str()
        .expect("error.message")
        .to_string();
    assert!(!message.is_empty());
    (status, code, message)
}

async fn committed(c: &Cluster) -> String {
    c.get_json(0, "/node/commit").await.unwrap()["transaction_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_app_rejects_bad_requests_without_changing_state() -> anyhow::Result<()> {
    let mut opts = ClusterOptions::new(1);
    opts.max_body_bytes = 4096;
    let c = Cluster::start(opts).await?;
    let url = |p: &str| c.nodes[0].url(p);
    let before = committed(&c).await;

    // Unknown paths.
    let (s, code, _) = error_of(c.user.get(url("/app/no/such/endpoint")).send().await?).await;
    assert_eq!((s, code.as_str()), (404, "ResourceNotFound"));
    let (s, _, _) = error_of(c.user.get(url("/nothing")).send().await?).await;
    assert_eq!(s, 404);
    // Known path, wrong method.
    let (s, _, _) = error_of(c.user.delete(url("/app/log/private")).send().await?).await;
    assert_eq!(s, 405);

    // Malformed JSON, and well-formed JSON of the wrong shape.
    let resp = c
        .user
        .post(url("/app/log/private"))
        .header("content-type", "application/json")
        .body("{\"id\": 1, \"msg\": ")
        .send()
        .await?;
    let (s, _, m) = error_of(resp).await;
    assert_eq!(s, 400, "{m}");
    let (s, _, m) = error_of(
        c.user
            .post(url("/app/log/private"))
            .json(&json!({"id": "x", "msg": "m"}))
            .send()
            .await?,
    )
    .await;
    assert_eq!(s, 400);
    assert!(m.contains("id"), "{m}");

    // Over the body limit (4096 bytes in this cluster's config).
    let big = "x".repeat(10_000);
    let (s, code, _) = error_of(
        c.user
            .post(url("/app/log/private"))
            .json(&json!({"id": 1, "msg": big}))
            .send()
            .await?,
    )
    .await;
    assert_eq!((s, code.as_str()), (413, "RequestBodyTooLarge"));

    // No client certificate, and a certificate the service never registered.
    let (s, code, _) = error_of(
        c.anonymous
            .post(url("/app/log/private"))
            .json(&json!({"id": 1, "msg": "m"}))
            .send()
            .await?,
    )
    .await;
    assert_eq!((s, code.as_str()), (401, "InvalidAuthenticationInfo"));
    let (cert, key) = keygen(c.dir.path(), "stranger")?;
    let stranger = c.client_for(&cert, &key)?;
    let (s, _, m) = error_of(
        stranger
            .post(url("/app/log/private"))
            .json(&json!({"id": 1, "msg": "m"}))
            .send()
            .await?,
    )
    .await;
    assert_eq!(s, 401);
    assert!(m.contains("not registered"), "{m}");
    let (s, _, _) = error_of(stranger.get(url("/app/log/private?id=1")).send().await?).await;
    assert_eq!(s, 401);

    // Bad node endpoint input.
    let (s, _, _) = error_of(
        c.anonymous
            .get(url("/node/tx?transaction_id=banana"))
            .send()
            .await?,
    )
    .await;
    assert_eq!(s, 400);
    let (s, _, _) = error_of(c.anonymous.get(url("/node/tx")).send().await?).await;
    assert_eq!(s, 400);
    let (s, _, _) = error_of(
        c.anonymous
            .post(url("/node/join"))
            .body("garbage")
            .send()
            .await?,
    )
    .await;
    assert_eq!(s, 400);

    // None of it changed anything: no new transaction, id 1 was never written.
    assert_eq!(committed(&c).await, before);
    let (s, _, _) = error_of(c.user.get(url("/app/log/private?id=1")).send().await?).await;
    assert_eq!(s, 404);

    // And the node still works.
    let r = c
        .user
        .post(url("/app/log/private"))
        .json(&json!({"id": 1, "msg": "fine"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handlers_give_500_and_leave_no_writes() -> anyhow::Result<()> {
    let mut opts = ClusterOptions::new(1);
    opts.app = charter_e2e::repo_root().join("e2e/apps/errors");
    let c = Cluster::start(opts).await?;
    let url = |p: &str| c.nodes[0].url(p);
    let before = committed(&c).await;

    let (s, code, m) = error_of(c.user.post(url("/app/write_then_throw")).send().await?).await;
    assert_eq!(s, 500);
    assert!(!code.is_empty());
    assert!(m.contains("deliberate failure"), "{m}");
    let (s, _, m) = error_of(c.user.get(url("/app/throw_string")).send().await?).await;
    assert_eq!(s, 500);
    assert!(m.contains("a plain string"), "{m}");
    // A transaction larger than a ledger entry may be is refused whole.
    let (s, code, m) = error_of(c.user.post(url("/app/write_too_much")).send().await?).await;
    assert_eq!((s, code.as_str()), (413, "TransactionTooLarge"), "{m}");
    // A handler answering 4xx has its writes discarded, as in CCF.
    let r = c.user.post(url("/app/write_then_fail")).send().await?;
    assert_eq!(r.status(), 400);

    assert_eq!(
        committed(&c).await,
        before,
        "failed handlers committed nothing"
    );
    let v: Value = c.user.get(url("/app/read")).send().await?.json().await?;
    assert_eq!(v["value"], Value::Null);
    // The engine counted the exceptions.
    let metrics = c.get_json(0, "/node/js_metrics").await?;
    assert!(
        metrics["exceptions"].as_u64().unwrap_or(0) >= 2,
        "{metrics}"
    );
    // no_auth endpoints need no certificate.
    let r = c.anonymous.get(url("/app/open")).send().await?;
    assert_eq!(r.status(), 200);
    Ok(())
}

/// Every bomb once, each followed by a normal write; then `/compute`,
/// whose answer is returned.
async fn bench_app_survives_bombs(c: &Cluster, engine: &str) -> anyhow::Result<Value> {
    let url = |p: &str| c.nodes[0].url(p);
    let metrics = c.get_json(0, "/node/js_metrics").await?;
    assert_eq!(metrics["engine"], engine, "{metrics}");
    assert!(metrics["rss_bytes"].as_u64().unwrap_or(0) > 0, "{metrics}");
    for (i, (kind, code)) in BENCH_BOMBS.into_iter().enumerate() {
        let (s, got, m) =
            error_of(c.user.get(url(&format!("/app/bomb/{kind}"))).send().await?).await;
        assert_eq!((s, got.as_str()), (500, code), "{engine} {kind}: {m}");
        if kind == "throw" {
            // The limits were set without `return_exception_details`,
            // which governance then writes as false: the app's own words
            // stay out of the response.
            assert!(!m.contains("on purpose"), "{engine}: {m}");
            assert!(
                m.contains("return_exception_details is false"),
                "{engine}: {m}"
            );
        }
        let r = c
            .user
            .post(url("/app/log"))
            .json(&json!({"id": i, "msg": format!("after {kind}")}))
            .send()
            .await?;
        assert_eq!(r.status(), 200, "{engine}: a write after {kind}");
    }
    let r = c.user.get(url("/app/compute")).send().await?;
    assert_eq!(r.status(), 200, "{engine} /compute");
    let answer: Value = r.json().await?;
    assert_eq!(answer["records"], 10_000, "{answer}");
    let counted: u64 = answer["groups"]
        .as_object()
        .expect("groups")
        .values()
        .map(|g| g["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, 10_000, "{answer}");
    let m = c.get_json(0, "/node/js_metrics").await?;
    assert!(m["rss_bytes"].as_u64().unwrap_or(0) > 0, "{m}");
    Ok(answer)
}

/// The bench app on QuickJS (seeded with `app_engine`, as `charter sandbox
/// --js-engine` does), then on V8 (by `set_js_app` with `"engine"` in its
/// app.json): every bomb is a clean 500 on both, and `/compute` answers
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_bombs_are_clean_errors_on_both_engines() -> anyhow::Result<()> {
    let mut opts = ClusterOptions::new(1);
    opts.app = repo_root().join("samples/bench");
    opts.extra_config = "app_engine = \"quickjs\"\n".into();
    let c = Cluster::start(opts).await?;
    // Limits that end the bombs quickly; the time limit leaves room for
    // /compute on a debug build.
    let limits = json!({"max_heap_bytes": 32 << 20, "max_stack_bytes": 1 << 20, "max_execution_time_ms": 1000});
    let p = c.gov_json(
        0,
        &[
            "propose",
            "set_js_runtime_options",
            "--args",
            &limits.to_string(),
        ],
    )?;
    let id = p["proposalId"].as_str().expect("proposalId");
    assert_eq!(
        c.gov_json(0, &["vote", id, "accept"])?["proposalState"],
        "Accepted"
    );
    eventually(
        "the limits are in force",
        Duration::from_secs(20),
        || async {
            c.get_json(0, "/node/js_metrics")
                .await
                .is_ok_and(|m| m["limits"]["max_heap_bytes"] == limits["max_heap_bytes"])
        },
    )
    .await;

    let on_quickjs = bench_app_survives_bombs(&c, "quickjs").await?;

    // The same app with "engine": "v8", through governance.
    let bundle = c.dir.path().join("bench_v8");
    std::fs::create_dir_all(bundle.join("src"))?;
    for entry in std::fs::read_dir(repo_root().join("samples/bench/src"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), bundle.join("src").join(entry.file_name()))?;
    }
    let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(
        repo_root().join("samples/bench/app.json"),
    )?)?;
    meta["engine"] = json!("v8");
    std::fs::write(bundle.join("app.json"), meta.to_string())?;
    let p = c.gov_json(
        0,
        &[
            "propose",
            "set_js_app",
            "--bundle",
            bundle.to_str().unwrap(),
        ],
    )?;
    let id = p["proposalId"].as_str().expect("proposalId");
    assert_eq!(
        c.gov_json(0, &["vote", id, "accept"])?["proposalState"],
        "Accepted"
    );
    eventually("the app runs on V8", Duration::from_secs(20), || async {
        c.get_json(0, "/node/js_metrics")
            .await
            .is_ok_and(|m| m["engine"] == "v8")
    })
    .await;
    let app = c.get_json(0, "/gov/service/javascript-app").await?;
    assert_eq!(app["engine"], "v8", "{app}");

    let on_v8 = bench_app_survives_bombs(&c, "v8").await?;
    assert_eq!(on_v8, on_quickjs, "/compute differs between the engines");
    let m = c.get_json(0, "/node/js_metrics").await?;
    // Four heap-limit bombs and one time-limit bomb per engine.
    assert!(m["limit_hits"]["heap"].as_u64().unwrap_or(0) >= 8, "{m}");
    assert!(
        m["limit_hits"]["execution_time"].as_u64().unwrap_or(0) >= 2,
        "{m}"
    );
    Ok(())
}
