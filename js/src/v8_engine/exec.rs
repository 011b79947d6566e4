//! One execution of an endpoint in a fresh V8 context: prelude, the app's
//! modules, the handler, the response.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::api::{JsError, JsRequest, JsResponse};
use crate::bundle::{resolve_specifier, AppBundle, EndpointDef};
use crate::v8_engine::host;

const PRELUDE: &str = crate::PRELUDE;

/// Modules compiled for the current execution: a module instance belongs
/// to one context, so every execution compiles its own graph.
#[derive(Default)]
struct ModuleGraph {
    bundle: Option<Arc<AppBundle>>,
    by_name: HashMap<String, v8::Global<v8::Module>>,
    /// identity hash → module name, to resolve imports relative to the
    /// importing module.
    names: HashMap<i32, String>,
}

thread_local! {
    static GRAPH: RefCell<ModuleGraph> = RefCell::new(ModuleGraph::default());
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

/// Runs `endpoint` for `request` in a fresh context of `scope`'s isolate.
/// The caller has bound the transaction to this thread.
pub(crate) fn run(
    scope: &mut v8::HandleScope<()>,
    bundle: &Arc<AppBundle>,
    endpoint: &EndpointDef,
    request: &JsRequest,
) -> Result<JsResponse, RunError> {
    GRAPH.with(|g| {
        let mut g = g.borrow_mut();
        g.bundle = Some(bundle.clone());
    });
    let result = {
        let context = v8::Context::new(scope, Default::default());
        let scope = &mut v8::ContextScope::new(scope, context);
        let tc = &mut v8::TryCatch::new(scope);
        match run_in_context(tc, endpoint, request) {
            Ok(r) => Ok(r),
            Err(Failure::Error(e)) => Err(RunError::Js(e)),
            Err(Failure::Thrown) => Err(caught(tc)),
        }
    };
    // Module handles must not outlive this execution (nor the isolate).
    GRAPH.with(|g| *g.borrow_mut() = ModuleGraph::default());
    result
}

/// What went wrong, as the worker needs to know it: a terminated execution
/// is told apart so the worker can say why (time or heap).
pub(crate) enum RunError {
    Js(JsError),
    Terminated,
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

fn run_in_context(
    tc: &mut v8::TryCatch<v8::HandleScope>,
    endpoint: &EndpointDef,
    request: &JsRequest,
) -> Result<JsResponse, Failure> {
    // The prelude: builds `ccf`, returns {makeRequest, toResponse}.
    let source = v8::String::new(tc, PRELUDE).ok_or(Failure::Thrown)?;
    let script = v8::Script::compile(tc, source, None).ok_or(Failure::Thrown)?;
    let factory = function(script.run(tc).ok_or(Failure::Thrown)?, "the prelude")?;
    let natives = host::natives(tc).ok_or(Failure::Thrown)?;
    let undefined = v8::undefined(tc).into();
    let helpers = factory
        .call(tc, undefined, &[natives.into()])
        .ok_or(Failure::Thrown)?;
    let helpers = v8::Local::<v8::Object>::try_from(helpers)
        .map_err(|_| JsError::Internal("prelude returned no helpers".into()))?;
    let make_request = function(get(tc, helpers, "makeRequest")?, "makeRequest")?;
    let to_response = function(get(tc, helpers, "toResponse")?, "toResponse")?;

    // The endpoint's module and its imports.
    let handler = load_handler(tc, endpoint)?;

    // The request object.
    let meta = request.meta_json()?;
    let meta = v8::String::new(tc, &meta).ok_or(Failure::Thrown)?;
    let body = host::array_buffer(tc, request.body.clone());
    let js_request = make_request
        .call(tc, undefined, &[meta.into(), body.into()])
        .ok_or(Failure::Thrown)?;

    // The handler, and its promise if it is async.
    let mut result = handler
        .call(tc, undefined, &[js_request])
        .ok_or(Failure::Thrown)?;
    if let Ok(promise) = v8::Local::<v8::Promise>::try_from(result) {
        tc.perform_microtask_checkpoint();
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
    if module.instantiate_module(tc, resolve_import).is_none() {
        return Err(module_error(tc, "cannot link"));
    }
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

/// Compiles the bundle's module `name` once per execution.
fn compile_module<'s>(
    scope: &mut v8::HandleScope<'s>,
    name: &str,
) -> Option<v8::Local<'s, v8::Module>> {
    let (cached, source) = GRAPH.with(|g| {
        let g = g.borrow();
        let cached = g.by_name.get(name).cloned();
        let source = g
            .bundle
            .as_ref()
            .and_then(|b| b.module(name).map(str::to_string));
        (cached, source)
    });
    if let Some(global) = cached {
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
    let resource = v8::String::new(scope, name)?;
    let origin = v8::ScriptOrigin::new(
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
    );
    let mut source = v8::script_compiler::Source::new(code, Some(&origin));
    let module = v8::script_compiler::compile_module(scope, &mut source)?;
    let global = v8::Global::new(scope, module);
    GRAPH.with(|g| {
        let mut g = g.borrow_mut();
        g.names
            .insert(module.get_identity_hash().get(), name.to_string());
        g.by_name.insert(name.to_string(), global);
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
    let referrer_name = GRAPH.with(|g| {
        g.borrow()
            .names
            .get(&referrer.get_identity_hash().get())
            .cloned()
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
