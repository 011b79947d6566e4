//! Charter's JavaScript runtime for applications.
//!
//! - [`bundle`]: app bundles in CCF's format (`app.json` + modules), endpoint
//!   lookup;
//! - [`api`]: the engine-neutral request, response, limits and errors;
//! - [`v8_engine`]: [`JsEngine`], which runs endpoints on V8 worker threads,
//!   a fresh context per request, under heap, stack and time limits, with
//!   the `ccf` global (KV bound to the request's transaction, buffer
//!   helpers, console).
//!
//! This crate knows nothing of HTTP or Raft: it takes a transaction and
//! gives it back with the handler's reads and writes.

pub mod api;
pub mod bundle;
pub mod v8_engine;

pub use api::{JsError, JsRequest, JsResponse, Limits};
pub use bundle::{AppBundle, BundleError, EndpointDef, Mode};
pub use v8_engine::JsEngine;
