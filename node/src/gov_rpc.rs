//! `/gov/*`: the consortium's endpoints (CCF's 2024-07-01 API).
//!
//! Writes arrive as COSE Sign1 envelopes (`content-type:
//! application/cose`), run on the primary (a backup forwards them), and
//! execute the constitution on QuickJS on a blocking thread. Reads answer
//! from this node's committed state.

use std::sync::Arc;

use charter_governance::qjs::GovLimits;
use charter_governance::request::{self, Expect, SignedRequest};
use charter_governance::{proposals, service, GovError, MEMBER_ACCEPTED, MEMBER_ACTIVE};
use charter_ledger::Tx;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::Value as Json;

use crate::forward;
use crate::http::{error_response, json_response, Body, HttpRequest};
use crate::node::{CommitFailure, Node};
use crate::rpc::{not_primary, TXID_HEADER};

/// The API versions these endpoints implement.
const API_VERSIONS: &[&str] = &["2024-07-01"];
const MAX_ATTEMPTS: usize = 10;

/// What a signed write asks for.
#[derive(Clone)]
enum Write {
    Propose,
    Ballot { proposal: String, member: String },
    Withdraw { proposal: String },
    UpdateDigest { member: String },
    Ack { member: String },
}

/// What a write answers.
enum Answer {
    Json(Json),
    NoContent,
}

fn gov_error(e: GovError) -> Response<Body> {
    error_response(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.code,
        e.message,
    )
}

fn not_found(path: &str) -> Response<Body> {
    error_response(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("no governance endpoint at {path}"),
    )
}

/// Entry point for every `/gov/...` path.
pub async fn handle(node: &Arc<Node>, req: HttpRequest, forwarded: bool) -> Response<Body> {
    if let Some(v) = req.query_param("api-version") {
        if !API_VERSIONS.contains(&v.as_str()) {
            return error_response(
                StatusCode::BAD_REQUEST,
                "UnsupportedApiVersion",
                format!("api-version {v:?} is not supported; use one of {API_VERSIONS:?}"),
            );
        }
    }
    let path = req.path.clone();
    let Some(rest) = path.strip_prefix("/gov/") else {
        return not_found(&path);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let write = match parts.as_slice() {
        ["members", "proposals:create"] => Some(Write::Propose),
        ["members", "proposals", id, "ballots", m] if m.ends_with(":submit") => {
            Some(Write::Ballot {
                proposal: id.to_string(),
                member: m.trim_end_matches(":submit").to_string(),
            })
        }
        ["members", "proposals", id] if id.ends_with(":withdraw") => Some(Write::Withdraw {
            proposal: id.trim_end_matches(":withdraw").to_string(),
        }),
        ["members", "state-digests", m] if m.ends_with(":update") => Some(Write::UpdateDigest {
            member: m.trim_end_matches(":update").to_string(),
        }),
        ["members", "state-digests", m] if m.ends_with(":ack") => Some(Write::Ack {
            member: m.trim_end_matches(":ack").to_string(),
        }),
        _ => None,
    };
    if let Some(write) = write {
        if req.method != Method::POST {
            return method_not_allowed(&req);
        }
        return signed_write(node, req, write, forwarded).await;
    }
    if req.method != Method::GET {
        return if read(node, &parts).is_some() {
            method_not_allowed(&req)
        } else {
            not_found(&path)
        };
    }
    match read(node, &parts) {
        Some(resp) => resp,
        None => not_found(&path),
    }
}

fn method_not_allowed(req: &HttpRequest) -> Response<Body> {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "UnsupportedHttpVerb",
        format!("{} is not allowed on {}", req.method, req.path),
    )
}

/// GET endpoints; `None` if the path is not one.
fn read(node: &Node, parts: &[&str]) -> Option<Response<Body>> {
    let mut tx = node.store.begin_read_only();
    let ok = |v: Json| json_response(StatusCode::OK, &v);
    let answer = |r: Result<Json, GovError>| match r {
        Ok(v) => ok(v),
        Err(e) => gov_error(e),
    };
    Some(match parts {
        ["service", "info"] => ok(service::info(&mut tx)),
        ["service", "members"] => ok(service::members(&mut tx)),
        ["service", "users"] => ok(service::users(&mut tx)),
        ["service", "nodes"] => ok(service::nodes(&mut tx)),
        ["service", "javascript-app"] => ok(service::js_app_view(&mut tx)),
        ["service", "constitution"] => {
            let text = service::constitution(&mut tx).unwrap_or_default();
            let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(text)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript"),
            );
            r
        }
        ["members", "proposals"] => ok(proposals::list(&mut tx)),
        ["members", "proposals", id] => answer(proposals::get(&mut tx, id)),
        ["members", "proposals", id, "actions"] => match proposals::actions(&mut tx, id) {
            Ok(text) => {
                let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(text)));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(e) => gov_error(e),
        },
        ["members", "proposals", id, "ballots", member] => {
            answer(proposals::get_ballot(&mut tx, id, member))
        }
        _ => return None,
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The digest a member acks: the Merkle root over everything committed.
fn state_digest(node: &Node) -> String {
    let last = node.store.last_applied();
    let history = node.history.lock().unwrap_or_else(|e| e.into_inner());
    match history.root_through(last) {
        Ok(root) => hex::encode(root),
        Err(_) => hex::encode([0u8; 32]),
    }
}

fn run_write(
    tx: &mut Tx,
    envelope: &[u8],
    write: &Write,
    now: i64,
    window_secs: i64,
    digest: &str,
) -> Result<Answer, GovError> {
    let limits = GovLimits::default();
    let (msg_type, states): (&str, &[&str]) = match write {
        Write::Propose => ("proposal", &[MEMBER_ACTIVE]),
        Write::Ballot { .. } => ("ballot", &[MEMBER_ACTIVE]),
        Write::Withdraw { .. } => ("withdrawal", &[MEMBER_ACTIVE]),
        Write::UpdateDigest { .. } => ("state_digest", &[MEMBER_ACCEPTED, MEMBER_ACTIVE]),
        Write::Ack { .. } => ("ack", &[MEMBER_ACCEPTED, MEMBER_ACTIVE]),
    };
    let req: SignedRequest = request::verify(
        tx,
        envelope,
        Expect {
            msg_type,
            member_states: states,
            now,
            window_secs,
        },
    )?;
    match write {
        Write::Propose => proposals::create(tx, &req, limits).map(Answer::Json),
        Write::Ballot { proposal, member } => {
            proposals::submit_ballot(tx, &req, proposal, member, limits).map(Answer::Json)
        }
        Write::Withdraw { proposal } => proposals::withdraw(tx, &req, proposal).map(Answer::Json),
        Write::UpdateDigest { member } => {
            proposals::update_state_digest(tx, &req, member, digest).map(Answer::Json)
        }
        Write::Ack { member } => proposals::ack(tx, &req, member).map(|()| Answer::NoContent),
    }
}

async fn signed_write(
    node: &Arc<Node>,
    req: HttpRequest,
    write: Write,
    forwarded: bool,
) -> Response<Body> {
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/cose") {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedContentType",
            format!("governance writes are COSE Sign1 envelopes: send content-type application/cose, not {content_type:?}"),
        );
    }
    if !node.is_ready_primary() {
        if forwarded {
            if !(node.is_primary()
                && node
                    .wait_until_ready_primary(std::time::Duration::from_secs(5))
                    .await
                    .is_ok())
            {
                return not_primary();
            }
        } else {
            return forward::to_primary(node, &req).await;
        }
    }
    let envelope = Arc::new(req.body.to_vec());
    let window = node.config.gov_request_window_secs;
    for _ in 0..MAX_ATTEMPTS {
        let digest = state_digest(node);
        let tx = node.store.begin();
        let envelope = envelope.clone();
        let write = write.clone();
        let now = unix_now();
        let ran = tokio::task::spawn_blocking(move || {
            let mut tx = tx;
            let answer = run_write(&mut tx, &envelope, &write, now, window, &digest);
            (tx, answer)
        })
        .await;
        let (tx, answer) = match ran {
            Ok(r) => r,
            Err(e) => {
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    format!("governance execution failed: {e}"),
                )
            }
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return gov_error(e),
        };
        match node.commit(tx).await {
            Ok(txid) => {
                let mut resp = match answer {
                    Answer::Json(v) => json_response(StatusCode::OK, &v),
                    Answer::NoContent => {
                        let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                        *r.status_mut() = StatusCode::NO_CONTENT;
                        r
                    }
                };
                if let Ok(v) = HeaderValue::from_str(&txid.to_string()) {
                    resp.headers_mut().insert(TXID_HEADER, v);
                }
                return resp;
            }
            Err(CommitFailure::Conflict) => continue,
            Err(CommitFailure::NotPrimary) => return not_primary(),
            Err(e) => {
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "CommitFailed",
                    format!("{e}"),
                )
            }
        }
    }
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "TooManyConflicts",
        "the governance transaction kept conflicting with concurrent ones; retry",
    )
}
