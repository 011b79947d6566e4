//! What goes into and comes out of a JS endpoint, independent of the engine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A request as the endpoint's JS function sees it (CCF's `Request`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct JsRequest {
    pub method: String,
    /// The full path, e.g. `/app/log/private`.
    pub path: String,
    /// Path and query, as received.
    pub url: String,
    /// The path under `/app` that matched the endpoint.
    pub route: String,
    /// The raw query string (no leading `?`), as CCF passes it.
    pub query: String,
    /// Values of `{name}` segments of the endpoint's path template.
    pub params: BTreeMap<String, String>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    #[serde(skip)]
    pub body: Vec<u8>,
    /// Who called, as authentication decided (`{"policy": ..., "id": ...}`).
    pub caller: serde_json::Value,
}

impl JsRequest {
    /// The request's metadata as the JSON text both engines hand to the
    /// prelude's `makeRequest` (everything but the body; headers as an
    /// object of lower-case names).
    pub(crate) fn meta_json(&self) -> Result<String, JsError> {
        let mut meta = serde_json::to_value(self).map_err(|e| JsError::Internal(e.to_string()))?;
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        meta["headers"] = serde_json::Value::Object(headers);
        Ok(meta.to_string())
    }
}

/// What the endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Set by `ccf.rpc.setClaimsDigest`: enters the transaction's Merkle leaf.
    pub claims_digest: Option<[u8; 32]>,
    /// Set by `ccf.rpc.setApplyWrites`: overrides whether the handler's
    /// writes are applied (see [`JsResponse::should_apply_writes`]).
    pub apply_writes: Option<bool>,
}

impl JsResponse {
    /// Whether the node commits the handler's writes. As in CCF: what the
    /// handler set with `ccf.rpc.setApplyWrites(bool)` if it called it,
    /// else only on a 2xx status. So `true` commits even a 4xx/5xx
    /// response's writes, and `false` drops them even on a 2xx.
    pub fn should_apply_writes(&self) -> bool {
        self.apply_writes
            .unwrap_or((200..300).contains(&self.status))
    }
}

/// What `ccf.consensus` reads, supplied by the node
/// ([`crate::JsEngine::set_consensus`]); the engines know nothing of Raft.
/// Called from the engines' worker threads while a handler runs, so it must
/// answer quickly and never block on the async runtime.
pub trait ConsensusView: Send + Sync {
    /// `(view, seqno)` of the last committed transaction.
    fn last_committed(&self) -> (u64, u64);
    /// CCF's status of transaction `view.seqno`: `"Committed"`,
    /// `"Pending"`, `"Invalid"` or `"Unknown"`.
    fn status(&self, view: u64, seqno: u64) -> &'static str;
    /// The view in which `seqno` was committed, if this node knows it.
    fn view_for_seqno(&self, seqno: u64) -> Option<u64>;
}

/// Runtime limits applied to every execution (CCF's
/// `public:ccf.gov.js_runtime_options` fields and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_heap_bytes: usize,
    pub max_stack_bytes: usize,
    pub max_execution_time_ms: u64,
    /// Put a thrown exception's message and stack in the 500 response;
    /// else the response says only that the handler threw.
    pub return_exception_details: bool,
    /// Put a thrown exception's message and stack in the node's log; else
    /// the log line has the error code and request id only.
    pub log_exception_details: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_heap_bytes: 100 * 1024 * 1024,
            max_stack_bytes: 1024 * 1024,
            max_execution_time_ms: 5000,
            // CCF defaults both to false; until governance sets them a
            // Charter node shows the details, which is what a developer
            // in a sandbox wants. `set_js_runtime_options` sets both.
            return_exception_details: true,
            log_exception_details: true,
        }
    }
}

/// Why an execution produced no response.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JsError {
    /// The handler (or a module's top level) threw.
    #[error("exception: {0}")]
    Exception(String),
    /// The handler ran past `max_execution_time_ms` and was terminated.
    #[error("execution took longer than the limit of {0} ms and was stopped")]
    Timeout(u64),
    /// The handler's heap grew past `max_heap_bytes` and was terminated.
    #[error("the handler used more than the heap limit of {0} bytes and was stopped")]
    HeapLimit(usize),
    /// The handler returned something that is not a valid response.
    #[error("invalid response from handler: {0}")]
    BadResponse(String),
    /// The endpoint's module or function could not be loaded.
    #[error("{0}")]
    Module(String),
    /// The engine itself failed (a bug, or it is shutting down).
    #[error("internal JS engine error: {0}")]
    Internal(String),
    /// No worker became free in time (they are busy with, or stuck in,
    /// earlier requests): the request did not run.
    #[error("{0}")]
    Busy(String),
}

impl JsError {
    /// The error code in the `{"error": {"code": ...}}` response body.
    pub fn code(&self) -> &'static str {
        match self {
            JsError::Exception(_) => "JSException",
            JsError::Timeout(_) => "JSExecutionTimeExceeded",
            JsError::HeapLimit(_) => "JSHeapLimitExceeded",
            JsError::BadResponse(_) => "JSInvalidResponse",
            JsError::Module(_) => "JSModuleError",
            JsError::Internal(_) => "InternalError",
            JsError::Busy(_) => "JSWorkersBusy",
        }
    }

    pub fn message(&self) -> String {
        self.to_string()
    }
}
