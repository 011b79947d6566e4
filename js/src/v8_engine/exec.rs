//! Executions on V8 in a hardened realm.
//!
//! A [`Realm`] is one V8 context prepared once: the prelude (`prelude.js`,
//! the `ccf` and `console` globals) and then `harden.js`, which freezes the
//! intrinsics and returns `endRequest`. It then serves request after
//! request of one app:
//! - each request runs a fresh instance of the app's modules, so module
//!   state starts over: by calling the module's factory (`factory.rs`),
//!   compiled once per realm, whose instances share V8's optimised code;
//!   or, for a module the rewrite does not take, by compiling the module
//!   again (from a code cache after the first time);
//! - builtins and prototypes are frozen, so no request can change them;
//! - the microtasks a handler queued run before its response is read
//!   (in the request's time and transaction: their writes count, and a
//!   limit they hit fails the request); after the response `endRequest`
//!   removes the globals the request added and restores those it
//!   assigned.
//!
//! A realm that cannot be made clean again, or whose execution was
//! terminated, is dropped by the worker and the next request gets a new
//! one. This costs a few microseconds per request where a new context
//! costs hundreds (docs/benchmarks.md).
//!
//! An endpoint that opts in with `"interpreter_reuse": {"key": ...}` gets a
//! realm of its own per key that keeps its module instances (and globals)
//! from one request to the next, as CCF's interpreter reuse does.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::api::{JsError, JsRequest, JsResponse};
use crate::bundle::{resolve_specifier, AppBundle, EndpointDef};
use crate::engine::Metrics;
use crate::v8_engine::{factory, host};

const PRELUDE: &str = crate::PRELUDE;
const HARDEN: &str = crate::HARDEN;

/// Module instances of one execution (or, in a reused realm, of all its
/// executions), and where each came from. A module instance belongs to
/// one context.
#[derive(Default)]
struct ModuleGraph {
    by_name: HashMap<String, v8::Global<v8::Module>>,
    /// identity hash → module name, to resolve imports relative to the
    /// importing module.
    names: HashMap<i32, String>,
    /// Modules compiled without a code cache in this execution: their
    /// caches are made once it has run, so that they hold the functions it
    /// compiled too.
    uncached: Vec<String>,
}

/// The compiled code of one app's modules, kept by each worker across
/// realms (V8's code caches do not belong to a context).
#[derive(Default)]
pub(crate) struct CodeCache {
    bundle: Option<Arc<AppBundle>>,
    modules: HashMap<String, Rc<[u8]>>,
}

impl CodeCache {
    /// Forgets the caches of another app.
    fn for_bundle(&mut self, bundle: &Arc<AppBundle>) {
        if !self.bundle.as_ref().is_some_and(|b| Arc::ptr_eq(b, bundle)) {
            self.bundle = Some(bundle.clone());
            self.modules.clear();
        }
    }

    /// Total bytes of compiled code held.
    pub(crate) fn bytes(&self) -> usize {
        self.modules.values().map(|c| c.len()).sum()
    }
}

/// What the current execution on this thread compiles against.
struct Current {
    bundle: Arc<AppBundle>,
    graph: ModuleGraph,
    cache: CodeCache,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// One prepared context and the prelude's functions in it.
pub(crate) struct Realm {
    // Globals go before the isolate (the worker's field order sees to it).
    context: v8::Global<v8::Context>,
    make_request: v8::Global<v8::Function>,
    to_response: v8::Global<v8::Function>,
    end_request: v8::Global<v8::Function>,
    bundle: Arc<AppBundle>,
    /// Set for an interpreter-reuse realm: its modules and handlers live
    /// as long as it does.
    reused: Option<Reused>,
    /// The app's modules as factories (fresh-state realms only).
    factories: Factories,
}

/// Module factories compiled in one realm (see `factory.rs`): each call
/// makes a fresh instance of a module, and all instances share V8's
/// feedback and optimised code.
#[derive(Default)]
struct Factories {
    /// Modules with a checked, compiled factory, by name.
    ready: HashMap<String, ModuleFactory>,
    /// Entry modules whose whole graph is ready, with the graph's modules
    /// in evaluation order (dependencies first, the entry last).
    entries: HashMap<String, Vec<String>>,
    /// Entry modules run as real modules: their graph has a form the
    /// rewrite does not take, or V8 read it differently.
    refused: HashSet<String>,
}

struct ModuleFactory {
    function: v8::Global<v8::Function>,
    /// The modules it imports, resolved, in evaluation order.
    dependencies: Vec<String>,
    exports: Vec<String>,
    /// Exported `let`s and `var`s (see `factory::Factory`).
    mutable_exports: Vec<String>,
}

#[derive(Default)]
struct Reused {
    graph: ModuleGraph,
    handlers: HashMap<(String, String), v8::Global<v8::Function>>,
}

impl Realm {
    /// Prepares a context for `bundle`'s requests; `reuse` keeps module
    /// instances between requests.
    pub(crate) fn new(
        scope: &mut v8::HandleScope<()>,
        bundle: &Arc<AppBundle>,
        reuse: bool,
    ) -> Result<Realm, RunError> {
        let context = v8::Context::new(scope, Default::default());
        let scope = &mut v8::ContextScope::new(scope, context);
        let tc = &mut v8::TryCatch::new(scope);
        match prepare(tc) {
            Ok((make_request, to_response, end_request)) => Ok(Realm {
                context: v8::Global::new(tc, context),
                make_request: v8::Global::new(tc, make_request),
                to_response: v8::Global::new(tc, to_response),
                end_request: v8::Global::new(tc, end_request),
                bundle: bundle.clone(),
                reused: reuse.then(Reused::default),
                factories: Factories::default(),
            }),
            Err(Failure::Error(e)) => Err(RunError::Js(JsError::Internal(format!(
                "preparing the JS context: {e}"
            )))),
            Err(Failure::Thrown) => match caught(tc) {
                RunError::Js(e) => Err(RunError::Js(JsError::Internal(format!(
                    "preparing the JS context: {e}"
                )))),
                terminated => Err(terminated),
            },
        }
    }

    /// Whether this realm serves `bundle` (another app needs a new realm).
    pub(crate) fn serves(&self, bundle: &Arc<AppBundle>) -> bool {
        Arc::ptr_eq(&self.bundle, bundle)
    }
}

type Prepared<'s> = (
    v8::Local<'s, v8::Function>,
    v8::Local<'s, v8::Function>,
    v8::Local<'s, v8::Function>,
);

fn prepare<'s>(tc: &mut v8::TryCatch<v8::HandleScope<'s>>) -> Result<Prepared<'s>, Failure> {
    let factory = function(run_script(tc, PRELUDE)?, "the prelude")?;
    let natives = host::natives(tc).ok_or(Failure::Thrown)?;
    let undefined = v8::undefined(tc).into();
    let helpers = factory
        .call(tc, undefined, &[natives.into()])
        .ok_or(Failure::Thrown)?;
    let helpers = v8::Local::<v8::Object>::try_from(helpers)
        .map_err(|_| JsError::Internal("prelude returned no helpers".into()))?;
    let make_request = function(get(tc, helpers, "makeRequest")?, "makeRequest")?;
    let to_response = function(get(tc, helpers, "toResponse")?, "toResponse")?;
    let harden = function(run_script(tc, HARDEN)?, "harden.js")?;
    let end_request = harden.call(tc, undefined, &[]).ok_or(Failure::Thrown)?;
    let end_request = function(end_request, "endRequest")?;
    Ok((make_request, to_response, end_request))
}

fn run_script<'s>(
    tc: &mut v8::TryCatch<v8::HandleScope<'s>>,
    source: &str,
) -> Result<v8::Local<'s, v8::Value>, Failure> {
    let source = v8::String::new(tc, source).ok_or(Failure::Thrown)?;
    let script = v8::Script::compile(tc, source, None).ok_or(Failure::Thrown)?;
    script.run(tc).ok_or(Failure::Thrown)
}

/// Why a step failed, before it is turned into a [`JsError`].
enum Failure {
    /// A JS call returned nothing: look at the TryCatch.
    Thrown,
    Error(JsError),
}

impl From<JsError> for Failure {
    fn from(e: JsError) -> Self {
        Failure::Error(e)
    }
}

/// What went wrong, as the worker needs to know it: a terminated execution
/// is told apart so the worker can say why (time or heap).
pub(crate) enum RunError {
    Js(JsError),
    Terminated,
}

/// The result of one execution, and whether its realm may serve another.
pub(crate) struct Outcome {
    pub(crate) result: Result<JsResponse, RunError>,
    pub(crate) realm_clean: bool,
}

/// Runs `endpoint` for `request` in `realm`. The caller has bound the
/// transaction to this thread.
pub(crate) fn run(
    scope: &mut v8::HandleScope<()>,
    realm: &mut Realm,
    cache: &mut CodeCache,
    metrics: &Metrics,
    endpoint: &EndpointDef,
    request: &JsRequest,
) -> Outcome {
    cache.for_bundle(&realm.bundle);
    let graph = realm
        .reused
        .as_mut()
        .map(|r| std::mem::take(&mut r.graph))
        .unwrap_or_default();
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Current {
            bundle: realm.bundle.clone(),
            graph,
            cache: std::mem::take(cache),
        })
    });
    let outcome = {
        let context = v8::Local::new(scope, &realm.context);
        let scope = &mut v8::ContextScope::new(scope, context);
        let tc = &mut v8::TryCatch::new(scope);
        let result = match run_in_realm(tc, realm, metrics, endpoint, request) {
            Ok(r) => Ok(r),
            Err(Failure::Error(e)) => Err(RunError::Js(e)),
            Err(Failure::Thrown) => Err(caught(tc)),
        };
        let realm_clean = finish(tc, realm, matches!(result, Err(RunError::Terminated)));
        Outcome {
            result,
            realm_clean,
        }
    };
    // Module handles go back to a reused realm or are dropped here; the
    // code cache goes back to the worker.
    if let Some(current) = CURRENT.with(|c| c.borrow_mut().take()) {
        *cache = current.cache;
        if let Some(reused) = realm.reused.as_mut() {
            reused.graph = current.graph;
        }
    }
    outcome
}

/// Ends an execution: runs leftover microtasks, makes code caches for
/// newly compiled modules, and puts the globals back. Returns whether the
/// realm may serve another request.
fn finish(tc: &mut v8::TryCatch<v8::HandleScope>, realm: &Realm, terminated: bool) -> bool {
    if terminated || tc.is_execution_terminating() {
        return false;
    }
    // A promise job left queued would otherwise run in the next request.
    tc.perform_microtask_checkpoint();
    if tc.has_terminated() || tc.is_execution_terminating() {
        return false;
    }
    make_code_caches(tc);
    if realm.reused.is_some() {
        return true;
    }
    let end_request = v8::Local::new(tc, &realm.end_request);
    let undefined = v8::undefined(tc).into();
    let clean = end_request
        .call(tc, undefined, &[])
        .is_some_and(|v| v.is_true());
    if !clean {
        tracing::debug!("a request left the JS context unclean; it is replaced");
    }
    clean
}

fn make_code_caches(scope: &mut v8::HandleScope) {
    let todo: Vec<(String, v8::Global<v8::Module>)> = CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(current) = c.as_mut() else {
            return Vec::new();
        };
        let names = std::mem::take(&mut current.graph.uncached);
        names
            .into_iter()
            .filter_map(|n| current.graph.by_name.get(&n).cloned().map(|m| (n, m)))
            .collect()
    });
    for (name, module) in todo {
        let module = v8::Local::new(scope, module);
        let unbound = module.get_unbound_module_script(scope);
        if let Some(data) = unbound.create_code_cache() {
            let data: Rc<[u8]> = Rc::from(&data[..]);
            CURRENT.with(|c| {
                if let Some(current) = c.borrow_mut().as_mut() {
                    current.cache.modules.insert(name, data);
                }
            });
        }
    }
}

fn caught(tc: &mut v8::TryCatch<v8::HandleScope>) -> RunError {
    if tc.has_terminated() || tc.is_execution_terminating() {
        return RunError::Terminated;
    }
    RunError::Js(JsError::Exception(exception_text(tc)))
}

/// A readable account of the caught exception: `Error: message` and, for
/// errors with one, the first frames of the stack.
fn exception_text(tc: &mut v8::TryCatch<v8::HandleScope>) -> String {
    let Some(exception) = tc.exception() else {
        return "unknown exception".to_string();
    };
    describe_value(tc, exception)
}

fn describe_value(scope: &mut v8::HandleScope, value: v8::Local<v8::Value>) -> String {
    // `to_string` may run the value's own toString, which may throw.
    let tc = &mut v8::TryCatch::new(scope);
    let text = match value.to_string(tc) {
        Some(s) => s.to_rust_string_lossy(tc),
        None => "<exception that cannot be converted to a string>".to_string(),
    };
    let mut text = text;
    if text.len() > 4096 {
        let mut cut = 4096;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

fn key<'s>(
    scope: &mut v8::HandleScope<'s>,
    name: &str,
) -> Result<v8::Local<'s, v8::Value>, Failure> {
    v8::String::new(scope, name)
        .map(Into::into)
        .ok_or_else(|| JsError::Internal("cannot allocate a string".into()).into())
}

fn get<'s>(
    scope: &mut v8::HandleScope<'s>,
    obj: v8::Local<'s, v8::Object>,
    name: &str,
) -> Result<v8::Local<'s, v8::Value>, Failure> {
    let k = key(scope, name)?;
    obj.get(scope, k).ok_or(Failure::Thrown)
}

fn function<'s>(
    value: v8::Local<'s, v8::Value>,
    what: &str,
) -> Result<v8::Local<'s, v8::Function>, Failure> {
    v8::Local::<v8::Function>::try_from(value)
        .map_err(|_| JsError::Internal(format!("{what} is not a function")).into())
}

fn run_in_realm(
    tc: &mut v8::TryCatch<v8::HandleScope>,
    realm: &mut Realm,
    metrics: &Metrics,
    endpoint: &EndpointDef,
    request: &JsRequest,
) -> Result<JsResponse, Failure> {
    let make_request = v8::Local::new(tc, &realm.make_request);
    let to_response = v8::Local::new(tc, &realm.to_response);
    let undefined = v8::undefined(tc).into();

    // The request object; this also resets the prelude's per-request state.
    let meta = request.meta_json()?;
    let meta = v8::String::new(tc, &meta).ok_or(Failure::Thrown)?;
    let body = host::array_buffer(tc, request.body.clone());
    let js_request = make_request
        .call(tc, undefined, &[meta.into(), body.into()])
        .ok_or(Failure::Thrown)?;

    // The endpoint's module and its imports: a fresh instance, or the
    // reused realm's.
    let handler = match realm.reused.as_mut() {
        None => match factory_handler(tc, &mut realm.factories, metrics, endpoint)? {
            Some(handler) => handler,
            None => load_handler(tc, endpoint)?,
        },
        Some(reused) => {
            let id = (endpoint.js_module.clone(), endpoint.js_function.clone());
            match reused.handlers.get(&id) {
                Some(h) => v8::Local::new(tc, h),
                None => {
                    let h = load_handler(tc, endpoint)?;
                    reused.handlers.insert(id, v8::Global::new(tc, h));
                    h
                }
            }
        }
    };

    // The handler, then every job it queued (its promise's, if it is
    // async, and any other): they run before the response is read, so
    // their writes, `setApplyWrites` calls and limit hits count.
    let mut result = handler
        .call(tc, undefined, &[js_request])
        .ok_or(Failure::Thrown)?;
    run_microtasks(tc)?;
    if let Ok(promise) = v8::Local::<v8::Promise>::try_from(result) {
        match promise.state() {
            v8::PromiseState::Fulfilled => result = promise.result(tc),
            v8::PromiseState::Rejected => {
                let reason = promise.result(tc);
                return Err(JsError::Exception(describe_value(tc, reason)).into());
            }
            v8::PromiseState::Pending => {
                if tc.has_terminated() || tc.is_execution_terminating() {
                    return Err(Failure::Thrown);
                }
                return Err(JsError::BadResponse(
                    "the handler's promise was still pending when the request ended (it awaits something that never settles)".into(),
                )
                .into());
            }
        }
    }

    let response = to_response
        .call(tc, undefined, &[result])
        .ok_or(Failure::Thrown)?;
    // Jobs queued while the response was read (a `toJSON`'s) also run
    // within the request.
    run_microtasks(tc)?;
    let response = v8::Local::<v8::Object>::try_from(response)
        .map_err(|_| JsError::Internal("toResponse returned a non-object".into()))?;
    let error = get(tc, response, "error")?;
    if !error.is_undefined() {
        return Err(JsError::BadResponse(error.to_rust_string_lossy(tc)).into());
    }
    let status = get(tc, response, "status")?
        .uint32_value(tc)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| JsError::BadResponse("status is not a number".into()))?;
    let body = host::bytes_of(get(tc, response, "body")?)
        .ok_or_else(|| JsError::BadResponse("body did not convert to bytes".into()))?;
    let headers_value = get(tc, response, "headers")?;
    let headers_array = v8::Local::<v8::Array>::try_from(headers_value)
        .map_err(|_| JsError::Internal("toResponse returned no header list".into()))?;
    let mut headers = Vec::with_capacity(headers_array.length() as usize);
    for i in 0..headers_array.length() {
        let pair = headers_array.get_index(tc, i).ok_or(Failure::Thrown)?;
        let pair = v8::Local::<v8::Array>::try_from(pair)
            .map_err(|_| JsError::Internal("malformed header pair".into()))?;
        let name = pair
            .get_index(tc, 0)
            .ok_or(Failure::Thrown)?
            .to_rust_string_lossy(tc);
        let value = pair
            .get_index(tc, 1)
            .ok_or(Failure::Thrown)?
            .to_rust_string_lossy(tc);
        headers.push((name, value));
    }
    let apply_writes = get(tc, response, "applyWrites")?;
    Ok(JsResponse {
        status,
        headers,
        body,
        claims_digest: None,
        apply_writes: apply_writes.is_boolean().then(|| apply_writes.is_true()),
    })
}

/// Runs every queued microtask; a limit hit in one ends the request.
fn run_microtasks(tc: &mut v8::TryCatch<v8::HandleScope>) -> Result<(), Failure> {
    tc.perform_microtask_checkpoint();
    if tc.has_terminated() || tc.is_execution_terminating() {
        return Err(Failure::Thrown);
    }
    Ok(())
}

/// Makes fresh instances of the endpoint's module graph from its
/// factories (preparing them on the realm's first use of the module) and
/// returns the exported handler function; `None` when the graph is to be
/// run as real modules instead.
fn factory_handler<'s>(
    tc: &mut v8::TryCatch<v8::HandleScope<'s>>,
    factories: &mut Factories,
    metrics: &Metrics,
    endpoint: &EndpointDef,
) -> Result<Option<v8::Local<'s, v8::Function>>, Failure> {
    let entry = &endpoint.js_module;
    if factories.refused.contains(entry) {
        return Ok(None);
    }
    if !factories.entries.contains_key(entry) {
        match prepare_factories(tc, factories, metrics, entry) {
            Ok(()) => {
                let order = evaluation_order(&factories.ready, entry);
                factories.entries.insert(entry.clone(), order);
            }
            Err(_) if tc.has_terminated() || tc.is_execution_terminating() => {
                return Err(Failure::Thrown);
            }
            Err(why) => {
                tracing::debug!(module = %entry, "run as a real module: {why}");
                tc.reset();
                factories.refused.insert(entry.clone());
                metrics.v8_module_fallbacks.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        }
    }
    let namespace = instantiate(tc, factories, entry).map_err(|e| match e {
        Failure::Thrown if !(tc.has_terminated() || tc.is_execution_terminating()) => {
            let detail = exception_text(tc);
            Failure::Error(JsError::Module(format!(
                "module {entry}: top-level code threw: {detail}"
            )))
        }
        other => other,
    })?;
    let export = get(tc, namespace, &endpoint.js_function)?;
    v8::Local::<v8::Function>::try_from(export)
        .map(Some)
        .map_err(|_| {
            JsError::Module(format!(
                "module {} does not export a function named {:?}",
                endpoint.js_module, endpoint.js_function
            ))
            .into()
        })
}

/// The modules of `entry`'s graph in evaluation order: each after the
/// modules it imports, in the order it imports them, each once. Without
/// recursion, so that a deep chain of imports cannot exhaust the thread's
/// stack (cycles were refused before).
fn evaluation_order(ready: &HashMap<String, ModuleFactory>, entry: &str) -> Vec<String> {
    let mut order = Vec::new();
    let mut seen: HashSet<&str> = HashSet::from([entry]);
    // (module, how many of its dependencies have been visited)
    let mut stack: Vec<(&str, usize)> = vec![(entry, 0)];
    while let Some(&(name, visited)) = stack.last() {
        let dependencies = ready.get(name).map_or(&[][..], |f| &f.dependencies[..]);
        match dependencies.get(visited) {
            Some(dependency) => {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                if seen.insert(dependency) {
                    stack.push((dependency, 0));
                }
            }
            None => {
                order.push(name.to_string());
                stack.pop();
            }
        }
    }
    order
}

/// Fresh instances of the modules of `entry`'s graph, each made once, in
/// evaluation order; returns the entry's namespace object.
fn instantiate<'s>(
    scope: &mut v8::HandleScope<'s>,
    factories: &Factories,
    entry: &str,
) -> Result<v8::Local<'s, v8::Object>, Failure> {
    let order = factories
        .entries
        .get(entry)
        .ok_or_else(|| JsError::Internal(format!("no factories for module {entry}")))?;
    let mut instances: HashMap<&str, v8::Local<'s, v8::Object>> = HashMap::new();
    for name in order {
        let factory = factories
            .ready
            .get(name)
            .ok_or_else(|| JsError::Internal(format!("no factory for module {name}")))?;
        let mut dependencies = Vec::with_capacity(factory.dependencies.len());
        for dependency in &factory.dependencies {
            let namespace = instances.get(dependency.as_str()).ok_or_else(|| {
                JsError::Internal(format!("module {dependency} instantiated out of order"))
            })?;
            dependencies.push((*namespace).into());
        }
        let dependencies = v8::Array::new_with_elements(scope, &dependencies);
        let function = v8::Local::new(scope, &factory.function);
        let undefined = v8::undefined(scope).into();
        let namespace = function
            .call(scope, undefined, &[dependencies.into()])
            .ok_or(Failure::Thrown)?;
        let namespace = v8::Local::<v8::Object>::try_from(namespace)
            .map_err(|_| JsError::Internal("a module factory returned no namespace".into()))?;
        instances.insert(name, namespace);
    }
    instances
        .get(entry)
        .copied()
        .ok_or_else(|| JsError::Internal(format!("module {entry} was not instantiated")).into())
}

/// Rewrites `entry`'s module graph as factories, checks each rewrite
/// against V8's own reading of the module (the modules it requests, the
/// names it exports), and compiles them in the realm. An error says why
/// the graph is run as real modules instead.
fn prepare_factories(
    tc: &mut v8::TryCatch<v8::HandleScope>,
    factories: &mut Factories,
    metrics: &Metrics,
    entry: &str,
) -> Result<(), String> {
    let Some(bundle) = CURRENT.with(|c| c.borrow().as_ref().map(|c| c.bundle.clone())) else {
        return Err("no app bundle".into());
    };
    // Depth first, dependencies before the modules importing them, with a
    // stack of our own rather than recursion (a deep chain of imports must
    // not exhaust the thread's stack).
    struct Pending {
        name: String,
        factory: factory::Factory,
        dependencies: Vec<String>,
    }
    struct Frame {
        module: Pending,
        /// How many of its dependencies have been visited.
        visited: usize,
    }
    let open = |name: &str| -> Result<Frame, String> {
        let source = bundle
            .module(name)
            .ok_or_else(|| format!("no module named {name:?}"))?;
        let factory = factory::rewrite(source).map_err(|e| format!("{name}: {e}"))?;
        let dependencies = factory
            .dependencies
            .iter()
            .map(|spec| resolve_specifier(name, spec))
            .collect();
        Ok(Frame {
            module: Pending {
                name: name.to_string(),
                factory,
                dependencies,
            },
            visited: 0,
        })
    };
    let mut pending: Vec<Pending> = Vec::new();
    let mut pending_index: HashMap<String, usize> = HashMap::new();
    let mut on_path: HashSet<String> = HashSet::new();
    let mut stack: Vec<Frame> = Vec::new();
    if !factories.ready.contains_key(entry) {
        stack.push(open(entry)?);
        on_path.insert(entry.to_string());
    }
    while let Some(top) = stack.last_mut() {
        if let Some(dependency) = top.module.dependencies.get(top.visited).cloned() {
            top.visited += 1;
            if factories.ready.contains_key(&dependency) || pending_index.contains_key(&dependency)
            {
                continue;
            }
            if on_path.contains(&dependency) {
                return Err(format!("import cycle through {dependency}"));
            }
            let frame = open(&dependency)?;
            on_path.insert(dependency);
            stack.push(frame);
        } else if let Some(done) = stack.pop() {
            on_path.remove(&done.module.name);
            pending_index.insert(done.module.name.clone(), pending.len());
            pending.push(done.module);
        }
    }

    // Every imported name is exported where it is imported from, and is
    // not a binding the exporter may reassign (the importer would hold a
    // stale copy). Export lists are sorted.
    let exports_of = |name: &str| -> Option<(&Vec<String>, &Vec<String>)> {
        factories
            .ready
            .get(name)
            .map(|f| (&f.exports, &f.mutable_exports))
            .or_else(|| {
                pending_index.get(name).map(|&k| {
                    let p = &pending[k];
                    (&p.factory.exports, &p.factory.mutable_exports)
                })
            })
    };
    for p in &pending {
        for (k, imported) in &p.factory.imported_names {
            let from = &p.dependencies[*k];
            let Some((exports, mutable)) = exports_of(from) else {
                return Err(format!("{}: {from} is not rewritten", p.name));
            };
            if exports.binary_search(imported).is_err() {
                return Err(format!("{}: {from} does not export {imported}", p.name));
            }
            if mutable.binary_search(imported).is_ok() {
                return Err(format!(
                    "{}: imports {from}'s reassignable {imported}",
                    p.name
                ));
            }
        }
        for k in &p.factory.namespace_imports {
            let from = &p.dependencies[*k];
            if exports_of(from).is_some_and(|(_, mutable)| !mutable.is_empty()) {
                return Err(format!(
                    "{}: imports the namespace of {from}, which exports reassignable bindings",
                    p.name
                ));
            }
        }
    }

    // V8's reading of the same modules: linked (not run), so that their
    // namespaces list their exports.
    let entry_module = compile_module(tc, entry).ok_or("the module does not compile")?;
    if entry_module.get_status() == v8::ModuleStatus::Uninstantiated
        && entry_module
            .instantiate_module(tc, resolve_import)
            .is_none()
    {
        return Err("the module does not link".into());
    }
    for p in &pending {
        let module = compile_module(tc, &p.name).ok_or("a module does not compile")?;
        let mut requested = requested_specifiers(tc, module)?;
        let mut rewritten = p.factory.dependencies.clone();
        requested.sort();
        rewritten.sort();
        if requested != rewritten {
            return Err(format!(
                "{}: V8 reads the imports {requested:?}, the rewrite {rewritten:?}",
                p.name
            ));
        }
        // Every edit is where V8 sees the start of a top-level statement.
        let probe = compile_probe(tc, &p.name, &p.factory.probe)
            .ok_or_else(|| format!("{}: the probe does not compile", p.name))?;
        let mut probed = requested_specifiers(tc, probe)?;
        let mut expected = rewritten;
        expected.extend((0..p.factory.probes).map(|n| format!("{}{n}", factory::PROBE)));
        probed.sort();
        expected.sort();
        if probed != expected {
            return Err(format!(
                "{}: an edit of the rewrite is not at a statement of the module",
                p.name
            ));
        }
        let namespace = v8::Local::new(tc, module.get_module_namespace());
        let namespace = v8::Local::<v8::Object>::try_from(namespace)
            .map_err(|_| "the module namespace is not an object")?;
        let names = namespace
            .get_own_property_names(
                tc,
                v8::GetPropertyNamesArgs {
                    mode: v8::KeyCollectionMode::OwnOnly,
                    property_filter: v8::PropertyFilter::ALL_PROPERTIES
                        | v8::PropertyFilter::SKIP_SYMBOLS,
                    index_filter: v8::IndexFilter::IncludeIndices,
                    key_conversion: v8::KeyConversionMode::ConvertToString,
                },
            )
            .ok_or("cannot list the module's exports")?;
        let mut exported = Vec::with_capacity(names.length() as usize);
        for i in 0..names.length() {
            let name = names.get_index(tc, i).ok_or("unreadable export name")?;
            exported.push(name.to_rust_string_lossy(tc));
        }
        exported.sort();
        if exported != p.factory.exports {
            return Err(format!(
                "{}: V8 reads the exports {exported:?}, the rewrite {:?}",
                p.name, p.factory.exports
            ));
        }
    }

    // The factories themselves, compiled once for this realm.
    for p in pending {
        let code = v8::String::new(tc, &p.factory.script).ok_or("cannot allocate the script")?;
        let resource = v8::String::new(tc, &p.name).ok_or("cannot allocate a string")?;
        // The script's first line is the factory's header: line -1.
        let origin = v8::ScriptOrigin::new(
            tc,
            resource.into(),
            -1,
            0,
            false,
            0,
            None,
            false,
            false,
            false,
            None,
        );
        let script = v8::Script::compile(tc, code, Some(&origin))
            .ok_or_else(|| format!("{}: the rewrite does not compile", p.name))?;
        let function = script
            .run(tc)
            .and_then(|f| v8::Local::<v8::Function>::try_from(f).ok())
            .ok_or_else(|| format!("{}: the rewrite is not a function", p.name))?;
        metrics.v8_module_factories.fetch_add(1, Ordering::Relaxed);
        factories.ready.insert(
            p.name,
            ModuleFactory {
                function: v8::Global::new(tc, function),
                dependencies: p.dependencies,
                exports: p.factory.exports,
                mutable_exports: p.factory.mutable_exports,
            },
        );
    }
    Ok(())
}

/// Compiles, instantiates and evaluates the endpoint's module graph and
/// returns the exported handler function.
fn load_handler<'s>(
    tc: &mut v8::TryCatch<v8::HandleScope<'s>>,
    endpoint: &EndpointDef,
) -> Result<v8::Local<'s, v8::Function>, Failure> {
    let module_error = |tc: &mut v8::TryCatch<v8::HandleScope<'s>>, what: &str| -> Failure {
        if tc.has_terminated() || tc.is_execution_terminating() {
            return Failure::Thrown;
        }
        let detail = exception_text(tc);
        Failure::Error(JsError::Module(format!(
            "module {}: {what}: {detail}",
            endpoint.js_module
        )))
    };
    let Some(module) = compile_module(tc, &endpoint.js_module) else {
        return Err(module_error(tc, "cannot compile"));
    };
    if module.get_status() == v8::ModuleStatus::Uninstantiated
        && module.instantiate_module(tc, resolve_import).is_none()
    {
        return Err(module_error(tc, "cannot link"));
    }
    if module.get_status() == v8::ModuleStatus::Errored {
        let reason = module.get_exception();
        let detail = describe_value(tc, reason);
        return Err(JsError::Module(format!(
            "module {}: top-level code threw: {detail}",
            endpoint.js_module
        ))
        .into());
    }
    if module.get_status() != v8::ModuleStatus::Evaluated {
        let Some(evaluation) = module.evaluate(tc) else {
            return Err(module_error(tc, "top-level code threw"));
        };
        if let Ok(promise) = v8::Local::<v8::Promise>::try_from(evaluation) {
            if promise.state() == v8::PromiseState::Pending {
                tc.perform_microtask_checkpoint();
            }
            if promise.state() == v8::PromiseState::Rejected {
                let reason = promise.result(tc);
                let detail = describe_value(tc, reason);
                return Err(JsError::Module(format!(
                    "module {}: top-level code threw: {detail}",
                    endpoint.js_module
                ))
                .into());
            }
        }
    }
    // The namespace handle borrows `module`; re-root it in the scope.
    let namespace = v8::Local::new(tc, module.get_module_namespace());
    let namespace = v8::Local::<v8::Object>::try_from(namespace)
        .map_err(|_| JsError::Internal("module namespace is not an object".into()))?;
    let export = get(tc, namespace, &endpoint.js_function)?;
    v8::Local::<v8::Function>::try_from(export).map_err(|_| {
        JsError::Module(format!(
            "module {} does not export a function named {:?}",
            endpoint.js_module, endpoint.js_function
        ))
        .into()
    })
}

/// Compiles the bundle's module `name` once per execution (once per realm
/// when it is reused), from the code cache when there is one.
/// The specifiers `module` imports, as V8 reads them.
fn requested_specifiers(
    scope: &mut v8::HandleScope,
    module: v8::Local<v8::Module>,
) -> Result<Vec<String>, String> {
    let requests = module.get_module_requests();
    let mut requested = Vec::with_capacity(requests.length());
    for i in 0..requests.length() {
        let request = requests
            .get(scope, i)
            .and_then(|d| v8::Local::<v8::ModuleRequest>::try_from(d).ok())
            .ok_or("unreadable module request")?;
        requested.push(request.get_specifier().to_rust_string_lossy(scope));
    }
    Ok(requested)
}

/// The origin of the app module `name`.
fn module_origin<'s>(scope: &mut v8::HandleScope<'s>, name: &str) -> Option<v8::ScriptOrigin<'s>> {
    let resource = v8::String::new(scope, name)?;
    Some(v8::ScriptOrigin::new(
        scope,
        resource.into(),
        0,
        0,
        false,
        0,
        None,
        false,
        false,
        true,
        None,
    ))
}

/// Compiles `source` as a module named `name`, to read it (never run):
/// the probe of a module factory.
fn compile_probe<'s>(
    scope: &mut v8::HandleScope<'s>,
    name: &str,
    source: &str,
) -> Option<v8::Local<'s, v8::Module>> {
    let code = v8::String::new(scope, source)?;
    let origin = module_origin(scope, name)?;
    let mut source = v8::script_compiler::Source::new(code, Some(&origin));
    v8::script_compiler::compile_module(scope, &mut source)
}

fn compile_module<'s>(
    scope: &mut v8::HandleScope<'s>,
    name: &str,
) -> Option<v8::Local<'s, v8::Module>> {
    let (compiled, source, cached) = CURRENT.with(|c| {
        let c = c.borrow();
        let Some(c) = c.as_ref() else {
            return (None, None, None);
        };
        (
            c.graph.by_name.get(name).cloned(),
            c.bundle.module(name).map(str::to_string),
            c.cache.modules.get(name).cloned(),
        )
    });
    if let Some(global) = compiled {
        return Some(v8::Local::new(scope, global));
    }
    let Some(source) = source else {
        host::throw_error(
            scope,
            &format!("no module named {name:?} in the app bundle"),
        );
        return None;
    };
    let code = v8::String::new(scope, &source)?;
    let origin = module_origin(scope, name)?;
    let (module, uncached) = match &cached {
        Some(data) => {
            let mut source = v8::script_compiler::Source::new_with_cached_data(
                code,
                Some(&origin),
                v8::script_compiler::CachedData::new(data),
            );
            let module = v8::script_compiler::compile_module2(
                scope,
                &mut source,
                v8::script_compiler::CompileOptions::ConsumeCodeCache,
                v8::script_compiler::NoCacheReason::NoReason,
            )?;
            let rejected = source.get_cached_data().is_some_and(|d| d.rejected());
            (module, rejected)
        }
        None => {
            let mut source = v8::script_compiler::Source::new(code, Some(&origin));
            (
                v8::script_compiler::compile_module(scope, &mut source)?,
                true,
            )
        }
    };
    let global = v8::Global::new(scope, module);
    CURRENT.with(|c| {
        if let Some(c) = c.borrow_mut().as_mut() {
            c.graph
                .names
                .insert(module.get_identity_hash().get(), name.to_string());
            c.graph.by_name.insert(name.to_string(), global);
            if uncached {
                c.graph.uncached.push(name.to_string());
            }
        }
    });
    Some(module)
}

fn resolve_import<'a>(
    context: v8::Local<'a, v8::Context>,
    specifier: v8::Local<'a, v8::String>,
    _import_attributes: v8::Local<'a, v8::FixedArray>,
    referrer: v8::Local<'a, v8::Module>,
) -> Option<v8::Local<'a, v8::Module>> {
    // SAFETY: V8 calls this during instantiation, inside the context.
    let scope = &mut unsafe { v8::CallbackScope::new(context) };
    let specifier = specifier.to_rust_string_lossy(scope);
    let referrer_name = CURRENT.with(|c| {
        c.borrow().as_ref().and_then(|c| {
            c.graph
                .names
                .get(&referrer.get_identity_hash().get())
                .cloned()
        })
    });
    let Some(referrer_name) = referrer_name else {
        host::throw_error(
            scope,
            &format!("cannot resolve {specifier:?}: unknown importing module"),
        );
        return None;
    };
    let name = resolve_specifier(&referrer_name, &specifier);
    compile_module(scope, &name)
}
