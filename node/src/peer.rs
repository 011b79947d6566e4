//! The node-to-node server: Raft RPCs and forwarded requests. Only nodes
//! holding a certificate endorsed by the service get past its TLS.

use std::sync::Arc;

use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;

use crate::forward::{ForwardedRequest, ForwardedResponse};
use crate::http::{error_response, json_response, Body, HttpRequest};
use crate::node::Node;
use crate::rpc;

pub async fn handle(node: Arc<Node>, req: HttpRequest) -> Response<Body> {
    if req.method != Method::POST {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "node-to-node calls are POSTs",
        );
    }
    let raft_result = match req.path.as_str() {
        "/raft/append" => charter_consensus::server::handle_append(&node.raft, &req.body).await,
        "/raft/vote" => charter_consensus::server::handle_vote(&node.raft, &req.body).await,
        "/raft/snapshot" => charter_consensus::server::handle_snapshot(&node.raft, &req.body).await,
        "/forward" => return forwarded(node, &req.body).await,
        other => {
            return error_response(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!("no node-to-node endpoint {other}"),
            )
        }
    };
    match raft_result {
        Ok(bytes) => {
            let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(bytes)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => error_response(StatusCode::BAD_REQUEST, "BadRaftMessage", e.to_string()),
    }
}

async fn forwarded(node: Arc<Node>, body: &[u8]) -> Response<Body> {
    let fwd: ForwardedRequest = match serde_json::from_slice(body) {
        Ok(f) => f,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadForwardedRequest",
                e.to_string(),
            )
        }
    };
    let req = match fwd.into_request() {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "BadForwardedRequest", e),
    };
    let resp = rpc::handle_forwarded(node, req).await;
    if resp.headers().get("x-charter-not-primary").is_some() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    let resp = Response::from_parts(parts, http_body_util::Full::new(bytes::Bytes::new()));
    json_response(
        StatusCode::OK,
        &serde_json::to_value(ForwardedResponse::from_response(resp, bytes)).unwrap_or_default(),
    )
}
