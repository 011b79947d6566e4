//! The host functions behind the `ccf` global on V8: KV access bound to the
//! current transaction, buffer conversions, logging.
//!
//! The prelude (`prelude.js`) wraps these in CCF's API shape; here are only
//! the primitives. Every callback tolerates any argument (wrong type,
//! missing) by throwing a JS `TypeError`: nothing a handler passes can
//! panic the node, and no callback panics (a panic cannot unwind through
//! V8's frames).

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use charter_ledger::Tx;

use crate::api::ConsensusView;

thread_local! {
    /// The transaction of the request this worker thread is executing.
    static CURRENT_TX: RefCell<Option<Tx>> = const { RefCell::new(None) };
    /// The claims digest the current request set with `ccf.rpc.setClaimsDigest`.
    static CLAIMS_DIGEST: RefCell<Option<[u8; 32]>> = const { RefCell::new(None) };
    /// What `ccf.consensus` reads during the current request, if anything.
    static CONSENSUS: RefCell<Option<Arc<dyn ConsensusView>>> = const { RefCell::new(None) };
    /// The heap limit of the current execution, and whether a host
    /// function refused work because it could not fit in it.
    static HEAP_LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    static HEAP_REFUSED: Cell<bool> = const { Cell::new(false) };
}

/// Sets the heap limit host functions hold the next execution to.
pub(crate) fn set_heap_limit(max_heap_bytes: usize) {
    HEAP_LIMIT.with(|l| l.set(max_heap_bytes));
    HEAP_REFUSED.with(|r| r.set(false));
}

/// Whether a host function refused work past the heap limit during the
/// last execution (then its exception is a heap-limit hit).
pub(crate) fn take_heap_refused() -> bool {
    HEAP_REFUSED.with(|r| r.replace(false))
}

/// Sets what `ccf.consensus` reads for the next execution on this thread.
pub(crate) fn set_consensus(consensus: Option<Arc<dyn ConsensusView>>) {
    CONSENSUS.with(|c| *c.borrow_mut() = consensus);
}

/// Takes the claims digest the request set, if any.
pub(crate) fn take_claims_digest() -> Option<[u8; 32]> {
    CLAIMS_DIGEST.with(|c| c.borrow_mut().take())
}

/// Binds `tx` to this thread for the duration of one execution.
pub(crate) fn bind_tx(tx: Tx) {
    CURRENT_TX.with(|c| *c.borrow_mut() = Some(tx));
}

/// Takes the transaction back after an execution.
pub(crate) fn take_tx() -> Option<Tx> {
    CURRENT_TX.with(|c| c.borrow_mut().take())
}

pub(super) fn with_tx<R>(
    scope: &mut v8::HandleScope,
    f: impl FnOnce(&mut Tx) -> Result<R, String>,
) -> Option<R> {
    let result = CURRENT_TX.with(|c| match c.try_borrow_mut() {
        Ok(mut guard) => match guard.as_mut() {
            Some(tx) => f(tx),
            None => {
                Err("the KV store is only available while a request is being handled".to_string())
            }
        },
        Err(_) => Err("the KV store is busy".to_string()),
    });
    match result {
        Ok(r) => Some(r),
        Err(message) => {
            throw_error(scope, &message);
            None
        }
    }
}

pub(crate) fn throw_type_error(scope: &mut v8::HandleScope, message: &str) {
    if let Some(msg) = v8::String::new(scope, message) {
        let exception = v8::Exception::type_error(scope, msg);
        scope.throw_exception(exception);
    }
}

pub(crate) fn throw_error(scope: &mut v8::HandleScope, message: &str) {
    if let Some(msg) = v8::String::new(scope, message) {
        let exception = v8::Exception::error(scope, msg);
        scope.throw_exception(exception);
    }
}

/// A new ArrayBuffer owning `bytes`.
pub(crate) fn array_buffer<'s>(
    scope: &mut v8::HandleScope<'s>,
    bytes: Vec<u8>,
) -> v8::Local<'s, v8::ArrayBuffer> {
    let store = v8::ArrayBuffer::new_backing_store_from_vec(bytes).make_shared();
    v8::ArrayBuffer::with_backing_store(scope, &store)
}

/// The bytes of an ArrayBuffer or ArrayBuffer view (TypedArray, DataView).
pub(crate) fn bytes_of(value: v8::Local<v8::Value>) -> Option<Vec<u8>> {
    if let Ok(ab) = v8::Local::<v8::ArrayBuffer>::try_from(value) {
        let len = ab.byte_length();
        let Some(data) = ab.data() else {
            return Some(Vec::new());
        };
        // SAFETY: `data` points at the buffer's `len` bytes, which stay
        // alive while `ab` is (for the whole call) and are not resized.
        let slice = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, len) };
        return Some(slice.to_vec());
    }
    if let Ok(view) = v8::Local::<v8::ArrayBufferView>::try_from(value) {
        let mut out = vec![0u8; view.byte_length()];
        let n = view.copy_contents(&mut out);
        out.truncate(n);
        return Some(out);
    }
    None
}

pub(super) fn string_arg(
    scope: &mut v8::HandleScope,
    args: &v8::FunctionCallbackArguments,
    i: i32,
    what: &str,
) -> Option<String> {
    let value = args.get(i);
    if !value.is_string() {
        throw_type_error(scope, &format!("{what} must be a string"));
        return None;
    }
    Some(value.to_rust_string_lossy(scope))
}

pub(super) fn bytes_arg(
    scope: &mut v8::HandleScope,
    args: &v8::FunctionCallbackArguments,
    i: i32,
    what: &str,
) -> Option<Vec<u8>> {
    let bytes = bytes_of(args.get(i));
    if bytes.is_none() {
        throw_type_error(
            scope,
            &format!("{what} must be an ArrayBuffer (use ccf.strToBuf or ccf.jsonCompatibleToBuf)"),
        );
    }
    bytes
}

pub(super) fn new_string<'s>(
    scope: &mut v8::HandleScope<'s>,
    s: &str,
) -> Option<v8::Local<'s, v8::String>> {
    let out = v8::String::new(scope, s);
    if out.is_none() {
        let msg = "string is too long for the JS engine";
        if let Some(m) = v8::String::new(scope, msg) {
            let e = v8::Exception::range_error(scope, m);
            scope.throw_exception(e);
        }
    }
    out
}

fn str_to_buf(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    // A string longer than the heap limit (a rope, which costs little
    // until it is flattened: `"x".repeat(2 ** 28)`) cannot become bytes
    // within it; refuse before flattening and copying it.
    let value = args.get(0);
    if value.is_string() {
        let length = value.to_string(scope).map_or(0, |s| s.length());
        if length > HEAP_LIMIT.with(Cell::get) {
            HEAP_REFUSED.with(|r| r.set(true));
            throw_range_error(
                scope,
                "ccf.strToBuf: the string is larger than the heap limit",
            );
            return;
        }
    }
    let Some(s) = string_arg(scope, &args, 0, "ccf.strToBuf's argument") else {
        return;
    };
    let ab = array_buffer(scope, s.into_bytes());
    rv.set(ab.into());
}

fn buf_to_str(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(bytes) = bytes_arg(scope, &args, 0, "ccf.bufToStr's argument") else {
        return;
    };
    let text = String::from_utf8_lossy(&bytes);
    if let Some(s) = new_string(scope, &text) {
        rv.set(s.into());
    }
}

/// The longest string `normalize` takes on V8 (UTF-16 code units).
const MAX_NORMALIZE_CHARS: usize = 1 << 20;

/// `String.prototype.normalize`'s work on V8 (the prelude checks the
/// form): this V8 has ICU's code but not its data, and its NFKC and NFKD
/// crash the process.
fn normalize(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    use icu_normalizer::{ComposingNormalizerBorrowed, DecomposingNormalizerBorrowed};
    // The host call cannot be interrupted and its copies are outside the
    // heap budget (NFKD can make 18 characters of one), so the input is
    // bounded; QuickJS's own normalize runs inside its limits.
    let length = args.get(0).to_string(scope).map_or(0, |s| s.length());
    if length > MAX_NORMALIZE_CHARS {
        throw_range_error(
            scope,
            &format!(
                "String.prototype.normalize: strings longer than {MAX_NORMALIZE_CHARS} characters are not normalized on this engine"
            ),
        );
        return;
    }
    let text = args.get(0).to_rust_string_lossy(scope);
    let form = args.get(1).to_rust_string_lossy(scope);
    let normalized = match form.as_str() {
        "NFC" => ComposingNormalizerBorrowed::new_nfc().normalize(&text),
        "NFKC" => ComposingNormalizerBorrowed::new_nfkc().normalize(&text),
        "NFD" => DecomposingNormalizerBorrowed::new_nfd().normalize(&text),
        "NFKD" => DecomposingNormalizerBorrowed::new_nfkd().normalize(&text),
        _ => {
            throw_range_error(
                scope,
                "the normalization form must be NFC, NFD, NFKC or NFKD",
            );
            return;
        }
    };
    if let Some(s) = new_string(scope, &normalized) {
        rv.set(s.into());
    }
}

fn kv_get(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(map) = string_arg(scope, &args, 0, "map name") else {
        return;
    };
    let Some(key) = bytes_arg(scope, &args, 1, "key") else {
        return;
    };
    match with_tx(scope, |tx| Ok(tx.get(&map, &key))) {
        Some(Some(value)) => {
            let ab = array_buffer(scope, value);
            rv.set(ab.into());
        }
        Some(None) => rv.set_undefined(),
        None => {}
    }
}

fn kv_has(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(map) = string_arg(scope, &args, 0, "map name") else {
        return;
    };
    let Some(key) = bytes_arg(scope, &args, 1, "key") else {
        return;
    };
    if let Some(has) = with_tx(scope, |tx| Ok(tx.has(&map, &key))) {
        rv.set_bool(has);
    }
}

/// Governance and internal tables (`public:ccf.gov.*`,
/// `public:ccf.internal.*`, ...) are readable by apps but only the node and
/// the constitution change them, as in CCF.
fn writable_map(
    scope: &mut v8::HandleScope,
    args: &v8::FunctionCallbackArguments,
) -> Option<String> {
    let map = string_arg(scope, args, 0, "map name")?;
    let reserved = ["public:ccf.", "ccf.", "private:ccf."];
    if reserved.iter().any(|p| map.starts_with(p)) {
        throw_type_error(scope, &format!("map {map:?} is read-only for applications"));
        return None;
    }
    Some(map)
}

fn kv_set(scope: &mut v8::HandleScope, args: v8::FunctionCallbackArguments, _rv: v8::ReturnValue) {
    let Some(map) = writable_map(scope, &args) else {
        return;
    };
    let Some(key) = bytes_arg(scope, &args, 1, "key") else {
        return;
    };
    let Some(value) = bytes_arg(scope, &args, 2, "value") else {
        return;
    };
    with_tx(scope, |tx| {
        tx.set(&map, &key, &value).map_err(|e| e.to_string())
    });
}

fn kv_delete(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    _rv: v8::ReturnValue,
) {
    let Some(map) = writable_map(scope, &args) else {
        return;
    };
    let Some(key) = bytes_arg(scope, &args, 1, "key") else {
        return;
    };
    with_tx(scope, |tx| tx.delete(&map, &key).map_err(|e| e.to_string()));
}

fn kv_clear(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    _rv: v8::ReturnValue,
) {
    let Some(map) = writable_map(scope, &args) else {
        return;
    };
    with_tx(scope, |tx| tx.clear(&map).map_err(|e| e.to_string()));
}

fn kv_size(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(map) = string_arg(scope, &args, 0, "map name") else {
        return;
    };
    if let Some(n) = with_tx(scope, |tx| Ok(tx.size(&map))) {
        rv.set_double(n as f64);
    }
}

fn kv_entries(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(map) = string_arg(scope, &args, 0, "map name") else {
        return;
    };
    let Some(entries) = with_tx(scope, |tx| Ok(tx.entries(&map))) else {
        return;
    };
    let mut pairs = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let k = array_buffer(scope, k);
        let v = array_buffer(scope, v);
        pairs.push(v8::Array::new_with_elements(scope, &[k.into(), v.into()]).into());
    }
    rv.set(v8::Array::new_with_elements(scope, &pairs).into());
}

fn kv_version_of_previous_write(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(map) = string_arg(scope, &args, 0, "map name") else {
        return;
    };
    let Some(key) = bytes_arg(scope, &args, 1, "key") else {
        return;
    };
    match with_tx(scope, |tx| Ok(tx.committed_version(&map, &key))) {
        Some(Some(seqno)) => rv.set_double(seqno as f64),
        Some(None) => rv.set_undefined(),
        None => {}
    }
}

pub(crate) fn throw_range_error(scope: &mut v8::HandleScope, message: &str) {
    if let Some(msg) = v8::String::new(scope, message) {
        let exception = v8::Exception::range_error(scope, msg);
        scope.throw_exception(exception);
    }
}

/// A transaction view or seqno: a non-negative integer (exact in a JS
/// number, so at most 2^53).
pub(super) fn u64_arg(
    scope: &mut v8::HandleScope,
    args: &v8::FunctionCallbackArguments,
    i: i32,
    what: &str,
) -> Option<u64> {
    let value = args.get(i);
    // Only numbers: converting anything else could run the app's valueOf.
    let n = if value.is_number() {
        value.number_value(scope)
    } else {
        None
    };
    match n {
        Some(n) if n.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&n) => {
            Some(n as u64)
        }
        _ => {
            throw_type_error(scope, &format!("{what} must be a non-negative integer"));
            None
        }
    }
}

/// The consensus of the current request, or a thrown error.
fn consensus(scope: &mut v8::HandleScope) -> Option<Arc<dyn ConsensusView>> {
    let c = CONSENSUS.with(|c| c.borrow().clone());
    if c.is_none() {
        throw_error(
            scope,
            "ccf.consensus is not available: this JS engine is not attached to a node",
        );
    }
    c
}

fn consensus_last_committed(
    scope: &mut v8::HandleScope,
    _args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(c) = consensus(scope) else {
        return;
    };
    let (view, seqno) = c.last_committed();
    let view = v8::Number::new(scope, view as f64);
    let seqno = v8::Number::new(scope, seqno as f64);
    rv.set(v8::Array::new_with_elements(scope, &[view.into(), seqno.into()]).into());
}

fn consensus_status(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(view) = u64_arg(scope, &args, 0, "view") else {
        return;
    };
    let Some(seqno) = u64_arg(scope, &args, 1, "seqno") else {
        return;
    };
    let Some(c) = consensus(scope) else {
        return;
    };
    if let Some(s) = new_string(scope, c.status(view, seqno)) {
        rv.set(s.into());
    }
}

fn consensus_view_for_seqno(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(seqno) = u64_arg(scope, &args, 0, "seqno") else {
        return;
    };
    let Some(c) = consensus(scope) else {
        return;
    };
    match c.view_for_seqno(seqno) {
        Some(view) => rv.set_double(view as f64),
        None => rv.set_null(),
    }
}

fn set_claims_digest(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    _rv: v8::ReturnValue,
) {
    let Some(bytes) = bytes_arg(scope, &args, 0, "the claims digest") else {
        return;
    };
    match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(digest) => CLAIMS_DIGEST.with(|c| *c.borrow_mut() = Some(digest)),
        Err(_) => throw_type_error(
            scope,
            &format!("a claims digest is 32 bytes (SHA-256), got {}", bytes.len()),
        ),
    }
}

fn log(scope: &mut v8::HandleScope, args: v8::FunctionCallbackArguments, _rv: v8::ReturnValue) {
    let level = args.get(0).to_rust_string_lossy(scope);
    let message = args.get(1).to_rust_string_lossy(scope);
    match level.as_str() {
        "error" => tracing::error!(target: "charter::js", "{message}"),
        "warn" => tracing::warn!(target: "charter::js", "{message}"),
        "debug" => tracing::debug!(target: "charter::js", "{message}"),
        _ => tracing::info!(target: "charter::js", "{message}"),
    }
}

/// The `native` object the prelude receives.
pub(crate) fn natives<'s>(scope: &mut v8::HandleScope<'s>) -> Option<v8::Local<'s, v8::Object>> {
    let obj = v8::Object::new(scope);
    macro_rules! add {
        ($name:literal, $f:expr) => {{
            let f = v8::Function::new(scope, $f)?;
            let k = v8::String::new(scope, $name)?;
            obj.set(scope, k.into(), f.into())?;
        }};
    }
    add!("strToBuf", str_to_buf);
    add!("bufToStr", buf_to_str);
    add!("kvGet", kv_get);
    add!("kvHas", kv_has);
    add!("kvSet", kv_set);
    add!("kvDelete", kv_delete);
    add!("kvClear", kv_clear);
    add!("kvSize", kv_size);
    add!("kvEntries", kv_entries);
    add!("log", log);
    add!("normalize", normalize);
    add!("setClaimsDigest", set_claims_digest);
    add!("kvVersionOfPreviousWrite", kv_version_of_previous_write);
    add!("consensusLastCommitted", consensus_last_committed);
    add!("consensusStatus", consensus_status);
    add!("consensusViewForSeqno", consensus_view_for_seqno);
    super::crypto_bindings::register(scope, obj)?;
    Some(obj)
}
