use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_ledger::{Store, Tx, WriteSet};
use serde_json::{json, Value as Json};

use super::*;
use crate::tables::*;

fn store() -> Arc<Store> {
    Arc::new(Store::new())
}

/// Commits `tx`'s writes to the store as the state machine would.
fn commit(store: &Arc<Store>, seqno: u64, tx: Tx) {
    let (pending, ws) = store.prepare(tx).expect("prepare");
    store.apply(seqno, &ws);
    if let Some(id) = pending {
        store.release(id);
    }
}

fn seed(store: &Arc<Store>, seqno: u64, writes: &[(&str, &[u8], &[u8])]) {
    let mut ws = WriteSet::default();
    for (map, key, value) in writes {
        ws.put(map, key, value);
    }
    store.apply(seqno, &ws);
}

fn cert(name: &str) -> String {
    rcgen::generate_simple_self_signed(vec![name.to_string()])
        .expect("certificate")
        .cert
        .pem()
}

fn default_constitution() -> Constitution {
    Constitution::new(DEFAULT_CONSTITUTION, GovLimits::default())
}

fn proposal(actions: Json) -> String {
    json!({ "actions": actions }).to_string()
}

fn get_json(tx: &mut Tx, map: &str, key: &[u8]) -> Option<Json> {
    tx.get(map, key)
        .map(|v| serde_json::from_slice(&v).expect("JSON value"))
}

fn get_text(tx: &mut Tx, map: &str, key: &[u8]) -> Option<String> {
    tx.get(map, key)
        .map(|v| String::from_utf8(v).expect("UTF-8 value"))
}

/// A store with `n` active members; returns their ids.
fn with_active_members(store: &Arc<Store>, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut tx = store.begin();
    for i in 0..n {
        let pem = cert(&format!("member{i}"));
        let id = crate::cert_id_pem(&pem).expect("id");
        tx.set(MEMBERS_CERTS, id.as_bytes(), pem.as_bytes())
            .expect("set");
        tx.set(
            MEMBERS_INFO,
            id.as_bytes(),
            json!({"status": "Active"}).to_string().as_bytes(),
        )
        .expect("set");
        ids.push(id);
    }
    commit(store, 1, tx);
    ids
}

fn small_limits(ms: u64) -> GovLimits {
    GovLimits {
        max_heap_bytes: 16 * 1024 * 1024,
        max_stack_bytes: 256 * 1024,
        max_execution_time_ms: ms,
    }
}

// --- the engine ----------------------------------------------------------

#[test]
fn default_constitution_loads_and_exports_the_three_functions() {
    default_constitution()
        .check()
        .expect("default constitution loads");
}

#[test]
fn validate_accepts_a_good_proposal_and_names_the_bad_argument() {
    let s = store();
    let c = default_constitution();
    let mut tx = s.begin_read_only();
    let good = proposal(json!([{"name": "set_user", "args": {"cert": cert("user0")}}]));
    let v = c.validate(&mut tx, &good).expect("validate runs");
    assert_eq!(
        v,
        Validation {
            valid: true,
            description: String::new()
        }
    );

    let bad = proposal(json!([
        {"name": "set_user", "args": {"cert": "not a cert"}},
        {"name": "set_js_runtime_options", "args": {"max_heap_bytes": -1, "max_stack_bytes": 1024, "max_execution_time_ms": 10}},
    ]));
    let v = c.validate(&mut tx, &bad).expect("validate runs");
    assert!(!v.valid);
    assert!(
        v.description
            .contains("set_user: args.cert is not a valid X509 certificate bundle"),
        "{}",
        v.description
    );
    assert!(
        v.description
            .contains("set_js_runtime_options: args.max_heap_bytes must be a positive integer"),
        "{}",
        v.description
    );

    for (input, expected) in [
        ("{not json", "not valid JSON"),
        (r#"{"actions": []}"#, "non-empty array"),
        (
            r#"{"actions": [{"name": "make_me_king"}]}"#,
            "unknown action \"make_me_king\"",
        ),
        (
            r#"{"actions": [{"name": "remove_user", "args": {}}]}"#,
            "remove_user: args.user_id is missing",
        ),
        (
            r#"{"actions": [{"name": "remove_node", "args": {"node_id": "x"}}]}"#,
            "remove_node: args.node_id must be a node id",
        ),
        (
            r#"{"actions": [{"name": "set_constitution", "args": {"constitution": 5}}]}"#,
            "set_constitution: args.constitution must be a string",
        ),
    ] {
        let v = c.validate(&mut tx, input).expect("validate runs");
        assert!(!v.valid, "{input} should be invalid");
        assert!(
            v.description.contains(expected),
            "{input}: {}",
            v.description
        );
    }
    assert!(tx.write_set().is_empty());
}

#[test]
fn validate_checks_js_app_bundles() {
    let s = store();
    let c = default_constitution();
    let mut tx = s.begin_read_only();
    let endpoint = json!({
        "js_module": "logging.js", "js_function": "get", "authn_policies": ["user_cert"],
        "mode": "readonly", "forwarding_required": "sometimes"
    });
    let good = proposal(json!([{"name": "set_js_app", "args": {"bundle": {
        "metadata": {"endpoints": {"/log": {"get": endpoint}}},
        "modules": [{"name": "/logging.js", "module": "export function get() {}"}]
    }}}]));
    assert!(c.validate(&mut tx, &good).expect("runs").valid);

    let bad = proposal(json!([{"name": "set_js_app", "args": {"bundle": {
        "metadata": {"endpoints": {"/log": {"get": {
            "js_module": "missing.js", "js_function": "get", "authn_policies": [],
            "mode": "sometimes"
        }}}},
        "modules": [{"name": "logging.js", "module": "export function get() {}"}]
    }}}]));
    let v = c.validate(&mut tx, &bad).expect("runs");
    assert!(!v.valid);
    assert!(
        v.description
            .contains("js_module \"missing.js\" is not a module of the bundle"),
        "{}",
        v.description
    );
    assert!(
        v.description.contains(".mode must be one of"),
        "{}",
        v.description
    );

    let engine = |engine: Json| {
        proposal(json!([{"name": "set_js_app", "args": {"bundle": {
            "metadata": {"engine": engine, "endpoints": {"/log": {"get": endpoint}}},
            "modules": [{"name": "logging.js", "module": "export function get() {}"}]
        }}}]))
    };
    assert!(
        c.validate(&mut tx, &engine(json!("quickjs")))
            .expect("runs")
            .valid
    );
    let v = c.validate(&mut tx, &engine(json!("rhino"))).expect("runs");
    assert!(!v.valid);
    assert!(
        v.description
            .contains("metadata.engine must be one of v8, quickjs"),
        "{}",
        v.description
    );
}

#[test]
fn resolve_counts_only_active_members_and_needs_a_strict_majority() {
    let s = store();
    let ids = with_active_members(&s, 3);
    // An accepted (not yet active) member's vote does not count.
    let outsider = "ab".repeat(32);
    seed(
        &s,
        2,
        &[(
            MEMBERS_INFO,
            outsider.as_bytes(),
            json!({"status": "Accepted"}).to_string().as_bytes(),
        )],
    );
    let c = default_constitution();
    let p = proposal(json!([{"name": "remove_js_app"}]));
    let vote = |who: &str, v: bool| (who.to_string(), v);
    let cases: Vec<(Vec<(String, bool)>, &str)> = vec![
        (vec![], "Open"),
        (vec![vote(&ids[0], true)], "Open"),
        (vec![vote(&ids[0], true), vote(&outsider, true)], "Open"),
        (vec![vote(&ids[0], true), vote(&ids[1], true)], "Accepted"),
        (vec![vote(&ids[0], false)], "Open"),
        (vec![vote(&ids[0], false), vote(&ids[1], false)], "Rejected"),
        (
            vec![
                vote(&ids[0], true),
                vote(&ids[1], false),
                vote(&ids[2], false),
            ],
            "Rejected",
        ),
    ];
    for (votes, expected) in cases {
        let mut tx = s.begin_read_only();
        let outcome = c
            .resolve(&mut tx, &p, &ids[0], &votes)
            .expect("resolve runs");
        assert_eq!(outcome, expected, "votes {votes:?}");
    }

    // With two active members, one vote against makes acceptance impossible.
    let s2 = store();
    let two = with_active_members(&s2, 2);
    let mut tx = s2.begin_read_only();
    assert_eq!(
        c.resolve(&mut tx, &p, &two[0], &[(two[1].clone(), false)])
            .expect("runs"),
        "Rejected"
    );
}

#[test]
fn apply_performs_member_user_and_runtime_actions() {
    let s = store();
    let ids = with_active_members(&s, 1);
    let c = default_constitution();
    let member_pem = cert("new-member");
    let member_id = crate::cert_id_pem(&member_pem).expect("id");
    let user_pem = cert("user");
    let user_id = crate::cert_id_pem(&user_pem).expect("id");
    let p = proposal(json!([
        {"name": "set_member", "args": {"cert": member_pem, "member_data": {"role": "auditor"}}},
        {"name": "set_user", "args": {"cert": user_pem, "user_data": {"tier": 1}}},
        {"name": "set_member_data", "args": {"member_id": ids[0], "member_data": {"role": "chair"}}},
        {"name": "set_js_runtime_options", "args": {"max_heap_bytes": 1048576, "max_stack_bytes": 65536, "max_execution_time_ms": 100, "return_exception_details": true}},
    ]));
    let mut tx = s.begin();
    assert!(c.validate(&mut tx, &p).expect("runs").valid);
    c.apply(&mut tx, &p, "p1").expect("apply succeeds");

    assert_eq!(
        get_text(&mut tx, MEMBERS_CERTS, member_id.as_bytes()).as_deref(),
        Some(member_pem.as_str())
    );
    assert_eq!(
        get_json(&mut tx, MEMBERS_INFO, member_id.as_bytes()),
        Some(json!({"status": "Accepted", "member_data": {"role": "auditor"}}))
    );
    assert_eq!(
        get_json(&mut tx, MEMBERS_INFO, ids[0].as_bytes()),
        Some(json!({"status": "Active", "member_data": {"role": "chair"}}))
    );
    assert_eq!(
        get_text(&mut tx, USERS_CERTS, user_id.as_bytes()).as_deref(),
        Some(user_pem.as_str())
    );
    assert_eq!(
        get_json(&mut tx, USERS_INFO, user_id.as_bytes()),
        Some(json!({"user_data": {"tier": 1}}))
    );
    assert_eq!(
        get_json(&mut tx, JS_RUNTIME_OPTIONS, SINGLETON_KEY),
        Some(json!({
            "max_heap_bytes": 1048576, "max_stack_bytes": 65536, "max_execution_time_ms": 100,
            "log_exception_details": false, "return_exception_details": true
        }))
    );
    commit(&s, 2, tx);

    // Setting an existing member again keeps its status; removing works.
    let mut tx = s.begin();
    let again = proposal(json!([
        {"name": "set_member", "args": {"cert": cert_of(&s, &ids[0])}},
        {"name": "remove_user", "args": {"user_id": user_id}},
        {"name": "remove_member", "args": {"member_id": member_id}},
    ]));
    c.apply(&mut tx, &again, "p2").expect("apply succeeds");
    assert_eq!(
        get_json(&mut tx, MEMBERS_INFO, ids[0].as_bytes()),
        Some(json!({"status": "Active"}))
    );
    assert!(!tx.has(USERS_CERTS, user_id.as_bytes()));
    assert!(!tx.has(USERS_INFO, user_id.as_bytes()));
    assert!(!tx.has(MEMBERS_CERTS, member_id.as_bytes()));
    assert!(!tx.has(MEMBERS_INFO, member_id.as_bytes()));

    // The last active member cannot be removed.
    let mut tx = s.begin();
    let last = proposal(json!([{"name": "remove_member", "args": {"member_id": ids[0]}}]));
    let err = c.apply(&mut tx, &last, "p3").expect_err("refused");
    assert!(err.to_string().contains("last active member"), "{err}");
    assert!(tx.write_set().is_empty());
}

fn cert_of(s: &Arc<Store>, member_id: &str) -> String {
    let mut tx = s.begin_read_only();
    get_text(&mut tx, MEMBERS_CERTS, member_id.as_bytes()).expect("member cert")
}

#[test]
fn apply_installs_and_removes_a_js_app() {
    let s = store();
    seed(
        &s,
        1,
        &[
            (MODULES, b"/old.js", b"old"),
            (ENDPOINTS, b"get /old", b"{}"),
        ],
    );
    let c = default_constitution();
    let endpoint = json!({
        "js_module": "logging.js", "js_function": "record", "authn_policies": ["user_cert"],
        "mode": "readwrite", "forwarding_required": "always", "openapi": {}
    });
    let p = proposal(json!([{"name": "set_js_app", "args": {"bundle": {
        "metadata": {"endpoints": {"/log": {"POST": endpoint, "get": endpoint}}},
        "modules": [{"name": "logging.js", "module": "export function record() {}"}]
    }}}]));
    let mut tx = s.begin();
    assert!(c.validate(&mut tx, &p).expect("runs").valid);
    c.apply(&mut tx, &p, "p").expect("apply");
    assert_eq!(
        tx.entries(MODULES).into_keys().collect::<Vec<_>>(),
        vec![b"logging.js".to_vec()]
    );
    assert_eq!(
        get_text(&mut tx, MODULES, b"logging.js").as_deref(),
        Some("export function record() {}")
    );
    assert_eq!(
        tx.entries(ENDPOINTS).into_keys().collect::<Vec<_>>(),
        vec![b"get /log".to_vec(), b"post /log".to_vec()]
    );
    assert_eq!(
        get_json(&mut tx, ENDPOINTS, b"post /log"),
        Some(endpoint.clone())
    );
    assert_eq!(tx.size(JS_APP_ENGINE), 0, "no engine chosen, none written");
    commit(&s, 2, tx);

    // The app's engine is kept, and the node reads it back with the app.
    let p = proposal(json!([{"name": "set_js_app", "args": {"bundle": {
        "metadata": {"engine": "quickjs", "endpoints": {"/log": {"get": endpoint}}},
        "modules": [{"name": "logging.js", "module": "export function record() {}"}]
    }}}]));
    let mut tx = s.begin();
    c.apply(&mut tx, &p, "p2").expect("apply");
    assert_eq!(
        get_text(&mut tx, JS_APP_ENGINE, SINGLETON_KEY).as_deref(),
        Some("quickjs")
    );
    let (meta, _) = crate::service::js_app(&mut tx).expect("an app");
    let meta: Json = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["engine"], "quickjs");
    commit(&s, 3, tx);

    let mut tx = s.begin();
    c.apply(
        &mut tx,
        &proposal(json!([{"name": "remove_js_app", "args": {}}])),
        "q",
    )
    .expect("apply");
    assert_eq!(tx.size(MODULES), 0);
    assert_eq!(tx.size(ENDPOINTS), 0);
    assert_eq!(tx.size(JS_APP_ENGINE), 0);
}

#[test]
fn apply_moves_nodes_and_opens_the_service() {
    let s = store();
    let node = |status: &str| {
        json!({"cert": "pem", "status": status, "rpc_address": "a:1", "node_address": "a:2"})
            .to_string()
    };
    let service = json!({"status": "Opening", "cert": "service pem", "extra": 7}).to_string();
    seed(
        &s,
        1,
        &[
            (NODES_INFO, b"0", node("Trusted").as_bytes()),
            (NODES_INFO, b"1", node("Pending").as_bytes()),
            (NODES_INFO, b"2", node("Retired").as_bytes()),
            (SERVICE_INFO, SINGLETON_KEY, service.as_bytes()),
        ],
    );
    let c = default_constitution();
    let mut tx = s.begin();
    let p = proposal(json!([
        {"name": "transition_node_to_trusted", "args": {"node_id": "1", "valid_from": "20240101000000Z"}},
        {"name": "transition_node_to_trusted", "args": {"node_id": 0}},
        {"name": "set_node_data", "args": {"node_id": "1", "node_data": {"zone": "b"}}},
        {"name": "transition_service_to_open", "args": {}},
    ]));
    assert!(c.validate(&mut tx, &p).expect("runs").valid);
    c.apply(&mut tx, &p, "p").expect("apply");
    assert_eq!(
        get_json(&mut tx, NODES_INFO, b"1"),
        Some(
            json!({"cert": "pem", "status": "Trusted", "rpc_address": "a:1", "node_address": "a:2", "node_data": {"zone": "b"}})
        )
    );
    assert_eq!(
        get_json(&mut tx, NODES_INFO, b"0").expect("node 0")["status"],
        "Trusted"
    );
    assert_eq!(
        get_json(&mut tx, SERVICE_INFO, SINGLETON_KEY),
        Some(json!({"status": "Open", "cert": "service pem", "extra": 7}))
    );
    commit(&s, 2, tx);

    // Opening twice, trusting a retired or unknown node: the proposal fails.
    for (action, why) in [
        (
            json!({"name": "transition_service_to_open"}),
            "already open",
        ),
        (
            json!({"name": "transition_node_to_trusted", "args": {"node_id": "2"}}),
            "is Retired",
        ),
        (
            json!({"name": "transition_node_to_trusted", "args": {"node_id": "9"}}),
            "no node 9",
        ),
    ] {
        let mut tx = s.begin();
        let err = c
            .apply(&mut tx, &proposal(json!([action])), "x")
            .expect_err("fails");
        assert!(err.to_string().contains(why), "{err}");
        assert!(tx.write_set().is_empty());
    }

    let mut tx = s.begin();
    c.apply(
        &mut tx,
        &proposal(json!([{"name": "remove_node", "args": {"node_id": "1"}}])),
        "r",
    )
    .expect("apply");
    assert_eq!(
        get_json(&mut tx, NODES_INFO, b"1").expect("node 1")["status"],
        "Retired"
    );
    commit(&s, 3, tx);
    // Node 0 is now the only trusted node.
    let mut tx = s.begin();
    let err = c
        .apply(
            &mut tx,
            &proposal(json!([{"name": "remove_node", "args": {"node_id": "0"}}])),
            "r",
        )
        .expect_err("refused");
    assert!(err.to_string().contains("last trusted node"), "{err}");
}

#[test]
fn failing_action_leaves_no_partial_writes() {
    let s = store();
    let c = default_constitution();
    let mut tx = s.begin();
    let p = proposal(json!([
        {"name": "set_user", "args": {"cert": cert("user")}},
        {"name": "transition_node_to_trusted", "args": {"node_id": "42"}},
    ]));
    let err = c.apply(&mut tx, &p, "p").expect_err("second action fails");
    assert!(matches!(err, GovJsError::Exception { .. }), "{err:?}");
    assert!(err.to_string().contains("no node 42"), "{err}");
    assert!(tx.write_set().is_empty());
    assert_eq!(tx.size(USERS_CERTS), 0);
}

#[test]
fn apply_that_throws_after_writing_leaves_the_tx_empty() {
    let s = store();
    seed(&s, 1, &[("public:t", b"k", b"before")]);
    let source = r#"
        export function validate() { return { valid: true, description: "" }; }
        export function resolve() { return "Accepted"; }
        export function apply(p, id) {
            const t = ccf.kv["public:t"];
            t.set(ccf.strToBuf("k"), ccf.strToBuf("during"));
            t.set(ccf.strToBuf("k2"), ccf.strToBuf(id));
            if (ccf.bufToStr(t.get(ccf.strToBuf("k"))) !== "during") throw new Error("own write not visible");
            if (t.size !== 2) throw new Error("size " + t.size);
            ccf.kv["public:other"].clear();
            if (JSON.parse(p).fail) throw new Error("boom after writing");
        }
    "#;
    let c = Constitution::new(source, GovLimits::default());
    let mut tx = s.begin();
    let err = c
        .apply(&mut tx, r#"{"fail": true}"#, "p1")
        .expect_err("throws");
    match &err {
        GovJsError::Exception { message, stack } => {
            assert_eq!(message, "Error: boom after writing");
            assert!(
                stack.as_deref().unwrap_or("").contains("apply"),
                "{stack:?}"
            );
        }
        other => panic!("expected an exception, got {other:?}"),
    }
    assert!(tx.write_set().is_empty());
    assert_eq!(
        get_text(&mut tx, "public:t", b"k").as_deref(),
        Some("before")
    );

    // The same apply that does not throw writes through.
    c.apply(&mut tx, r#"{"fail": false}"#, "p2")
        .expect("applies");
    assert_eq!(
        get_text(&mut tx, "public:t", b"k").as_deref(),
        Some("during")
    );
    assert_eq!(get_text(&mut tx, "public:t", b"k2").as_deref(), Some("p2"));
}

#[test]
fn set_constitution_applies_only_a_constitution_that_loads() {
    let s = store();
    seed(
        &s,
        1,
        &[(CONSTITUTION, SINGLETON_KEY, DEFAULT_CONSTITUTION.as_bytes())],
    );
    let c = default_constitution();
    let broken = proposal(
        json!([{"name": "set_constitution", "args": {"constitution": "export function validate() {}"}}]),
    );
    let mut tx = s.begin();
    let err = c.apply(&mut tx, &broken, "p").expect_err("refused");
    assert!(matches!(err, GovJsError::Module(_)), "{err:?}");
    assert!(err.to_string().contains("resolve"), "{err}");
    assert!(tx.write_set().is_empty());

    let new = "export function validate() { return {valid: false, description: \"closed\"}; }\n\
               export function resolve() { return \"Rejected\"; }\n\
               export function apply() {}\n";
    let good = proposal(json!([{"name": "set_constitution", "args": {"constitution": new}}]));
    c.apply(&mut tx, &good, "p").expect("applies");
    assert_eq!(
        get_text(&mut tx, CONSTITUTION, SINGLETON_KEY).as_deref(),
        Some(new)
    );
}

#[test]
fn ballots_run_read_only_and_must_return_a_boolean() {
    let s = store();
    seed(&s, 1, &[("public:t", b"k", b"v")]);
    let p = proposal(json!([{"name": "set_user", "args": {"cert": "x"}}]));
    let ballot = r#"
        export function vote(proposal, proposerId) {
            const name = JSON.parse(proposal).actions[0].name;
            const v = ccf.bufToStr(ccf.kv["public:t"].get(ccf.strToBuf("k")));
            return name === "set_user" && proposerId === "m0" && v === "v";
        }
    "#;
    check_ballot(ballot, GovLimits::default()).expect("ballot loads");
    let mut tx = s.begin();
    assert!(run_ballot(ballot, &mut tx, &p, "m0", GovLimits::default()).expect("runs"));
    assert!(!run_ballot(ballot, &mut tx, &p, "m1", GovLimits::default()).expect("runs"));

    let junk = "export function vote() { return \"yes\"; }";
    let err = run_ballot(junk, &mut tx, &p, "m0", GovLimits::default()).expect_err("junk");
    assert!(matches!(err, GovJsError::InvalidResult(_)), "{err:?}");

    // Writing from a ballot throws a JS error, and nothing is written.
    let writer = r#"
        export function vote() {
            ccf.kv["public:t"].set(ccf.strToBuf("k"), ccf.strToBuf("hacked"));
            return true;
        }
    "#;
    let err = run_ballot(writer, &mut tx, &p, "m0", GovLimits::default()).expect_err("refused");
    assert!(err.to_string().contains("read-only"), "{err}");
    // The error is a JS Error the ballot could catch.
    let catcher = r#"
        export function vote() {
            for (const f of [
                () => ccf.kv["public:t"].delete(ccf.strToBuf("k")),
                () => ccf.kv["public:t"].clear(),
            ]) {
                try { f(); return false; } catch (e) { if (!(e instanceof Error) || !e.message.includes("read-only")) return false; }
            }
            return true;
        }
    "#;
    assert!(run_ballot(catcher, &mut tx, &p, "m0", GovLimits::default()).expect("runs"));
    assert!(tx.write_set().is_empty());
    assert_eq!(get_text(&mut tx, "public:t", b"k").as_deref(), Some("v"));
}

#[test]
fn validate_and_resolve_cannot_write() {
    let s = store();
    let source = r#"
        export function validate() { ccf.kv["public:t"].set(new ArrayBuffer(1), new ArrayBuffer(1)); return {valid: true}; }
        export function resolve() { ccf.kv["public:t"].clear(); return "Open"; }
        export function apply() {}
    "#;
    let c = Constitution::new(source, GovLimits::default());
    let mut tx = s.begin();
    let err = c.validate(&mut tx, "{}").expect_err("refused");
    assert!(err.to_string().contains("read-only"), "{err}");
    let err = c.resolve(&mut tx, "{}", "m", &[]).expect_err("refused");
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(tx.write_set().is_empty());
}

#[test]
fn resolve_returning_junk_is_an_invalid_result() {
    let s = store();
    for junk in ["\"accepted\"", "true", "undefined", "{state: \"Open\"}"] {
        let source = format!(
            "export function validate() {{ return {{valid: true}}; }}\n\
             export function resolve() {{ return {junk}; }}\n\
             export function apply() {{}}\n"
        );
        let c = Constitution::new(source, GovLimits::default());
        let mut tx = s.begin();
        let err = c.resolve(&mut tx, "{}", "m", &[]).expect_err("junk");
        assert!(
            matches!(err, GovJsError::InvalidResult(_)),
            "{junk}: {err:?}"
        );
    }
    let c = Constitution::new(
        "export function validate() { return 5; } export function resolve() {} export function apply() {}",
        GovLimits::default(),
    );
    let err = c.validate(&mut s.begin(), "{}").expect_err("junk");
    assert!(matches!(err, GovJsError::InvalidResult(_)), "{err:?}");
}

#[test]
fn modules_that_do_not_load_are_module_errors() {
    let limits = GovLimits::default();
    let cases = [
        ("export function vote( {", "SyntaxError"),
        ("export function notvote() { return true; }", "`vote`"),
        ("export const vote = 5;", "`vote`"),
        ("throw new Error('top level');", "top level"),
        (
            "import { x } from 'elsewhere'; export function vote() { return x; }",
            "elsewhere",
        ),
    ];
    for (source, expected) in cases {
        let err = check_ballot(source, limits).expect_err(source);
        assert!(matches!(err, GovJsError::Module(_)), "{source}: {err:?}");
        assert!(err.to_string().contains(expected), "{source}: {err}");
    }
    let err = Constitution::new("export function validate() {}", limits)
        .check()
        .expect_err("missing exports");
    assert!(matches!(err, GovJsError::Module(_)), "{err:?}");
    assert!(err.to_string().contains("`resolve`"), "{err}");
}

#[test]
fn host_api_matches_ccf() {
    let s = store();
    seed(&s, 1, &[("public:m", b"a", b"1"), ("public:m", b"b", b"2")]);
    let pem = cert("someone");
    let id = crate::cert_id_pem(&pem).expect("id");
    let ballot = r#"
        export function vote(pem, id) {
            const checks = [];
            const m = ccf.kv["public:m"];
            checks.push(m.size === 2);
            checks.push(m.has(ccf.strToBuf("a")) && !m.has(ccf.strToBuf("z")));
            checks.push(m.get(ccf.strToBuf("z")) === undefined);
            checks.push(m.get(new Uint8Array([97])) instanceof ArrayBuffer);
            const seen = [];
            m.forEach((v, k) => seen.push(ccf.bufToStr(k) + "=" + ccf.bufToStr(v)));
            checks.push(seen.join(",") === "a=1,b=2");
            checks.push(ccf.bufToJsonCompatible(ccf.jsonCompatibleToBuf({x: [1, "y"]})).x[1] === "y");
            checks.push(ccf.pemToId(pem) === id);
            checks.push(ccf.isValidX509CertBundle(pem) && ccf.isValidX509CertBundle(pem + "\n" + pem));
            checks.push(!ccf.isValidX509CertBundle("") && !ccf.isValidX509CertBundle("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"));
            const d = new Uint8Array(ccf.crypto.digest("SHA-256", ccf.strToBuf("abc")));
            checks.push(d.length === 32 && d[0] === 0xba && d[31] === 0xad);
            let threw = 0;
            for (const f of [
                () => m.get("a"),
                () => ccf.bufToStr("a"),
                () => ccf.crypto.digest("MD5", ccf.strToBuf("a")),
                () => ccf.pemToId("nope"),
                () => ccf.bufToStr(new Uint8Array([0xff]).buffer),
            ]) {
                try { f(); } catch (e) { if (e instanceof TypeError) threw++; }
            }
            checks.push(threw === 5);
            console.log("host api checks", checks);
            return checks.every((c) => c === true);
        }
    "#;
    let mut tx = s.begin_read_only();
    assert!(run_ballot(ballot, &mut tx, &pem, &id, GovLimits::default()).expect("runs"));
}

// --- limits --------------------------------------------------------------

#[test]
fn infinite_loop_times_out_and_the_next_call_works() {
    let s = store();
    let p = proposal(json!([]));
    let limit_ms = 300;
    for source in [
        "export function vote() { while (true) {} }",
        // The timeout cannot be caught.
        "export function vote() { for (;;) { try { while (true) {} } catch (e) {} } }",
        // Nor escaped at load time.
        "while (true) {} export function vote() { return true; }",
    ] {
        let mut tx = s.begin_read_only();
        let start = Instant::now();
        let err =
            run_ballot(source, &mut tx, &p, "m", small_limits(limit_ms)).expect_err("times out");
        let elapsed = start.elapsed();
        println!("infinite loop stopped after {elapsed:?} (limit {limit_ms} ms)");
        assert!(matches!(err, GovJsError::Timeout { ms: 300 }), "{err:?}");
        assert!(elapsed >= Duration::from_millis(limit_ms), "{elapsed:?}");
        assert!(
            elapsed < Duration::from_millis(limit_ms + 700),
            "{elapsed:?}"
        );
    }
    let mut tx = s.begin_read_only();
    assert!(run_ballot(
        "export function vote() { return true; }",
        &mut tx,
        &p,
        "m",
        small_limits(limit_ms)
    )
    .expect("runs"));
}

#[test]
fn heap_bomb_hits_the_heap_limit_and_the_next_call_works() {
    let s = store();
    let p = proposal(json!([]));
    for source in [
        "export function vote() { const a = []; while (true) a.push(new Array(100000).fill(1.5)); }",
        "export function vote() { let s = 'x'; while (true) s = s + s; }",
        "export function vote() { const a = []; while (true) a.push({ n: a.length }); }",
    ] {
        let mut tx = s.begin_read_only();
        let start = Instant::now();
        let err = run_ballot(source, &mut tx, &p, "m", small_limits(10_000)).expect_err("heap limit");
        println!("heap bomb stopped after {:?}: {err}", start.elapsed());
        assert!(
            matches!(err, GovJsError::HeapLimit | GovJsError::Exception { .. }),
            "{source}: {err:?}"
        );
        assert!(!matches!(err, GovJsError::Timeout { .. }));
    }
    let err = run_ballot(
        "export function vote() { const a = []; while (true) a.push(new Array(100000).fill(1.5)); }",
        &mut s.begin_read_only(),
        &p,
        "m",
        small_limits(10_000),
    )
    .expect_err("heap limit");
    assert!(matches!(err, GovJsError::HeapLimit), "{err:?}");
    assert!(run_ballot(
        "export function vote() { return new Array(1000).fill(0).length === 1000; }",
        &mut s.begin_read_only(),
        &p,
        "m",
        small_limits(10_000)
    )
    .expect("runs"));
}

#[test]
fn kv_traffic_counts_against_the_heap_budget() {
    let s = store();
    let source = r#"
        export function validate() { return {valid: true}; }
        export function resolve() { return "Open"; }
        export function apply() {
            const big = new ArrayBuffer(1024 * 1024);
            const t = ccf.kv["public:t"];
            for (let i = 0; ; i++) t.set(ccf.strToBuf("k" + i), big);
        }
    "#;
    let c = Constitution::new(source, small_limits(10_000));
    let mut tx = s.begin();
    let err = c.apply(&mut tx, "{}", "p").expect_err("budget");
    assert!(err.to_string().contains("max_heap_bytes budget"), "{err}");
    assert!(tx.write_set().is_empty());
}

#[test]
fn recursion_bomb_is_a_stack_overflow_not_a_crash() {
    let s = store();
    let p = proposal(json!([]));
    for limits in [small_limits(10_000), GovLimits::default()] {
        let mut tx = s.begin_read_only();
        let start = Instant::now();
        let err = run_ballot(
            "function f(n) { return f(n + 1) + 1; } export function vote() { return f(0) > 0; }",
            &mut tx,
            &p,
            "m",
            limits,
        )
        .expect_err("overflow");
        println!(
            "recursion bomb with a {} byte stack stopped after {:?}: {err}",
            limits.max_stack_bytes,
            start.elapsed()
        );
        assert!(matches!(err, GovJsError::StackOverflow), "{err:?}");
    }
    // Deep nesting in the source and in JSON is refused the same way.
    let deep = format!(
        "export function vote() {{ return {}1{}; }}",
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    let err = check_ballot(&deep, small_limits(10_000)).expect_err("too deep");
    assert!(
        matches!(err, GovJsError::StackOverflow | GovJsError::Module(_)),
        "{err:?}"
    );
    let json_bomb = r#"export function vote() { return JSON.parse("[".repeat(1000000) + "]".repeat(1000000)) !== null; }"#;
    let err = run_ballot(
        json_bomb,
        &mut s.begin_read_only(),
        &p,
        "m",
        small_limits(10_000),
    )
    .expect_err("too deep");
    assert!(
        matches!(
            err,
            GovJsError::StackOverflow | GovJsError::Exception { .. }
        ),
        "{err:?}"
    );
    // A zero stack limit is not "unlimited".
    let zero = GovLimits {
        max_stack_bytes: 0,
        ..small_limits(10_000)
    };
    let err = run_ballot(
        "function f() { return f() + 1; } export function vote() { return f() > 0; }",
        &mut s.begin_read_only(),
        &p,
        "m",
        zero,
    )
    .expect_err("overflow");
    assert!(matches!(err, GovJsError::StackOverflow), "{err:?}");
}

#[test]
fn limits_default_and_serde() {
    let d = GovLimits::default();
    assert_eq!(d.max_heap_bytes, 100 * 1024 * 1024);
    assert_eq!(d.max_stack_bytes, 1024 * 1024);
    assert_eq!(d.max_execution_time_ms, 5000);
    let back: GovLimits =
        serde_json::from_str(&serde_json::to_string(&d).expect("ser")).expect("de");
    assert_eq!(back, d);
}

#[test]
fn extreme_limits_do_not_panic() {
    let s = store();
    let p = proposal(json!([]));
    let ballot = "export function vote() { return true; }";
    let huge = GovLimits {
        max_heap_bytes: usize::MAX,
        max_stack_bytes: usize::MAX,
        max_execution_time_ms: u64::MAX,
    };
    assert!(run_ballot(ballot, &mut s.begin_read_only(), &p, "m", huge).expect("runs"));
    let tiny = GovLimits {
        max_heap_bytes: 0,
        max_stack_bytes: 0,
        max_execution_time_ms: 0,
    };
    let err = run_ballot(ballot, &mut s.begin_read_only(), &p, "m", tiny).expect_err("no room");
    assert!(
        matches!(err, GovJsError::HeapLimit | GovJsError::Timeout { ms: 0 }),
        "{err:?}"
    );
    let no_time = GovLimits {
        max_execution_time_ms: 0,
        ..GovLimits::default()
    };
    let err = run_ballot(
        "export function vote() { while (true) {} }",
        &mut s.begin_read_only(),
        &p,
        "m",
        no_time,
    )
    .expect_err("no time");
    assert!(matches!(err, GovJsError::Timeout { ms: 0 }), "{err:?}");
}

#[test]
fn async_functions_are_awaited() {
    let s = store();
    let source = r#"
        export async function validate() { await null; return {valid: true, description: "later"}; }
        export async function resolve() { return "Accepted"; }
        export async function apply(p, id) {
            await null;
            ccf.kv["public:t"].set(ccf.strToBuf("k"), ccf.strToBuf(id));
            if (JSON.parse(p).fail) throw new Error("async failure");
        }
    "#;
    let c = Constitution::new(source, GovLimits::default());
    let mut tx = s.begin();
    assert_eq!(
        c.validate(&mut tx, "{}").expect("runs"),
        Validation {
            valid: true,
            description: "later".to_string()
        }
    );
    assert_eq!(
        c.resolve(&mut tx, "{}", "m", &[]).expect("runs"),
        "Accepted"
    );
    let err = c
        .apply(&mut tx, r#"{"fail": true}"#, "p1")
        .expect_err("rejects");
    assert_eq!(err.to_string(), "Error: async failure");
    assert!(tx.write_set().is_empty());
    c.apply(&mut tx, "{}", "p2").expect("applies");
    assert_eq!(get_text(&mut tx, "public:t", b"k").as_deref(), Some("p2"));

    let p = proposal(json!([]));
    let forever = "export function vote() { return new Promise(() => {}); }";
    let err = run_ballot(
        forever,
        &mut s.begin_read_only(),
        &p,
        "m",
        GovLimits::default(),
    )
    .expect_err("never settles");
    assert!(matches!(err, GovJsError::InvalidResult(_)), "{err:?}");
    let spinning = "export async function vote() { for (;;) await null; }";
    let err = run_ballot(
        spinning,
        &mut s.begin_read_only(),
        &p,
        "m",
        small_limits(200),
    )
    .expect_err("times out");
    assert!(matches!(err, GovJsError::Timeout { ms: 200 }), "{err:?}");
    let top_level = "await new Promise(() => {}); export function vote() { return true; }";
    let err = check_ballot(top_level, GovLimits::default()).expect_err("never loads");
    assert!(matches!(err, GovJsError::Module(_)), "{err:?}");
}
