//! Where one V8 request's time goes, through the node's front (`JsEngine`):
//! runs an empty handler N times and reports the mean, plus the engine's
//! counters. `cargo run --release -p charter-js --example v8_request_cost`
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use charter_js::{AppBundle, JsEngine, JsRequest, Limits};
use charter_ledger::Store;

fn main() {
    let meta = serde_json::json!({"endpoints": {"/empty": {"post": {"js_module": "app.js", "js_function": "empty"}}}});
    let modules = BTreeMap::from([(
        "app.js".to_string(),
        "export function empty() { return {}; }".to_string(),
    )]);
    let bundle = Arc::new(AppBundle::from_parts(&meta.to_string(), modules).unwrap());
    let engine = JsEngine::new(1, Limits::default());
    let store = Arc::new(Store::new());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (endpoint, params) = bundle.find("POST", "/empty").unwrap();
    let req = JsRequest {
        method: "POST".into(),
        path: "/app/empty".into(),
        route: "/empty".into(),
        params,
        ..Default::default()
    };
    for n in [10, 1000, 5000] {
        let t = Instant::now();
        for _ in 0..n {
            rt.block_on(engine.execute(
                bundle.clone(),
                endpoint.clone(),
                req.clone(),
                store.begin(),
            ))
            .unwrap();
        }
        println!(
            "{n} requests: {:.1} us each",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
    let m = engine.metrics();
    println!(
        "contexts {} code cache bytes {} module factories {} module fallbacks {}",
        m.v8_contexts_created.load(Relaxed),
        m.v8_code_cache_bytes.load(Relaxed),
        m.v8_module_factories.load(Relaxed),
        m.v8_module_fallbacks.load(Relaxed)
    );
}
