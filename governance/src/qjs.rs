//! The constitution and ballots, run on QuickJS.
//!
//! Governance has one engine, QuickJS (crate `rquickjs`), never V8. Every
//! call gets a fresh runtime and context on a thread of its own whose
//! stack is sized from the limits; nothing survives from one call to the
//! next. Governance is low volume, so isolation wins over speed.
//!
//! Each call is bounded by [`GovLimits`]:
//! - `max_heap_bytes`: the QuickJS memory limit, and also the budget of
//!   KV traffic held on the Rust side (see `host.rs`);
//! - `max_stack_bytes`: QuickJS's stack limit (clamped to
//!   [`MIN_STACK_BYTES`]..=[`MAX_STACK_BYTES`]; the thread's real stack is
//!   larger by a fixed margin);
//! - `max_execution_time_ms`: wall-clock time from the runtime's creation,
//!   enforced by an interrupt handler whose exception scripts cannot catch.
//!
//! The host API is the global `ccf` (CCF's names: `ccf.kv[map]`,
//! `ccf.strToBuf`, `ccf.bufToStr`, `ccf.jsonCompatibleToBuf`,
//! `ccf.bufToJsonCompatible`, `ccf.pemToId`, `ccf.isValidX509CertBundle`,
//! `ccf.crypto.digest`) and `console`. Only `apply` may write to the KV.
//! Its writes are buffered and reach the transaction only when it returns
//! without error, so an `apply` that throws leaves nothing behind.

mod host;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_ledger::{Store, Tx};
use rquickjs::{
    promise::PromiseState, Array, Coerced, Context, Ctx, Function, Module, Object, Promise,
    Runtime, Value,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use host::{Host, Overlay};

/// The default constitution: the files of `samples/constitution/`, joined
/// in name order with a newline after each, as the node joins a
/// constitution directory.
pub const DEFAULT_CONSTITUTION: &str = concat!(
    include_str!("../../samples/constitution/00_util.js"),
    "\n",
    include_str!("../../samples/constitution/10_actions.js"),
    "\n",
    include_str!("../../samples/constitution/20_validate.js"),
    "\n",
    include_str!("../../samples/constitution/30_resolve.js"),
    "\n",
    include_str!("../../samples/constitution/40_apply.js"),
    "\n",
);

/// The smallest and largest stack QuickJS is allowed, whatever the limits
/// say. 0 would mean "no limit" to QuickJS, which would let a recursion
/// bomb overrun the thread's stack.
pub const MIN_STACK_BYTES: usize = 64 * 1024;
pub const MAX_STACK_BYTES: usize = 256 * 1024 * 1024;
/// Stack the thread has beyond QuickJS's limit, for the Rust and C frames
/// around the interpreter.
const STACK_MARGIN: usize = 2 * 1024 * 1024;

const PRELUDE: &str = include_str!("qjs/prelude.js");

/// Limits of one governance call.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct GovLimits {
    pub max_heap_bytes: usize,
    pub max_stack_bytes: usize,
    pub max_execution_time_ms: u64,
}

impl Default for GovLimits {
    fn default() -> Self {
        GovLimits {
            max_heap_bytes: 100 * 1024 * 1024,
            max_stack_bytes: 1024 * 1024,
            max_execution_time_ms: 5000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GovJsError {
    /// The script threw (or a promise it returned was rejected).
    #[error("{message}")]
    Exception {
        message: String,
        stack: Option<String>,
    },
    #[error("execution took longer than the limit of {ms} ms")]
    Timeout { ms: u64 },
    #[error("the script ran out of memory (max_heap_bytes)")]
    HeapLimit,
    #[error("the script exceeded the maximum stack size (max_stack_bytes)")]
    StackOverflow,
    /// The module does not load: syntax error, an import, a top-level
    /// throw, or a missing export.
    #[error("module error: {0}")]
    Module(String),
    /// The function returned something of the wrong shape.
    #[error("invalid result: {0}")]
    InvalidResult(String),
    /// The buffered writes could not be applied to the transaction.
    #[error("KV error: {0}")]
    Kv(String),
    /// The engine could not be started (no thread, no runtime).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What the constitution's `validate` said about a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    pub valid: bool,
    pub description: String,
}

/// A constitution: the source of one JS module exporting `validate`,
/// `resolve` and `apply`.
#[derive(Debug, Clone)]
pub struct Constitution {
    source: String,
    limits: GovLimits,
}

const CONSTITUTION_MODULE: &str = "constitution";
const CONSTITUTION_EXPORTS: &[&str] = &["validate", "resolve", "apply"];
const BALLOT_MODULE: &str = "ballot";
const BALLOT_EXPORTS: &[&str] = &["vote"];

impl Constitution {
    pub fn new(source: impl Into<String>, limits: GovLimits) -> Self {
        Constitution {
            source: source.into(),
            limits,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Compiles and evaluates the module and checks that it exports the
    /// functions `validate`, `resolve` and `apply`.
    pub fn check(&self) -> Result<(), GovJsError> {
        self.job(Access::None, None).run(None).map(|_| ())
    }

    /// `validate(proposal)` → `{valid, description}`. Read-only KV.
    pub fn validate(&self, tx: &mut Tx, proposal: &str) -> Result<Validation, GovJsError> {
        let call = Call::new("validate", vec![Arg::Str(proposal.to_string())]);
        let out = self.job(Access::Read, Some(call)).run(Some(tx))?;
        let Some(Json::Object(obj)) = out.value else {
            return Err(GovJsError::InvalidResult(format!(
                "validate must return {{valid: boolean, description: string}}, got {}",
                show(&out.value)
            )));
        };
        let Some(valid) = obj.get("valid").and_then(Json::as_bool) else {
            return Err(GovJsError::InvalidResult(format!(
                "validate's result must have a boolean `valid`, got {}",
                show(&obj.get("valid").cloned())
            )));
        };
        let description = match obj.get("description") {
            None | Some(Json::Null) => String::new(),
            Some(Json::String(s)) => s.clone(),
            Some(other) => {
                return Err(GovJsError::InvalidResult(format!(
                    "validate's `description` must be a string, got {other}"
                )))
            }
        };
        Ok(Validation { valid, description })
    }

    /// `resolve(proposal, proposerId, votes)` → `"Open"`, `"Accepted"` or
    /// `"Rejected"`; `votes` is `[{member_id, vote}]`. Read-only KV.
    pub fn resolve(
        &self,
        tx: &mut Tx,
        proposal: &str,
        proposer_id: &str,
        votes: &[(String, bool)],
    ) -> Result<String, GovJsError> {
        let call = Call::new(
            "resolve",
            vec![
                Arg::Str(proposal.to_string()),
                Arg::Str(proposer_id.to_string()),
                Arg::Votes(votes.to_vec()),
            ],
        );
        let out = self.job(Access::Read, Some(call)).run(Some(tx))?;
        match out.value {
            Some(Json::String(s)) if matches!(s.as_str(), "Open" | "Accepted" | "Rejected") => {
                Ok(s)
            }
            other => Err(GovJsError::InvalidResult(format!(
                "resolve must return \"Open\", \"Accepted\" or \"Rejected\", got {}",
                show(&other)
            ))),
        }
    }

    /// `apply(proposal, proposalId)`, with read-write KV access. Atomic:
    /// on any error the transaction is left as it was.
    ///
    /// A proposal that replaces the constitution fails here if the new
    /// constitution does not load, so governance cannot lock itself out.
    pub fn apply(&self, tx: &mut Tx, proposal: &str, proposal_id: &str) -> Result<(), GovJsError> {
        let call = Call::new(
            "apply",
            vec![
                Arg::Str(proposal.to_string()),
                Arg::Str(proposal_id.to_string()),
            ],
        );
        let out = self.job(Access::Write, Some(call)).run(Some(tx))?;
        match out
            .overlay
            .written(crate::CONSTITUTION, crate::SINGLETON_KEY)
        {
            Some(Some(new)) => {
                let new = std::str::from_utf8(new).map_err(|_| {
                    GovJsError::Module("the new constitution is not UTF-8 text".to_string())
                })?;
                Constitution::new(new, self.limits).check().map_err(|e| {
                    GovJsError::Module(format!("the new constitution does not load: {e}"))
                })?;
            }
            Some(None) => {
                return Err(GovJsError::Module(
                    "apply removed the constitution; the service must always have one".to_string(),
                ))
            }
            None => {}
        }
        out.overlay
            .flush(tx)
            .map_err(|e| GovJsError::Kv(e.to_string()))
    }

    fn job(&self, access: Access, call: Option<Call>) -> Job<'_> {
        Job {
            source: &self.source,
            module_name: CONSTITUTION_MODULE,
            exports: CONSTITUTION_EXPORTS,
            limits: self.limits,
            access,
            call,
        }
    }
}

/// Runs a ballot: a module exporting `vote(proposal, proposerId)` that
/// returns a boolean. Read-only KV.
pub fn run_ballot(
    ballot_source: &str,
    tx: &mut Tx,
    proposal: &str,
    proposer_id: &str,
    limits: GovLimits,
) -> Result<bool, GovJsError> {
    let call = Call::new(
        "vote",
        vec![
            Arg::Str(proposal.to_string()),
            Arg::Str(proposer_id.to_string()),
        ],
    );
    let out = ballot_job(ballot_source, limits, Access::Read, Some(call)).run(Some(tx))?;
    match out.value {
        Some(Json::Bool(b)) => Ok(b),
        other => Err(GovJsError::InvalidResult(format!(
            "vote must return a boolean, got {}",
            show(&other)
        ))),
    }
}

/// Compiles and evaluates a ballot and checks that it exports `vote`.
pub fn check_ballot(ballot_source: &str, limits: GovLimits) -> Result<(), GovJsError> {
    ballot_job(ballot_source, limits, Access::None, None)
        .run(None)
        .map(|_| ())
}

fn ballot_job(source: &str, limits: GovLimits, access: Access, call: Option<Call>) -> Job<'_> {
    Job {
        source,
        module_name: BALLOT_MODULE,
        exports: BALLOT_EXPORTS,
        limits,
        access,
        call,
    }
}

fn show(value: &Option<Json>) -> String {
    match value {
        None => "undefined".to_string(),
        Some(v) => {
            let mut s = v.to_string();
            if s.len() > 200 {
                let mut cut = 200;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                s.push('…');
            }
            s
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No transaction at all (checking a module).
    None,
    Read,
    Write,
}

enum Arg {
    Str(String),
    Votes(Vec<(String, bool)>),
}

struct Call {
    function: &'static str,
    args: Vec<Arg>,
}

impl Call {
    fn new(function: &'static str, args: Vec<Arg>) -> Self {
        Call { function, args }
    }
}

struct Job<'a> {
    source: &'a str,
    module_name: &'static str,
    exports: &'static [&'static str],
    limits: GovLimits,
    access: Access,
    call: Option<Call>,
}

struct Outcome {
    /// The function's result as JSON (`None`: undefined or not JSON).
    value: Option<Json>,
    overlay: Overlay,
}

/// Puts the caller's transaction back when the call is over, however it
/// ends.
struct Restore<'a> {
    tx: &'a mut Tx,
    host: Rc<RefCell<Host>>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Ok(mut host) = self.host.try_borrow_mut() {
            if let Some(tx) = host.tx.take() {
                *self.tx = tx;
            }
        }
    }
}

/// A stand-in transaction for checks that need no KV, and to hold the
/// caller's place while its transaction is lent to the script.
fn placeholder_tx() -> Tx {
    Arc::new(Store::new()).begin_read_only()
}

impl Job<'_> {
    /// Runs the job on a thread of its own, with a stack sized for the
    /// limit.
    fn run(self, tx: Option<&mut Tx>) -> Result<Outcome, GovJsError> {
        let stack = self
            .limits
            .max_stack_bytes
            .clamp(MIN_STACK_BYTES, MAX_STACK_BYTES);
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("charter-gov-js".to_string())
                .stack_size(stack + STACK_MARGIN)
                .spawn_scoped(scope, move || {
                    let mut own;
                    let tx = match tx {
                        Some(tx) => tx,
                        None => {
                            own = placeholder_tx();
                            &mut own
                        }
                    };
                    self.run_here(tx, stack)
                })
                .map_err(|e| GovJsError::Internal(format!("cannot start a JS thread: {e}")))?;
            handle
                .join()
                .map_err(|_| GovJsError::Internal("the JS thread panicked".to_string()))?
        })
    }

    fn run_here(self, tx: &mut Tx, stack: usize) -> Result<Outcome, GovJsError> {
        let limits = self.limits;
        let rt = Runtime::new()
            .map_err(|e| GovJsError::Internal(format!("cannot create a QuickJS runtime: {e}")))?;
        rt.set_memory_limit(limits.max_heap_bytes.max(1));
        rt.set_max_stack_size(stack);
        let timed_out = Rc::new(Cell::new(false));
        {
            let timed_out = timed_out.clone();
            // A limit too far away to represent is no limit.
            let deadline =
                Instant::now().checked_add(Duration::from_millis(limits.max_execution_time_ms));
            rt.set_interrupt_handler(Some(Box::new(move || {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    timed_out.set(true);
                    true
                } else {
                    false
                }
            })));
        }
        let context = Context::full(&rt).map_err(|_| GovJsError::HeapLimit)?;

        let writable = self.access == Access::Write && !tx.is_read_only();
        let lent = std::mem::replace(tx, placeholder_tx());
        let host = Rc::new(RefCell::new(Host::new(
            lent,
            writable,
            limits.max_heap_bytes,
        )));
        let restore = Restore {
            tx,
            host: host.clone(),
        };
        let state = Classify {
            timed_out: &timed_out,
            limits,
        };
        let value = context.with(|ctx| self.evaluate(&ctx, &host, &state));
        // The runtime's objects hold clones of `host`: drop them first.
        drop(context);
        drop(rt);
        drop(restore);
        let value = value?;
        let overlay = match host.try_borrow_mut() {
            Ok(mut h) => std::mem::take(&mut h.overlay),
            Err(_) => return Err(GovJsError::Internal("host still in use".to_string())),
        };
        Ok(Outcome { value, overlay })
    }

    fn evaluate<'js>(
        &self,
        ctx: &Ctx<'js>,
        host: &Rc<RefCell<Host>>,
        state: &Classify<'_>,
    ) -> Result<Option<Json>, GovJsError> {
        install(ctx, host).map_err(|e| state.internal(ctx, e, "installing the host API"))?;

        let module = Module::declare(ctx.clone(), self.module_name, self.source)
            .map_err(|e| state.module(ctx, e))?;
        let (module, promise) = module.eval().map_err(|e| state.module(ctx, e))?;
        match settle(ctx, &promise) {
            Settled::Done(Ok(_)) => {}
            Settled::Done(Err(e)) => return Err(state.module(ctx, e)),
            Settled::Never => {
                return Err(state.never(GovJsError::Module(
                    "the module's top-level code never finished (it awaits forever)".to_string(),
                )))
            }
        }
        let namespace = module.namespace().map_err(|e| state.module(ctx, e))?;
        let mut functions = Vec::new();
        for name in self.exports {
            let value: Value = namespace.get(*name).map_err(|e| state.module(ctx, e))?;
            match value.into_function() {
                Some(f) => functions.push((*name, f)),
                None => {
                    return Err(GovJsError::Module(format!(
                        "the {} must export a function named `{name}`",
                        self.module_name
                    )))
                }
            }
        }

        let Some(call) = &self.call else {
            return Ok(None);
        };
        let Some((_, function)) = functions.iter().find(|(n, _)| *n == call.function) else {
            return Err(GovJsError::Internal(format!(
                "{} is not an export of the {}",
                call.function, self.module_name
            )));
        };
        let mut result =
            call_with(ctx, function, &call.args).map_err(|e| state.classify(ctx, e))?;
        // An async function's promise is awaited, and jobs it queued run.
        if let Some(promise) = result.clone().into_promise() {
            result = match settle(ctx, &promise) {
                Settled::Done(r) => r.map_err(|e| state.classify(ctx, e))?,
                Settled::Never => {
                    return Err(state.never(GovJsError::InvalidResult(format!(
                        "{} returned a promise that never settles",
                        call.function
                    ))))
                }
            };
        }
        while ctx.execute_pending_job() {}
        if state.timed_out.get() {
            return Err(GovJsError::Timeout {
                ms: state.limits.max_execution_time_ms,
            });
        }
        to_json(ctx, result).map_err(|e| match state.classify(ctx, e) {
            GovJsError::Exception { message, .. } => GovJsError::InvalidResult(format!(
                "{} returned a value that is not JSON: {message}",
                call.function
            )),
            other => other,
        })
    }
}

enum Settled<'js> {
    Done(rquickjs::Result<Value<'js>>),
    /// Still pending with no job left to run.
    Never,
}

/// Runs queued jobs until `promise` settles. A rejection comes back as
/// [`rquickjs::Error::Exception`] with the reason as the pending exception.
fn settle<'js>(ctx: &Ctx<'js>, promise: &Promise<'js>) -> Settled<'js> {
    loop {
        match promise.state() {
            PromiseState::Pending => {
                if !ctx.execute_pending_job() {
                    return Settled::Never;
                }
            }
            PromiseState::Resolved | PromiseState::Rejected => {
                return match promise.result::<Value>() {
                    Some(r) => Settled::Done(r),
                    None => Settled::Never,
                }
            }
        }
    }
}

fn install<'js>(ctx: &Ctx<'js>, host: &Rc<RefCell<Host>>) -> rquickjs::Result<()> {
    let native = host::natives(ctx, host)?;
    let setup: Function = ctx.eval(PRELUDE)?;
    setup.call::<_, ()>((native,))
}

fn call_with<'js>(
    ctx: &Ctx<'js>,
    function: &Function<'js>,
    args: &[Arg],
) -> rquickjs::Result<Value<'js>> {
    let mut js = rquickjs::function::Args::new(ctx.clone(), args.len());
    for arg in args {
        match arg {
            Arg::Str(s) => js.push_arg(s.as_str())?,
            Arg::Votes(votes) => {
                let array = Array::new(ctx.clone())?;
                for (i, (member, vote)) in votes.iter().enumerate() {
                    let v = Object::new(ctx.clone())?;
                    v.set("member_id", member.as_str())?;
                    v.set("vote", *vote)?;
                    array.set(i, v)?;
                }
                js.push_arg(array)?;
            }
        }
    }
    function.call_arg(js)
}

fn to_json<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> rquickjs::Result<Option<Json>> {
    let Some(text) = ctx.json_stringify(value)? else {
        return Ok(None);
    };
    let text = text.to_string()?;
    // QuickJS's JSON is valid JSON; a failure here would be a bug, which
    // still must not panic.
    Ok(serde_json::from_str(&text).ok())
}

/// Turns a failed QuickJS call into a [`GovJsError`].
struct Classify<'a> {
    timed_out: &'a Cell<bool>,
    limits: GovLimits,
}

impl Classify<'_> {
    fn classify<'js>(&self, ctx: &Ctx<'js>, err: rquickjs::Error) -> GovJsError {
        if self.timed_out.get() {
            return GovJsError::Timeout {
                ms: self.limits.max_execution_time_ms,
            };
        }
        match err {
            rquickjs::Error::Exception => {}
            rquickjs::Error::Allocation => return GovJsError::HeapLimit,
            other => {
                return GovJsError::Exception {
                    message: other.to_string(),
                    stack: None,
                }
            }
        }
        let thrown = ctx.catch();
        let (message, stack) = describe(ctx, &thrown);
        if message == "InternalError: out of memory" {
            return GovJsError::HeapLimit;
        }
        if thrown.is_null() {
            // QuickJS throws `null` when it cannot even allocate the error
            // object; a script may also throw null itself.
            return GovJsError::Exception {
                message: "Uncaught null (or out of memory: QuickJS throws null when it cannot \
                          allocate the error; see max_heap_bytes)"
                    .to_string(),
                stack: None,
            };
        }
        if message == "RangeError: Maximum call stack size exceeded" {
            return GovJsError::StackOverflow;
        }
        GovJsError::Exception { message, stack }
    }

    /// A promise that never settled: a job that hit a limit ends the
    /// queue too, so a limit takes precedence over `otherwise`.
    fn never(&self, otherwise: GovJsError) -> GovJsError {
        if self.timed_out.get() {
            return GovJsError::Timeout {
                ms: self.limits.max_execution_time_ms,
            };
        }
        otherwise
    }

    /// Errors while loading the module: a thrown exception becomes
    /// [`GovJsError::Module`]; limits stay what they are.
    fn module<'js>(&self, ctx: &Ctx<'js>, err: rquickjs::Error) -> GovJsError {
        match self.classify(ctx, err) {
            GovJsError::Exception { message, .. } => GovJsError::Module(message),
            other => other,
        }
    }

    fn internal<'js>(&self, ctx: &Ctx<'js>, err: rquickjs::Error, what: &str) -> GovJsError {
        match self.classify(ctx, err) {
            GovJsError::Exception { message, .. } => {
                GovJsError::Internal(format!("{what}: {message}"))
            }
            other => other,
        }
    }
}

/// `"Name: message"` and the stack of a thrown value.
fn describe<'js>(ctx: &Ctx<'js>, thrown: &Value<'js>) -> (String, Option<String>) {
    if let Some(obj) = thrown.as_object() {
        if thrown.is_error() {
            let name = obj
                .get::<_, Option<Coerced<String>>>("name")
                .ok()
                .flatten()
                .map(|c| c.0)
                .unwrap_or_else(|| "Error".to_string());
            let message = obj
                .get::<_, Option<Coerced<String>>>("message")
                .ok()
                .flatten()
                .map(|c| c.0)
                .unwrap_or_default();
            let stack = obj
                .get::<_, Option<Coerced<String>>>("stack")
                .ok()
                .flatten()
                .map(|c| c.0)
                .filter(|s| !s.is_empty());
            let message = if message.is_empty() {
                name
            } else {
                format!("{name}: {message}")
            };
            return (message, stack);
        }
    }
    let text = match ctx.json_stringify(thrown.clone()) {
        Ok(Some(s)) => s.to_string().ok(),
        _ => None,
    };
    let text = text.unwrap_or_else(|| {
        <Coerced<String> as rquickjs::FromJs>::from_js(ctx, thrown.clone())
            .map(|c| c.0)
            .unwrap_or_else(|_| format!("a thrown {}", thrown.type_name()))
    });
    // Whatever the string conversion threw is not ours to keep.
    let _ = ctx.catch();
    (format!("Uncaught {text}"), None)
}

#[cfg(test)]
mod tests;
