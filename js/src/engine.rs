//! [`JsEngine`], the one front the node talks to: it owns the limits and
//! the counters and sends each execution to the engine the app chose in
//! its bundle (`"engine"` in `app.json`, see [`AppBundle::engine`]):
//!
//! - V8 ([`crate::v8_engine`]): worker threads, each with one isolate,
//!   started with the front;
//! - QuickJS ([`crate::qjs_engine`]): as many worker threads, started when
//!   the first QuickJS app runs, the same model as V8's on QuickJS.
//!
//! Both run the same prelude (`prelude.js`, the `ccf` and `console`
//! globals), build the request the same way and read the response with
//! the same rules, so an app answers the same on both
//! (`js/tests/conformance.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use charter_ledger::Tx;

use crate::api::{ConsensusView, JsError, JsRequest, JsResponse, Limits};
use crate::bundle::{AppBundle, EndpointDef, Engine};
use crate::qjs_engine::QjsEngine;
use crate::v8_engine::V8Engine;

/// The counters of one engine.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    pub executions: AtomicU64,
    pub timeouts: AtomicU64,
    pub heap_limit_hits: AtomicU64,
    pub exceptions: AtomicU64,
}

impl EngineMetrics {
    fn record(&self, result: &Result<(JsResponse, Tx), JsError>) {
        count(
            [
                &self.executions,
                &self.timeouts,
                &self.heap_limit_hits,
                &self.exceptions,
            ],
            result,
        );
    }
}

/// Bumps `[executions, timeouts, heap_limit_hits, exceptions]` for one
/// finished execution.
fn count(counters: [&AtomicU64; 4], result: &Result<(JsResponse, Tx), JsError>) {
    let [executions, timeouts, heap_limit_hits, exceptions] = counters;
    executions.fetch_add(1, Ordering::Relaxed);
    let hit = match result {
        Err(JsError::HeapLimit(_)) => heap_limit_hits,
        Err(JsError::Timeout(_)) => timeouts,
        Err(JsError::Exception(_)) => exceptions,
        _ => return,
    };
    hit.fetch_add(1, Ordering::Relaxed);
}

/// Counters for `/node/js_metrics`. The top-level counters are totals over
/// both engines; `v8` and `quickjs` split them by engine.
#[derive(Debug, Default)]
pub struct Metrics {
    pub executions: AtomicU64,
    pub timeouts: AtomicU64,
    pub heap_limit_hits: AtomicU64,
    pub exceptions: AtomicU64,
    /// V8 isolates created (a new one after each heap-limit hit or limit
    /// change).
    pub isolates_created: AtomicU64,
    /// V8 contexts prepared (prelude run and realm hardened): one per
    /// worker and app, plus one after each terminated or unclean request,
    /// plus one per interpreter-reuse key.
    pub v8_contexts_created: AtomicU64,
    /// Bytes of V8 code cache a worker holds for the current app's modules.
    pub v8_code_cache_bytes: AtomicU64,
    /// Module factories compiled (one per module per V8 context): the
    /// fresh-state fast path (`v8_engine/factory.rs`).
    pub v8_module_factories: AtomicU64,
    /// Entry modules a V8 context runs as real modules because their
    /// module graph is not taken by the factory rewrite.
    pub v8_module_fallbacks: AtomicU64,
    /// QuickJS realms (runtime and context, prelude run and hardened)
    /// created: one per worker and app, plus one after each terminated or
    /// unclean request, plus one every `REQUESTS_PER_REALM` requests.
    pub quickjs_runtimes_created: AtomicU64,
    /// QuickJS workers started in place of one stuck in code QuickJS
    /// cannot interrupt (a backtracking regular expression), whose request
    /// the front answered as timed out.
    pub quickjs_workers_replaced: AtomicU64,
    /// V8 workers started in place of one stuck in a builtin that does not
    /// check for interrupts (e.g. `map` over a sparse array of length
    /// 2^32 - 1), whose request the front answered as timed out.
    pub v8_workers_replaced: AtomicU64,
    pub v8: EngineMetrics,
    pub quickjs: EngineMetrics,
}

impl Metrics {
    /// Counts one finished execution on `engine`.
    pub(crate) fn record(&self, engine: Engine, result: &Result<(JsResponse, Tx), JsError>) {
        count(
            [
                &self.executions,
                &self.timeouts,
                &self.heap_limit_hits,
                &self.exceptions,
            ],
            result,
        );
        match engine {
            Engine::V8 => self.v8.record(result),
            Engine::QuickJs => self.quickjs.record(result),
        }
    }
}

/// Runs app endpoints on the engine each app chose, under one set of
/// limits.
pub struct JsEngine {
    v8: V8Engine,
    quickjs: OnceLock<QjsEngine>,
    limits: Arc<RwLock<Limits>>,
    metrics: Arc<Metrics>,
    workers: usize,
    /// What `ccf.consensus` reads; `None` until the node sets it.
    consensus: RwLock<Option<Arc<dyn ConsensusView>>>,
}

impl JsEngine {
    /// Starts `workers` V8 worker threads; the QuickJS workers (as many)
    /// start with the first QuickJS execution.
    pub fn new(workers: usize, limits: Limits) -> JsEngine {
        let workers = workers.max(1);
        let limits = Arc::new(RwLock::new(limits));
        let metrics = Arc::new(Metrics::default());
        let v8 = V8Engine::new(workers, limits.clone(), metrics.clone());
        JsEngine {
            v8,
            quickjs: OnceLock::new(),
            limits,
            metrics,
            workers,
            consensus: RwLock::new(None),
        }
    }

    /// Gives `ccf.consensus` its source. Until this is called its
    /// functions throw "not available".
    pub fn set_consensus(&self, consensus: Arc<dyn ConsensusView>) {
        *self.consensus.write().unwrap_or_else(|e| e.into_inner()) = Some(consensus);
    }

    fn consensus(&self) -> Option<Arc<dyn ConsensusView>> {
        self.consensus
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Worker threads per engine.
    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn limits(&self) -> Limits {
        *self.limits.read().unwrap_or_else(|e| e.into_inner())
    }

    /// New limits apply to the next execution on every worker of both
    /// engines.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// QuickJS workers stuck now in requests the front gave up on (see
    /// [`Metrics::quickjs_workers_replaced`]).
    pub fn quickjs_stuck_workers(&self) -> usize {
        self.quickjs.get().map_or(0, QjsEngine::stuck_workers)
    }

    /// V8 workers stuck now in requests the front gave up on (see
    /// [`Metrics::v8_workers_replaced`]).
    pub fn v8_stuck_workers(&self) -> usize {
        self.v8.stuck_workers()
    }

    /// Runs `endpoint`'s function for `request` inside `tx`, on the engine
    /// of `bundle`. On success the transaction comes back with the
    /// handler's reads and writes. Needs a tokio runtime with its timer
    /// enabled (the front times out stuck QuickJS workers).
    pub async fn execute(
        &self,
        bundle: Arc<AppBundle>,
        endpoint: EndpointDef,
        request: JsRequest,
        tx: Tx,
    ) -> Result<(JsResponse, Tx), JsError> {
        match bundle.engine() {
            Engine::V8 => {
                let consensus = self.consensus();
                self.v8
                    .execute(bundle, endpoint, request, tx, consensus)
                    .await
            }
            Engine::QuickJs => {
                let consensus = self.consensus();
                let quickjs = self.quickjs.get_or_init(|| {
                    QjsEngine::new(self.workers, self.limits.clone(), self.metrics.clone())
                });
                quickjs
                    .execute(bundle, endpoint, request, tx, consensus)
                    .await
            }
        }
    }
}
