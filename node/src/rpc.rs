//! The client-facing HTTPS endpoints: `/node/*` for operators and
//! `/app/*` for the JS application.

use std::sync::Arc;
use std::time::Duration;

use charter_js::{EndpointDef, JsRequest, Mode};
use charter_ledger::{EntryKind, TxId};
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::json;

use crate::forward;
use crate::http::{error_response, json_response, Body, HttpRequest};
use crate::identity;
use crate::node::{CommitFailure, JoinRequest, Node};
use crate::tables;

pub const TXID_HEADER: &str = "x-ms-ccf-transaction-id";
/// How often a transaction is re-executed when it conflicts.
const MAX_ATTEMPTS: usize = 30;

/// Entry point of the client-facing server.
pub async fn handle(node: Arc<Node>, req: HttpRequest) -> Response<Body> {
    let path = req.path.clone();
    match (req.method.clone(), path.as_str()) {
        (Method::GET, "/node/state") => node_state(&node),
        (Method::GET, "/node/network") => node_network(&node),
        (Method::GET, "/node/commit") => json_response(
            StatusCode::OK,
            &json!({"transaction_id": node.committed_txid().to_string()}),
        ),
        (Method::GET, "/node/tx") => node_tx(&node, &req),
        (Method::GET, "/node/version") => json_response(
            StatusCode::OK,
            &json!({"version": env!("CARGO_PKG_VERSION"), "app_engine": app_engine(&node), "governance_engine": "quickjs"}),
        ),
        (Method::GET, "/node/js_metrics") => js_metrics(&node),
        (Method::POST, "/node/join") => join(&node, req, false).await,
        (_, p)
            if (p.starts_with("/app") || p.starts_with("/gov/"))
                && node.retired.load(std::sync::atomic::Ordering::Relaxed) =>
        {
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "NodeRetired",
                "this node has been retired from the service by governance; use another node",
            )
        }
        (_, p) if p.starts_with("/gov/") => crate::gov_rpc::handle(&node, req, false).await,
        (_, p)
            if (p == "/app" || p.starts_with("/app/")) && !tables::service_is_open(&node.store) =>
        {
            service_not_open()
        }
        (Method::GET, "/app/receipt") => receipt(&node, &req),
        (_, p) if p == "/app" || p.starts_with("/app/") => handle_app(&node, req, false).await,
        (
            _,
            "/node/state" | "/node/network" | "/node/commit" | "/node/tx" | "/node/version"
            | "/node/js_metrics" | "/node/join",
        ) => error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{} is not allowed on {path}", req.method),
        ),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("no endpoint at {path}"),
        ),
    }
}

fn node_state(node: &Node) -> Response<Body> {
    let m = node.metrics();
    json_response(
        StatusCode::OK,
        &json!({
            "node_id": node.id.to_string(),
            "state": if node.retired.load(std::sync::atomic::Ordering::Relaxed) { "Retired".to_string() } else { format!("{:?}", m.state) },
            "view": m.current_term,
            "primary_id": m.current_leader.map(|l| l.to_string()),
            "last_committed": node.committed_txid().to_string(),
            "last_log_index": m.last_log_index.unwrap_or(0),
        }),
    )
}

/// The engine of the installed app (V8, the default, if there is none).
fn app_engine(node: &Node) -> &'static str {
    node.app()
        .map_or(charter_js::Engine::default(), |app| app.engine())
        .as_str()
}

/// This process's resident set size (`VmRSS` of `/proc/self/status`), in
/// bytes; `None` where there is no `/proc`.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS:   123456 kB` → 123456 × 1024.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut parts = line.split_whitespace();
    let kib: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => kib.checked_mul(1024),
        Some(_) => None,
    }
}

/// The 500 for a failed handler. A thrown exception's text is the app's
/// (it may hold data), so governance decides whether clients see it
/// (`return_exception_details`) and whether the log keeps it
/// (`log_exception_details`). The same goes for an invalid response,
/// whose message may quote the app; limit hits and module errors are
/// the node's own words and always given.
fn js_error_response(node: &Node, path: &str, e: &charter_js::JsError) -> Response<Body> {
    let limits = node.engine.limits();
    // An invalid response's message can quote the app too (a `toJSON`
    // that threw, a header name).
    let quotes_app = matches!(
        e,
        charter_js::JsError::Exception(_) | charter_js::JsError::BadResponse(_)
    );
    if !quotes_app || limits.log_exception_details {
        tracing::warn!(path = %path, code = e.code(), "JS handler failed: {}", e.message());
    } else {
        tracing::warn!(path = %path, code = e.code(), "JS handler failed (details not logged: log_exception_details is false)");
    }
    let message = if !quotes_app || limits.return_exception_details {
        e.message()
    } else {
        format!(
            "{} (details are not returned: return_exception_details is false)",
            match e {
                charter_js::JsError::Exception(_) => "The handler threw an exception",
                _ => "The handler's response is invalid",
            }
        )
    };
    let status = match e {
        charter_js::JsError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, e.code(), message)
}

fn js_metrics(node: &Node) -> Response<Body> {
    use std::sync::atomic::Ordering::Relaxed;
    let m = node.engine.metrics();
    let limits = node.engine.limits();
    json_response(
        StatusCode::OK,
        &json!({
            "engine": app_engine(node),
            "rss_bytes": rss_bytes(),
            "workers": node.engine.workers(),
            "executions": m.executions.load(Relaxed),
            "exceptions": m.exceptions.load(Relaxed),
            "isolates_created": m.isolates_created.load(Relaxed),
            "v8_contexts_created": m.v8_contexts_created.load(Relaxed),
            "v8_code_cache_bytes": m.v8_code_cache_bytes.load(Relaxed),
            "v8_module_factories": m.v8_module_factories.load(Relaxed),
            "v8_module_fallbacks": m.v8_module_fallbacks.load(Relaxed),
            "quickjs_runtimes_created": m.quickjs_runtimes_created.load(Relaxed),
            "quickjs_workers_replaced": m.quickjs_workers_replaced.load(Relaxed),
            "quickjs_workers_stuck": node.engine.quickjs_stuck_workers(),
            "v8_workers_replaced": m.v8_workers_replaced.load(Relaxed),
            "v8_workers_stuck": node.engine.v8_stuck_workers(),
            "limit_hits": {
                "execution_time": m.timeouts.load(Relaxed),
                "heap": m.heap_limit_hits.load(Relaxed),
            },
            "limits": limits,
        }),
    )
}

fn node_network(node: &Node) -> Response<Body> {
    let m = node.metrics();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let nodes: Vec<serde_json::Value> = membership
        .nodes()
        .map(|(id, addr)| {
            let role = if m.current_leader == Some(*id) {
                "primary"
            } else if voters.contains(id) {
                "backup"
            } else {
                "learner"
            };
            json!({
                "node_id": id.to_string(),
                "role": role,
                "status": tables::node_status(&node.store, *id).unwrap_or_else(|| "Unknown".into()),
                "voter": voters.contains(id),
                "rpc_address": addr.rpc,
                "node_address": addr.node_to_node,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "service_status": if tables::service_is_open(&node.store) { "Open" } else { "Opening" },
            "current_view": m.current_term,
            "primary_id": m.current_leader.map(|l| l.to_string()),
            "nodes": nodes,
        }),
    )
}

/// The `transaction_id` query parameter, or the 400 to answer.
fn txid_param(req: &HttpRequest) -> Result<TxId, Box<Response<Body>>> {
    let Some(raw) = req.query_param("transaction_id") else {
        return Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "MissingQueryParameter",
            "transaction_id is required, e.g. ?transaction_id=2.15",
        )));
    };
    raw.parse()
        .map_err(|e: charter_ledger::txid::ParseTxIdError| {
            Box::new(error_response(
                StatusCode::BAD_REQUEST,
                "InvalidQueryParameterValue",
                e.to_string(),
            ))
        })
}

fn node_tx(node: &Node, req: &HttpRequest) -> Response<Body> {
    let id = match txid_param(req) {
        Ok(id) => id,
        Err(resp) => return *resp,
    };
    let status = tx_status(node, id);
    json_response(
        StatusCode::OK,
        &json!({"transaction_id": id.to_string(), "status": status}),
    )
}

/// CCF's transaction statuses: Committed, Pending, Invalid, Unknown.
pub fn tx_status(node: &Node, id: TxId) -> &'static str {
    let committed = node.store.last_applied();
    if id.seqno == 0 {
        return "Invalid";
    }
    if id.seqno <= committed {
        return match node.views.view_for_seqno(id.seqno) {
            Some(v) if v == id.view => "Committed",
            Some(_) => "Invalid",
            None => "Unknown",
        };
    }
    match node.log.term_at(id.seqno) {
        Some(term) if term == id.view => "Pending",
        _ => {
            let m = node.metrics();
            if id.view > m.current_term
                || (id.view == m.current_term && id.seqno > m.last_log_index.unwrap_or(0))
            {
                "Unknown"
            } else if node.is_primary() {
                // The primary's log is authoritative for its view: what is
                // not in it from an earlier view never commits.
                "Invalid"
            } else {
                "Unknown"
            }
        }
    }
}

/// `GET /app/receipt?transaction_id=V.S`: CCF's JSON receipt for a
/// committed transaction, once a committed signature covers it; with
/// `Accept: application/cose`, its COSE receipt. For registered users and
/// members (the receipt reveals commit evidence).
fn receipt(node: &Node, req: &HttpRequest) -> Response<Body> {
    let registered = req.peer_cert.as_deref().is_some_and(|der| {
        let id = identity::cert_id_der(der);
        node.store
            .get_committed(tables::USERS_CERTS, id.as_bytes())
            .is_some()
            || node
                .store
                .get_committed(tables::MEMBERS_CERTS, id.as_bytes())
                .is_some()
    });
    if !registered {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationInfo",
            "receipts are for registered users and members: present a registered client certificate",
        );
    }
    let accept = req
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let cose = accept.contains("application/cose");
    let id = match txid_param(req) {
        Ok(id) => id,
        Err(resp) => return *resp,
    };
    let not_yet = |why: String| {
        let mut r = json_response(
            StatusCode::ACCEPTED,
            &json!({"transaction_id": id.to_string(), "status": why}),
        );
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    };
    match tx_status(node, id) {
        "Committed" => {}
        "Pending" => return not_yet("Pending: not committed yet".into()),
        "Invalid" => {
            return error_response(
                StatusCode::NOT_FOUND,
                "TransactionInvalid",
                format!(
                    "transaction {id} was not committed in view {}; it never will be",
                    id.view
                ),
            )
        }
        _ => {
            return error_response(
                StatusCode::NOT_FOUND,
                "TransactionNotFound",
                format!("transaction {id} is not known to this node"),
            )
        }
    }
    if cose {
        return cose_receipt(node, id, not_yet);
    }
    let result = node
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .receipt(id.seqno);
    match result {
        Ok(receipt) => json_response(
            StatusCode::OK,
            &serde_json::to_value(receipt).unwrap_or_default(),
        ),
        Err(charter_ledger::history::ReceiptUnavailable::NotSigned(_)) => {
            not_yet("Committed, awaiting the next signature".into())
        }
        Err(e) => error_response(StatusCode::NOT_FOUND, "TransactionNotFound", e.to_string()),
    }
}

/// The COSE receipt (`Accept: application/cose`) of a committed
/// transaction, signed with the service key (`ledger/src/cose_receipt.rs`).
fn cose_receipt(
    node: &Node,
    id: TxId,
    not_yet: impl Fn(String) -> Response<Body>,
) -> Response<Body> {
    use charter_ledger::cose_receipt::{from_history, CoseReceiptUnavailable};
    use charter_ledger::history::ReceiptUnavailable;
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let key = match ed25519_dalek::SigningKey::from_pkcs8_pem(&node.service.key_pem) {
        Ok(k) => k,
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("the service key is not an Ed25519 PKCS#8 key: {e}"),
            )
        }
    };
    let result = from_history(
        &node.history.lock().unwrap_or_else(|e| e.into_inner()),
        id.seqno,
        &key,
    );
    match result {
        Ok(cose) => {
            let mut r = Response::new(Body::new(bytes::Bytes::from(cose)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/cose"),
            );
            r
        }
        Err(CoseReceiptUnavailable::History(ReceiptUnavailable::NotSigned(_))) => {
            not_yet("Committed, awaiting the next signature".into())
        }
        Err(e @ CoseReceiptUnavailable::SignatureTransaction(_)) => error_response(
            StatusCode::NOT_ACCEPTABLE,
            "UnsupportedReceiptFormat",
            format!("transaction {id}: {e}"),
        ),
        Err(e @ CoseReceiptUnavailable::Inconsistent(_)) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        ),
        Err(e) => error_response(StatusCode::NOT_FOUND, "TransactionNotFound", e.to_string()),
    }
}

async fn join(node: &Arc<Node>, req: HttpRequest, forwarded: bool) -> Response<Body> {
    if !node.is_ready_primary() {
        if forwarded {
            return not_primary();
        }
        return forward::to_primary(node, &req).await;
    }
    let join: JoinRequest = match serde_json::from_slice(&req.body) {
        Ok(j) => j,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "InvalidJoinRequest",
                format!("bad join request: {e}"),
            )
        }
    };
    match node.admit(join).await {
        Ok(resp) => json_response(
            StatusCode::OK,
            &serde_json::to_value(resp).unwrap_or_default(),
        ),
        Err(e) => error_response(StatusCode::BAD_REQUEST, "JoinRefused", format!("{e:#}")),
    }
}

/// Until the consortium opens the service, users cannot reach the app.
fn service_not_open() -> Response<Body> {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceNotOpen",
        "the service is not open yet: its members must pass transition_service_to_open",
    );
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub fn not_primary() -> Response<Body> {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "NotPrimary",
        "this node is not the primary",
    );
    r.headers_mut()
        .insert("x-charter-not-primary", HeaderValue::from_static("1"));
    r
}

/// Runs a request forwarded by a backup (it must not be forwarded again).
pub async fn handle_forwarded(node: Arc<Node>, req: HttpRequest) -> Response<Body> {
    if req.path == "/node/join" {
        return join(&node, req, true).await;
    }
    if req.path.starts_with("/gov/") {
        return crate::gov_rpc::handle(&node, req, true).await;
    }
    handle_app(&node, req, true).await
}

/// Who is calling, as the endpoint's authentication policies decide.
fn authenticate(
    node: &Node,
    ep: &EndpointDef,
    peer_cert: Option<&Vec<u8>>,
) -> Result<serde_json::Value, Box<Response<Body>>> {
    if ep.authn_policies.is_empty() || ep.authn_policies.iter().any(|p| p == "no_auth") {
        return Ok(json!({"policy": "no_auth"}));
    }
    let mut tried = Vec::new();
    for policy in &ep.authn_policies {
        let table = match policy.as_str() {
            "user_cert" => tables::USERS_CERTS,
            "member_cert" => tables::MEMBERS_CERTS,
            other => {
                tried.push(format!("{other} (not supported)"));
                continue;
            }
        };
        let Some(der) = peer_cert else {
            tried.push(format!("{policy}: no client certificate was presented"));
            continue;
        };
        let id = identity::cert_id_der(der);
        match node.store.get_committed(table, id.as_bytes()) {
            Some(_) => {
                return Ok(json!({"policy": policy, "id": id, "cert": identity::der_to_pem(der)}));
            }
            None => tried.push(format!("{policy}: certificate {id} is not registered")),
        }
    }
    Err(Box::new(error_response(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationInfo",
        format!("could not authenticate the caller: {}", tried.join("; ")),
    )))
}

/// Numbers the app requests this node handles, for the request ids in
/// its log lines.
static APP_REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs an app request inside a tracing span naming it (`n<node>-<count>`),
/// so every log line it causes, `console.*` from the JS handler included,
/// carries the id; the response carries it in `x-charter-request-id`.
async fn handle_app(node: &Arc<Node>, req: HttpRequest, forwarded: bool) -> Response<Body> {
    use tracing::Instrument;
    let n = APP_REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("n{}-{n}", node.id);
    let span = tracing::info_span!("request", id = %id);
    let mut response = handle_app_in_span(node, req, forwarded)
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-charter-request-id", value);
    }
    response
}

async fn handle_app_in_span(node: &Arc<Node>, req: HttpRequest, forwarded: bool) -> Response<Body> {
    let Some(bundle) = node.app() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "no application is installed on this service",
        );
    };
    let sub = req.path.strip_prefix("/app").unwrap_or("");
    let sub = if sub.is_empty() { "/" } else { sub };
    let Some((ep, params)) = bundle.find(req.method.as_str(), sub) else {
        if bundle.path_exists(sub) {
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "UnsupportedHttpVerb",
                format!("{} is not allowed on {}", req.method, req.path),
            );
        }
        return error_response(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("no endpoint at {}", req.path),
        );
    };
    let caller = match authenticate(node, &ep, req.peer_cert.as_deref()) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let writes = matches!(ep.mode, Mode::Readwrite);
    if writes && ep.forwarding_required != "never" && !node.is_ready_primary() {
        if forwarded {
            // Give a fresh primary a moment to become ready before refusing.
            if node.is_primary()
                && node
                    .wait_until_ready_primary(Duration::from_secs(5))
                    .await
                    .is_ok()
            {
                // fall through and execute
            } else {
                return not_primary();
            }
        } else {
            return forward::to_primary(node, &req).await;
        }
    }
    let js_req = JsRequest {
        method: req.method.to_string(),
        path: req.path.clone(),
        url: if req.query.is_empty() {
            req.path.clone()
        } else {
            format!("{}?{}", req.path, req.query)
        },
        route: sub.to_string(),
        query: req.query.clone(),
        params,
        headers: req
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: req.body.to_vec(),
        caller,
    };
    for attempt in 0..MAX_ATTEMPTS {
        let tx = if writes {
            node.store.begin()
        } else {
            node.store.begin_read_only()
        };
        let (resp, tx) = match node
            .engine
            .execute(bundle.clone(), ep.clone(), js_req.clone(), tx)
            .await
        {
            Ok(r) => r,
            Err(e) => return js_error_response(node, &req.path, &e),
        };
        // As in CCF: writes are applied when the handler answered 2xx,
        // unless it said otherwise with `ccf.rpc.setApplyWrites`.
        let txid = if resp.should_apply_writes() {
            match node.commit_entry(tx, EntryKind::Transaction, resp.claims_digest).await {
                Ok(id) => id,
                Err(CommitFailure::Conflict) => {
                    tracing::debug!(attempt, "transaction conflicted; re-executing");
                    continue;
                }
                Err(CommitFailure::NotPrimary) => {
                    return error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "NotPrimary",
                        "this node stopped being primary before the write committed; it was not applied, retry",
                    )
                }
                Err(e @ CommitFailure::Timeout(_)) => {
                    return error_response(StatusCode::SERVICE_UNAVAILABLE, "CommitTimeout", format!("{e}; the write may still commit"))
                }
                Err(e @ CommitFailure::TooLarge { .. }) => {
                    return error_response(StatusCode::PAYLOAD_TOO_LARGE, "TransactionTooLarge", format!("{e}; nothing was written"))
                }
                Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
            }
        } else {
            node.committed_txid()
        };
        return app_response(resp, txid);
    }
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "TooManyConflicts",
        format!("the transaction conflicted with concurrent ones {MAX_ATTEMPTS} times; retry"),
    )
}

fn app_response(resp: charter_js::JsResponse, txid: TxId) -> Response<Body> {
    let mut out = Response::new(http_body_util::Full::new(bytes::Bytes::from(resp.body)));
    *out.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in resp.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            out.headers_mut().append(k, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&txid.to_string()) {
        out.headers_mut().insert(TXID_HEADER, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_in_bytes() {
        let status = "Name:\tcharter\nVmPeak:\t  900 kB\nVmRSS:\t   51200 kB\nRssAnon:\t 100 kB\n";
        assert_eq!(parse_vm_rss(status), Some(51200 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
        // On Linux the node reads its own.
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
