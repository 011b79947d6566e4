//! The V8 engine against small in-memory bundles and a real KV store.

use std::collections::BTreeMap;
use std::sync::Arc;

use charter_ledger::Store;

use super::*;
use crate::JsEngine;

const M: &str = "public:m";

fn bundle(source: &str) -> Arc<AppBundle> {
    let mut endpoints = serde_json::Map::new();
    for f in ["main", "other"] {
        endpoints.insert(
            format!("/{f}"),
            serde_json::json!({"post": {"js_module": "app.js", "js_function": f, "mode": "readwrite"}}),
        );
    }
    let meta = serde_json::json!({ "endpoints": endpoints }).to_string();
    let mut modules = BTreeMap::new();
    modules.insert("app.js".to_string(), source.to_string());
    modules.insert(
        "lib/util.js".to_string(),
        "export function twice(x) { return x + x; }\nexport let counter = 0;\nexport function bump() { return ++counter; }".to_string(),
    );
    Arc::new(AppBundle::from_parts(&meta, modules).unwrap())
}

fn request(body: &str) -> JsRequest {
    JsRequest {
        method: "POST".into(),
        path: "/app/main".into(),
        url: "/app/main?x=1".into(),
        route: "/main".into(),
        query: "x=1".into(),
        body: body.as_bytes().to_vec(),
        caller: serde_json::json!({"policy": "no_auth"}),
        ..Default::default()
    }
}

fn limits() -> Limits {
    Limits {
        max_heap_bytes: 32 * 1024 * 1024,
        max_execution_time_ms: 300,
        ..Limits::default()
    }
}

struct Fixture {
    engine: JsEngine,
    store: Arc<Store>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_limits(limits())
    }

    fn with_limits(limits: Limits) -> Fixture {
        Fixture {
            engine: JsEngine::new(1, limits),
            store: Arc::new(Store::new()),
        }
    }

    async fn call(
        &self,
        b: &Arc<AppBundle>,
        f: &str,
        body: &str,
    ) -> Result<(JsResponse, charter_ledger::Tx), JsError> {
        let (ep, _) = b.find("post", &format!("/{f}")).unwrap();
        self.engine
            .execute(b.clone(), ep, request(body), self.store.begin())
            .await
    }

    async fn body(&self, b: &Arc<AppBundle>, f: &str) -> String {
        let (resp, _) = self.call(b, f, "").await.unwrap();
        String::from_utf8(resp.body).unwrap()
    }
}

#[tokio::test]
async fn handler_reads_request_and_writes_kv() {
    let fx = Fixture::new();
    let b = bundle(
        r#"import { twice } from "./lib/util.js";
        export function main(request) {
            const body = request.body.json();
            ccf.kv["public:m"].set(ccf.strToBuf("k"), ccf.jsonCompatibleToBuf({n: twice(body.n)}));
            return { statusCode: 201, headers: {"x-q": request.query}, body: { route: request.route, caller: request.caller.policy } };
        }"#,
    );
    let (resp, tx) = fx.call(&b, "main", r#"{"n": 21}"#).await.unwrap();
    assert_eq!(resp.status, 201);
    assert!(resp
        .headers
        .contains(&("x-q".to_string(), "x=1".to_string())));
    assert!(resp
        .headers
        .contains(&("content-type".to_string(), "application/json".to_string())));
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"route": "/main", "caller": "no_auth"})
    );
    let ws = tx.write_set();
    let written = ws.maps[M].writes[&b"k".to_vec()].clone().unwrap();
    assert_eq!(written, br#"{"n":42}"#.to_vec());
}

#[tokio::test]
async fn kv_map_api_sees_the_transaction() {
    let fx = Fixture::new();
    let mut seed = charter_ledger::WriteSet::default();
    seed.put(M, b"a", b"1");
    seed.put(M, b"b", b"2");
    fx.store.apply(1, &seed);
    let b = bundle(
        r#"export function main() {
            const m = ccf.kv["public:m"];
            const out = [m.size, m.has(ccf.strToBuf("a")), ccf.bufToStr(m.get(ccf.strToBuf("b")))];
            m.delete(ccf.strToBuf("a"));
            m.set(ccf.strToBuf("c"), ccf.strToBuf("3"));
            const seen = [];
            m.forEach((v, k) => seen.push(ccf.bufToStr(k) + "=" + ccf.bufToStr(v)));
            out.push(seen.join(","), m.get(ccf.strToBuf("zz")) === undefined, m.size);
            m.clear();
            out.push(m.size);
            return { body: out };
        }"#,
    );
    assert_eq!(
        fx.body(&b, "main").await,
        r#"[2,true,"2","b=2,c=3",true,2,0]"#
    );
}

#[tokio::test]
async fn exceptions_become_errors_with_their_message() {
    let fx = Fixture::new();
    let b = bundle(
        r#"export function main() { throw new Error("deliberate"); }
           export function other() { throw "a plain string"; }"#,
    );
    match fx.call(&b, "main", "").await {
        Err(JsError::Exception(m)) => assert!(m.contains("deliberate"), "{m}"),
        other => panic!("{other:?}"),
    }
    match fx.call(&b, "other", "").await {
        Err(JsError::Exception(m)) => assert!(m.contains("a plain string"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn invalid_responses_are_reported() {
    let fx = Fixture::new();
    for (handler, needle) in [
        ("return { statusCode: 99 };", "statusCode"),
        ("return { statusCode: 200.5 };", "statusCode"),
        ("return 42;", "object"),
        ("return { body: { n: 1n } };", "JSON"),
        ("const o = {}; o.o = o; return { body: o };", "JSON"),
        ("return { headers: { 'bad header': 'x' } };", "header"),
        ("return { headers: { 'x-h': 'a\\r\\nb' } };", "header"),
    ] {
        let b = bundle(&format!("export function main() {{ {handler} }}"));
        match fx.call(&b, "main", "").await {
            Err(JsError::BadResponse(m)) => assert!(m.contains(needle), "{handler}: {m}"),
            other => panic!("{handler}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn missing_module_function_or_import_is_a_module_error() {
    let fx = Fixture::new();
    let b = bundle("export const main = 3;");
    assert!(matches!(
        fx.call(&b, "main", "").await,
        Err(JsError::Module(_))
    ));
    let b = bundle("import { nope } from './missing.js'; export function main() {}");
    assert!(matches!(
        fx.call(&b, "main", "").await,
        Err(JsError::Module(_))
    ));
    let b = bundle("export function main( {");
    assert!(matches!(
        fx.call(&b, "main", "").await,
        Err(JsError::Module(_))
    ));
}

#[tokio::test]
async fn no_state_survives_between_requests() {
    let fx = Fixture::new();
    let b = bundle(
        r#"import { bump } from "./lib/util.js";
        let local = 0;
        export function main() {
            local += 1;
            globalThis.leak = (globalThis.leak || 0) + 1;
            let refused = false;
            try { Array.prototype.polluted = true; } catch (e) { refused = e instanceof TypeError; }
            return { body: [local, globalThis.leak, bump(), [].polluted === true, refused] };
        }"#,
    );
    for _ in 0..3 {
        assert_eq!(fx.body(&b, "main").await, "[1,1,1,false,true]");
    }
}

#[tokio::test]
async fn async_handlers_are_awaited() {
    let fx = Fixture::new();
    let b = bundle(
        r#"export async function main() { const v = await Promise.resolve(7); return { body: { v } }; }
           export async function other() { throw new Error("async failure"); }"#,
    );
    assert_eq!(fx.body(&b, "main").await, r#"{"v":7}"#);
    assert!(
        matches!(fx.call(&b, "other", "").await, Err(JsError::Exception(m)) if m.contains("async failure"))
    );
}

#[tokio::test]
async fn infinite_loop_is_stopped_and_the_worker_carries_on() {
    let fx = Fixture::new();
    let b = bundle(
        r#"export function main() { for (;;) {} }
           export function other() { return { body: "fine" }; }"#,
    );
    assert_eq!(
        fx.call(&b, "main", "").await.unwrap_err(),
        JsError::Timeout(300)
    );
    assert_eq!(fx.body(&b, "other").await, "fine");
    assert_eq!(fx.engine.metrics().timeouts.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn heap_bombs_are_stopped_and_the_isolate_replaced() {
    // A generous time budget: on a loaded machine filling the heap can
    // take longer than the other tests' 300 ms, and this test is about heap.
    let fx = Fixture::with_limits(Limits {
        max_execution_time_ms: 30_000,
        ..limits()
    });
    let b = bundle(
        r#"export function main() { const a = []; for (;;) { a.push(new Array(1000).fill("x" + a.length)); } }
           export function other() { const m = new Map(); for (let i = 0; ; i++) { m.set(i, {i, s: "v" + i}); } }"#,
    );
    let ok = bundle(r#"export function main() { return { body: "fine" }; }"#);
    for f in ["main", "other"] {
        assert_eq!(
            fx.call(&b, f, "").await.unwrap_err(),
            JsError::HeapLimit(32 * 1024 * 1024),
            "{f}"
        );
        assert_eq!(fx.body(&ok, "main").await, "fine");
    }
    assert_eq!(
        fx.engine.metrics().isolates_created.load(Ordering::Relaxed),
        3
    );
    assert_eq!(
        fx.engine.metrics().heap_limit_hits.load(Ordering::Relaxed),
        2
    );
}

/// The host's `normalize` cannot be interrupted: it refuses strings longer
/// than 2^20 characters with a catchable RangeError.
#[tokio::test]
async fn normalize_refuses_strings_too_long_for_the_host() {
    let fx = Fixture::with_limits(Limits {
        max_execution_time_ms: 30_000,
        ..limits()
    });
    let b = bundle(
        r#"export function main() {
             const ok = "\ufb01".repeat(1000).normalize("NFKC").length;
             let long;
             try { "a".repeat((1 << 20) + 1).normalize(); } catch (e) { long = e.name; }
             return { body: { ok, long } };
           }"#,
    );
    assert_eq!(
        fx.body(&b, "main").await,
        r#"{"ok":2000,"long":"RangeError"}"#
    );
}

/// Governance may set any byte count; V8 aborted the process on a heap
/// limit that was not a multiple of its page size.
#[tokio::test]
async fn a_heap_limit_of_any_size_makes_a_working_isolate() {
    let ok = bundle(r#"export function main() { return { body: "fine" }; }"#);
    for max_heap_bytes in [20_000_000, 100_000_001] {
        let fx = Fixture::with_limits(Limits {
            max_heap_bytes,
            max_execution_time_ms: 30_000,
            ..limits()
        });
        assert_eq!(fx.body(&ok, "main").await, "fine", "{max_heap_bytes}");
    }
    assert_eq!(v8_heap_limit(20_000_000), 20 * 1024 * 1024);
    assert_eq!(v8_heap_limit(20 * 1024 * 1024), 20 * 1024 * 1024);
    assert_eq!(v8_heap_limit(0), 1024 * 1024);
}

#[tokio::test]
async fn array_buffer_memory_counts_against_the_budget() {
    let fx = Fixture::with_limits(Limits {
        max_execution_time_ms: 30_000,
        ..limits()
    });
    let b = bundle(
        r#"export function main() { const a = []; for (;;) { a.push(new ArrayBuffer(1 << 20)); } }
           export function other() {
               try { new Uint8Array(1 << 30); } catch (e) { return { body: e.name }; }
               return { body: "allocated 1 GiB" };
           }"#,
    );
    let churn = bundle(
        r#"export function main() {
               let n = 0;
               for (let i = 0; i < 200; i++) { n += new Uint8Array(1 << 20).length; }
               return { body: { n } };
           }"#,
    );
    assert_eq!(
        fx.call(&b, "main", "").await.unwrap_err(),
        JsError::HeapLimit(32 * 1024 * 1024)
    );
    let (resp, _) = fx.call(&b, "other", "").await.unwrap();
    assert_eq!(resp.body, b"RangeError");
    // Buffers that become garbage are freed and do not add up.
    assert_eq!(
        fx.body(&churn, "main").await,
        format!("{{\"n\":{}}}", 200 << 20)
    );
}

#[tokio::test]
async fn claims_digest_reaches_the_response() {
    let fx = Fixture::new();
    let b = bundle(
        r#"export function main() {
               ccf.rpc.setClaimsDigest(new Uint8Array(32).fill(7).buffer);
               return {};
           }
           export function other() {
               try { ccf.rpc.setClaimsDigest(new ArrayBuffer(3)); } catch (e) { return { body: e.name }; }
           }"#,
    );
    let (resp, _) = fx.call(&b, "main", "").await.unwrap();
    assert_eq!(resp.claims_digest, Some([7; 32]));
    let (resp, _) = fx.call(&b, "other", "").await.unwrap();
    assert_eq!(resp.claims_digest, None);
    assert_eq!(resp.body, b"TypeError");
}

#[tokio::test]
async fn deep_recursion_is_a_catchable_range_error() {
    let fx = Fixture::new();
    let b = bundle(
        r#"function down(n) { return down(n + 1) + 1; }
           export function main() {
               try { down(0); } catch (e) { return { body: e instanceof RangeError ? "range" : String(e) }; }
           }
           export function other() { down(0); }"#,
    );
    assert_eq!(fx.body(&b, "main").await, "range");
    assert!(
        matches!(fx.call(&b, "other", "").await, Err(JsError::Exception(m)) if m.contains("RangeError"))
    );
}

#[tokio::test]
async fn bad_arguments_to_host_functions_throw_type_errors() {
    let fx = Fixture::new();
    let b = bundle(
        r#"export function main() {
            const out = [];
            for (const f of [() => ccf.strToBuf(1), () => ccf.bufToStr("x"), () => ccf.kv["public:m"].set("k", "v"),
                             () => ccf.kv["public:m"].get({}), () => ccf.bufToJsonCompatible(ccf.strToBuf("{"))]) {
                try { f(); out.push("no error"); } catch (e) { out.push(e.name); }
            }
            return { body: out };
        }"#,
    );
    assert_eq!(
        fx.body(&b, "main").await,
        r#"["TypeError","TypeError","TypeError","TypeError","SyntaxError"]"#
    );
}

#[tokio::test]
async fn governance_and_internal_tables_are_read_only_for_apps() {
    let fx = Fixture::new();
    let b = bundle(
        r#"export function main() {
            const out = [];
            for (const name of ["public:ccf.gov.users.certs", "public:ccf.internal.signatures", "ccf.gov.x"]) {
                const m = ccf.kv[name];
                for (const f of [() => m.set(ccf.strToBuf("k"), ccf.strToBuf("v")), () => m.delete(ccf.strToBuf("k")), () => m.clear()]) {
                    try { f(); out.push("allowed"); } catch (e) { out.push(e.name); }
                }
            }
            out.push(ccf.kv["public:ccf.gov.users.certs"].size);
            return { body: out };
        }"#,
    );
    let (resp, tx) = fx.call(&b, "main", "").await.unwrap();
    let body: Vec<serde_json::Value> = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body.len(), 10);
    assert!(body[..9].iter().all(|v| v == "TypeError"), "{body:?}");
    assert!(tx.write_set().is_empty());
}

#[tokio::test]
async fn read_only_transactions_refuse_writes_from_js() {
    let fx = Fixture::new();
    let b = bundle(
        r#"export function main() { ccf.kv["public:m"].set(ccf.strToBuf("k"), ccf.strToBuf("v")); }"#,
    );
    let (ep, _) = b.find("post", "/main").unwrap();
    let r = fx
        .engine
        .execute(b.clone(), ep, request(""), fx.store.begin_read_only())
        .await;
    assert!(matches!(r, Err(JsError::Exception(m)) if m.contains("read-only")));
}

/// V8 here has no ICU locale data: some locale APIs would abort the
/// process. They are replaced by locale-free forms (the same on QuickJS).
#[tokio::test]
async fn locale_apis_are_locale_free_and_never_abort() {
    let fx = Fixture::new();
    let b = bundle(
        r#"export function main() {
            return { body: {
                intl: typeof Intl,
                date: new Date(0).toLocaleString() === new Date(0).toString(),
                day: new Date(0).toLocaleDateString() === new Date(0).toDateString(),
                time: new Date(0).toLocaleTimeString() === new Date(0).toTimeString(),
                num: (1234.5).toLocaleString(),
                arr: [1, 2].toLocaleString(),
                cmp: ["b", "a", "c"].sort((x, y) => x.localeCompare(y)).join(""),
            } };
        }"#,
    );
    let v: serde_json::Value = serde_json::from_str(&fx.body(&b, "main").await).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"intl": "undefined", "date": true, "day": true, "time": true,
            "num": "1234.5", "arr": "1,2", "cmp": "abc"})
    );
}

#[tokio::test]
async fn a_new_stack_limit_applies_to_the_next_request_without_a_restart() {
    let fx = Fixture::new();
    let b = bundle(
        r#"export function main() {
            let depth = 0;
            function down() { depth++; down(); }
            try { down(); } catch (e) { return { body: [depth, e instanceof RangeError] }; }
            return { body: "no overflow" };
        }"#,
    );
    let mut depths = Vec::new();
    for stack in [256 * 1024, 4 * 1024 * 1024, 256 * 1024] {
        fx.engine.set_limits(Limits {
            max_stack_bytes: stack,
            ..limits()
        });
        let body: serde_json::Value =
            serde_json::from_str(&fx.body(&b, "main").await).expect("JSON");
        assert_eq!(body[1], true, "a catchable RangeError at {stack} bytes");
        depths.push(body[0].as_u64().expect("a depth"));
    }
    // The depth follows the budget (16 times larger here), both ways.
    assert!(depths[1] > 8 * depths[0], "{depths:?}");
    assert_eq!(depths[0], depths[2], "{depths:?}");
}
