// Runs first in every new QuickJS context, before the shared prelude
// (js/src/prelude.js) and any app code. Rust passes in `prepare`, a native
// Error.prepareStackTrace (qjs_engine/host.rs).
//
// Why: when QuickJS-ng 0.8 decorates an error with its stack while the
// heap is full, the allocations it makes can fail, and the out-of-memory
// error it then throws frees the error being decorated, which it goes on
// using (a use-after-free, seen as a crash under heap bombs). With a
// prepareStackTrace installed, QuickJS holds the error aside while it
// builds the stack, so nothing it throws there can free it. The property
// is then made read-only, so an app cannot take the protection away.
//
// That path has a bug of its own (QuickJS-ng 0.9, build_backtrace): when
// adding a call site to the array it hands to prepareStackTrace fails for
// lack of memory, the call site is freed twice (a double free, seen as
// crashes under concurrent heap bombs). With a stack trace limit of 0 no
// call site is made, so QuickJS's error stacks are empty. The limit
// QuickJS uses is internal; `Error.stackTraceLimit` then reads 10, as on
// V8 (and harden.js makes it read-only).
(function (prepare) {
  "use strict";
  Error.stackTraceLimit = 0;
  Object.defineProperty(Error, "stackTraceLimit", {
    value: 10,
    writable: true,
    enumerable: true,
    configurable: true,
  });
  Error.prepareStackTrace = prepare;
  Object.defineProperty(Error, "prepareStackTrace", {
    value: prepare,
    writable: false,
    enumerable: false,
    configurable: false,
  });
})
