//! Bad input gets a clear 4xx (or a 500 for a failing handler) with CCF's
//! JSON error shape, and changes nothing.

use charter_e2e::{keygen, Cluster, ClusterOptions};
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
