//! Forwarding: a backup sends a request that must run on the primary over
//! the node-to-node channel, and relays the primary's answer.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::http::{error_response, Body, HttpRequest};
use crate::node::Node;

/// Header on responses that a backup relayed from the primary.
pub const FORWARDED_HEADER: &str = "x-charter-forwarded-to";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

mod b64 {
    use super::B64;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
pub struct ForwardedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    /// The caller's certificate (DER, base64) as the backup saw it.
    pub caller_cert: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct ForwardedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    #[serde(with = "b64")]
    pub body: Vec<u8>,
}

impl ForwardedRequest {
    pub fn from_request(req: &HttpRequest) -> Self {
        ForwardedRequest {
            method: req.method.to_string(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: req.body.to_vec(),
            caller_cert: req.peer_cert.as_ref().map(|c| B64.encode(c.as_slice())),
        }
    }

    /// Rebuilds the request as the primary handles it. The caller's
    /// certificate is taken on the forwarding node's word: the channel is
    /// mutually authenticated between nodes of the service.
    pub fn into_request(self) -> Result<HttpRequest, String> {
        let method = http::Method::from_bytes(self.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut headers = http::HeaderMap::new();
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                headers.append(k, v);
            }
        }
        let peer_cert = match self.caller_cert {
            Some(c) => Some(std::sync::Arc::new(
                B64.decode(c).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        Ok(HttpRequest {
            method,
            path: self.path,
            query: self.query,
            headers,
            body: Bytes::from(self.body),
            peer_cert,
        })
    }
}

impl ForwardedResponse {
    pub fn from_response(resp: Response<Body>, body: Bytes) -> Self {
        ForwardedResponse {
            status: resp.status().as_u16(),
            headers: resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: body.to_vec(),
        }
    }
}

/// Sends the request to the primary and relays its answer. Retries only
/// when the request certainly did not run (connection refused, or the
/// target said it is not the primary).
pub async fn to_primary(node: &Node, req: &HttpRequest) -> Response<Body> {
    let payload = ForwardedRequest::from_request(req);
    let body = match serde_json::to_vec(&payload) {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        }
    };
    for _attempt in 0..5 {
        let Some((primary_id, addr)) = node.primary(Duration::from_secs(5)).await else {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "NoPrimary",
                "no primary is known right now (election in progress?); retry shortly",
            );
        };
        if primary_id == node.id {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "PrimaryNotReady",
                "this node has just become primary and is not ready yet; retry shortly",
            );
        }
        let url = format!("https://{}/forward", addr.node_to_node);
        let sent = node.peers.post(url).body(body.clone()).send().await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                tracing::info!(primary_id, "forwarding: primary unreachable ({e}); waiting for a new one");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            Err(e) => {
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "ForwardingFailed",
                    format!("forwarding to the primary (node {primary_id}) failed; the request may or may not have run: {e}"),
                )
            }
        };
        let not_primary = resp.status() == StatusCode::SERVICE_UNAVAILABLE
            && resp.headers().get("x-charter-not-primary").is_some();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "ForwardingFailed",
                    format!(
                    "reading the primary's answer failed; the request may or may not have run: {e}"
                ),
                )
            }
        };
        if not_primary {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let fwd: ForwardedResponse = match serde_json::from_slice(&bytes) {
            Ok(f) => f,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "ForwardingFailed",
                    format!("bad answer from primary: {e}"),
                )
            }
        };
        let mut out = Response::new(Full::new(Bytes::from(fwd.body)));
        *out.status_mut() = StatusCode::from_u16(fwd.status).unwrap_or(StatusCode::BAD_GATEWAY);
        for (k, v) in fwd.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                out.headers_mut().append(k, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&primary_id.to_string()) {
            out.headers_mut().insert(FORWARDED_HEADER, v);
        }
        return out;
    }
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "NoPrimary",
        "could not reach a primary after several attempts; retry shortly",
    )
}
