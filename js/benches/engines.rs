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
//! - `compute_reuse`: the same endpoint with `interpreter_reuse` (the
//!   module instance is kept between requests, and on V8 so is its
//!   optimised code);
//! - `compute_js`, `compute_js_reuse`: the same records sorted by a merge
//!   sort written in JS over typed arrays and aggregated in integer
//!   arithmetic, so that the time goes to the script rather than to
//!   builtins (`Array.prototype.sort`, string conversion, the GC), which
//!   are native code on both engines.
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

// The same records, sorted by a merge sort written in JS and aggregated
// with integer arithmetic: the work is the script's own, not a builtin's.
export function compute_js() {
  const n = 10000;
  const value = new Int32Array(n);
  const group = new Int32Array(n);
  let seed = 42;
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
    value[i] = seed % 1000;
    group[i] = seed % 16;
  }
  let order = new Int32Array(n);
  let scratch = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  for (let width = 1; width < n; width *= 2) {
    for (let lo = 0; lo < n; lo += 2 * width) {
      const mid = Math.min(lo + width, n);
      const hi = Math.min(lo + 2 * width, n);
      let a = lo, b = mid, k = lo;
      while (a < mid && b < hi) {
        const x = order[a], y = order[b];
        if (value[x] < value[y] || (value[x] === value[y] && x < y)) { scratch[k++] = x; a++; }
        else { scratch[k++] = y; b++; }
      }
      while (a < mid) scratch[k++] = order[a++];
      while (b < hi) scratch[k++] = order[b++];
    }
    const t = order; order = scratch; scratch = t;
  }
  const count = new Int32Array(16), sum = new Int32Array(16), max = new Int32Array(16);
  for (let i = 0; i < n; i++) {
    const r = order[i], g = group[r];
    count[g] += 1;
    sum[g] += value[r];
    if (value[r] > max[g]) max[g] = value[r];
  }
  const mean = [];
  for (let g = 0; g < 16; g++) mean.push(Math.round(sum[g] / count[g]));
  return { body: { median: value[order[n / 2]], first: order[0], mean, max: Array.from(max) } };
}

export function compute() {
  const records = [];
  let seed = 42;
  for (let i = 0; i < 10000; i++) {
    // A 31-bit linear congruential generator in integer arithmetic.
    seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
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
            "/compute_js": {"post": {"js_module": "app.js", "js_function": "compute_js"}},
            "/compute_js_reuse": {"post": {"js_module": "app.js", "js_function": "compute_js",
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
            .enable_time()
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
                bench.run(b, "/compute_js", ""),
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

    for (name, route) in [
        ("compute_js_10k", "/compute_js"),
        ("compute_js_10k_reuse", "/compute_js_reuse"),
    ] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        for (engine, b) in &bundles {
            group.bench_function(*engine, |iter| iter.iter(|| bench.run(b, route, "")));
        }
        group.finish();
    }

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
