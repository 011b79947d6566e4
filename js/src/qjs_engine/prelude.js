// Runs first in every fresh QuickJS context, before the shared prelude
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
(function (prepare) {
  "use strict";
  Error.prepareStackTrace = prepare;
  Object.defineProperty(Error, "prepareStackTrace", {
    value: prepare,
    writable: false,
    enumerable: false,
    configurable: false,
  });
})
