//! Charter's JavaScript runtime for applications.
//!
//! - [`bundle`]: app bundles in CCF's format (`app.json` + modules), endpoint
//!   lookup, the app's choice of engine;
//! - [`api`]: the engine-neutral request, response, limits and errors;
//! - [`engine`]: [`JsEngine`], the front the node uses: shared limits and
//!   counters, each execution sent to the app's engine;
//! - [`v8_engine`]: V8 worker threads, one isolate each, serving requests
//!   from a hardened context (frozen intrinsics, a fresh instance of the
//!   app's modules per request, globals restored after each);
//! - [`qjs_engine`]: QuickJS worker threads, the same model: one hardened
//!   realm per worker and app, fresh module instances per request;
//! - `prelude.js`: the `ccf` global (KV bound to the request's transaction,
//!   buffer helpers, claims digest) and `console`, written once and run by
//!   both engines on top of their host functions; `harden.js` then
//!   freezes the realm, on both engines.
//!
//! Every execution runs under heap, stack and time limits ([`Limits`]).
//!
//! This crate knows nothing of HTTP or Raft: it takes a transaction and
//! gives it back with the handler's reads and writes.

pub mod api;
pub mod bundle;
pub mod crypto;
pub mod engine;
mod jobs;
pub mod qjs_engine;
pub mod v8_engine;

pub use api::{ConsensusView, JsError, JsRequest, JsResponse, Limits};
pub use bundle::{AppBundle, BundleError, EndpointDef, Engine, Mode};
pub use engine::{EngineMetrics, JsEngine, Metrics};

/// The prelude both engines run first in every new context.
pub(crate) const PRELUDE: &str = include_str!("prelude.js");
/// Run after the prelude: freezes the realm and returns `endRequest`.
pub(crate) const HARDEN: &str = include_str!("harden.js");
