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

/// What the endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Set by `ccf.rpc.setClaimsDigest`: enters the transaction's Merkle leaf.
    pub claims_digest: Option<[u8; 32]>,
}

/// Runtime limits applied to every execution (CCF's
/// `public:ccf.gov.js_runtime_options` fields and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_heap_bytes: usize,
    pub max_stack_bytes: usize,
    pub max_execution_time_ms: u64,
    /// Put the exception's message and stack in the error response (else
    /// only in the node's log).
    pub return_exception_details: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_heap_bytes: 100 * 1024 * 1024,
            max_stack_bytes: 1024 * 1024,
            max_execution_time_ms: 5000,
            return_exception_details: true,
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
        }
    }

    pub fn message(&self) -> String {
        self.to_string()
    }
}
