//! V8 and QuickJS side by side, in one run, through the node's own front
//! (`JsEngine::execute`), against a real `charter_ledger::Store`. Every
//! request sees fresh JS state: on V8 a hardened context with fresh module
//! instances, on QuickJS a fresh runtime.
//!
//! - `empty`: a handler that returns `{}`: the fixed cost of one request
//!   (fresh context, prelude, module, request and response);
//! - `logging`: parse a JSON body, `ccf.kv[...].set` a JSON record, answer
//!   JSON (the logging sample's write path);
//! - `compute`: build 10,000 records, sort them and aggregate by group, in
//!   JS;
//! - `compute_reuse`: the same endpoint with `interpreter_reuse` (V8 keeps
//!   its module instance, and so its optimised code, between requests;
//!   QuickJS ignores the setting).
//!
//! Requests run one after another (one worker per engine), so requests/s
//! is 1 / latency of one execution.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-release \
//!   cargo bench -p charter-js --bench engines -- --warm-up-time 1 --measurement-time 3
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use charter_js::{AppBundle, Engine, JsEngine, JsRequest, Limits};
use charter_ledger::Store;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const APP: &str = r#"
export function empty() {
  return {};
}

export function log(request) {
  const id = request.params.id;
  const entry = request.body.json();
  const record = { id, msg: entry.msg, tags: entry.tags, at: entry.at };
  ccf.kv["public:records"].set(ccf.strToBuf(id), ccf.jsonCompatibleToBuf(record));
  return { statusCode: 201, body: { id, size: entry.msg.length } };
}

export function compute() {
  const records = [];
  let seed = 42;
  for (let i = 0; i < 10000; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    records.push({ id: i, group: "g" + (seed % 16), value: seed % 1000, name: "r" + seed });
  }
  records.sort((a, b) => a.value - b.value || a.id - b.id);
  const totals = {};
  for (const r of records) {
    const t = totals[r.group] || (totals[r.group] = { count: 0, sum: 0, max: 0 });
    t.count += 1;
    t.sum += r.value;
    if (r.value > t.max) t.max = r.value;
  }
  const groups = Object.keys(totals).sort();
  return {
    body: {
      median: records[5000].value,
      first: records[0].name,
      groups: groups.length,
      mean: groups.map((g) => Math.round(totals[g].sum / totals[g].count)),
    },
  };
}
"#;

fn bundle(engine: Engine) -> Arc<AppBundle> {
    let meta = serde_json::json!({
        "engine": engine.as_str(),
        "endpoints": {
            "/log/{id}": {"post": {"js_module": "app.js", "js_function": "log"}},
            "/compute": {"post": {"js_module": "app.js", "js_function": "compute"}},
            "/compute_reuse": {"post": {"js_module": "app.js", "js_function": "compute",
                "interpreter_reuse": {"key": "compute"}}},
            "/empty": {"post": {"js_module": "app.js", "js_function": "empty"}},
        }
    });
    let modules = BTreeMap::from([("app.js".to_string(), APP.to_string())]);
    Arc::new(AppBundle::from_parts(&meta.to_string(), modules).expect("the bench app loads"))
}

fn request(route: &str, params: BTreeMap<String, String>, body: &str) -> JsRequest {
    JsRequest {
        method: "POST".into(),
        path: format!("/app{route}"),
        url: format!("/app{route}"),
        route: route.to_string(),
        params,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
        caller: serde_json::json!({"policy": "no_auth"}),
        ..Default::default()
    }
}

struct Bench {
    rt: tokio::runtime::Runtime,
    engine: JsEngine,
    store: Arc<Store>,
}

impl Bench {
    /// One request; returns the status and body.
    fn run(&self, bundle: &Arc<AppBundle>, route: &str, body: &str) -> (u16, Vec<u8>) {
        let (endpoint, params) = bundle.find("POST", route).expect("endpoint");
        let req = request(route, params, body);
        let (resp, _tx) = self
            .rt
            .block_on(
                self.engine
                    .execute(bundle.clone(), endpoint, req, self.store.begin()),
            )
            .expect("the request succeeds");
        (resp.status, resp.body)
    }
}

fn engines(c: &mut Criterion) {
    let bench = Bench {
        rt: tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio runtime"),
        engine: JsEngine::new(1, Limits::default()),
        store: Arc::new(Store::new()),
    };
    let bundles = [
        ("v8", bundle(Engine::V8)),
        ("quickjs", bundle(Engine::QuickJs)),
    ];
    let entry =
        r#"{"msg": "user 42 signed in from 10.0.0.7", "tags": ["auth", "info"], "at": 1700000000}"#;

    // Both engines give the same answers before anything is timed.
    let answers: Vec<_> = bundles
        .iter()
        .map(|(_, b)| {
            (
                bench.run(b, "/log/7", entry),
                bench.run(b, "/compute", ""),
                bench.run(b, "/compute_reuse", ""),
            )
        })
        .collect();
    assert_eq!(answers[0].1, answers[0].2, "reuse changes the answer");
    assert_eq!(answers[0], answers[1], "V8 and QuickJS disagree");
    assert_eq!(answers[0].0 .0, 201);

    let mut group = c.benchmark_group("empty");
    group.throughput(Throughput::Elements(1));
    for (name, b) in &bundles {
        group.bench_function(*name, |iter| iter.iter(|| bench.run(b, "/empty", "")));
    }
    group.finish();

    let mut group = c.benchmark_group("logging");
    group.throughput(Throughput::Elements(1));
    for (name, b) in &bundles {
        group.bench_function(*name, |iter| iter.iter(|| bench.run(b, "/log/7", entry)));
    }
    group.finish();

    let mut group = c.benchmark_group("compute_10k");
    group.throughput(Throughput::Elements(1));
    for (name, b) in &bundles {
        group.bench_function(*name, |iter| iter.iter(|| bench.run(b, "/compute", "")));
    }
    group.finish();

    let mut group = c.benchmark_group("compute_10k_reuse");
    group.throughput(Throughput::Elements(1));
    for (name, b) in &bundles {
        group.bench_function(*name, |iter| {
            iter.iter(|| bench.run(b, "/compute_reuse", ""))
        });
    }
    group.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
