//! Per-isolate JS stack limit, so governance can change `max_stack_bytes`
//! without restarting V8 or the process.
//!
//! The `v8` crate (130.0.7) has no binding for
//! `void v8::Isolate::SetStackLimit(uintptr_t stack_limit)`, but the
//! prebuilt `librusty_v8.a` the crate links exports the C++ function itself
//! (`T _ZN2v87Isolate13SetStackLimitEm`, from V8's `api.cc`, which is linked
//! anyway). We call it directly under its Itanium-mangled name: on x86-64 and
//! aarch64 System V a non-virtual member function is a plain function whose
//! first argument is `this`, and the crate's `*mut v8::Isolate` is the C++
//! `v8::Isolate*` (its own bindings, e.g. `v8__Isolate__GetHeapStatistics`,
//! pass it as such). `uintptr_t` (`unsigned long`, mangled `m`) is `usize`.
//!
//! What V8 does with it (`StackGuard::SetStackLimit`, V8 13.0): sets both the
//! limit JS code checks on function entry and the "C limit" the parser,
//! bytecode generator and JSON/regexp builtins check, so deep recursion in
//! either is a catchable `RangeError` ("Maximum call stack size exceeded").
//! The limit belongs to the isolate and stays until set again (a pending
//! interrupt, e.g. `terminate_execution`, keeps working: V8 only records the
//! new value as the "real" limit and restores it once the interrupt is
//! handled).
//!
//! Interaction with the process-wide `--stack-size` flag: the flag only
//! provides each isolate's *initial* limit (the stack position where the
//! isolate is created, minus the flag), which this call replaces. The flag
//! still matters elsewhere, so it should stay small (V8's default, 984 KiB,
//! or the 1 MiB default limit) rather than follow `max_stack_bytes`: V8's
//! own platform threads (concurrent/background compilation, with glibc's
//! default thread stack: `ulimit -s`, usually 8 MiB) take their limits from
//! the flag relative to *their* stacks (`LocalIsolate`), so a 64 MiB flag
//! could let them overflow their real stacks.

/// Below this budget V8 cannot even run the host's own setup code; the same
/// floor as QuickJS's `MIN_STACK_BYTES`.
const MIN_BUDGET_BYTES: usize = 64 * 1024;

/// Real stack always left below the JS limit, whatever the caller asks for:
/// V8's runtime functions, the GC and the host's Rust callbacks run there
/// once JS is at its limit. A backstop only; worker threads should be made
/// with more (see [`set_stack_limit`]).
const MIN_NATIVE_MARGIN_BYTES: usize = 2 * 1024 * 1024;

extern "C" {
    /// `void v8::Isolate::SetStackLimit(uintptr_t stack_limit)`: the address
    /// below which the isolate's stack may not grow (the stack grows down).
    /// Aborts the process (V8 `CHECK`) if `stack_limit` is 0.
    #[link_name = "_ZN2v87Isolate13SetStackLimitEm"]
    fn isolate_set_stack_limit(isolate: *mut v8::Isolate, stack_limit: usize);
}

/// Lets JS running on `isolate` from (about) this stack depth use
/// `max_stack_bytes` of stack (at least 64 KiB) before recursion throws a
/// catchable `RangeError`. Returns the budget actually set, in bytes: less
/// than asked if the thread's real stack could not hold it plus a 2 MiB
/// margin for native code (a backstop that keeps a wrong call from
/// overflowing the real stack, logged as a warning).
///
/// Preconditions (not memory-safety ones, thanks to the backstop, but the
/// limit is only honoured if they hold):
/// - Call it on the thread that runs `isolate`, shallower than or at the
///   depth JS is entered from (e.g. in the worker loop, just before a
///   job): the budget is measured from this function's frame, so frames
///   between it and the JS entry count against the budget.
/// - That thread must have at least `max_stack_bytes` plus a margin of real
///   stack left here. Size worker threads for the largest value governance
///   allows (64 MiB) plus a margin (8 MiB, as today): a thread's stack is
///   reserved address space, only pages actually touched use memory.
/// - Call it again after creating a new isolate: a fresh isolate starts
///   with the `--stack-size` flag's limit.
///
/// Cost: a thread-local read and a short mutex inside V8, so calling it
/// before every job is fine and simplest (no need to track changes).
pub(crate) fn set_stack_limit(isolate: &mut v8::Isolate, max_stack_bytes: usize) -> usize {
    let marker = 0u8;
    // Any address in this frame will do; `black_box` keeps `marker` on the
    // stack.
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let budget = max_stack_bytes.max(MIN_BUDGET_BYTES);
    let mut limit = here.saturating_sub(budget);
    let floor = thread_stack_low().saturating_add(MIN_NATIVE_MARGIN_BYTES);
    if limit < floor {
        tracing::warn!(
            max_stack_bytes,
            available = here.saturating_sub(floor),
            "the JS worker thread's stack is too small for the stack limit; using less"
        );
        limit = floor.min(here);
    }
    // V8 CHECKs that the limit is not 0 (only conceivable if the thread's
    // stack bounds were unknown and `budget` exceeded the address).
    let limit = limit.max(1);
    // SAFETY: `isolate` is a live isolate (we hold a `&mut` to it) and the
    // only thing V8 does is record the limit under its own lock. The
    // symbol's signature is `void (v8::Isolate*, unsigned long)`, see the
    // module docs.
    unsafe { isolate_set_stack_limit(isolate, limit) };
    here - limit
}

/// The lowest address of the current thread's stack, or 0 if unknown.
/// Cached per thread: it never changes, and on the main thread glibc reads
/// `/proc/self/maps` to find it.
fn thread_stack_low() -> usize {
    thread_local! {
        static LOW: usize = query_thread_stack_low();
    }
    LOW.with(|low| *low)
}

#[cfg(target_os = "linux")]
fn query_thread_stack_low() -> usize {
    // SAFETY: `pthread_getattr_np` fills `attr` for the calling thread (an
    // all-zero `pthread_attr_t` is a valid out-parameter); it is destroyed
    // exactly once, after its last use, and only if it was filled.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return 0;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc == 0 {
            addr as usize
        } else {
            0
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn query_thread_stack_low() -> usize {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    /// Real stack the test threads have beyond the largest budget they set.
    const MARGIN: usize = 8 * MIB;

    /// Recurses until V8 stops it; evaluates to `"<depth> <is RangeError>"`.
    const PROBE: &str = "let d = 0; function f() { d++; f(); } \
                         try { f(); 'no overflow' } catch (e) { d + ' ' + (e instanceof RangeError) }";

    /// Runs `body` on a fresh thread with `stack` bytes of stack, as a JS
    /// worker would, and returns its result (a panic fails the test).
    fn on_thread<T: Send + 'static>(stack: usize, body: impl FnOnce() -> T + Send + 'static) -> T {
        super::super::init_v8();
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(body)
            .expect("spawn")
            .join()
            .expect("the test thread panicked")
    }

    fn new_isolate() -> v8::OwnedIsolate {
        v8::Isolate::new(v8::CreateParams::default())
    }

    /// Runs [`PROBE`] in a fresh context; returns the depth reached and
    /// asserts the overflow was a catchable `RangeError`.
    fn probe(isolate: &mut v8::OwnedIsolate) -> u64 {
        let scope = &mut v8::HandleScope::new(isolate);
        let context = v8::Context::new(scope, Default::default());
        let scope = &mut v8::ContextScope::new(scope, context);
        let code = v8::String::new(scope, PROBE).expect("source");
        let script = v8::Script::compile(scope, code, None).expect("compile");
        let out = script
            .run(scope)
            .expect("the overflow escaped the try")
            .to_rust_string_lossy(scope);
        let (depth, range_error) = out.split_once(' ').expect(&out);
        assert_eq!(range_error, "true", "not a RangeError: {out}");
        depth.parse().expect(&out)
    }

    /// Sets the limit and probes; also checks the budget was not clamped.
    fn depth_at(isolate: &mut v8::OwnedIsolate, budget: usize) -> u64 {
        assert_eq!(set_stack_limit(isolate, budget), budget);
        probe(isolate)
    }

    #[test]
    fn depth_scales_with_the_budget() {
        let (small, large) = on_thread(80 * MIB, || {
            let small = depth_at(&mut new_isolate(), 256 * KIB);
            let large = depth_at(&mut new_isolate(), 4 * MIB);
            (small, large)
        });
        eprintln!("depth: 256 KiB -> {small}, 4 MiB -> {large}");
        assert!(small > 100, "{small}");
        assert!(large >= 4 * small, "256 KiB: {small}, 4 MiB: {large}");
    }

    #[test]
    fn the_same_isolate_follows_changes() {
        let (a, b, c, d) = on_thread(80 * MIB, || {
            let mut isolate = new_isolate();
            let a = depth_at(&mut isolate, 256 * KIB);
            let b = depth_at(&mut isolate, 4 * MIB);
            let c = depth_at(&mut isolate, 256 * KIB);
            let d = depth_at(&mut isolate, 4 * MIB);
            (a, b, c, d)
        });
        eprintln!(
            "depth on one isolate: 256 KiB -> {a}, 4 MiB -> {b}, 256 KiB -> {c}, 4 MiB -> {d}"
        );
        assert!(b >= 4 * a, "small {a} then large {b}");
        assert!(b >= 4 * c, "large {b} then small {c}");
        assert!(d >= 4 * c, "small {c} then large {d}");
    }

    #[test]
    fn the_governance_maximum_fits_its_thread() {
        let (mid, max) = on_thread(64 * MIB + MARGIN, || {
            let mut isolate = new_isolate();
            let mid = depth_at(&mut isolate, 4 * MIB);
            let max = depth_at(&mut isolate, 64 * MIB);
            (mid, max)
        });
        eprintln!("depth: 4 MiB -> {mid}, 64 MiB -> {max}");
        assert!(max >= 8 * mid, "4 MiB: {mid}, 64 MiB: {max}");
    }

    #[test]
    fn a_budget_beyond_the_thread_is_clamped() {
        // glibc may hand the thread a larger cached stack than asked for,
        // so compare with the stack the thread really has.
        let (set, real, depth) = on_thread(4 * MIB, || {
            let mut isolate = new_isolate();
            let set = set_stack_limit(&mut isolate, 64 * MIB);
            let marker = 0u8; // a local: `&0u8` would point to a static
            let top = std::hint::black_box(&marker) as *const u8 as usize;
            (set, top - thread_stack_low(), probe(&mut isolate))
        });
        eprintln!("4 MiB thread ({real} bytes real), 64 MiB asked: {set} bytes set, depth {depth}");
        assert!(real < 64 * MIB, "{real}");
        assert!(
            set + MIN_NATIVE_MARGIN_BYTES <= real + 4096,
            "{set} of {real}"
        );
        assert!(depth > 100, "{depth}");
    }

    #[test]
    fn tiny_budgets_get_the_floor() {
        let set = on_thread(8 * MIB, || set_stack_limit(&mut new_isolate(), 1024));
        assert_eq!(set, MIN_BUDGET_BYTES);
    }
}
