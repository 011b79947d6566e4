//! Executions on QuickJS in a hardened realm, the same model as V8's
//! (`v8_engine/exec.rs`): a [`Realm`] is one runtime and context prepared
//! once (the QuickJS guard, the shared prelude, `harden.js`), then serving
//! request after request of one app, each with fresh instances of the
//! app's modules, leftover jobs run after the response, and the globals
//! restored by `endRequest`.
//!
//! QuickJS keeps every module it loaded until its context is freed, and
//! finds an imported module by name. So each request loads the app's
//! modules under names of its own (`app.js#7`: the module name and the
//! realm's request number), and a realm is retired after
//! [`REQUESTS_PER_REALM`] requests, which bounds what it accumulates.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_ledger::Tx;
use rquickjs::function::Rest;
use rquickjs::loader::{Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::promise::PromiseState;
use rquickjs::{
    Array, Context, Ctx, Exception, Function, Module, Object, Persistent, Promise, Runtime, Value,
};

use super::host::{self, Shared, State};
use super::memory::{Budget, BudgetAllocator};
use crate::api::{ConsensusView, JsError, JsRequest, JsResponse, Limits};
use crate::bundle::{resolve_specifier, AppBundle, EndpointDef};

/// Requests a realm serves before it is replaced: each leaves its module
/// instances in the context until then.
pub(super) const REQUESTS_PER_REALM: u64 = 64;

/// An interpreter-reuse realm's handlers, by (module, function).
type ReusedHandlers = HashMap<(String, String), Persistent<Function<'static>>>;

const PRELUDE: &str = crate::PRELUDE;
const HARDEN: &str = crate::HARDEN;
const QJS_PRELUDE: &str = include_str!("prelude.js");

/// What the interrupt handler watches during a request.
struct Watch {
    /// `None` between requests, or when the budget is too large to
    /// represent (no limit).
    deadline: Cell<Option<Instant>>,
    timed_out: Cell<bool>,
    /// Set when the heap (nearly) ran out; QuickJS's own out-of-memory
    /// error sets it too (through the native prepareStackTrace).
    out_of_memory: Rc<Cell<bool>>,
}

/// One prepared runtime and context, and the prelude's functions in it.
pub(super) struct Realm {
    // Field order is drop order: the JS handles go before the context,
    // the context before the runtime.
    make_request: Persistent<Function<'static>>,
    to_response: Persistent<Function<'static>>,
    end_request: Persistent<Function<'static>>,
    /// Set for an interpreter-reuse realm: the handlers of its one set of
    /// module instances, by (module, function).
    reused: Option<RefCell<ReusedHandlers>>,
    context: Context,
    runtime: Runtime,
    host: Shared,
    watch: Rc<Watch>,
    budget: Rc<Budget>,
    bundle: Arc<AppBundle>,
    heap_limit: usize,
    served: u64,
}

impl Realm {
    /// Prepares a realm for `bundle` under `limits`' heap limit; `reuse`
    /// keeps module instances between requests.
    pub(super) fn new(
        bundle: &Arc<AppBundle>,
        limits: &Limits,
        reuse: bool,
    ) -> Result<Realm, JsError> {
        let out_of_memory = Rc::new(Cell::new(false));
        // The heap limit is the allocator's, which reports a refusal at
        // once (memory.rs); QuickJS's own limit stays off.
        let budget = Budget::new(limits.max_heap_bytes, out_of_memory.clone());
        let runtime = Runtime::new_with_alloc(BudgetAllocator(budget.clone()))
            .map_err(|e| JsError::Internal(format!("cannot create a QuickJS runtime: {e}")))?;
        runtime.set_loader(
            BundleResolver,
            BundleLoader {
                bundle: bundle.clone(),
            },
        );
        let context = match Context::full(&runtime) {
            Ok(c) => c,
            // Not even the intrinsics fit in the memory limit.
            Err(_) => return Err(JsError::HeapLimit(limits.max_heap_bytes)),
        };
        let watch = Rc::new(Watch {
            deadline: Cell::new(None),
            timed_out: Cell::new(false),
            out_of_memory,
        });
        {
            let watch = watch.clone();
            let budget = budget.clone();
            let probe = heap_probe_bytes(limits.max_heap_bytes);
            // QuickJS polls this every few thousand operations; `true`
            // throws an exception scripts cannot catch. It stops the script
            // past the deadline, or once the heap is (nearly) full:
            // QuickJS's own out-of-memory errors can be caught by scripts,
            // V8's heap limit cannot, and this keeps the engines alike.
            runtime.set_interrupt_handler(Some(Box::new(move || {
                if watch.out_of_memory.get() || budget.room() < probe {
                    watch.out_of_memory.set(true);
                    return true;
                }
                let late = watch.deadline.get().is_some_and(|d| Instant::now() >= d);
                if late {
                    watch.timed_out.set(true);
                }
                late
            })));
        }
        let host: Shared = Rc::new(RefCell::new(State::default()));
        // Preparing runs under the request's time limit too.
        watch
            .deadline
            .set(Instant::now().checked_add(Duration::from_millis(limits.max_execution_time_ms)));
        let prepared = context.with(|ctx| prepare(&ctx, &host, &watch, limits));
        watch.deadline.set(None);
        let (make_request, to_response, end_request) = prepared?;
        Ok(Realm {
            make_request,
            to_response,
            end_request,
            reused: reuse.then(|| RefCell::new(HashMap::new())),
            context,
            runtime,
            host,
            watch,
            budget,
            bundle: bundle.clone(),
            heap_limit: limits.max_heap_bytes,
            served: 0,
        })
    }

    /// Whether this realm can serve `bundle` under `limits` (another app
    /// or another heap limit needs a new realm).
    pub(super) fn serves(&self, bundle: &Arc<AppBundle>, limits: &Limits) -> bool {
        Arc::ptr_eq(&self.bundle, bundle) && self.heap_limit == limits.max_heap_bytes
    }
}

type Prepared = (
    Persistent<Function<'static>>,
    Persistent<Function<'static>>,
    Persistent<Function<'static>>,
);

fn prepare<'js>(
    ctx: &Ctx<'js>,
    host: &Shared,
    watch: &Watch,
    limits: &Limits,
) -> Result<Prepared, JsError> {
    let cl = Classify {
        timed_out: &watch.timed_out,
        out_of_memory: watch.out_of_memory.clone(),
        deadline: watch.deadline.get(),
        limits,
    };
    let setup = |what: &'static str| {
        let cl = &cl;
        move |e| cl.internal(ctx, e, what)
    };
    // QuickJS-specific protection first (see qjs_engine/prelude.js).
    let guard: Function = ctx
        .eval(QJS_PRELUDE)
        .map_err(setup("running the QuickJS prelude"))?;
    let out_of_memory = watch.out_of_memory.clone();
    let prepare = Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Rest<Value<'js>>| {
        host::prepare_stack_trace(ctx, args, &out_of_memory)
    })
    .map_err(setup("running the QuickJS prelude"))?;
    guard
        .call::<_, ()>((prepare,))
        .map_err(setup("running the QuickJS prelude"))?;
    // The prelude: builds `ccf`, returns {makeRequest, toResponse}.
    let natives = host::natives(ctx, host).map_err(setup("installing the host API"))?;
    let factory: Function = ctx.eval(PRELUDE).map_err(setup("running the prelude"))?;
    let helpers: Object = factory
        .call((natives,))
        .map_err(setup("running the prelude"))?;
    let make_request: Function = helpers
        .get("makeRequest")
        .map_err(setup("reading makeRequest"))?;
    let to_response: Function = helpers
        .get("toResponse")
        .map_err(setup("reading toResponse"))?;
    // Then the builtins are frozen, as on V8 (harden.js).
    let harden: Function = ctx.eval(HARDEN).map_err(setup("running harden.js"))?;
    let end_request: Function = harden.call(()).map_err(setup("running harden.js"))?;
    Ok((
        Persistent::save(ctx, make_request),
        Persistent::save(ctx, to_response),
        Persistent::save(ctx, end_request),
    ))
}

/// The result of one execution, and whether its realm may serve another.
pub(super) struct Outcome {
    pub(super) result: Result<(JsResponse, Tx), JsError>,
    pub(super) realm_clean: bool,
}

/// Runs `endpoint` for `request` inside `tx` in `realm`, bounded by
/// `limits` (`stack` is the stack limit in bytes, already clamped to what
/// the thread has).
pub(super) fn run(
    realm: &mut Realm,
    endpoint: &EndpointDef,
    request: &JsRequest,
    tx: Tx,
    consensus: Option<Arc<dyn ConsensusView>>,
    limits: &Limits,
    stack: usize,
) -> Outcome {
    {
        let mut state = realm.host.borrow_mut();
        state.tx = Some(tx);
        state.claims_digest = None;
        state.consensus = consensus;
    }
    realm.served += 1;
    realm.runtime.set_max_stack_size(stack);
    let watch = realm.watch.clone();
    watch.timed_out.set(false);
    // A budget too large to represent is no limit.
    watch
        .deadline
        .set(Instant::now().checked_add(Duration::from_millis(limits.max_execution_time_ms)));
    let cl = Classify {
        timed_out: &watch.timed_out,
        out_of_memory: watch.out_of_memory.clone(),
        deadline: watch.deadline.get(),
        limits,
    };
    let suffix = format!("#{}", realm.served);
    let (outcome, clean) = realm
        .context
        .with(|ctx| in_realm(&ctx, realm, endpoint, request, &suffix, &cl));
    watch.deadline.set(None);
    let (tx, claims_digest, consensus) = match realm.host.try_borrow_mut() {
        Ok(mut state) => (
            state.tx.take(),
            state.claims_digest.take(),
            state.consensus.take(),
        ),
        Err(_) => (None, None, None),
    };
    drop(consensus);
    // A reused realm loads its modules once, so it does not accumulate.
    let mut realm_clean = clean
        && cl.limit().is_none()
        && !watch.out_of_memory.get()
        && (realm.reused.is_some() || realm.served < REQUESTS_PER_REALM);
    // Module instances of earlier requests (and cycles QuickJS's reference
    // counting leaves to its collector) count against the heap limit: the
    // next request must find at least half of it free.
    if realm_clean && realm.budget.used() > realm.heap_limit / 2 {
        realm.runtime.run_gc();
        realm_clean = realm.budget.used() <= realm.heap_limit / 2;
    }
    let result = outcome.and_then(|response| {
        let tx = tx
            .ok_or_else(|| JsError::Internal("the transaction was lost during execution".into()))?;
        Ok((
            JsResponse {
                claims_digest,
                ..response
            },
            tx,
        ))
    });
    Outcome {
        result,
        realm_clean,
    }
}

/// How close to the memory limit the heap counts as full: a sixteenth of
/// the limit, between 64 KiB and 1 MiB. Larger than what a script
/// allocates between two interrupt polls, so a heap filling up is seen
/// before it runs out, even when QuickJS then has no room left for an
/// error object (it throws `null`) and the script catches that.
fn heap_probe_bytes(max_heap_bytes: usize) -> usize {
    (max_heap_bytes / 16).clamp(64 * 1024, 1024 * 1024)
}

/// The module name without the request's suffix (`app.js#7` → `app.js`),
/// and the suffix.
fn split_request_suffix(name: &str) -> (&str, &str) {
    match name.rfind('#') {
        Some(i) => name.split_at(i),
        None => (name, ""),
    }
}

thread_local! {
    /// Set while this thread loads an endpoint's module graph
    /// ([`load_handler`]): the only time a module may be resolved.
    static LOADING_MODULES: Cell<bool> = const { Cell::new(false) };
}

/// Imports resolve against the importing module's name, as on V8, and
/// stay in the importing request's set of instances.
///
/// A dynamic `import()` run by a handler is refused, as V8 (which has no
/// import callback here) refuses it: from code without a module name
/// (`new Function`, indirect eval) it would have loaded one instance
/// shared by every later request of the realm.
struct BundleResolver;

impl Resolver for BundleResolver {
    fn resolve<'js>(&mut self, ctx: &Ctx<'js>, base: &str, name: &str) -> rquickjs::Result<String> {
        let (base, suffix) = split_request_suffix(base);
        if !LOADING_MODULES.with(Cell::get) || suffix.is_empty() {
            return Err(Exception::throw_message(ctx, "Not supported"));
        }
        Ok(format!("{}{suffix}", resolve_specifier(base, name)))
    }
}

/// Modules come from the app bundle only.
struct BundleLoader {
    bundle: Arc<AppBundle>,
}

impl Loader for BundleLoader {
    fn load<'js>(&mut self, ctx: &Ctx<'js>, name: &str) -> rquickjs::Result<Module<'js, Declared>> {
        let (module, _) = split_request_suffix(name);
        match self.bundle.module(module) {
            Some(source) => Module::declare(ctx.clone(), name, source),
            None => Err(Exception::throw_message(
                ctx,
                &format!("no module named {module:?} in the app bundle"),
            )),
        }
    }
}

/// One request in the realm's context. Returns the response and whether
/// the realm is still clean.
fn in_realm<'js>(
    ctx: &Ctx<'js>,
    realm: &Realm,
    endpoint: &EndpointDef,
    request: &JsRequest,
    suffix: &str,
    cl: &Classify<'_>,
) -> (Result<JsResponse, JsError>, bool) {
    let outcome = respond(ctx, realm, endpoint, request, suffix, cl);
    if cl.limit().is_some() {
        return (outcome, false);
    }
    // Jobs left queued run now, in this request's time and transaction.
    while ctx.execute_pending_job() {}
    if cl.limit().is_some() {
        let _ = ctx.catch();
        return (outcome, false);
    }
    if realm.reused.is_some() {
        return (outcome, true);
    }
    let clean = realm
        .end_request
        .clone()
        .restore(ctx)
        .and_then(|f| f.call::<_, bool>(()))
        .unwrap_or(false);
    if !clean {
        let _ = ctx.catch();
    }
    (outcome, clean)
}

fn respond<'js>(
    ctx: &Ctx<'js>,
    realm: &Realm,
    endpoint: &EndpointDef,
    request: &JsRequest,
    suffix: &str,
    cl: &Classify<'_>,
) -> Result<JsResponse, JsError> {
    let restore = |f: &Persistent<Function<'static>>| {
        f.clone()
            .restore(ctx)
            .map_err(|e| cl.internal(ctx, e, "restoring the prelude"))
    };
    let make_request = restore(&realm.make_request)?;
    let to_response = restore(&realm.to_response)?;

    // The request object; this also resets the prelude's per-request state.
    let meta = request.meta_json()?;
    let body = host::array_buffer(ctx, &request.body).map_err(|e| cl.exception(ctx, e))?;
    let js_request: Value = make_request
        .call((meta, body))
        .map_err(|e| cl.exception(ctx, e))?;

    // The endpoint's module and its imports: fresh for this request, or
    // the reused realm's one set (under one suffix, so that imports find
    // the instances already loaded).
    let handler = match &realm.reused {
        None => load_handler(ctx, &realm.bundle, endpoint, suffix, cl)?,
        Some(handlers) => {
            let id = (endpoint.js_module.clone(), endpoint.js_function.clone());
            let kept = handlers.borrow().get(&id).cloned();
            match kept {
                Some(h) => h
                    .restore(ctx)
                    .map_err(|e| cl.internal(ctx, e, "restoring a reused handler"))?,
                None => {
                    let h = load_handler(ctx, &realm.bundle, endpoint, "#reused", cl)?;
                    handlers
                        .borrow_mut()
                        .insert(id, Persistent::save(ctx, h.clone()));
                    h
                }
            }
        }
    };

    // The handler, then every job it queued (its promise's, if it is
    // async, and any other): they run before the response is read, so
    // their writes, `setApplyWrites` calls and limit hits count.
    let mut result: Value = handler
        .call((js_request,))
        .map_err(|e| cl.exception(ctx, e))?;
    run_jobs(ctx, cl)?;
    if let Some(promise) = result.as_promise().cloned() {
        result = match settle(ctx, &promise) {
            Settled::Fulfilled(value) => value,
            Settled::Rejected(e) => return Err(cl.exception(ctx, e)),
            Settled::Pending => {
                return Err(cl.or_limit(JsError::BadResponse(
                    "the handler's promise was still pending when the request ended (it awaits something that never settles)".into(),
                )))
            }
        };
    }

    let response: Object = to_response
        .call((result,))
        .map_err(|e| cl.exception(ctx, e))?;
    // Jobs queued while the response was read (a `toJSON`'s) too.
    run_jobs(ctx, cl)?;
    let response = read_response(ctx, &response, cl)?;
    // The heap ran out and the script caught it before QuickJS could stop
    // it: on V8 running out of heap cannot be caught, so neither can it be
    // here.
    if cl.out_of_memory.get() {
        return Err(JsError::HeapLimit(cl.limits.max_heap_bytes));
    }
    // A builtin that does not poll the interrupt handler (QuickJS's regular
    // expressions) can run past the deadline and finish: the answer is
    // still late.
    if cl.deadline.is_some_and(|d| Instant::now() >= d) {
        cl.timed_out.set(true);
        return Err(JsError::Timeout(cl.limits.max_execution_time_ms));
    }
    Ok(response)
}

/// Reads the `{status, headers, body}` (or `{error}`) the prelude's
/// `toResponse` made of the handler's answer.
fn read_response<'js>(
    ctx: &Ctx<'js>,
    response: &Object<'js>,
    cl: &Classify<'_>,
) -> Result<JsResponse, JsError> {
    let field = |name: &str| -> Result<Value<'js>, JsError> {
        response.get(name).map_err(|e| cl.exception(ctx, e))
    };
    let error = field("error")?;
    if !error.is_undefined() {
        return Err(JsError::BadResponse(
            host::to_text(ctx, &error).unwrap_or_default(),
        ));
    }
    let status = field("status")?
        .as_number()
        .filter(|n| n.fract() == 0.0 && (0.0..=f64::from(u16::MAX)).contains(n))
        .map(|n| n as u16)
        .ok_or_else(|| JsError::BadResponse("status is not a number".into()))?;
    let body = host::bytes_of(ctx, &field("body")?)
        .ok_or_else(|| JsError::BadResponse("body did not convert to bytes".into()))?;
    let headers_value = field("headers")?;
    let headers_array = headers_value
        .as_array()
        .ok_or_else(|| JsError::Internal("toResponse returned no header list".into()))?;
    let mut headers = Vec::with_capacity(headers_array.len());
    for i in 0..headers_array.len() {
        let pair: Value = headers_array.get(i).map_err(|e| cl.exception(ctx, e))?;
        let pair: &Array = pair
            .as_array()
            .ok_or_else(|| JsError::Internal("malformed header pair".into()))?;
        let part = |j: usize| -> Result<String, JsError> {
            let v: Value = pair.get(j).map_err(|e| cl.exception(ctx, e))?;
            Ok(host::to_text(ctx, &v).unwrap_or_default())
        };
        headers.push((part(0)?, part(1)?));
    }
    Ok(JsResponse {
        status,
        headers,
        body,
        claims_digest: None,
        apply_writes: field("applyWrites")?.as_bool(),
    })
}

/// Compiles and evaluates the endpoint's module graph and returns the
/// exported handler function.
fn load_handler<'js>(
    ctx: &Ctx<'js>,
    bundle: &AppBundle,
    endpoint: &EndpointDef,
    suffix: &str,
    cl: &Classify<'_>,
) -> Result<Function<'js>, JsError> {
    let name = endpoint.js_module.as_str();
    let instance = format!("{name}{suffix}");
    struct Loading;
    impl Drop for Loading {
        fn drop(&mut self) {
            LOADING_MODULES.with(|l| l.set(false));
        }
    }
    LOADING_MODULES.with(|l| l.set(true));
    let _loading = Loading;
    let module_error = |what: &'static str| {
        move |e| match cl.exception(ctx, e) {
            JsError::Exception(detail) => {
                JsError::Module(format!("module {name}: {what}: {detail}"))
            }
            other => other,
        }
    };
    let declared = match bundle.module(name) {
        Some(source) => Module::declare(ctx.clone(), instance, source)
            .map_err(module_error("cannot compile"))?,
        None => {
            return Err(JsError::Module(format!(
                "module {name}: cannot compile: no module named {name:?} in the app bundle"
            )))
        }
    };
    let (module, evaluation) = declared.eval().map_err(module_error("cannot link"))?;
    match settle(ctx, &evaluation) {
        Settled::Fulfilled(_) => {}
        Settled::Rejected(e) => return Err(module_error("top-level code threw")(e)),
        // A top-level await that never settles: V8 goes on with the
        // exports it has, and so do we (unless a limit ended the jobs).
        Settled::Pending => {
            if let Some(limit) = cl.limit() {
                return Err(limit);
            }
        }
    }
    let namespace = module.namespace().map_err(module_error("cannot link"))?;
    let export: Value = namespace
        .get(endpoint.js_function.as_str())
        .map_err(module_error("cannot read its exports"))?;
    export.into_function().ok_or_else(|| {
        JsError::Module(format!(
            "module {name} does not export a function named {:?}",
            endpoint.js_function
        ))
    })
}

/// Runs every queued job (microtask). A limit hit by one is the request's
/// error; an exception in one only rejects its promise.
fn run_jobs(ctx: &Ctx<'_>, cl: &Classify<'_>) -> Result<(), JsError> {
    while ctx.execute_pending_job() {}
    match cl.limit() {
        Some(limit) => {
            let _ = ctx.catch();
            Err(limit)
        }
        None => Ok(()),
    }
}

enum Settled<'js> {
    Fulfilled(Value<'js>),
    /// The reason is the pending exception ([`rquickjs::Error::Exception`]).
    Rejected(rquickjs::Error),
    /// Still pending with no job left to run.
    Pending,
}

/// Runs queued jobs (microtasks) until `promise` settles or none is left.
fn settle<'js>(ctx: &Ctx<'js>, promise: &Promise<'js>) -> Settled<'js> {
    loop {
        match promise.state() {
            PromiseState::Pending => {
                if !ctx.execute_pending_job() {
                    return Settled::Pending;
                }
            }
            PromiseState::Resolved | PromiseState::Rejected => {
                return match promise.result::<Value>() {
                    Some(Ok(value)) => Settled::Fulfilled(value),
                    Some(Err(e)) => Settled::Rejected(e),
                    None => Settled::Pending,
                }
            }
        }
    }
}

/// Longest exception text kept, as on V8.
const MAX_EXCEPTION_TEXT: usize = 4096;

/// Turns a failed QuickJS call into a [`JsError`]: a limit that was hit
/// wins over whatever exception the script saw.
pub(super) struct Classify<'a> {
    timed_out: &'a Cell<bool>,
    /// Set when QuickJS threw its out-of-memory error.
    out_of_memory: Rc<Cell<bool>>,
    deadline: Option<Instant>,
    limits: &'a Limits,
}

impl Classify<'_> {
    /// The limit that ended the execution, if one did.
    fn limit(&self) -> Option<JsError> {
        if self.out_of_memory.get() {
            Some(JsError::HeapLimit(self.limits.max_heap_bytes))
        } else if self.timed_out.get() {
            Some(JsError::Timeout(self.limits.max_execution_time_ms))
        } else {
            None
        }
    }

    fn or_limit(&self, otherwise: JsError) -> JsError {
        self.limit().unwrap_or(otherwise)
    }

    /// What a call that failed with `err` means: a limit, or the script's
    /// exception as `String(exception)` (V8's wording for the same value).
    fn exception<'js>(&self, ctx: &Ctx<'js>, err: rquickjs::Error) -> JsError {
        if let Some(limit) = self.limit() {
            let _ = ctx.catch();
            return limit;
        }
        match err {
            rquickjs::Error::Exception => {}
            rquickjs::Error::Allocation => return JsError::HeapLimit(self.limits.max_heap_bytes),
            other => return JsError::Exception(other.to_string()),
        }
        let thrown = ctx.catch();
        // The allocator flags its refusals (see `limit` above); QuickJS's
        // own out-of-memory error (a size it refused before asking the
        // allocator) is the heap limit too.
        if host::is_out_of_memory_error(ctx, &thrown) {
            return JsError::HeapLimit(self.limits.max_heap_bytes);
        }
        JsError::Exception(describe(ctx, &thrown))
    }

    /// A failure while setting up (host API, prelude): a limit, or a bug.
    fn internal<'js>(&self, ctx: &Ctx<'js>, err: rquickjs::Error, what: &str) -> JsError {
        match self.exception(ctx, err) {
            JsError::Exception(detail) => JsError::Internal(format!("{what}: {detail}")),
            other => other,
        }
    }
}

/// `String(value)`, cut at [`MAX_EXCEPTION_TEXT`] bytes, as V8 reports it.
fn describe<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> String {
    let Some(mut text) = host::to_text(ctx, value) else {
        return "<exception that cannot be converted to a string>".to_string();
    };
    if text.len() > MAX_EXCEPTION_TEXT {
        let mut cut = MAX_EXCEPTION_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}
