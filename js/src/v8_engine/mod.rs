//! The V8 engine: a pool of worker threads, each owning one isolate, fed by
//! a channel from the async server. The node reaches it through
//! [`crate::JsEngine`], which owns the limits and counters.
//!
//! Limits, per isolate:
//! - heap: `heap_limits` at creation plus a near-heap-limit callback that
//!   terminates the running handler (instead of letting V8 abort the
//!   process) and marks the isolate for replacement;
//! - time: a watchdog thread per worker terminates a handler that runs past
//!   `max_execution_time_ms`;
//! - stack: each isolate's own stack limit, set before every job from the
//!   current `max_stack_bytes` (`stack.rs`, V8's `Isolate::SetStackLimit`),
//!   on worker threads whose real stack holds the governance maximum plus a
//!   margin, so deep recursion is a catchable `RangeError` and a change by
//!   governance applies to the next request without a restart.
//!
//! Isolation: each worker keeps one hardened context (an [`exec::Realm`])
//! per app and runs every request in it with a fresh instance of the app's
//! modules; `harden.js` has frozen the builtins and restores the globals
//! after each request, so no JS state survives from one request to the
//! next. A realm whose execution was terminated, or that a request left
//! unclean, is replaced. Endpoints with `interpreter_reuse` get a realm per
//! key that keeps its module instances.

mod buffers;
mod crypto_bindings;
mod exec;
mod factory;
mod host;
mod stack;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, RwLock};
use std::time::{Duration, Instant};

use charter_ledger::Tx;

use crate::api::{ConsensusView, JsError, JsRequest, JsResponse, Limits};
use crate::bundle::{AppBundle, EndpointDef, Engine};
use crate::engine::Metrics;
use crate::jobs::{GiveUp, JobQueue, Jobs};

static V8_INIT: Once = Once::new();

/// Starts V8 once per process. Flags can only be set before V8 starts.
/// The stack flag is only each new isolate's starting limit (replaced by
/// `stack::set_stack_limit` before every job); it stays at 1 MiB because
/// V8's own compiler threads also take their limit from it.
fn init_v8() {
    V8_INIT.call_once(|| {
        // --no-turboshaft-loop-unrolling: V8 13.0's optimizing compiler can
        // drop the interrupt check of a loop that contains a small
        // constant-size inner loop (e.g. `new Array(1000)`), after which
        // neither the watchdog nor the heap-limit callback can stop it.
        //
        // --max-semi-space-size=8 (MiB): V8 sizes the young generation from
        // the heap limit, which for 100 MiB leaves it so small that a
        // handler building 10,000 records spends a third of its time in
        // scavenges copying objects that are all still live; a young
        // generation that may grow to 8 MiB semi-spaces lets the request
        // end first (docs/benchmarks.md). It only grows when used.
        v8::V8::set_flags_from_string(
            "--stack-size=1024 --no-turboshaft-loop-unrolling --max-semi-space-size=8",
        );
        let platform = v8::new_default_platform(0, false).make_shared();
        v8::V8::initialize_platform(platform);
        v8::V8::initialize();
    });
}

/// The largest stack limit a worker honours: governance's maximum
/// (`set_js_runtime_options` is bounded to 64 MiB by the constitution and
/// the node).
const MAX_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Worker threads get this much real stack beyond V8's own budget, for the
/// host's frames and V8's native code below the JS limit.
const STACK_MARGIN_BYTES: usize = 8 * 1024 * 1024;

/// Runs app endpoints on V8 worker threads.
pub(crate) struct V8Engine {
    jobs: JobQueue,
    limits: Arc<RwLock<Limits>>,
}

impl V8Engine {
    /// Starts `workers` threads, each with its own isolate, under the
    /// front's shared limits and counters.
    pub(crate) fn new(
        workers: usize,
        limits: Arc<RwLock<Limits>>,
        metrics: Arc<Metrics>,
    ) -> V8Engine {
        init_v8();
        let (mut queue, receiver) = JobQueue::new("V8");
        let workers = workers.max(1);
        // Only address space is reserved: pages are used as the stack grows.
        let stack = MAX_STACK_BYTES + STACK_MARGIN_BYTES;
        let (shared_limits, shared_metrics) = (limits.clone(), metrics.clone());
        let spawn = move |name: String| {
            let receiver = receiver.clone();
            let limits = shared_limits.clone();
            let metrics = shared_metrics.clone();
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .stack_size(stack)
                .spawn(move || worker_loop(receiver, limits, metrics));
            if let Err(e) = spawned {
                tracing::error!("cannot start JS worker thread {name}: {e}");
            }
        };
        for i in 0..workers {
            spawn(format!("js-worker-{i}"));
        }
        // The watchdog's TerminateExecution takes effect at V8's next
        // interrupt check, and some builtins make none for a long time
        // (`new Array(2 ** 32 - 1).map(f)` runs for most of a minute): the
        // front gives up on such a request on time and starts another
        // worker (`jobs.rs`); the stuck one ends when the builtin does.
        let respawn_metrics = metrics.clone();
        queue.set_respawn(
            Box::new(move || {
                let n = respawn_metrics
                    .v8_workers_replaced
                    .fetch_add(1, Ordering::Relaxed);
                spawn(format!("js-worker-r{n}"));
            }),
            workers,
        );
        V8Engine {
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

/// Heap granted beyond the limit once it is hit, so the terminated handler
/// can unwind (and an allocation in flight can finish) without V8 running
/// out of memory, which would abort the process.
const UNWIND_HEADROOM_BYTES: usize = 512 * 1024 * 1024;

/// Set by the near-heap-limit callback; lives (boxed) as long as the isolate.
struct HeapGuard {
    handle: v8::IsolateHandle,
    hit: AtomicBool,
    ceiling: usize,
}

extern "C" fn near_heap_limit(
    data: *mut c_void,
    current_heap_limit: usize,
    _initial: usize,
) -> usize {
    // SAFETY: `data` is the `HeapGuard` registered with this isolate, which
    // outlives it (see `Worker`).
    let guard = unsafe { &*(data as *const HeapGuard) };
    guard.hit.store(true, Ordering::SeqCst);
    guard.handle.terminate_execution();
    // One grant up to a fixed ceiling: interruptible code stops at its next
    // check long before using it. A builtin that never checks for
    // interrupts and keeps allocating still reaches the ceiling, and then
    // V8 aborts the process: that case needs process isolation.
    current_heap_limit.max(guard.ceiling)
}

extern "C" fn on_oom(location: *const std::os::raw::c_char, details: &v8::OomDetails) {
    let location = if location.is_null() {
        "unknown".to_string()
    } else {
        // SAFETY: V8 passes a NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(location) }
            .to_string_lossy()
            .into_owned()
    };
    tracing::error!(
        location,
        heap = details.is_heap_oom,
        "V8 ran out of memory; the process will abort"
    );
}

/// Interpreter-reuse realms a worker keeps at most (one per reuse key);
/// past this, they are all dropped and made again as needed.
const MAX_REUSED_REALMS: usize = 32;

/// One isolate and what must live exactly as long as it.
struct Worker {
    // Field order is drop order: the realms' handles go before the isolate,
    // the isolate before its heap guard.
    /// The hardened context requests run in by default.
    realm: Option<exec::Realm>,
    /// Interpreter-reuse realms, by reuse key.
    reused: HashMap<String, exec::Realm>,
    cache: exec::CodeCache,
    isolate: v8::OwnedIsolate,
    heap: Box<HeapGuard>,
    heap_limit: usize,
    buffers: Arc<buffers::BufferBudget>,
}

/// The heap limit V8 is given: `max_heap_bytes` rounded up to whole MiB.
/// V8 aborts the process when the heap reservation it derives from the
/// limit is not a multiple of its page size (20,000,000 bytes did that),
/// and governance may set any number.
fn v8_heap_limit(max_heap_bytes: usize) -> usize {
    const MIB: usize = 1024 * 1024;
    max_heap_bytes.div_ceil(MIB).max(1).saturating_mul(MIB)
}

impl Worker {
    fn new(limits: &Limits, metrics: &Metrics) -> Worker {
        // ArrayBuffers get a budget of their own, as large as the heap's.
        let buffers = buffers::BufferBudget::new(limits.max_heap_bytes);
        let params = v8::CreateParams::default()
            .heap_limits(0, v8_heap_limit(limits.max_heap_bytes))
            .array_buffer_allocator(buffers::allocator(&buffers));
        let mut isolate = v8::Isolate::new(params);
        isolate.set_microtasks_policy(v8::MicrotasksPolicy::Explicit);
        isolate.set_oom_error_handler(on_oom);
        let heap = Box::new(HeapGuard {
            handle: isolate.thread_safe_handle(),
            hit: AtomicBool::new(false),
            ceiling: limits.max_heap_bytes.saturating_add(UNWIND_HEADROOM_BYTES),
        });
        isolate.add_near_heap_limit_callback(
            near_heap_limit,
            &*heap as *const HeapGuard as *mut c_void,
        );
        metrics.isolates_created.fetch_add(1, Ordering::Relaxed);
        Worker {
            realm: None,
            reused: HashMap::new(),
            cache: exec::CodeCache::default(),
            isolate,
            heap,
            heap_limit: limits.max_heap_bytes,
            buffers,
        }
    }
}

/// Terminates the isolate's execution when a deadline passes.
struct Watchdog {
    state: Mutex<WatchState>,
    wake: Condvar,
}

struct WatchState {
    handle: Option<v8::IsolateHandle>,
    deadline: Option<Instant>,
    fired: bool,
    stop: bool,
    /// What the watchdog thread is waiting for, so that arming wakes it
    /// only when it must (waking a thread per request costs more than
    /// most handlers).
    sleeping: Sleeping,
}

#[derive(Clone, Copy)]
enum Sleeping {
    /// Running: it looks at the deadline before it sleeps again.
    Awake,
    /// Until woken.
    Indefinitely,
    /// Until this instant (an earlier request's deadline); a later
    /// deadline is seen then.
    Until(Instant),
}

impl Watchdog {
    fn start() -> Arc<Watchdog> {
        let dog = Arc::new(Watchdog {
            state: Mutex::new(WatchState {
                handle: None,
                deadline: None,
                fired: false,
                stop: false,
                sleeping: Sleeping::Awake,
            }),
            wake: Condvar::new(),
        });
        let d = dog.clone();
        let spawned = std::thread::Builder::new()
            .name("js-watchdog".into())
            .spawn(move || d.run());
        if let Err(e) = spawned {
            tracing::error!("cannot start the JS watchdog: {e}; handlers run without a time limit");
        }
        dog
    }

    fn run(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.stop {
                return;
            }
            match s.deadline {
                None => {
                    s.sleeping = Sleeping::Indefinitely;
                    s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
                    s.sleeping = Sleeping::Awake;
                }
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        if let Some(h) = &s.handle {
                            h.terminate_execution();
                        }
                        s.fired = true;
                        s.deadline = None;
                    } else {
                        s.sleeping = Sleeping::Until(deadline);
                        s = self
                            .wake
                            .wait_timeout(s, deadline - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        s.sleeping = Sleeping::Awake;
                    }
                }
            }
        }
    }

    fn arm(&self, handle: v8::IsolateHandle, budget: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.fired = false;
        // A budget too large to represent is no limit.
        let Some(deadline) = Instant::now().checked_add(budget) else {
            s.deadline = None;
            return;
        };
        s.handle = Some(handle);
        s.deadline = Some(deadline);
        s.fired = false;
        let must_wake = match s.sleeping {
            Sleeping::Awake => false,
            Sleeping::Indefinitely => true,
            Sleeping::Until(t) => deadline < t,
        };
        if must_wake {
            self.wake.notify_one();
        }
    }

    /// Returns whether the deadline passed (and termination was requested).
    fn disarm(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.deadline = None;
        std::mem::take(&mut s.fired)
    }

    fn stop(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.stop = true;
        self.wake.notify_one();
    }
}

fn worker_loop(jobs: Jobs, limits: Arc<RwLock<Limits>>, metrics: Arc<Metrics>) {
    let watchdog = Watchdog::start();
    let mut worker: Option<Worker> = None;
    loop {
        let Some(mut job) = jobs.next() else {
            break;
        };
        if !job.ticket.start() {
            // The front answered it already (no worker was free in time).
            continue;
        }
        let limits = *limits.read().unwrap_or_else(|e| e.into_inner());
        // A new heap limit needs a new isolate.
        if worker
            .as_ref()
            .is_some_and(|w| w.heap_limit != limits.max_heap_bytes)
        {
            worker = None;
        }
        let w = worker.get_or_insert_with(|| Worker::new(&limits, &metrics));
        stack::set_stack_limit(&mut w.isolate, limits.max_stack_bytes);
        let _in_request = job.span.enter();
        host::set_consensus(job.consensus);
        let (result, sound) = execute_one(
            w,
            &watchdog,
            &limits,
            &metrics,
            job.bundle,
            &job.endpoint,
            &job.request,
            job.tx,
        );
        if !sound {
            // Past its heap limit the isolate's state is not to be trusted.
            worker = None;
        }
        let go_on = job.ticket.finish();
        // The caller may have given up (client gone, or the front gave up
        // on a stuck worker): nothing to do then.
        let _ = job.reply.send(result);
        if !go_on {
            tracing::warn!(
                "a V8 worker finished a request the front had given up on; \
                 another worker took its place, so this one ends"
            );
            break;
        }
    }
    watchdog.stop();
}

/// Runs one job. Returns the result and whether the isolate is still fit
/// for further work.
#[allow(clippy::too_many_arguments)]
fn execute_one(
    w: &mut Worker,
    watchdog: &Watchdog,
    limits: &Limits,
    metrics: &Metrics,
    bundle: Arc<AppBundle>,
    endpoint: &EndpointDef,
    request: &JsRequest,
    tx: Tx,
) -> (Result<(JsResponse, Tx), JsError>, bool) {
    // Realms of another app are of no further use.
    if w.realm.as_ref().is_some_and(|r| !r.serves(&bundle)) {
        w.realm = None;
    }
    w.reused.retain(|_, r| r.serves(&bundle));
    let reuse_key = endpoint.reuse_key().map(str::to_string);
    let mut realm = match &reuse_key {
        Some(key) => w.reused.remove(key),
        None => w.realm.take(),
    };
    host::bind_tx(tx);
    host::set_heap_limit(limits.max_heap_bytes);
    w.isolate.cancel_terminate_execution();
    watchdog.arm(
        w.isolate.thread_safe_handle(),
        Duration::from_millis(limits.max_execution_time_ms),
    );
    let mut realm_clean = false;
    let outcome = {
        let scope = &mut v8::HandleScope::new(&mut w.isolate);
        let prepared = match realm.take() {
            Some(r) => Ok(r),
            None => {
                metrics.v8_contexts_created.fetch_add(1, Ordering::Relaxed);
                exec::Realm::new(scope, &bundle, reuse_key.is_some())
            }
        };
        match prepared {
            Ok(mut r) => {
                let outcome = exec::run(scope, &mut r, &mut w.cache, metrics, endpoint, request);
                realm_clean = outcome.realm_clean;
                realm = Some(r);
                outcome.result
            }
            Err(e) => Err(e),
        }
    };
    metrics
        .v8_code_cache_bytes
        .store(w.cache.bytes() as u64, Ordering::Relaxed);
    let timed_out = watchdog.disarm();
    // A termination requested just as the handler finished must not hit
    // the next request.
    w.isolate.cancel_terminate_execution();
    let heap_hit = w.heap.hit.swap(false, Ordering::SeqCst);
    // The ArrayBuffer allocator or a host function refused memory past
    // the budget.
    let budget_refused =
        w.buffers.refused.swap(false, Ordering::SeqCst) | host::take_heap_refused();
    // One large allocation can pass the limit without the callback firing
    // (V8 always admits a first large object): an isolate left over its
    // limit is not reused either.
    let mut stats = v8::HeapStatistics::default();
    w.isolate.get_heap_statistics(&mut stats);
    let over_limit = stats.used_heap_size() > limits.max_heap_bytes;
    let tx = host::take_tx();
    let claims_digest = host::take_claims_digest();
    let result = match outcome {
        // V8 admits one large object past the limit (`new Array(3e7)` is
        // 240 MB): a request that ends over its limit has broken it, even
        // if it answered.
        Ok(_) if over_limit => Err(JsError::HeapLimit(limits.max_heap_bytes)),
        Ok(response) => match tx {
            Some(tx) => Ok((
                JsResponse {
                    claims_digest,
                    ..response
                },
                tx,
            )),
            None => Err(JsError::Internal(
                "the transaction was lost during execution".into(),
            )),
        },
        // An uncaught "Array buffer allocation failed" is the budget
        // speaking; so is any exception from an isolate left over its heap
        // limit (a string too long to build can throw before the
        // near-heap-limit callback runs, and then cannot even be shown).
        Err(exec::RunError::Js(JsError::Exception(_))) if budget_refused || over_limit => {
            Err(JsError::HeapLimit(limits.max_heap_bytes))
        }
        Err(exec::RunError::Js(e)) => Err(e),
        Err(exec::RunError::Terminated) => {
            if heap_hit {
                Err(JsError::HeapLimit(limits.max_heap_bytes))
            } else if timed_out {
                Err(JsError::Timeout(limits.max_execution_time_ms))
            } else {
                Err(JsError::Internal("execution was terminated".into()))
            }
        }
    };
    metrics.record(Engine::V8, &result);
    let sound = !heap_hit && !over_limit;
    // Keep the realm for the next request only if it is clean and its
    // isolate stays.
    if let Some(r) = realm.filter(|_| realm_clean && sound) {
        match reuse_key {
            Some(key) => {
                if w.reused.len() >= MAX_REUSED_REALMS {
                    w.reused.clear();
                }
                w.reused.insert(key, r);
            }
            None => w.realm = Some(r),
        }
    }
    (result, sound)
}

#[cfg(test)]
mod crypto_tests;
#[cfg(test)]
mod tests;
