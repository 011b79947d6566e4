//! The API conformance suite: one app (`conformance_app/`) run in-process
//! on V8 and on QuickJS, the two copies differing only in `"engine"` in
//! their `app.json`. Every case asserts the same outcome on both engines:
//! the same response (status, headers, body, claims digest) and the same
//! write set, or the same error code. Where the engines may legitimately
//! word an error differently (an exception raised by the engine itself,
//! such as a JSON error), the case compares codes and says why.
//!
//! The KV is a real `charter_ledger::Store`; each request gets its own
//! transaction.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use charter_js::{AppBundle, Engine, JsEngine, JsError, JsRequest, JsResponse, Limits};
use charter_ledger::{Store, Tx, WriteSet};
use serde_json::{json, Value as Json};

const ENGINES: [Engine; 2] = [Engine::V8, Engine::QuickJs];
const MIB: usize = 1024 * 1024;

/// The limits of most cases: a heap small enough that bombs end quickly,
/// time generous enough for an unoptimised (debug) QuickJS to fill it.
fn limits() -> Limits {
    Limits {
        max_heap_bytes: 32 * MIB,
        max_stack_bytes: MIB,
        max_execution_time_ms: 10_000,
        ..Limits::default()
    }
}

/// The conformance app, set to run on `engine`.
fn bundle(engine: Engine) -> Arc<AppBundle> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance_app");
    let loaded = AppBundle::load(&dir).expect("the conformance app loads");
    let text = std::fs::read_to_string(dir.join("app.json")).expect("app.json");
    let mut meta: Json = serde_json::from_str(&text).expect("app.json is JSON");
    meta["engine"] = json!(engine.as_str());
    let modules = loaded
        .modules()
        .map(|(name, source)| (name.to_string(), source.to_string()))
        .collect();
    let bundle = AppBundle::from_parts(&meta.to_string(), modules).expect("the copy loads");
    assert_eq!(bundle.engine(), engine);
    Arc::new(bundle)
}

/// What a request came to: the response and the transaction's writes, or
/// the error.
type Outcome = Result<(JsResponse, WriteSet), JsError>;

struct Suite {
    engine: JsEngine,
    store: Arc<Store>,
    v8: Arc<AppBundle>,
    quickjs: Arc<AppBundle>,
}

impl Suite {
    fn new() -> Suite {
        Suite::with_limits(limits())
    }

    fn with_limits(limits: Limits) -> Suite {
        Suite {
            engine: JsEngine::new(1, limits),
            store: Arc::new(Store::new()),
            v8: bundle(Engine::V8),
            quickjs: bundle(Engine::QuickJs),
        }
    }

    fn bundle(&self, engine: Engine) -> &Arc<AppBundle> {
        match engine {
            Engine::V8 => &self.v8,
            Engine::QuickJs => &self.quickjs,
        }
    }

    /// `POST /app{target}` with `body`, in a fresh transaction.
    async fn call_in(&self, engine: Engine, target: &str, body: &str, tx: Tx) -> Outcome {
        let (route, query) = target.split_once('?').unwrap_or((target, ""));
        let bundle = self.bundle(engine);
        let (endpoint, params) = bundle
            .find("POST", route)
            .unwrap_or_else(|| panic!("no endpoint for {route}"));
        let request = JsRequest {
            method: "POST".into(),
            path: format!("/app{route}"),
            url: format!("/app{target}"),
            route: route.to_string(),
            query: query.to_string(),
            params,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-request-id".into(), "r-1".into()),
            ],
            body: body.as_bytes().to_vec(),
            caller: json!({"policy": "user_cert", "id": "c0ffee"}),
        };
        self.engine
            .execute(bundle.clone(), endpoint, request, tx)
            .await
            .map(|(response, tx)| (response, tx.write_set().clone()))
    }

    async fn call(&self, engine: Engine, target: &str, body: &str) -> Outcome {
        self.call_in(engine, target, body, self.store.begin()).await
    }

    /// Runs `target` on both engines and asserts the same outcome, in full.
    async fn same(&self, target: &str, body: &str) -> Outcome {
        let v8 = self.call(Engine::V8, target, body).await;
        let quickjs = self.call(Engine::QuickJs, target, body).await;
        assert_eq!(v8, quickjs, "{target}: V8 and QuickJS differ");
        v8
    }

    /// Runs `target` on both engines and asserts the same error code; the
    /// messages may differ. Returns both errors.
    async fn same_code(&self, target: &str, body: &str) -> (JsError, JsError) {
        let v8 = self.call(Engine::V8, target, body).await;
        let quickjs = self.call(Engine::QuickJs, target, body).await;
        match (v8, quickjs) {
            (Err(a), Err(b)) => {
                assert_eq!(
                    a.code(),
                    b.code(),
                    "{target}: V8 said {a:?}, QuickJS said {b:?}"
                );
                (a, b)
            }
            (a, b) => panic!("{target}: expected an error on both, got V8 {a:?}, QuickJS {b:?}"),
        }
    }

    /// Asserts that a plain request still works (the worker survived).
    async fn still_fine(&self, engine: Engine) {
        let json = json_body(self.call(engine, "/response/json", "").await);
        assert_eq!(json["a"], 1, "{engine}: the next request failed");
    }
}

fn response(outcome: Outcome) -> JsResponse {
    match outcome {
        Ok((response, _)) => response,
        Err(e) => panic!("expected a response, got {e:?}"),
    }
}

fn json_body(outcome: Outcome) -> Json {
    let response = response(outcome);
    serde_json::from_slice(&response.body).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&response.body)
        )
    })
}

fn header<'a>(response: &'a JsResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn error(outcome: Outcome) -> JsError {
    match outcome {
        Err(e) => e,
        Ok((r, _)) => panic!(
            "expected an error, got {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
    }
}

#[tokio::test]
async fn the_request_object_is_built_the_same() {
    let suite = Suite::new();
    let body = json!({"n": 21, "s": "\u{e9}"}).to_string();
    let echoed = json_body(suite.same("/request/42?a=1&b=two", &body).await);
    assert_eq!(
        echoed,
        json!({
            "keys": ["body", "caller", "headers", "method", "params", "path", "query", "route", "url"],
            "method": "POST",
            "path": "/app/request/42",
            "url": "/app/request/42?a=1&b=two",
            "route": "/request/42",
            "query": "a=1&b=two",
            "params": {"id": "42"},
            "headers": {"content-type": "application/json", "x-request-id": "r-1"},
            "caller": {"policy": "user_cert", "id": "c0ffee"},
            "text": body,
            "json": {"n": 21, "s": "\u{e9}"},
            "bytes": body.bytes().map(|b| format!("{b:02x}")).collect::<String>(),
            "isArrayBuffer": true,
            "doubled": 42,
        })
    );
}

#[tokio::test]
async fn the_kv_map_api_is_the_same() {
    let suite = Suite::new();
    let mut seed = WriteSet::default();
    seed.put("public:conformance", b"a", b"1");
    seed.put("public:conformance", b"b", b"2");
    seed.put("public:conformance.seeded", b"s1", b"x");
    seed.put("public:conformance.seeded", b"s2", b"y");
    suite.store.apply(1, &seed);
    let outcome = suite.same("/kv", "").await;
    let (resp, writes) = outcome.clone().expect("kv_api answers");
    assert_eq!(resp.status, 200);
    let body: Json = serde_json::from_slice(&resp.body).expect("JSON");
    let type_error =
        "TypeError: key must be an ArrayBuffer (use ccf.strToBuf or ccf.jsonCompatibleToBuf)";
    assert_eq!(
        body,
        json!({
            "sizeBefore": 2,
            "hasA": true,
            "getB": "2",
            "getMissing": true,
            "hasMissing": false,
            "deleteResult": "undefined",
            "hasAAfterDelete": false,
            "setReturnsMap": true,
            "seen": ["b=2", "c=3", "d=4", "e=5"],
            "sizeAfter": 4,
            "getD": "4",
            "sameHandle": true,
            "frozen": true,
            "assignMap": "TypeError",
            "forEachNotFunction": "TypeError",
            "otherSize": 2,
            "otherSizeAfterClear": 0,
            "otherHasAfterClear": false,
            "clearSeeded": [2, 0],
            "badArgs": [
                type_error,
                type_error,
                type_error,
                "TypeError: value must be an ArrayBuffer (use ccf.strToBuf or ccf.jsonCompatibleToBuf)",
                "TypeError: value must be an ArrayBuffer (use ccf.strToBuf or ccf.jsonCompatibleToBuf)",
                type_error,
            ],
        })
    );
    // The writes reached the transaction, the same on both engines.
    let m = &writes.maps["public:conformance"].writes;
    assert_eq!(m[&b"a".to_vec()], None);
    assert_eq!(m[&b"c".to_vec()], Some(b"3".to_vec()));
    assert_eq!(m[&b"d".to_vec()], Some(b"4".to_vec()));
    assert_eq!(m[&b"e".to_vec()], Some(b"5".to_vec()));
    let seeded = &writes.maps["public:conformance.seeded"].writes;
    assert_eq!(seeded.get(&b"s1".to_vec()), Some(&None));
    assert_eq!(seeded.get(&b"s2".to_vec()), Some(&None));
}

#[tokio::test]
async fn governance_and_internal_maps_are_read_only_on_both() {
    let suite = Suite::new();
    let mut seed = WriteSet::default();
    seed.put("public:ccf.gov.users.certs", b"u1", b"cert");
    suite.store.apply(1, &seed);
    let (resp, writes) = suite.same("/kv/reserved", "").await.expect("answers");
    let body: Vec<Json> = serde_json::from_slice(&resp.body).expect("JSON");
    let mut expected = Vec::new();
    for name in [
        "public:ccf.gov.users.certs",
        "public:ccf.internal.x",
        "ccf.gov.x",
        "private:ccf.x",
    ] {
        for _ in 0..3 {
            expected.push(json!(format!(
                "TypeError: map {name:?} is read-only for applications"
            )));
        }
    }
    expected.extend([json!(1), json!("cert"), json!("ok")]);
    assert_eq!(body, expected);
    assert_eq!(writes.maps.len(), 1);
    assert!(writes.maps.contains_key("public:ccfx"));
}

#[tokio::test]
async fn read_only_transactions_refuse_writes_on_both() {
    let suite = Suite::new();
    let mut errors = Vec::new();
    for engine in ENGINES {
        let outcome = suite
            .call_in(engine, "/kv/write", "", suite.store.begin_read_only())
            .await;
        errors.push(error(outcome));
    }
    assert_eq!(errors[0], errors[1]);
    assert!(
        matches!(&errors[0], JsError::Exception(m) if m.starts_with("Error: ") && m.contains("read-only")),
        "{:?}",
        errors[0]
    );
}

#[tokio::test]
async fn buffer_helpers_are_the_same() {
    let suite = Suite::new();
    let body = json_body(suite.same("/buffers", "").await);
    let arg = |what: &str| {
        format!("TypeError: {what} must be an ArrayBuffer (use ccf.strToBuf or ccf.jsonCompatibleToBuf)")
    };
    assert_eq!(
        body,
        json!({
            "roundTrip": "h\u{e9}llo \u{2713} \u{1F600}",
            "utf8": "c3a9f09f9880",
            // A lone surrogate becomes U+FFFD, as V8 converts it.
            "loneSurrogate": "61efbfbd62",
            "invalidUtf8": "a\u{FFFD}b",
            "json": {"a": [1, "two", null, true], "b": {"c": 1.5}},
            "jsonText": r#"{"z":1,"a":"x"}"#,
            "jsonScalar": r#""s""#,
            "fromView": "yz",
            "fromDataView": "z",
            "fromJsonView": [1, 2],
            "empty": "",
            "isArrayBuffer": true,
            "hostErrors": [
                "TypeError: ccf.strToBuf's argument must be a string",
                "TypeError: ccf.strToBuf's argument must be a string",
                arg("ccf.bufToStr's argument"),
                arg("ccf.bufToStr's argument"),
                arg("ccf.bufToStr's argument"),
            ],
            // The engines word JSON errors differently; the type is the same.
            "jsonErrors": ["SyntaxError", "TypeError", "TypeError"],
        })
    );
}

#[tokio::test]
async fn claims_digest_is_the_same() {
    let suite = Suite::new();
    let resp = response(suite.same("/claims", "").await);
    assert_eq!(resp.claims_digest, Some([7; 32]));
    let resp = response(suite.same("/claims/bad", "").await);
    assert_eq!(resp.claims_digest, None);
    let body: Json = serde_json::from_slice(&resp.body).expect("JSON");
    assert_eq!(
        body,
        json!([
            "TypeError: a claims digest is 32 bytes (SHA-256), got 3",
            "TypeError: the claims digest must be an ArrayBuffer (use ccf.strToBuf or ccf.jsonCompatibleToBuf)",
        ])
    );
}

/// Everything logged through `tracing` in this test process.
fn log_capture() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct Sink(&'static Mutex<Vec<u8>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .with_writer(move || Sink(log))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        log
    })
}

#[tokio::test]
async fn console_writes_the_same_lines_to_the_node_log() {
    let log = log_capture();
    let suite = Suite::new();
    for engine in ENGINES {
        let body = json_body(suite.call(engine, "/console", engine.as_str()).await);
        assert_eq!(
            body,
            json!(["function", "function", "function", "function", "function"])
        );
    }
    let text = String::from_utf8_lossy(&log.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let lines = |engine: Engine| -> Vec<String> {
        let tag = format!("charter::js: {} ", engine.as_str());
        text.lines()
            .filter_map(|l| {
                l.find(&tag).map(|i| {
                    format!(
                        "{} {}",
                        l.split_whitespace().next().unwrap_or(""),
                        &l[i + tag.len()..]
                    )
                })
            })
            .collect()
    };
    for engine in ENGINES {
        // The long line is cut at 16,384 characters, its tag included.
        let tagged = format!("{} long ", engine.as_str()).len();
        assert_eq!(
            lines(engine),
            vec![
                r#"INFO log 1 {"a":[1,2]} null undefined true"#.to_string(),
                "INFO info".to_string(),
                r#"WARN warn ["x"]"#.to_string(),
                "ERROR error Error: as error".to_string(),
                "DEBUG debug 10".to_string(),
                "INFO cyclic [object Object]".to_string(),
                r"INFO two\nlines\r\n".to_string(),
                format!(
                    "INFO long {} ... [{} more characters not logged]",
                    "x".repeat(16384 - tagged),
                    100_000 + tagged - 16384
                ),
            ],
            "{engine}: {text}"
        );
    }
}

#[tokio::test]
async fn responses_are_read_the_same() {
    let suite = Suite::new();
    let cases: [(&str, u16, Option<&str>, &[u8]); 14] = [
        ("text", 201, Some("text/plain"), b"plain text"),
        (
            "json",
            200,
            Some("application/json"),
            "{\"a\":1,\"b\":[true,null],\"s\":\"\u{e9}\"}".as_bytes(),
        ),
        ("buffer", 200, Some("application/octet-stream"), b"raw"),
        ("view", 200, Some("application/octet-stream"), &[2, 3]),
        ("dataview", 200, Some("application/octet-stream"), &[6, 7]),
        (
            "own_content_type",
            200,
            Some("application/x-custom"),
            b"{\"x\":1}",
        ),
        ("undefined", 200, None, b""),
        ("null", 200, None, b""),
        ("empty_object", 200, None, b""),
        ("status_only", 204, None, b""),
        (
            "status_499",
            499,
            Some("application/json"),
            b"{\"error\":\"client-ish\"}",
        ),
        ("null_body", 202, None, b""),
        ("number_body", 200, Some("application/json"), b"42"),
        ("string_json_body", 200, Some("text/plain"), b"\"quoted\""),
    ];
    for (kind, status, content_type, body) in cases {
        let resp = response(suite.same(&format!("/response/{kind}"), "").await);
        assert_eq!(resp.status, status, "{kind}");
        assert_eq!(header(&resp, "content-type"), content_type, "{kind}");
        assert_eq!(resp.body, body, "{kind}");
    }
    let resp = response(suite.same("/response/text", "").await);
    assert_eq!(
        resp.headers,
        vec![
            ("x-custom".to_string(), "v".to_string()),
            ("X-Number".to_string(), "7".to_string()),
            ("content-type".to_string(), "text/plain".to_string()),
        ]
    );
}

#[tokio::test]
async fn async_handlers_are_awaited_on_both() {
    let suite = Suite::new();
    assert_eq!(
        json_body(suite.same("/async", "").await),
        json!({"v": 7, "w": 42})
    );
}

#[tokio::test]
async fn thrown_values_are_the_same_exception() {
    let suite = Suite::new();
    // The text is `String(thrown value)` on both engines.
    for (kind, text) in [
        ("string", "a plain string"),
        ("error", "TypeError: deliberate"),
        ("object", "[object Object]"),
        ("object_with_to_string", "custom object"),
        ("number", "42"),
        ("undefined", "undefined"),
        ("symbol", "<exception that cannot be converted to a string>"),
        ("async", "RangeError: async failure"),
        ("nested", "Error: outer after inner"),
    ] {
        let e = error(suite.same(&format!("/throw/{kind}"), "").await);
        assert_eq!(e, JsError::Exception(text.to_string()), "{kind}");
        assert_eq!(e.code(), "JSException");
    }
    for engine in ENGINES {
        suite.still_fine(engine).await;
    }
}

/// Globals besides `ccf`: no shared memory, no clock, no resizable
/// buffers (V8 keeps their memory outside the heap limit), and Unicode
/// normalisation that works (V8's NFKC crashed the process: no ICU data).
#[tokio::test]
async fn builtins_are_the_same_and_safe() {
    let suite = Suite::new();
    let json = json_body(suite.same("/builtins", "").await);
    assert_eq!(
        json,
        json!({
            "sharedArrayBuffer": "undefined",
            "performance": "undefined",
            "queueMicrotask": "undefined",
            "resizable": "RangeError",
            "fixed": 8,
            "called": "TypeError",
            "bufferIsArrayBuffer": true,
            "constructorIsGlobal": true,
            "isView": true,
            "arrayBufferLength": 1,
            "subclass": 4,
            "slice": 6,
            "nfc": "\u{e9}",
            "nfd": 2,
            "nfkc": "fix1",
            "nfkd": "1\u{2044}2",
            "badForm": "RangeError",
            "fillSmall": [1, 0, 0, 0, 5],
            "fillBig": [(1 << 20) + 1000, 7, 7],
            "fillObject": {"1": "x", "2": "x", "length": 3},
            "fillFrozen": "TypeError",
        })
    );
}

#[tokio::test]
async fn dynamic_import_is_refused_on_both() {
    let suite = Suite::new();
    for _ in 0..2 {
        let json = json_body(suite.same("/dynamic_import", "").await);
        assert_eq!(
            json,
            json!({"module": "refused", "function": "refused", "eval": "refused"})
        );
    }
}

/// Promise callbacks a handler queued without awaiting them run before
/// its response is read: their writes and `setApplyWrites` count, and a
/// limit they hit fails the request, which then writes nothing.
#[tokio::test]
async fn queued_jobs_belong_to_the_request() {
    let suite = Suite::with_limits(Limits {
        max_execution_time_ms: 300,
        max_heap_bytes: 32 * 1024 * 1024,
        ..limits()
    });
    let (response, writes) = suite.same("/jobs/write", "").await.expect("write");
    assert_eq!(response.status, 200);
    let late = writes.maps["public:conformance"].writes.get(&b"late"[..]);
    assert_eq!(late, Some(&Some(b"1".to_vec())));

    let (response, _) = suite
        .same("/jobs/apply_writes_false", "")
        .await
        .expect("apply_writes_false");
    assert_eq!(response.apply_writes, Some(false));
    assert!(!response.should_apply_writes());
    let (response, _) = suite
        .same("/jobs/apply_writes_while_read", "")
        .await
        .expect("apply_writes_while_read");
    assert_eq!(response.apply_writes, Some(false));

    // The heap case gets the generous time limit of the other heap cases:
    // a debug QuickJS on a busy machine fills 32 MiB slowly.
    let generous = Suite::new();
    for (suite, kind, expected) in [
        (&suite, "loop", JsError::Timeout(300)),
        (&suite, "to_json", JsError::Timeout(300)),
        (&generous, "heap", JsError::HeapLimit(32 * MIB)),
    ] {
        for engine in ENGINES {
            let e = error(suite.call(engine, &format!("/jobs/{kind}"), "").await);
            assert_eq!(e, expected, "{engine} {kind}");
            suite.still_fine(engine).await;
        }
    }
}

#[tokio::test]
async fn invalid_responses_are_the_same_error() {
    let suite = Suite::new();
    // The prelude's own messages: identical on both engines.
    for (kind, message) in [
        ("function_body", "body is not JSON-serializable"),
        ("status_low", "statusCode must be an integer from 100 to 599, got 99"),
        ("status_high", "statusCode must be an integer from 100 to 599, got 600"),
        ("status_fraction", "statusCode must be an integer from 100 to 599, got 200.5"),
        ("status_string", "statusCode must be an integer from 100 to 599, got 200"),
        ("status_nan", "statusCode must be an integer from 100 to 599, got null"),
        ("header_name", "invalid header name bad header"),
        ("header_value_crlf", "invalid value for header x-h"),
        ("header_value_nul", "invalid value for header x-h"),
        ("headers_not_object", "headers must be an object"),
        (
            "header_content_length",
            "header Content-Length is set by the node, not by a handler",
        ),
        (
            "header_transfer_encoding",
            "header transfer-encoding is set by the node, not by a handler",
        ),
        ("number", "a handler must return an object {statusCode, headers, body}, got number"),
        ("string", "a handler must return an object {statusCode, headers, body}, got string"),
        (
            "pending",
            "the handler's promise was still pending when the request ended (it awaits something that never settles)",
        ),
    ] {
        let e = error(suite.same(&format!("/bad/{kind}"), "").await);
        assert_eq!(e, JsError::BadResponse(message.to_string()), "{kind}");
        assert_eq!(e.code(), "JSInvalidResponse");
    }
    // JSON.stringify's own error ends the message, in the engine's words.
    for kind in ["bigint", "cyclic"] {
        let (v8, quickjs) = suite.same_code(&format!("/bad/{kind}"), "").await;
        for e in [v8, quickjs] {
            assert!(
                matches!(&e, JsError::BadResponse(m) if m.starts_with("body is not JSON-serializable: ")),
                "{kind}: {e:?}"
            );
        }
    }
}

#[tokio::test]
async fn module_errors_are_the_same_code() {
    let suite = Suite::new();
    // A syntax error: the parser's message is the engine's own.
    let (v8, quickjs) = suite.same_code("/module/syntax", "").await;
    for e in [v8, quickjs] {
        assert!(
            matches!(&e, JsError::Module(m) if m.starts_with("module broken/syntax.js: cannot compile: SyntaxError")),
            "{e:?}"
        );
    }
    // An import that is not in the bundle: V8 finds out while linking,
    // QuickJS while compiling (it loads imports as it compiles), so the
    // stage in the message differs; both name the missing module.
    let (v8, quickjs) = suite.same_code("/module/missing_import", "").await;
    for e in [v8, quickjs] {
        assert!(
            matches!(&e, JsError::Module(m) if m.starts_with("module broken/missing_import.js: cannot ")
                && m.contains("no module named \"broken/not_in_the_bundle.js\" in the app bundle")),
            "{e:?}"
        );
    }
    for (target, message) in [
        (
            "/module/top_level_throw",
            "module broken/top_level_throw.js: top-level code threw: Error: thrown while loading",
        ),
        (
            "/module/missing_export",
            "module app.js does not export a function named \"no_such_export\"",
        ),
        (
            "/module/not_a_function",
            "module app.js does not export a function named \"notAFunction\"",
        ),
    ] {
        let e = error(suite.same(target, "").await);
        assert_eq!(e, JsError::Module(message.to_string()), "{target}");
        assert_eq!(e.code(), "JSModuleError");
    }
}

#[tokio::test]
async fn no_state_survives_from_one_request_to_the_next() {
    let suite = Suite::new();
    let clean = json!({
        "seen": {
            "moduleCounter": 1,
            "importedCounter": 1,
            "leakedGlobal": "absent",
            "replacedGlobal": "original",
            "stickyGlobal": "absent",
            "lateGlobal": "absent",
            "globalProto": "original",
            "arrayPrototype": "clean",
            "stringPrototype": "clean",
            "jsonStringify": "{\"a\":1}",
            "regexpStatics": "undefined",
            "removed": ["undefined", "undefined", "undefined", "undefined"],
            "ccfIntact": true,
        },
        "attempts": {
            "addGlobal": "allowed",
            "replaceGlobal": "allowed",
            "deleteGlobal": "refused",
            "arrayPrototype": "refused",
            "stringPrototype": "refused",
            "jsonStringify": "refused",
            "objectPrototypeToString": "refused",
            "ccf": "refused",
            "errorStackTraceLimit": "refused",
        },
        "overrides": ["Legacy", "legacy!", "own", "Sub", "Sub: m"],
    });
    let realms = || {
        let m = suite.engine.metrics();
        (
            m.v8_contexts_created.load(Ordering::Relaxed),
            m.quickjs_runtimes_created.load(Ordering::Relaxed),
        )
    };
    // The first request prepares each engine's realm; the next ones run in
    // the same realm, each seeing none of what the one before did.
    for _ in 0..3 {
        assert_eq!(json_body(suite.same("/isolation", "{}").await), clean);
    }
    let prepared = realms();
    for _ in 0..3 {
        assert_eq!(json_body(suite.same("/isolation", "{}").await), clean);
    }
    assert_eq!(realms(), prepared, "both engines reused their realm");
    // A global that cannot be deleted makes both replace the realm.
    assert_eq!(
        json_body(suite.same("/isolation", r#"{"sticky": true}"#).await),
        clean
    );
    assert_eq!(json_body(suite.same("/isolation", "{}").await), clean);
    assert_eq!(
        realms(),
        (prepared.0 + 1, prepared.1 + 1),
        "an unclean realm is replaced"
    );
}

/// V8 makes fresh module instances by calling module factories
/// (`js/src/v8_engine/factory.rs`); QuickJS evaluates real modules. Every
/// import and export form must come out the same, in the same evaluation
/// order, afresh in every request.
#[tokio::test]
async fn module_forms_are_the_same_on_both_and_fresh_every_time() {
    let suite = Suite::new();
    let expected = json!({
        "order": ["a", "b", "entry"],
        "calls": 1,
        "def": "def",
        "defName": "def",
        "named": 1,
        "alias": 2,
        "nsKeys": ["K", "f"],
        "nsTag": "[object Module]",
        "nsProto": null,
        "nsExtensible": false,
        "nsF": "f",
        "nsK": "function",
        "anon": "anon",
        "anonName": "default",
        "arrow": 2,
        "arrowName": "default",
        "again": 1,
        "sameDefault": true,
        "strictThis": true,
    });
    for _ in 0..3 {
        assert_eq!(json_body(suite.same("/forms", "").await), expected);
    }
    let m = suite.engine.metrics();
    assert_eq!(
        m.v8_module_factories.load(Ordering::Relaxed),
        7,
        "entry.js and its six imports run as factories on V8"
    );
    assert_eq!(m.v8_module_fallbacks.load(Ordering::Relaxed), 0);

    // Stack traces name the module and its own line numbers.
    let stack = response(suite.call(Engine::V8, "/forms/stack", "").await).body;
    let stack = String::from_utf8_lossy(&stack);
    assert!(stack.contains("at stack (forms/entry.js:41:25)"), "{stack}");

    // A graph importing a reassigned `let` runs as real modules on V8: the
    // importer sees the live binding.
    for _ in 0..2 {
        assert_eq!(
            json_body(suite.same("/forms/live", "").await),
            json!({"counter": 2})
        );
    }
    assert_eq!(m.v8_module_fallbacks.load(Ordering::Relaxed), 1);

    // So does one importing a function its module assigns to later.
    for _ in 0..2 {
        assert_eq!(
            json_body(suite.same("/forms/swap", "").await),
            json!({"before": "old", "after": "new"})
        );
    }
    assert_eq!(m.v8_module_fallbacks.load(Ordering::Relaxed), 2);
    // Also when it is reassigned by destructuring.
    for _ in 0..2 {
        assert_eq!(
            json_body(suite.same("/forms/swap2", "").await),
            json!({"before": "old", "after": "new"})
        );
    }
    assert_eq!(m.v8_module_fallbacks.load(Ordering::Relaxed), 3);

    // Text whose meaning a naive rewrite changes: a removed import that
    // ended the line before it, a regex after `if (...)` holding module
    // syntax, names the factory once used for itself, an anonymous default
    // function's source text. Run as factories, with the same answers.
    let factories_before = m.v8_module_factories.load(Ordering::Relaxed);
    for _ in 0..2 {
        assert_eq!(
            json_body(suite.same("/forms/tricky", "").await),
            json!({
                "items": [1, 2, 3],
                "hit": 1,
                "keys": ["base", "default", "tag"],
                "tagEnumerable": false,
                "spreadTag": "[object Object]",
                "depTag": "mine",
                "anonymous": "function () { return \"anonymous\"; }",
                "anonymousName": "default",
                "freeze": "{\"a\":1}",
                "tag": "t",
                "keywordsAsKeys": 3,
            })
        );
    }
    assert_eq!(
        m.v8_module_factories.load(Ordering::Relaxed),
        factories_before + 2
    );
    assert_eq!(m.v8_module_fallbacks.load(Ordering::Relaxed), 3);

    // A module the scanner misreads: an edit would land in a string. V8's
    // reading of the probe refuses the rewrite.
    for _ in 0..2 {
        assert_eq!(
            json_body(suite.same("/forms/misread", "").await),
            json!({"q": "NaN", "s": ";export{misread}//"})
        );
    }
    assert_eq!(m.v8_module_fallbacks.load(Ordering::Relaxed), 4);
}

/// The conformance app's own modules (`export let`, `import()`) run as
/// factories on V8.
#[tokio::test]
async fn the_conformance_app_runs_as_module_factories_on_v8() {
    let suite = Suite::new();
    suite
        .same("/isolation", "{}")
        .await
        .expect("isolation runs");
    let m = suite.engine.metrics();
    assert_eq!(m.v8_module_factories.load(Ordering::Relaxed), 2);
    assert_eq!(m.v8_module_fallbacks.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn interpreter_reuse_keeps_module_state_per_key_on_both() {
    let suite = Suite::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let body = json_body(suite.same("/reused", "").await);
        seen.push((body["reusedCounter"].clone(), body["reusedGlobal"].clone()));
        // The default realm of the same worker sees none of it.
        let isolation = json_body(suite.same("/isolation", "{}").await);
        assert_eq!(isolation["seen"]["moduleCounter"], 1);
        assert_eq!(isolation["seen"]["leakedGlobal"], "absent");
    }
    assert_eq!(
        seen,
        vec![
            (json!(1), json!(1)),
            (json!(2), json!(2)),
            (json!(3), json!(3))
        ]
    );
    // A new app (a new bundle) starts over.
    for engine in ENGINES {
        let fresh = bundle(engine);
        let (endpoint, params) = fresh.find("POST", "/reused").expect("endpoint");
        let request = JsRequest {
            method: "POST".into(),
            path: "/app/reused".into(),
            url: "/app/reused".into(),
            route: "/reused".into(),
            query: String::new(),
            params,
            headers: vec![],
            body: Vec::new(),
            caller: json!(null),
        };
        let (response, _) = suite
            .engine
            .execute(fresh.clone(), endpoint, request, suite.store.begin())
            .await
            .expect("reused endpoint runs");
        let body: Json = serde_json::from_slice(&response.body).expect("JSON body");
        assert_eq!(
            body["reusedCounter"], 1,
            "{engine}: the reuse cache is flushed when the app changes"
        );
    }
}

#[tokio::test]
async fn infinite_loops_time_out_and_the_next_request_is_fine() {
    let suite = Suite::new();
    // Limits set on the front apply to both engines' next executions.
    suite.engine.set_limits(Limits {
        max_execution_time_ms: 200,
        ..limits()
    });
    for kind in ["loop", "loop_catch_all"] {
        for engine in ENGINES {
            let start = Instant::now();
            let e = error(suite.call(engine, &format!("/bomb/{kind}"), "").await);
            let took = start.elapsed();
            assert_eq!(e, JsError::Timeout(200), "{engine} {kind}");
            assert_eq!(e.code(), "JSExecutionTimeExceeded");
            assert!(
                took >= Duration::from_millis(200),
                "{engine} {kind}: {took:?}"
            );
            // Generous: a debug build on two busy cores.
            assert!(took < Duration::from_secs(3), "{engine} {kind}: {took:?}");
            suite.still_fine(engine).await;
        }
    }
    let m = suite.engine.metrics();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(m.v8.timeouts.load(Relaxed), 2);
    assert_eq!(m.quickjs.timeouts.load(Relaxed), 2);
    assert_eq!(m.timeouts.load(Relaxed), 4);
    assert_eq!(m.v8.executions.load(Relaxed), 4);
    assert_eq!(m.quickjs.executions.load(Relaxed), 4);
    // One realm (runtime or context) to start with, and a new one after
    // each of the two terminated executions; the fine requests reuse it.
    assert_eq!(m.quickjs_runtimes_created.load(Relaxed), 3);
    assert_eq!(m.v8_contexts_created.load(Relaxed), 3);
}

/// A regex that backtracks for long: V8 stops it on time. QuickJS's regex
/// engine never polls for interrupts, so its worker is stuck until the
/// match ends (seconds here, 2^25 steps in a debug build; hours with a
/// few more characters): the front answers at the time limit plus a
/// margin (1 s) and starts a worker in its place, so the next request is
/// served at once.
#[tokio::test]
async fn a_worker_stuck_in_a_regex_is_answered_for_and_replaced() {
    let suite = Suite::with_limits(Limits {
        max_execution_time_ms: 200,
        ..limits()
    });
    let e = error(suite.same("/bomb/regex", "").await);
    assert_eq!(e, JsError::Timeout(200));
    for engine in ENGINES {
        suite.still_fine(engine).await;
    }
    use std::sync::atomic::Ordering::Relaxed;
    let m = suite.engine.metrics();
    // The answer came from the front's give-up, not from a late worker.
    assert_eq!(m.quickjs_workers_replaced.load(Relaxed), 1);
    assert_eq!(m.v8.timeouts.load(Relaxed), 1);
    assert_eq!(m.v8_workers_replaced.load(Relaxed), 0);
}

/// A V8 builtin that makes no interrupt check for seconds (`map` over a
/// sparse array): the watchdog's termination waits for it, so the front
/// answers at the time limit plus a margin and starts a V8 worker in its
/// place. (V8 only: QuickJS's map has the same loop, in an unoptimised
/// debug build, which would keep a core busy for the rest of the tests.)
#[tokio::test]
async fn a_v8_worker_stuck_in_a_builtin_is_answered_for_and_replaced() {
    let suite = Suite::with_limits(Limits {
        max_execution_time_ms: 200,
        ..limits()
    });
    let e = error(suite.call(Engine::V8, "/bomb/sparse_map", "").await);
    assert_eq!(e, JsError::Timeout(200));
    suite.still_fine(Engine::V8).await;
    use std::sync::atomic::Ordering::Relaxed;
    let m = suite.engine.metrics();
    assert_eq!(m.v8_workers_replaced.load(Relaxed), 1);
    assert_eq!(suite.engine.v8_stuck_workers(), 1);
}

#[tokio::test]
async fn bulk_builtins_past_two_to_the_twenty_give_the_same_results_on_both() {
    let suite = Suite::new();
    assert_eq!(
        json_body(suite.same("/bulk", "").await),
        json!([
            (1 << 20) + 3,
            "last",
            "first",
            "w",
            "first",
            ["first", "x", null, "last"],
            ["x", "y", "z"],
            ["x", "y"],
            RAW_LENGTH,
            "<1undefined2",
            "undefined>",
            "RangeError"
        ])
    );
}

/// `String.raw` over `n = 2^20 + 3` raw pieces `"<"`, `undefined` ...,
/// `">"` with substitutions 1 and 2: `"<" + "1" + "undefined" + "2"`, then
/// `n - 3` more `"undefined"` pieces and `">"`.
const RAW_LENGTH: usize = 1 + 1 + 9 + 1 + (1 << 20) * 9 + 1;

#[tokio::test]
async fn memory_bombs_hit_the_heap_limit_on_both() {
    let suite = Suite::new();
    for kind in [
        "fill_sparse",
        "fill_object",
        "to_reversed_huge",
        "with_huge",
        "to_spliced_huge",
        "split_huge",
        "heap",
        "heap_objects",
        "heap_caught",
        "heap_caught_in_a_loop",
        "array_buffers",
        "string_doubling",
    ] {
        let e = error(suite.same(&format!("/bomb/{kind}"), "").await);
        assert_eq!(e, JsError::HeapLimit(32 * MIB), "{kind}");
        assert_eq!(e.code(), "JSHeapLimitExceeded");
        for engine in ENGINES {
            suite.still_fine(engine).await;
        }
    }
    // 128 MiB of buffers that each become garbage: no limit is hit.
    assert_eq!(
        json_body(suite.same("/bomb/array_buffer_churn", "").await),
        json!({"n": 128 * MIB})
    );
    // One 1 GiB buffer, caught: V8 keeps ArrayBuffers outside its heap and
    // refuses this one with a catchable RangeError; QuickJS allocates them
    // in its heap, where running out is a heap-limit hit, as for any other
    // allocation. Both answers are clean and the limit holds on both.
    let v8 = response(suite.call(Engine::V8, "/bomb/one_huge_buffer", "").await);
    assert_eq!((v8.status, v8.body.as_slice()), (200, &b"RangeError"[..]));
    assert_eq!(
        error(
            suite
                .call(Engine::QuickJs, "/bomb/one_huge_buffer", "")
                .await
        ),
        JsError::HeapLimit(32 * MIB)
    );
    use std::sync::atomic::Ordering::Relaxed;
    let m = suite.engine.metrics();
    assert_eq!(m.v8.heap_limit_hits.load(Relaxed), 12);
    assert_eq!(m.quickjs.heap_limit_hits.load(Relaxed), 13);
}

#[tokio::test]
async fn recursion_bombs_are_a_clean_range_error_on_both() {
    let suite = Suite::new();
    let e = error(suite.same("/bomb/recursion", "").await);
    assert_eq!(
        e,
        JsError::Exception("RangeError: Maximum call stack size exceeded".into())
    );
    assert_eq!(
        json_body(suite.same("/bomb/recursion_caught", "").await),
        json!({"name": "RangeError", "isRangeError": true})
    );
    assert_eq!(
        json_body(suite.same("/bomb/recursion_then_work", "").await),
        json!({"sum": 6})
    );
    for engine in ENGINES {
        suite.still_fine(engine).await;
    }
}

#[tokio::test]
async fn deeply_nested_json_bodies_are_handled_on_both() {
    let suite = Suite::new();
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // Moderate nesting parses and serialises the same on both.
    assert_eq!(
        json_body(suite.same("/json/depth", &nested(1000)).await),
        json!({"depth": 1000})
    );
    assert_eq!(
        json_body(suite.same("/json/echo", &nested(1000)).await),
        json!({"length": 2000})
    );
    // 100,000 levels parsed and sent back: a RangeError the handler
    // catches, on both (QuickJS's parser runs out of stack, V8's
    // serialiser does).
    let resp = response(suite.same("/json/echo", &nested(100_000)).await);
    assert_eq!(resp.status, 400);
    assert_eq!(resp.body, br#"{"error":"RangeError"}"#);
    // Parsing alone is where the engines legitimately differ: V8's
    // JSON.parse is iterative and bounded only by the heap, QuickJS's is
    // recursive and bounded by max_stack_bytes. Each answer is clean.
    let body = nested(100_000);
    let v8 = json_body(suite.call(Engine::V8, "/json/depth", &body).await);
    assert_eq!(v8, json!({"depth": 100_000}));
    let quickjs = response(suite.call(Engine::QuickJs, "/json/depth", &body).await);
    assert_eq!(quickjs.status, 400);
    assert_eq!(quickjs.body, br#"{"error":"RangeError"}"#);
    // A million levels: past V8's 32 MiB heap, past QuickJS's stack.
    let body = nested(1_000_000);
    assert_eq!(
        error(suite.call(Engine::V8, "/json/depth", &body).await),
        JsError::HeapLimit(32 * MIB)
    );
    let quickjs = response(suite.call(Engine::QuickJs, "/json/depth", &body).await);
    assert_eq!(quickjs.status, 400);
    for engine in ENGINES {
        suite.still_fine(engine).await;
    }
}

#[tokio::test]
async fn huge_responses_are_the_same() {
    let suite = Suite::new();
    let resp = response(suite.same("/huge/text?mib=8", "").await);
    assert_eq!(resp.body.len(), 8 * MIB);
    assert!(resp.body.iter().all(|b| *b == b'x'));
    let resp = response(suite.same("/huge/bytes?mib=8", "").await);
    assert_eq!(resp.body.len(), 8 * MIB);
    let resp = response(suite.same("/huge/json?mib=4", "").await);
    assert_eq!(resp.body.len(), (4 << 16) * 17 + 1);
    // Past the heap limit: the limit, on both.
    for target in ["/huge/text?mib=64", "/huge/bytes?mib=64"] {
        let e = error(suite.same(target, "").await);
        assert_eq!(e, JsError::HeapLimit(32 * MIB), "{target}");
        for engine in ENGINES {
            suite.still_fine(engine).await;
        }
    }
}

#[tokio::test]
async fn an_unknown_engine_is_a_bundle_error() {
    let modules = [("app.js".to_string(), "export function f() {}".to_string())]
        .into_iter()
        .collect();
    let err = AppBundle::from_parts(
        r#"{"engine": "rhino", "endpoints": {"/x": {"get": {"js_module": "app.js", "js_function": "f"}}}}"#,
        modules,
    )
    .expect_err("unknown engine");
    assert!(
        err.to_string().contains("unknown engine \"rhino\""),
        "{err}"
    );
}

#[tokio::test]
async fn crypto_is_the_same_on_both() {
    let suite = Suite::new();
    let body = json_body(suite.same("/crypto", "").await);
    assert_eq!(
        body,
        json!({
            "digest": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "digestView": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "ed": ["string", "-----BEGIN PUBLIC KEY-----", 64, true, false, false],
            "ec": [64, true, true, false, false],
            "aes": [16, 24, 32],
            // RFC 5649 section 6: the fixed key wraps to the same bytes.
            "wrapped": "afbeb0f07dfbf5419200f2ccb50bb24f",
            "unwrapped": "466f7250617369",
            "bundle": [true, true, false, false, false],
            "certJwkX": "ExdFjA9FTVxY7csjteasYQ9HwU4A4kwf19ZGqH7ADsc",
            "jwk": [["crv", "kid", "kty", "x", "y"], "EC", "P-256", "k1", 43, 43, true, false],
        })
    );
}

#[tokio::test]
async fn crypto_errors_are_the_same_on_both() {
    let suite = Suite::new();
    // `same` compares the bodies in full: every error's type and message.
    let body = json_body(suite.same("/crypto/errors", "").await);
    let got: Vec<&str> = body
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().unwrap_or("<not a string>"))
        .collect();
    let expected = [
        "RangeError: invalid PEM",
        "RangeError: expected a private key PEM, got a PUBLIC KEY",
        "RangeError: EdDSA needs an Ed25519 key, got an EC P-256 key",
        "RangeError: unsupported signing algorithm \"RSASSA-PKCS1-v1_5\"",
        "TypeError: algorithm.name must be a string",
        "TypeError: algorithm.hash must be a string",
        "TypeError: ccf.crypto.sign: the algorithm must be an object",
        "TypeError: the private key (PEM) must be a string",
        "TypeError: data must be an ArrayBuffer",
        "TypeError: signature must be an ArrayBuffer",
        "RangeError: unsupported digest algorithm \"MD5\"",
        "TypeError: the digest algorithm must be a string",
        "RangeError: invalid AES key size 100",
        "RangeError: invalid AES key size 128.5",
        "RangeError: invalid AES key size -1",
        "RangeError: invalid AES key size NaN",
        "TypeError: the AES key size must be a number",
        "TypeError: the AES key size must be a number",
        "RangeError: unsupported key wrapping algorithm \"RSA-OAEP\", supported: AES-KWP",
        "RangeError: an AES-KWP wrapping key is 128, 192 or 256 bits, got 40",
        "TypeError: key must be an ArrayBuffer",
        "RangeError: AES-KWP unwrap failed",
        "RangeError: unsupported curve \"secp384r1\"",
        "TypeError: the curve must be a string",
        "RangeError: expected a private key PEM",
        "RangeError: ccf.crypto.pubEddsaPemToJwk needs an Ed25519 key",
        "TypeError: kid must be a string",
        "true",
        "TypeError: the certificate bundle (PEM) must be a string",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (got, want) in got.iter().zip(expected) {
        assert!(got.starts_with(want), "got {got:?}, want {want:?}");
    }
}

#[tokio::test]
async fn get_version_of_previous_write_is_the_same_on_both() {
    let suite = Suite::new();
    let mut seed = WriteSet::default();
    seed.put("public:conformance.versions", b"seeded", b"old");
    suite.store.apply(7, &seed);
    let (resp, writes) = suite.same("/kv/version", "").await.expect("answers");
    let body: Json = serde_json::from_slice(&resp.body).expect("JSON");
    assert_eq!(
        body,
        json!({
            "seeded": 7,
            "afterOwnWrite": 7,
            "view": 7,
            "missing": "undefined",
            "otherMap": "undefined",
            "badKey": "TypeError: key must be an ArrayBuffer (use ccf.strToBuf or ccf.jsonCompatibleToBuf)",
        })
    );
    assert_eq!(
        writes.maps["public:conformance.versions"].writes[&b"seeded".to_vec()],
        Some(b"new".to_vec())
    );
}

/// A node's consensus, reduced to fixed answers.
struct FakeConsensus;

impl charter_js::ConsensusView for FakeConsensus {
    fn last_committed(&self) -> (u64, u64) {
        (2, 10)
    }
    fn status(&self, view: u64, seqno: u64) -> &'static str {
        match (view, seqno) {
            (2, s) if s <= 10 => "Committed",
            (2, _) => "Unknown",
            _ => "Invalid",
        }
    }
    fn view_for_seqno(&self, seqno: u64) -> Option<u64> {
        (seqno <= 10).then_some(2)
    }
}

#[tokio::test]
async fn consensus_is_the_same_on_both() {
    let not_integer = |what: &str| format!("TypeError: {what} must be a non-negative integer");
    let arg_errors = [
        not_integer("view"),
        not_integer("seqno"),
        not_integer("seqno"),
        not_integer("seqno"),
    ];

    // No ConsensusView: the same "not available" error on both engines
    // (argument errors come first, as on V8).
    let suite = Suite::new();
    let body = json_body(suite.same("/consensus", "").await);
    let na = "Error: ccf.consensus is not available: this JS engine is not attached to a node";
    let mut expected = vec![json!(na); 5];
    expected.extend(arg_errors.iter().map(|e| json!(e)));
    assert_eq!(body, Json::Array(expected));

    // A node's ConsensusView: the same answers on both engines.
    let suite = Suite::new();
    suite.engine.set_consensus(Arc::new(FakeConsensus));
    let body = json_body(suite.same("/consensus", "").await);
    let mut expected = vec![
        json!({"view": 2, "seqno": 10}),
        json!("Committed"),
        json!("Unknown"),
        json!(2),
        Json::Null,
    ];
    expected.extend(arg_errors.iter().map(|e| json!(e)));
    assert_eq!(body, Json::Array(expected));
}
