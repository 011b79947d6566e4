// Hardens a realm so that one context can serve many requests without one
// request's JS state reaching the next. Runs once per context, after the
// prelude (js/src/prelude.js), on both engines. Returns `endRequest`, which
// the engine calls after every request and which answers whether the
// context is still clean enough to serve another one.
//
// The model (see docs/ARCHITECTURE.md, "JS isolation"):
// - Every object reachable from the global object, and the intrinsics
//   reachable only from instances (iterator and generator prototypes, ...),
//   is frozen: no request can change a builtin or a prototype. Writing one
//   throws a TypeError.
// - So that ordinary code still runs, the few inherited properties that
//   code commonly assigns on its own objects (`constructor`, `toString`,
//   `name`, `message`, ...) become accessors whose setter defines the
//   property on the object assigned to, as an unfrozen realm would.
//   Without this, `Sub.prototype.constructor = Sub` or
//   `MyError.prototype.name = "MyError"` would throw (the "override
//   mistake" of frozen prototypes).
// - The global object itself stays open: a request may add and change
//   globals. `endRequest` deletes what it added and puts back what it
//   changed. The original globals cannot be deleted or redefined, only
//   assigned.
// - Each request gets a fresh instance of the app's modules, so module
//   state starts over too; the engine does that.
// - What would let state or work outlive a request is removed: RegExp's
//   legacy static properties (RegExp.$1 ... hold the last match),
//   WeakRef and FinalizationRegistry (callbacks run later), Atomics.wait
//   (blocks the thread) and WebAssembly (memory outside the heap limit;
//   QuickJS has none either).
(function () {
  "use strict";
  const getPrototypeOf = Object.getPrototypeOf;
  const setPrototypeOf = Object.setPrototypeOf;
  const getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  const defineProperty = Object.defineProperty;
  const freeze = Object.freeze;
  const isExtensible = Object.isExtensible;
  const ownKeys = Reflect.ownKeys;
  const deleteProperty = Reflect.deleteProperty;
  const TypeErrorType = TypeError;
  const StringType = String;
  const global = globalThis;

  for (const name of [
    "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9",
    "input", "$_", "lastMatch", "$&", "lastParen", "$+",
    "leftContext", "$`", "rightContext", "$'",
  ]) {
    delete RegExp[name];
  }
  delete global.WeakRef;
  delete global.FinalizationRegistry;
  delete global.WebAssembly;
  // No threads to share memory with, and QuickJS-ng overflows a grown
  // SharedArrayBuffer's memory.
  delete global.SharedArrayBuffer;
  // QuickJS only: a real clock (and the realm's age), which
  // ccf.enableUntrustedDateTime does not gate; V8 has neither global.
  delete global.performance;
  delete global.queueMicrotask;
  // Resizable ArrayBuffers: V8 reserves and commits their memory outside
  // the ArrayBuffer allocator that counts buffers against the heap limit,
  // so `maxByteLength` is refused, on both engines alike.
  {
    const FixedArrayBuffer = ArrayBuffer;
    const construct = Reflect.construct;
    const RangeErrorType = RangeError;
    const Wrapped = function ArrayBuffer(length, options) {
      if (new.target === undefined) {
        throw new TypeErrorType("Constructor ArrayBuffer requires 'new'");
      }
      if (options !== null && typeof options === "object" && options.maxByteLength !== undefined) {
        throw new RangeErrorType(
          "resizable ArrayBuffers (maxByteLength) are not supported: their memory is outside the heap limit");
      }
      return construct(FixedArrayBuffer, [length], new.target);
    };
    defineProperty(Wrapped, "length", { value: 1, configurable: true });
    defineProperty(Wrapped, "prototype", { value: FixedArrayBuffer.prototype, writable: false });
    defineProperty(Wrapped, "isView", getOwnPropertyDescriptor(FixedArrayBuffer, "isView"));
    defineProperty(Wrapped, Symbol.species, getOwnPropertyDescriptor(FixedArrayBuffer, Symbol.species));
    defineProperty(FixedArrayBuffer.prototype, "constructor", {
      value: Wrapped, writable: true, configurable: true,
    });
    defineProperty(global, "ArrayBuffer", {
      value: Wrapped, writable: true, configurable: true,
    });
  }
  if (typeof Atomics === "object") {
    delete Atomics.wait;
    delete Atomics.waitAsync;
  }

  // Bulk builtins over huge lengths. Some of V8's run without checking
  // for interrupts, or allocate past what the heap limit's grant covers,
  // and then abort the whole process: `new Array(1e8).fill(0)`,
  // `new Array(2 ** 32 - 1).toReversed()` (or `.with()`, `.toSpliced()`),
  // `"a".repeat(2 ** 27).split("")`, `String.raw({ raw: { length: 2 ** 31 } })`.
  // Past 2^20 elements each is a JS loop with the same result, which the
  // heap and time limits stop like any other code. Both engines run the
  // same replacements, so they give the same answers.
  {
    const apply = Reflect.apply;
    const ObjectType = Object;
    const NumberType = Number;
    const StringType = String;
    const ArrayType = Array;
    const RangeErrorType = RangeError;
    const trunc = Math.trunc;
    const min = Math.min;
    const max = Math.max;
    const NATIVE_MAX = 1 << 20;
    const integer = (v) => {
      const n = NumberType(v);
      return n !== n ? 0 : trunc(n) + 0;
    };
    const relative = (v, len) => (v < 0 ? max(len + v, 0) : min(v, len));
    const object = (self, name) => {
      if (self === null || self === undefined) {
        throw new TypeErrorType(name + " called on null or undefined");
      }
      return ObjectType(self);
    };
    const lengthOf = (o) => min(max(integer(o.length), 0), 2 ** 53 - 1);
    const replace = (target, name, method) =>
      defineProperty(target, name, { value: method, writable: true, configurable: true });

    const nativeFill = Array.prototype.fill;
    replace(Array.prototype, "fill", {
      fill(value, start, end) {
        const o = object(this, "Array.prototype.fill");
        const len = lengthOf(o);
        let k = relative(integer(start), len);
        const last = relative(end === undefined ? len : integer(end), len);
        if (last - k <= NATIVE_MAX) return apply(nativeFill, o, [value, k, last]);
        for (; k < last; k++) o[k] = value;
        return o;
      },
    }.fill);

    const nativeToReversed = Array.prototype.toReversed;
    if (nativeToReversed !== undefined) {
      replace(Array.prototype, "toReversed", {
        toReversed() {
          const o = object(this, "Array.prototype.toReversed");
          const len = lengthOf(o);
          if (len <= NATIVE_MAX) return apply(nativeToReversed, o, []);
          const a = new ArrayType(len);
          for (let k = 0; k < len; k++) a[k] = o[len - 1 - k];
          return a;
        },
      }.toReversed);
    }

    const nativeWith = Array.prototype.with;
    if (nativeWith !== undefined) {
      replace(Array.prototype, "with", {
        with(index, value) {
          const o = object(this, "Array.prototype.with");
          const len = lengthOf(o);
          if (len <= NATIVE_MAX) return apply(nativeWith, o, [index, value]);
          const rel = integer(index);
          const at = rel >= 0 ? rel : len + rel;
          if (at >= len || at < 0) throw new RangeErrorType("Invalid index : " + index);
          const a = new ArrayType(len);
          for (let k = 0; k < len; k++) a[k] = k === at ? value : o[k];
          return a;
        },
      }.with);
    }

    const nativeToSpliced = Array.prototype.toSpliced;
    if (nativeToSpliced !== undefined) {
      replace(Array.prototype, "toSpliced", {
        toSpliced(start, skipCount, ...items) {
          const o = object(this, "Array.prototype.toSpliced");
          const len = lengthOf(o);
          if (len <= NATIVE_MAX) return apply(nativeToSpliced, o, [start, skipCount, ...items]);
          const from = relative(integer(start), len);
          // `arguments` tells an absent argument from `undefined`.
          const skip =
            arguments.length === 0 ? 0
              : arguments.length === 1 ? len - from
                : min(max(integer(skipCount), 0), len - from);
          const newLen = len + items.length - skip;
          if (newLen > 2 ** 53 - 1) throw new TypeErrorType("Invalid array length");
          const a = new ArrayType(newLen);
          let i = 0;
          for (; i < from; i++) a[i] = o[i];
          for (const item of items) a[i++] = item;
          for (let r = from + skip; i < newLen; i++, r++) a[i] = o[r];
          return a;
        },
      }.toSpliced);
    }

    const nativeSplit = String.prototype.split;
    const splitSymbol = Symbol.split;
    replace(String.prototype, "split", {
      split(separator, limit) {
        if (this === null || this === undefined) {
          throw new TypeErrorType("String.prototype.split called on null or undefined");
        }
        // A separator with its own splitter (a RegExp) is left to it.
        if (separator !== null && separator !== undefined && separator[splitSymbol] !== undefined) {
          return apply(nativeSplit, this, [separator, limit]);
        }
        const s = StringType(this);
        if (s.length <= NATIVE_MAX) return apply(nativeSplit, s, [separator, limit]);
        const lim = limit === undefined ? 2 ** 32 - 1 : NumberType(limit) >>> 0;
        const r = StringType(separator);
        const out = [];
        if (lim === 0) return out;
        if (separator === undefined) {
          out.push(s);
          return out;
        }
        if (r === "") {
          const n = min(s.length, lim);
          for (let i = 0; i < n; i++) out.push(s[i]);
          return out;
        }
        let p = 0;
        for (let q = s.indexOf(r, p); q !== -1; q = s.indexOf(r, p)) {
          out.push(s.slice(p, q));
          if (out.length === lim) return out;
          p = q + r.length;
        }
        out.push(s.slice(p));
        return out;
      },
    }.split);

    const nativeRaw = String.raw;
    const join = Array.prototype.join;
    replace(String, "raw", {
      raw(template, ...substitutions) {
        const raw = ObjectType(ObjectType(template).raw);
        const count = lengthOf(raw);
        if (count <= NATIVE_MAX) return apply(nativeRaw, String, [template, ...substitutions]);
        // Joined in chunks: a string grown a piece at a time would be a
        // rope of millions of nodes.
        let out = "";
        const parts = [];
        for (let i = 0; i < count; i++) {
          parts.push(StringType(raw[i]));
          if (i + 1 < count && i < substitutions.length) parts.push(StringType(substitutions[i]));
          if (parts.length >= 4096) {
            out += apply(join, parts, [""]);
            parts.length = 0;
          }
        }
        return out + apply(join, parts, [""]);
      },
    }.raw);
  }

  // QuickJS has Error.stackTraceLimit as an accessor, which freezing Error
  // would leave settable: make it plain data as on V8.
  const stackTraceLimit = getOwnPropertyDescriptor(Error, "stackTraceLimit");
  if (stackTraceLimit !== undefined && !("value" in stackTraceLimit) && stackTraceLimit.configurable) {
    defineProperty(Error, "stackTraceLimit", {
      value: Error.stackTraceLimit,
      writable: false,
      enumerable: stackTraceLimit.enumerable,
      configurable: false,
    });
  }

  // Properties code assigns on its own objects that would otherwise hit a
  // frozen inherited property.
  const overridable = {
    object: ["constructor", "toString", "toLocaleString", "valueOf", "hasOwnProperty",
      "isPrototypeOf", "propertyIsEnumerable"],
    function: ["toString"],
    error: ["constructor", "name", "message", "toString"],
  };
  function makeOverridable(object, key) {
    const d = getOwnPropertyDescriptor(object, key);
    if (d === undefined || !("value" in d) || !d.writable || !d.configurable) return;
    const value = d.value;
    defineProperty(object, key, {
      get: function () {
        return value;
      },
      set: function (v) {
        if (this === object) {
          throw new TypeErrorType("Cannot assign to read only property '" + StringType(key) + "' of a builtin");
        }
        defineProperty(this, key, { value: v, writable: true, enumerable: true, configurable: true });
      },
      enumerable: d.enumerable,
      configurable: false,
    });
  }
  for (const key of overridable.object) makeOverridable(Object.prototype, key);
  for (const key of overridable.function) makeOverridable(Function.prototype, key);
  for (const E of [Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError,
    typeof AggregateError === "function" ? AggregateError : Error]) {
    for (const key of overridable.error) makeOverridable(E.prototype, key);
  }

  // Intrinsics that no global property leads to.
  const hidden = [
    getPrototypeOf(function* () {}),
    getPrototypeOf(async function () {}),
    getPrototypeOf(async function* () {}),
    getPrototypeOf([][Symbol.iterator]()),
    getPrototypeOf(new Map()[Symbol.iterator]()),
    getPrototypeOf(new Set()[Symbol.iterator]()),
    getPrototypeOf(""[Symbol.iterator]()),
    getPrototypeOf(/a/[Symbol.matchAll]("")),
    getPrototypeOf(Uint8Array),
  ];
  if (typeof Iterator === "function" && typeof Iterator.from === "function") {
    hidden.push(getPrototypeOf([].values().map((x) => x)));
    hidden.push(getPrototypeOf(Iterator.from({ next() { return { done: true }; } })));
  }

  // Freeze everything reachable, except the global object itself.
  const seen = new Set([global]);
  const todo = [getPrototypeOf(global)];
  for (const key of ownKeys(global)) {
    const d = getOwnPropertyDescriptor(global, key);
    todo.push(d.value, d.get, d.set);
  }
  for (const h of hidden) todo.push(h);
  while (todo.length > 0) {
    const o = todo.pop();
    if ((typeof o !== "object" && typeof o !== "function") || o === null || seen.has(o)) continue;
    seen.add(o);
    todo.push(getPrototypeOf(o));
    for (const key of ownKeys(o)) {
      const d = getOwnPropertyDescriptor(o, key);
      if (d === undefined) continue;
      todo.push(d.value, d.get, d.set);
    }
    freeze(o);
  }

  // The original globals: they may be assigned during a request, never
  // deleted or redefined; endRequest puts their values back.
  const baseline = new Map();
  for (const key of ownKeys(global)) {
    const d = getOwnPropertyDescriptor(global, key);
    if (d.configurable) {
      d.configurable = false;
      defineProperty(global, key, d);
    }
    if ("value" in d && d.writable) baseline.set(key, d.value);
  }
  const baselineKeys = new Set(ownKeys(global));
  const globalProto = getPrototypeOf(global);

  // After a request: removes the globals it added and restores those it
  // assigned. False if the context cannot be made clean again (a global
  // made non-configurable or read-only, or the global object frozen).
  return function endRequest() {
    if (!isExtensible(global)) return false;
    if (getPrototypeOf(global) !== globalProto && !setPrototypeOf(global, globalProto)) return false;
    for (const key of ownKeys(global)) {
      if (!baselineKeys.has(key) && !deleteProperty(global, key)) return false;
    }
    for (const [key, value] of baseline) {
      if (global[key] !== value) {
        const d = getOwnPropertyDescriptor(global, key);
        if (!d.writable) return false;
        global[key] = value;
      }
    }
    return true;
  };
});
