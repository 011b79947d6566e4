//! The host functions behind the `ccf` global on QuickJS: KV access bound
//! to the current transaction, buffer conversions, the claims digest,
//! `ccf.consensus`, logging (`ccf.crypto` is in `crypto_bindings.rs`).
//!
//! They mirror `v8_engine/host.rs` one for one (names, arguments, results,
//! error types and messages), so the shared prelude behaves the same on
//! both engines. Every function takes its arguments as a list and checks
//! them itself: a missing or wrong argument is a JS `TypeError`, never a
//! panic.
//!
//! Buffers the host hands to JS (KV values, keys from `forEach`) are
//! copied into memory QuickJS allocates, so they count against the
//! runtime's memory limit.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use charter_ledger::Tx;
use rquickjs::function::Rest;
use rquickjs::{qjs, Array, ArrayBuffer, Coerced, Ctx, Exception, Function, Object, Value};

use crate::api::ConsensusView;

/// What the host functions of one execution share.
#[derive(Default)]
pub(super) struct State {
    /// The request's transaction, lent for the execution.
    pub(super) tx: Option<Tx>,
    /// Set by `ccf.rpc.setClaimsDigest`.
    pub(super) claims_digest: Option<[u8; 32]>,
    /// What `ccf.consensus` reads, if the node set it.
    pub(super) consensus: Option<Arc<dyn ConsensusView>>,
}

pub(super) type Shared = Rc<RefCell<State>>;

pub(super) type Args<'js> = Rest<Value<'js>>;

pub(super) fn arg<'js>(ctx: &Ctx<'js>, args: &Args<'js>, i: usize) -> Value<'js> {
    args.0
        .get(i)
        .cloned()
        .unwrap_or_else(|| Value::new_undefined(ctx.clone()))
}

fn with_tx<'js, R>(
    ctx: &Ctx<'js>,
    host: &Shared,
    f: impl FnOnce(&mut Tx) -> Result<R, String>,
) -> rquickjs::Result<R> {
    let result = match host.try_borrow_mut() {
        Ok(mut state) => match state.tx.as_mut() {
            Some(tx) => f(tx),
            None => {
                Err("the KV store is only available while a request is being handled".to_string())
            }
        },
        Err(_) => Err("the KV store is busy".to_string()),
    };
    result.map_err(|message| Exception::throw_message(ctx, &message))
}

/// Turns WTF-8 (UTF-8 that may encode lone surrogates, which is what
/// QuickJS produces for strings holding them) into a Rust string, each
/// lone surrogate becoming U+FFFD, as V8's lossy conversion does.
fn wtf8_lossy(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // `valid` is UTF-8 by construction.
                out.push_str(&String::from_utf8_lossy(valid));
                out.push('\u{FFFD}');
                // A surrogate is 3 bytes (ED A0..BF 80..BF); other bad
                // sequences are skipped as Rust's lossy decoding would.
                let skip = match after {
                    [0xED, b1, b2, ..]
                        if (0xA0..=0xBF).contains(b1) && (0x80..=0xBF).contains(b2) =>
                    {
                        3
                    }
                    _ => e.error_len().unwrap_or(after.len()).max(1),
                };
                rest = &after[skip.min(after.len())..];
            }
        }
    }
    out
}

/// The contents of a JS string, lone surrogates replaced by U+FFFD.
pub(super) fn lossy<'js>(ctx: &Ctx<'js>, s: &rquickjs::String<'js>) -> rquickjs::Result<String> {
    match s.to_string() {
        Ok(text) => Ok(text),
        Err(rquickjs::Error::Utf8(_)) => {
            let mut len: qjs::size_t = 0;
            // SAFETY: `s` is a live string of this context; QuickJS returns
            // a NUL-terminated buffer of `len` bytes (or NULL on failure),
            // which is freed below and not used after.
            let ptr = unsafe {
                qjs::JS_ToCStringLen2(ctx.as_raw().as_ptr(), &mut len, s.as_raw(), false)
            };
            if ptr.is_null() {
                return Err(rquickjs::Error::Exception);
            }
            let len = usize::try_from(len).unwrap_or(0);
            // SAFETY: see above.
            let text = wtf8_lossy(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) });
            // SAFETY: `ptr` came from JS_ToCStringLen2 on this context.
            unsafe { qjs::JS_FreeCString(ctx.as_raw().as_ptr(), ptr) };
            Ok(text)
        }
        Err(e) => Err(e),
    }
}

/// `String(value)`, lossily; a value whose conversion throws gives `None`
/// (and the exception is dropped).
pub(super) fn to_text<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> Option<String> {
    let converted =
        <Coerced<rquickjs::String<'js>> as rquickjs::FromJs<'js>>::from_js(ctx, value.clone())
            .and_then(|s| lossy(ctx, &s.0));
    match converted {
        Ok(text) => Some(text),
        Err(_) => {
            let _ = ctx.catch();
            None
        }
    }
}

/// The bytes of an ArrayBuffer (a detached one has none). Anything else
/// is `None`.
pub(super) fn bytes_of<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> Option<Vec<u8>> {
    // SAFETY: only reads the class id of a live value.
    if !unsafe { qjs::JS_IsArrayBuffer(value.as_raw()) } {
        return None;
    }
    let bytes =
        ArrayBuffer::from_value(value.clone()).and_then(|b| b.as_bytes().map(<[u8]>::to_vec));
    match bytes {
        Some(b) => Some(b),
        None => {
            // Detached: QuickJS left a TypeError pending; V8 reads it as
            // empty, and so do we.
            let _ = ctx.catch();
            Some(Vec::new())
        }
    }
}

/// A new ArrayBuffer holding a copy of `bytes`, allocated by QuickJS (so
/// it counts against the memory limit).
pub(super) fn array_buffer<'js>(ctx: &Ctx<'js>, bytes: &[u8]) -> rquickjs::Result<Value<'js>> {
    Ok(ArrayBuffer::new_copy(ctx.clone(), bytes)?.into_value())
}

pub(super) fn string_arg<'js>(
    ctx: &Ctx<'js>,
    value: &Value<'js>,
    what: &str,
) -> rquickjs::Result<String> {
    match value.as_string() {
        Some(s) => lossy(ctx, s),
        None => Err(Exception::throw_type(
            ctx,
            &format!("{what} must be a string"),
        )),
    }
}

pub(super) fn bytes_arg<'js>(
    ctx: &Ctx<'js>,
    value: &Value<'js>,
    what: &str,
) -> rquickjs::Result<Vec<u8>> {
    bytes_of(ctx, value).ok_or_else(|| {
        Exception::throw_type(
            ctx,
            &format!("{what} must be an ArrayBuffer (use ccf.strToBuf or ccf.jsonCompatibleToBuf)"),
        )
    })
}

/// Governance and internal tables are readable by apps but only the node
/// and the constitution change them, as in CCF (the rule of
/// `v8_engine/host.rs`).
fn writable_map<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> rquickjs::Result<String> {
    let map = string_arg(ctx, value, "map name")?;
    let reserved = ["public:ccf.", "ccf.", "private:ccf."];
    if reserved.iter().any(|p| map.starts_with(p)) {
        return Err(Exception::throw_type(
            ctx,
            &format!("map {map:?} is read-only for applications"),
        ));
    }
    Ok(map)
}

fn str_to_buf<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<Value<'js>> {
    let s = string_arg(&ctx, &arg(&ctx, &args, 0), "ccf.strToBuf's argument")?;
    array_buffer(&ctx, s.as_bytes())
}

fn buf_to_str<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<String> {
    let bytes = bytes_arg(&ctx, &arg(&ctx, &args, 0), "ccf.bufToStr's argument")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn kv_get<'js>(ctx: Ctx<'js>, host: &Shared, args: Args<'js>) -> rquickjs::Result<Value<'js>> {
    let map = string_arg(&ctx, &arg(&ctx, &args, 0), "map name")?;
    let key = bytes_arg(&ctx, &arg(&ctx, &args, 1), "key")?;
    match with_tx(&ctx, host, |tx| Ok(tx.get(&map, &key)))? {
        Some(value) => array_buffer(&ctx, &value),
        None => Ok(Value::new_undefined(ctx.clone())),
    }
}

fn kv_has<'js>(ctx: Ctx<'js>, host: &Shared, args: Args<'js>) -> rquickjs::Result<bool> {
    let map = string_arg(&ctx, &arg(&ctx, &args, 0), "map name")?;
    let key = bytes_arg(&ctx, &arg(&ctx, &args, 1), "key")?;
    with_tx(&ctx, host, |tx| Ok(tx.has(&map, &key)))
}

fn kv_set<'js>(ctx: Ctx<'js>, host: &Shared, args: Args<'js>) -> rquickjs::Result<()> {
    let map = writable_map(&ctx, &arg(&ctx, &args, 0))?;
    let key = bytes_arg(&ctx, &arg(&ctx, &args, 1), "key")?;
    let value = bytes_arg(&ctx, &arg(&ctx, &args, 2), "value")?;
    with_tx(&ctx, host, |tx| {
        tx.set(&map, &key, &value).map_err(|e| e.to_string())
    })
}

fn kv_delete<'js>(ctx: Ctx<'js>, host: &Shared, args: Args<'js>) -> rquickjs::Result<()> {
    let map = writable_map(&ctx, &arg(&ctx, &args, 0))?;
    let key = bytes_arg(&ctx, &arg(&ctx, &args, 1), "key")?;
    with_tx(&ctx, host, |tx| {
        tx.delete(&map, &key).map_err(|e| e.to_string())
    })
}

fn kv_clear<'js>(ctx: Ctx<'js>, host: &Shared, args: Args<'js>) -> rquickjs::Result<()> {
    let map = writable_map(&ctx, &arg(&ctx, &args, 0))?;
    with_tx(&ctx, host, |tx| tx.clear(&map).map_err(|e| e.to_string()))
}

fn kv_size<'js>(ctx: Ctx<'js>, host: &Shared, args: Args<'js>) -> rquickjs::Result<f64> {
    let map = string_arg(&ctx, &arg(&ctx, &args, 0), "map name")?;
    // Sizes are far below 2^53: the f64 is exact.
    with_tx(&ctx, host, |tx| Ok(tx.size(&map) as f64))
}

fn kv_entries<'js>(ctx: Ctx<'js>, host: &Shared, args: Args<'js>) -> rquickjs::Result<Array<'js>> {
    let map = string_arg(&ctx, &arg(&ctx, &args, 0), "map name")?;
    let entries = with_tx(&ctx, host, |tx| Ok(tx.entries(&map)))?;
    let out = Array::new(ctx.clone())?;
    for (i, (k, v)) in entries.iter().enumerate() {
        let pair = Array::new(ctx.clone())?;
        pair.set(0, array_buffer(&ctx, k)?)?;
        pair.set(1, array_buffer(&ctx, v)?)?;
        out.set(i, pair)?;
    }
    Ok(out)
}

fn kv_version_of_previous_write<'js>(
    ctx: Ctx<'js>,
    host: &Shared,
    args: Args<'js>,
) -> rquickjs::Result<Value<'js>> {
    let map = string_arg(&ctx, &arg(&ctx, &args, 0), "map name")?;
    let key = bytes_arg(&ctx, &arg(&ctx, &args, 1), "key")?;
    match with_tx(&ctx, host, |tx| Ok(tx.committed_version(&map, &key)))? {
        Some(seqno) => Ok(Value::new_float(ctx.clone(), seqno as f64)),
        None => Ok(Value::new_undefined(ctx.clone())),
    }
}

/// A transaction view or seqno: a non-negative integer (exact in a JS
/// number, so at most 2^53).
fn u64_arg<'js>(ctx: &Ctx<'js>, value: &Value<'js>, what: &str) -> rquickjs::Result<u64> {
    // Only numbers: converting anything else could run the app's valueOf.
    match value.as_number() {
        Some(n) if n.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&n) => Ok(n as u64),
        _ => Err(Exception::throw_type(
            ctx,
            &format!("{what} must be a non-negative integer"),
        )),
    }
}

/// The consensus of the current request, or a thrown error.
fn consensus(ctx: &Ctx<'_>, host: &Shared) -> rquickjs::Result<Arc<dyn ConsensusView>> {
    let c = host.try_borrow().ok().and_then(|s| s.consensus.clone());
    c.ok_or_else(|| {
        Exception::throw_message(
            ctx,
            "ccf.consensus is not available: this JS engine is not attached to a node",
        )
    })
}

fn consensus_last_committed<'js>(
    ctx: Ctx<'js>,
    host: &Shared,
    _args: Args<'js>,
) -> rquickjs::Result<Array<'js>> {
    let c = consensus(&ctx, host)?;
    let (view, seqno) = c.last_committed();
    let out = Array::new(ctx.clone())?;
    out.set(0, view as f64)?;
    out.set(1, seqno as f64)?;
    Ok(out)
}

fn consensus_status<'js>(
    ctx: Ctx<'js>,
    host: &Shared,
    args: Args<'js>,
) -> rquickjs::Result<String> {
    let view = u64_arg(&ctx, &arg(&ctx, &args, 0), "view")?;
    let seqno = u64_arg(&ctx, &arg(&ctx, &args, 1), "seqno")?;
    let c = consensus(&ctx, host)?;
    Ok(c.status(view, seqno).to_string())
}

fn consensus_view_for_seqno<'js>(
    ctx: Ctx<'js>,
    host: &Shared,
    args: Args<'js>,
) -> rquickjs::Result<Value<'js>> {
    let seqno = u64_arg(&ctx, &arg(&ctx, &args, 0), "seqno")?;
    let c = consensus(&ctx, host)?;
    Ok(match c.view_for_seqno(seqno) {
        Some(view) => Value::new_float(ctx.clone(), view as f64),
        None => Value::new_null(ctx.clone()),
    })
}

fn set_claims_digest<'js>(ctx: Ctx<'js>, host: &Shared, args: Args<'js>) -> rquickjs::Result<()> {
    let bytes = bytes_arg(&ctx, &arg(&ctx, &args, 0), "the claims digest")?;
    let digest = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        Exception::throw_type(
            &ctx,
            &format!("a claims digest is 32 bytes (SHA-256), got {}", bytes.len()),
        )
    })?;
    match host.try_borrow_mut() {
        Ok(mut state) => {
            state.claims_digest = Some(digest);
            Ok(())
        }
        Err(_) => Err(Exception::throw_message(&ctx, "the host is busy")),
    }
}

fn log<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<()> {
    let level = to_text(&ctx, &arg(&ctx, &args, 0)).unwrap_or_default();
    let message = to_text(&ctx, &arg(&ctx, &args, 1)).unwrap_or_default();
    match level.as_str() {
        "error" => tracing::error!(target: "charter::js", "{message}"),
        "warn" => tracing::warn!(target: "charter::js", "{message}"),
        "debug" => tracing::debug!(target: "charter::js", "{message}"),
        _ => tracing::info!(target: "charter::js", "{message}"),
    }
    Ok(())
}

thread_local! {
    /// Set while [`prepare_stack_trace`] runs on this thread.
    static PREPARING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `Error.prepareStackTrace(error, callSites)` on QuickJS: the stack as
/// QuickJS itself writes it (`    at f (app.js:3:9)` per frame). See
/// `prelude.js` in this directory for why it exists.
///
/// QuickJS calls it for every error it decorates, including its own
/// out-of-memory error; seeing that one sets `out_of_memory`, which ends
/// the execution as a heap-limit hit even if the script catches the
/// error (as on V8, where running out of heap cannot be caught).
///
/// It runs while QuickJS decorates an error, possibly with the heap full,
/// so it reads properties without running getters, only calls QuickJS's
/// native CallSite methods (never script code), gives up quietly (an
/// `undefined` stack) on any failure, and does nothing when re-entered.
pub(super) fn prepare_stack_trace<'js>(
    ctx: Ctx<'js>,
    args: Args<'js>,
    out_of_memory: &std::cell::Cell<bool>,
) -> Value<'js> {
    if PREPARING.with(|p| p.replace(true)) {
        return Value::new_undefined(ctx.clone());
    }
    if is_out_of_memory_error(&ctx, &arg(&ctx, &args, 0)) {
        out_of_memory.set(true);
    }
    let text = call_sites_text(&ctx, &arg(&ctx, &args, 1));
    PREPARING.with(|p| p.set(false));
    let value = text.and_then(|t| rquickjs::String::from_str(ctx.clone(), &t).ok());
    match value {
        Some(s) => s.into_value(),
        None => {
            // Whatever failed is not the script's business.
            let _ = ctx.catch();
            Value::new_undefined(ctx.clone())
        }
    }
}

/// Whether `value` is QuickJS's own `InternalError: out of memory` (with
/// no message at all when QuickJS had no room left for it), read from own
/// data properties only (no getter runs).
pub(super) fn is_out_of_memory_error<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> bool {
    if !value.is_error() {
        return false;
    }
    match own_data_text(ctx, value, c"message").as_deref() {
        Some("out of memory") => {}
        None if !has_own(ctx, value, c"message") => {}
        _ => return false,
    }
    // SAFETY: `value` is a live object of this context; for a non-proxy
    // object (errors are not proxies) QuickJS returns its prototype with a
    // new reference, which `from_raw` takes over.
    let proto = unsafe {
        Value::from_raw(
            ctx.clone(),
            qjs::JS_GetPrototype(ctx.as_raw().as_ptr(), value.as_raw()),
        )
    };
    own_data_text(ctx, &proto, c"name").as_deref() == Some("InternalError")
}

/// Whether `obj` has an own property `name` (no getter runs).
fn has_own<'js>(ctx: &Ctx<'js>, obj: &Value<'js>, name: &std::ffi::CStr) -> bool {
    own_property(ctx, obj, name).is_some()
}

/// The own data property `name` of `obj` if it is a string, without
/// running any getter.
fn own_data_text<'js>(ctx: &Ctx<'js>, obj: &Value<'js>, name: &std::ffi::CStr) -> Option<String> {
    let (value, is_accessor) = own_property(ctx, obj, name)?;
    if is_accessor {
        return None;
    }
    value.as_string().and_then(|s| s.to_string().ok())
}

/// The own property `name` of `obj`: its value (undefined for an
/// accessor) and whether it is an accessor. No getter runs.
fn own_property<'js>(
    ctx: &Ctx<'js>,
    obj: &Value<'js>,
    name: &std::ffi::CStr,
) -> Option<(Value<'js>, bool)> {
    if !obj.is_object() {
        return None;
    }
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: `name` is NUL-terminated; the atom is freed below.
    let atom = unsafe { qjs::JS_NewAtom(raw, name.as_ptr()) };
    if atom == qjs::JS_ATOM_NULL {
        let _ = ctx.catch();
        return None;
    }
    let mut desc = std::mem::MaybeUninit::<qjs::JSPropertyDescriptor>::uninit();
    // SAFETY: `obj` is a live object of this context; on a return of 1
    // QuickJS fills all of `desc` with new references.
    let found = unsafe { qjs::JS_GetOwnProperty(raw, desc.as_mut_ptr(), obj.as_raw(), atom) };
    // SAFETY: the atom came from JS_NewAtom above.
    unsafe { qjs::JS_FreeAtom(raw, atom) };
    if found < 0 {
        let _ = ctx.catch();
        return None;
    }
    if found == 0 {
        return None;
    }
    // SAFETY: found == 1: every field is initialised and owned by us.
    let desc = unsafe { desc.assume_init() };
    let (value, _getter, _setter) = unsafe {
        (
            Value::from_raw(ctx.clone(), desc.value),
            Value::from_raw(ctx.clone(), desc.getter),
            Value::from_raw(ctx.clone(), desc.setter),
        )
    };
    Some((value, desc.flags & qjs::JS_PROP_GETSET as i32 != 0))
}

fn call_sites_text<'js>(ctx: &Ctx<'js>, sites: &Value<'js>) -> Option<String> {
    let sites = sites.as_array()?;
    let mut out = String::new();
    for i in 0..sites.len() {
        let site: Object = sites.get(i).ok()?;
        let call = |name: &str| -> Option<Value<'js>> {
            let f: Function = site.get(name).ok()?;
            f.call((rquickjs::function::This(site.clone()),)).ok()
        };
        let text = |v: Option<Value<'js>>| -> Option<String> {
            v.and_then(|v| v.as_string().and_then(|s| lossy(ctx, s).ok()))
        };
        let function = text(call("getFunctionName")).filter(|n| !n.is_empty());
        let function = function.as_deref().unwrap_or("<anonymous>");
        if call("isNative").and_then(|v| v.as_bool()) == Some(true) {
            out.push_str(&format!("    at {function} (native)\n"));
            continue;
        }
        let file = text(call("getFileName")).unwrap_or_else(|| "<null>".to_string());
        let number = |name: &str| call(name).and_then(|v| v.as_number());
        match (number("getLineNumber"), number("getColumnNumber")) {
            (Some(line), Some(col)) if line >= 0.0 => {
                out.push_str(&format!("    at {function} ({file}:{line}:{col})\n"))
            }
            _ => out.push_str(&format!("    at {function} ({file})\n")),
        }
    }
    Some(out)
}

/// The `native` object the prelude receives.
pub(super) fn natives<'js>(ctx: &Ctx<'js>, host: &Shared) -> rquickjs::Result<Object<'js>> {
    let native = Object::new(ctx.clone())?;
    native.set("strToBuf", Function::new(ctx.clone(), str_to_buf)?)?;
    native.set("bufToStr", Function::new(ctx.clone(), buf_to_str)?)?;
    native.set("log", Function::new(ctx.clone(), log)?)?;
    macro_rules! with_host {
        ($name:literal, $f:ident) => {{
            let h = host.clone();
            native.set(
                $name,
                Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Args<'js>| {
                    $f(ctx, &h, args)
                })?,
            )?;
        }};
    }
    with_host!("kvGet", kv_get);
    with_host!("kvHas", kv_has);
    with_host!("kvSet", kv_set);
    with_host!("kvDelete", kv_delete);
    with_host!("kvClear", kv_clear);
    with_host!("kvSize", kv_size);
    with_host!("kvEntries", kv_entries);
    with_host!("setClaimsDigest", set_claims_digest);
    with_host!("kvVersionOfPreviousWrite", kv_version_of_previous_write);
    with_host!("consensusLastCommitted", consensus_last_committed);
    with_host!("consensusStatus", consensus_status);
    with_host!("consensusViewForSeqno", consensus_view_for_seqno);
    super::crypto_bindings::register(ctx, &native)?;
    Ok(native)
}

#[cfg(test)]
mod tests {
    use super::wtf8_lossy;

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(wtf8_lossy(b"plain"), "plain");
        assert_eq!(wtf8_lossy("h\u{e9}".as_bytes()), "h\u{e9}");
        // "a" U+D800 "b", as QuickJS encodes it.
        assert_eq!(wtf8_lossy(b"a\xED\xA0\x80b"), "a\u{FFFD}b");
        assert_eq!(wtf8_lossy(b"\xED\xBF\xBF"), "\u{FFFD}");
        assert_eq!(wtf8_lossy(b"x\xFFy"), "x\u{FFFD}y");
        assert_eq!(wtf8_lossy(b"x\xED"), "x\u{FFFD}");
    }
}
