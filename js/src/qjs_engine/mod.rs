//! The QuickJS engine (crate `rquickjs`, the same QuickJS-ng governance
//! uses): a pool of worker threads fed by a channel from the async server.
//! Each worker keeps one hardened realm (runtime and context) per app and
//! runs every request in it with fresh instances of the app's modules, as
//! V8 does, so nothing of one request is visible to the next (`exec.rs`). The node reaches it through
//! [`crate::JsEngine`], for apps whose `app.json` says
//! `"engine": "quickjs"`.
//!
//! Limits, per runtime, from the same [`Limits`] as V8:
//! - heap: the runtime's allocator counts every allocation, ArrayBuffers
//!   included, and refuses past the limit (`memory.rs`); a refusal is
//!   reported as `JSHeapLimitExceeded` even if the script caught the
//!   error, and the realm is dropped;
//! - stack: QuickJS's stack limit, clamped to
//!   [`MIN_STACK_BYTES`]..=the worker thread's capacity (whose real stack
//!   is larger still by a margin), so deep recursion is a catchable
//!   `RangeError`;
//! - time: an interrupt handler stops the script once the request's
//!   deadline has passed, with an exception it cannot catch.
//!
//! The `ccf` API is the shared prelude (`prelude.js`) on top of the host
//! functions in `host.rs`; one execution is `exec.rs`.

mod crypto_bindings;
mod exec;
mod host;
mod memory;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use charter_ledger::Tx;

use crate::api::{ConsensusView, JsError, JsRequest, JsResponse, Limits};
use crate::bundle::{AppBundle, EndpointDef, Engine};
use crate::engine::Metrics;
use crate::jobs::{GiveUp, Job, JobQueue, Jobs};

/// The smallest stack limit QuickJS gets, whatever the limits say (0 would
/// mean "no limit" to QuickJS). V8 has the same floor (64 KiB).
pub const MIN_STACK_BYTES: usize = 64 * 1024;
/// Stack limits up to this (governance's maximum) are honoured without
/// restarting workers: the worker threads are made with at least this much
/// stack (it is only reserved address space until used).
pub const DEFAULT_STACK_CAPACITY_BYTES: usize = 64 * 1024 * 1024;
/// Interpreter-reuse realms a worker keeps at most (one per reuse key),
/// as on V8.
const MAX_REUSED_REALMS: usize = 32;
/// Real stack each worker has beyond its capacity, for the Rust and C
/// frames around the interpreter and between its stack checks.
const STACK_MARGIN_BYTES: usize = 4 * 1024 * 1024;

/// Runs app endpoints on QuickJS worker threads.
pub(crate) struct QjsEngine {
    jobs: JobQueue,
    limits: Arc<RwLock<Limits>>,
}

impl QjsEngine {
    /// Starts `workers` threads under the front's shared limits and
    /// counters.
    pub(crate) fn new(
        workers: usize,
        limits: Arc<RwLock<Limits>>,
        metrics: Arc<Metrics>,
    ) -> QjsEngine {
        let (mut queue, receiver) = JobQueue::new("QuickJS");
        let initial = limits
            .read()
            .map(|l| l.max_stack_bytes)
            .unwrap_or(DEFAULT_STACK_CAPACITY_BYTES);
        let capacity = initial.max(DEFAULT_STACK_CAPACITY_BYTES);
        let workers = workers.max(1);
        let (shared_limits, shared_metrics) = (limits.clone(), metrics.clone());
        let spawn = move |name: String| {
            let receiver = receiver.clone();
            let limits = shared_limits.clone();
            let metrics = shared_metrics.clone();
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .stack_size(capacity.saturating_add(STACK_MARGIN_BYTES))
                .spawn(move || worker_loop(receiver, limits, metrics, capacity));
            if let Err(e) = spawned {
                tracing::error!("cannot start QuickJS worker thread {name}: {e}");
            }
        };
        for i in 0..workers {
            spawn(format!("qjs-worker-{i}"));
        }
        // QuickJS's regular expressions never poll for interrupts, so a
        // worker can be stuck far past the time limit: the front gives up
        // on it and starts another (`jobs.rs`).
        let respawn_metrics = metrics.clone();
        queue.set_respawn(
            Box::new(move || {
                let n = respawn_metrics
                    .quickjs_workers_replaced
                    .fetch_add(1, Ordering::Relaxed);
                spawn(format!("qjs-worker-r{n}"));
            }),
            workers,
        );
        QjsEngine {
            jobs: queue,
            limits,
        }
    }

    /// Workers stuck now in requests the front gave up on.
    pub(crate) fn stuck_workers(&self) -> usize {
        self.jobs.stuck_workers()
    }

    /// Runs `endpoint`'s function for `request` inside `tx`. On success the
    /// transaction comes back with the handler's reads and writes.
    pub(crate) async fn execute(
        &self,
        bundle: Arc<AppBundle>,
        endpoint: EndpointDef,
        request: JsRequest,
        tx: Tx,
        consensus: Option<Arc<dyn ConsensusView>>,
    ) -> Result<(JsResponse, Tx), JsError> {
        let give_up = GiveUp::under(&self.limits);
        self.jobs
            .run(bundle, endpoint, request, tx, consensus, Some(give_up))
            .await
    }
}

fn worker_loop(jobs: Jobs, limits: Arc<RwLock<Limits>>, metrics: Arc<Metrics>, capacity: usize) {
    let mut warned_stack = 0;
    let mut realm: Option<exec::Realm> = None;
    // Interpreter-reuse realms, by reuse key.
    let mut reused: HashMap<String, exec::Realm> = HashMap::new();
    loop {
        let Some(job) = jobs.next() else {
            break;
        };
        let limits = *limits.read().unwrap_or_else(|e| e.into_inner());
        if limits.max_stack_bytes > capacity && warned_stack != limits.max_stack_bytes {
            warned_stack = limits.max_stack_bytes;
            tracing::warn!(
                "max_stack_bytes {} is more than the QuickJS workers' stack of {capacity} bytes; \
                 QuickJS uses {capacity} (restart the node to raise it)",
                limits.max_stack_bytes
            );
        }
        let stack = limits.max_stack_bytes.clamp(MIN_STACK_BYTES, capacity);
        let Job {
            bundle,
            endpoint,
            request,
            tx,
            consensus,
            span,
            reply,
            mut ticket,
        } = job;
        let _in_request = span.enter();
        if !ticket.start() {
            // The front answered it already (no worker was free in time).
            continue;
        }
        if realm.as_ref().is_some_and(|r| !r.serves(&bundle, &limits)) {
            realm = None;
        }
        reused.retain(|_, r| r.serves(&bundle, &limits));
        let reuse_key = endpoint.reuse_key().map(str::to_string);
        // A panic (a bug in the engine or the bindings) fails this request
        // only, and its realm is dropped; the worker goes on.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let kept = match &reuse_key {
                Some(key) => reused.remove(key),
                None => realm.take(),
            };
            let mut r = match kept {
                Some(r) => r,
                None => {
                    metrics
                        .quickjs_runtimes_created
                        .fetch_add(1, Ordering::Relaxed);
                    exec::Realm::new(&bundle, &limits, reuse_key.is_some())?
                }
            };
            let outcome = exec::run(&mut r, &endpoint, &request, tx, consensus, &limits, stack);
            if outcome.realm_clean {
                match &reuse_key {
                    Some(key) => {
                        if reused.len() >= MAX_REUSED_REALMS {
                            reused.clear();
                        }
                        reused.insert(key.clone(), r);
                    }
                    None => realm = Some(r),
                }
            }
            outcome.result
        }))
        .unwrap_or_else(|_| Err(JsError::Internal("the QuickJS engine panicked".into())));
        metrics.record(Engine::QuickJs, &result);
        let go_on = ticket.finish();
        // The caller may have given up (client gone, or the front gave up
        // on a stuck worker): nothing to do then.
        let _ = reply.send(result);
        if !go_on {
            tracing::warn!(
                "a QuickJS worker finished a request the front had given up on; \
                 another worker took its place, so this one ends"
            );
            break;
        }
    }
}
