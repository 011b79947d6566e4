// The API conformance app: every endpoint here runs on V8 and on QuickJS
// and must answer the same (js/tests/conformance.rs).
import { bump, hex, twice } from "./lib/util.js";

export const notAFunction = 42;

// The request object, as the handler sees it.
export function echo_request(request) {
  const body = request.body;
  return {
    body: {
      keys: Object.keys(request).sort(),
      method: request.method,
      path: request.path,
      url: request.url,
      route: request.route,
      query: request.query,
      params: request.params,
      headers: request.headers,
      caller: request.caller,
      text: body.text(),
      json: body.json(),
      bytes: hex(body.arrayBuffer()),
      isArrayBuffer: body.arrayBuffer() instanceof ArrayBuffer,
      doubled: twice(body.json().n),
    },
  };
}

function attempt(f) {
  try {
    const r = f();
    return r === undefined ? "ok" : r;
  } catch (e) {
    return e.name + ": " + e.message;
  }
}

// The whole map API against a seeded store.
export function kv_api() {
  const m = ccf.kv["public:conformance"];
  const out = {};
  out.sizeBefore = m.size;
  out.hasA = m.has(ccf.strToBuf("a"));
  out.getB = ccf.bufToStr(m.get(ccf.strToBuf("b")));
  out.getMissing = m.get(ccf.strToBuf("zz")) === undefined;
  out.hasMissing = m.has(ccf.strToBuf("zz"));
  out.deleteResult = String(m.delete(ccf.strToBuf("a")));
  out.hasAAfterDelete = m.has(ccf.strToBuf("a"));
  out.setReturnsMap = m.set(ccf.strToBuf("c"), ccf.strToBuf("3")) === m;
  // Typed arrays and DataViews stand for the bytes they view.
  m.set(new Uint8Array([0x64]), new Uint8Array([0x78, 0x34]).subarray(1));
  m.set(new DataView(ccf.strToBuf("xe"), 1), new DataView(ccf.strToBuf("5")));
  const seen = [];
  m.forEach((v, k, map) => {
    seen.push(ccf.bufToStr(k) + "=" + ccf.bufToStr(v) + (map === m ? "" : " (other map)"));
  });
  out.seen = seen;
  out.sizeAfter = m.size;
  out.getD = ccf.bufToStr(m.get(ccf.strToBuf("d")));
  out.sameHandle = ccf.kv["public:conformance"] === m;
  out.frozen = Object.isFrozen(m);
  out.assignMap = attempt(() => {
    ccf.kv["public:x"] = 1;
  }).split(":")[0];
  out.forEachNotFunction = attempt(() => m.forEach(42)).split(":")[0];
  const other = ccf.kv["public:conformance.other"];
  other.set(ccf.strToBuf("k1"), ccf.strToBuf("v1"));
  other.set(ccf.strToBuf("k2"), ccf.strToBuf("v2"));
  out.otherSize = other.size;
  other.clear();
  out.otherSizeAfterClear = other.size;
  out.otherHasAfterClear = other.has(ccf.strToBuf("k1"));
  out.clearSeeded = (() => {
    const seeded = ccf.kv["public:conformance.seeded"];
    const before = seeded.size;
    seeded.clear();
    return [before, seeded.size];
  })();
  out.badArgs = [
    () => m.get("k"),
    () => m.get({}),
    () => m.has(),
    () => m.set(ccf.strToBuf("k"), "v"),
    () => m.set(ccf.strToBuf("k")),
    () => m.delete(null),
  ].map(attempt);
  return { body: out };
}

// Governance and internal tables are read-only for apps.
export function kv_reserved() {
  const out = [];
  for (const name of ["public:ccf.gov.users.certs", "public:ccf.internal.x", "ccf.gov.x", "private:ccf.x"]) {
    const m = ccf.kv[name];
    out.push(attempt(() => m.set(ccf.strToBuf("k"), ccf.strToBuf("v"))));
    out.push(attempt(() => m.delete(ccf.strToBuf("k"))));
    out.push(attempt(() => m.clear()));
  }
  out.push(ccf.kv["public:ccf.gov.users.certs"].size);
  out.push(ccf.bufToStr(ccf.kv["public:ccf.gov.users.certs"].get(ccf.strToBuf("u1"))));
  // Only the exact prefixes are reserved.
  out.push(
    attempt(() => {
      ccf.kv["public:ccfx"].set(ccf.strToBuf("k"), ccf.strToBuf("v"));
    }),
  );
  return { body: out };
}

// A write, for read-only transactions.
export function kv_write() {
  ccf.kv["public:conformance"].set(ccf.strToBuf("w"), ccf.strToBuf("1"));
  return { body: "written" };
}

export function buffers() {
  const out = {};
  out.roundTrip = ccf.bufToStr(ccf.strToBuf("h\u00e9llo \u2713 \ud83d\ude00"));
  out.utf8 = hex(ccf.strToBuf("\u00e9\ud83d\ude00"));
  out.loneSurrogate = hex(ccf.strToBuf("a\ud800b"));
  out.invalidUtf8 = ccf.bufToStr(new Uint8Array([0x61, 0xff, 0x62]).buffer);
  out.json = ccf.bufToJsonCompatible(ccf.jsonCompatibleToBuf({ a: [1, "two", null, true], b: { c: 1.5 } }));
  out.jsonText = ccf.bufToStr(ccf.jsonCompatibleToBuf({ z: 1, a: "x", u: undefined }));
  out.jsonScalar = ccf.bufToStr(ccf.jsonCompatibleToBuf("s"));
  out.fromView = ccf.bufToStr(new Uint8Array(ccf.strToBuf("xyz"), 1, 2));
  out.fromDataView = ccf.bufToStr(new DataView(ccf.strToBuf("xyz"), 2));
  out.fromJsonView = ccf.bufToJsonCompatible(new Uint8Array(ccf.strToBuf("[1,2]")));
  out.empty = ccf.bufToStr(new ArrayBuffer(0));
  out.isArrayBuffer = ccf.strToBuf("x") instanceof ArrayBuffer;
  // Errors from the host: same type and message on both engines.
  out.hostErrors = [
    () => ccf.strToBuf(1),
    () => ccf.strToBuf(),
    () => ccf.bufToStr("x"),
    () => ccf.bufToStr(),
    () => ccf.bufToStr([1, 2]),
  ].map(attempt);
  // Errors from the engine's JSON: same type, the message is the engine's.
  out.jsonErrors = [
    () => ccf.bufToJsonCompatible(ccf.strToBuf("{")),
    () => ccf.jsonCompatibleToBuf(undefined),
    () => ccf.jsonCompatibleToBuf(1n),
  ].map((f) => attempt(f).split(":")[0]);
  return { body: out };
}

export function claims() {
  ccf.rpc.setClaimsDigest(new Uint8Array(32).fill(7));
  return { body: "set" };
}

export function claims_bad() {
  return { body: [attempt(() => ccf.rpc.setClaimsDigest(new ArrayBuffer(3))), attempt(() => ccf.rpc.setClaimsDigest("x"))] };
}

export function console_api(request) {
  const tag = request.body.text();
  const cyclic = { name: "c" };
  cyclic.self = cyclic;
  console.log(tag, "log", 1, { a: [1, 2] }, null, undefined, true);
  console.info(tag, "info");
  console.warn(tag, "warn", ["x"]);
  console.error(tag, "error", new Error("as error"));
  console.debug(tag, "debug", 10n);
  console.log(tag, "cyclic", cyclic);
  console.log(tag, "two\nlines\r\n");
  console.log(tag, "long", "x".repeat(100000));
  return { body: [typeof console.log, typeof console.info, typeof console.warn, typeof console.error, typeof console.debug] };
}

export function response_shape(request) {
  switch (request.params.kind) {
    case "text":
      return { statusCode: 201, headers: { "x-custom": "v", "X-Number": 7 }, body: "plain text" };
    case "json":
      return { body: { a: 1, b: [true, null], s: "\u00e9" } };
    case "buffer":
      return { body: ccf.strToBuf("raw") };
    case "view":
      return { body: new Uint8Array([1, 2, 3, 4]).subarray(1, 3) };
    case "dataview":
      return { body: new DataView(new Uint8Array([5, 6, 7]).buffer, 1) };
    case "own_content_type":
      return { headers: { "Content-Type": "application/x-custom" }, body: { x: 1 } };
    case "undefined":
      return undefined;
    case "null":
      return null;
    case "empty_object":
      return {};
    case "status_only":
      return { statusCode: 204 };
    case "status_499":
      return { statusCode: 499, body: { error: "client-ish" } };
    case "null_body":
      return { statusCode: 202, body: null };
    case "number_body":
      return { body: 42 };
    case "string_json_body":
      return { body: "\"quoted\"" };
    default:
      return { statusCode: 404, body: "no such kind" };
  }
}

export async function async_ok() {
  const v = await Promise.resolve(7);
  await null;
  const w = await new Promise((resolve) => resolve(v * 6));
  return { body: { v, w } };
}

export function throws(request) {
  switch (request.params.kind) {
    case "string":
      throw "a plain string";
    case "error":
      throw new TypeError("deliberate");
    case "object":
      throw { code: 42 };
    case "object_with_to_string":
      throw { code: 42, toString: () => "custom object" };
    case "number":
      throw 42;
    case "undefined":
      throw undefined;
    case "symbol":
      throw Symbol("s");
    case "async":
      return (async () => {
        await null;
        throw new RangeError("async failure");
      })();
    case "nested":
      try {
        throw new Error("inner");
      } catch (e) {
        throw new Error("outer after " + e.message);
      }
    default:
      return { body: "did not throw" };
  }
}

export function bad_response(request) {
  const cyclic = {};
  cyclic.self = cyclic;
  switch (request.params.kind) {
    case "bigint":
      return { body: { n: 1n } };
    case "cyclic":
      return { body: cyclic };
    case "function_body":
      return { body: () => 1 };
    case "status_low":
      return { statusCode: 99 };
    case "status_high":
      return { statusCode: 600 };
    case "status_fraction":
      return { statusCode: 200.5 };
    case "status_string":
      return { statusCode: "200" };
    case "status_nan":
      return { statusCode: NaN };
    case "header_name":
      return { headers: { "bad header": "x" } };
    case "header_value_crlf":
      return { headers: { "x-h": "a\r\nb" } };
    case "header_value_nul":
      return { headers: { "x-h": "a\0b" } };
    case "headers_not_object":
      return { headers: "x-h: 1" };
    case "header_content_length":
      return { headers: { "Content-Length": "5" }, body: "0123456789" };
    case "header_transfer_encoding":
      return { headers: { "transfer-encoding": "chunked" }, body: "x" };
    case "number":
      return 42;
    case "string":
      return "just a string";
    case "pending":
      return new Promise(() => {});
    default:
      return { body: "fine" };
  }
}

// Module state, globals and prototypes start fresh in every request: each
// request gets new module instances and its own view of the globals, and
// the builtins are frozen on both engines, so changing one throws.
let moduleCounter = 0;
const tryChange = (change) => {
  try {
    change();
    return "allowed";
  } catch (e) {
    return e instanceof TypeError ? "refused" : "threw " + e;
  }
};
class Sub extends Error {}
export function isolation(request) {
  const options = request.body.json();
  moduleCounter += 1;
  /(secret)/.exec("a secret");
  const seen = {
    moduleCounter,
    importedCounter: bump(),
    leakedGlobal: globalThis.leak === undefined ? "absent" : globalThis.leak,
    replacedGlobal: typeof Math.max === "function" ? "original" : "replaced",
    stickyGlobal: globalThis.sticky === undefined ? "absent" : "present",
    lateGlobal: globalThis.late === undefined ? "absent" : "present",
    globalProto: globalThis.inherited === undefined ? "original" : "replaced",
    arrayPrototype: [].polluted === undefined ? "clean" : "polluted",
    stringPrototype: typeof "".shout === "function" ? "polluted" : "clean",
    jsonStringify: JSON.stringify({ a: 1 }),
    regexpStatics: typeof RegExp.$1,
    removed: [typeof WeakRef, typeof FinalizationRegistry, typeof WebAssembly, typeof Atomics.wait],
    ccfIntact: typeof ccf.kv === "object" && ccf.rpc.hacked === undefined,
  };
  // What a request may do to the realm, and what it may not.
  const attempts = {
    addGlobal: tryChange(() => {
      globalThis.leak = "leaked";
    }),
    replaceGlobal: tryChange(() => {
      globalThis.Math = {};
    }),
    deleteGlobal: tryChange(() => {
      delete globalThis.JSON;
    }),
    arrayPrototype: tryChange(() => {
      Array.prototype.polluted = true;
    }),
    stringPrototype: tryChange(() => {
      String.prototype.shout = function () {
        return this.toUpperCase();
      };
    }),
    jsonStringify: tryChange(() => {
      JSON.stringify = () => "hijacked";
    }),
    objectPrototypeToString: tryChange(() => {
      Object.prototype.toString = () => "hijacked";
    }),
    ccf: tryChange(() => {
      ccf.rpc.hacked = true;
    }),
    errorStackTraceLimit: tryChange(() => {
      Error.stackTraceLimit = 0;
    }),
  };
  // Assigning an inherited builtin property on one's own object works as
  // in an unfrozen realm.
  function Legacy() {}
  Legacy.prototype = Object.create(Error.prototype);
  Legacy.prototype.constructor = Legacy;
  Legacy.prototype.name = "Legacy";
  Legacy.prototype.toString = function () {
    return "legacy!";
  };
  const own = {};
  own.toString = () => "own";
  Sub.prototype.name = "Sub";
  const overrides = [new Legacy().name, String(new Legacy()), String(own), new Sub("m").name, String(new Sub("m"))];
  // Work left behind: a microtask that runs after the response, a new
  // prototype for the global object and, if asked, a global that cannot
  // be deleted (V8 then replaces the context).
  Promise.resolve().then(() => {
    globalThis.late = true;
  });
  Object.setPrototypeOf(globalThis, Object.create(Object.getPrototypeOf(globalThis), { inherited: { value: true } }));
  if (options.sticky) {
    Object.defineProperty(globalThis, "sticky", { value: 1, configurable: false });
  }
  return { body: { seen, attempts, overrides } };
}

// interpreter_reuse: endpoints sharing a reuse key keep their module
// instances (and globals) from one request to the next, on V8.
let reusedCounter = 0;
export function reused() {
  reusedCounter += 1;
  globalThis.reusedGlobal = (globalThis.reusedGlobal || 0) + 1;
  return { body: { reusedCounter, reusedGlobal: globalThis.reusedGlobal } };
}

// What the realm offers besides the ccf API: the same on both engines.
      // Past 2^20 elements these are harden.js's JS loops. On a sparse
  // array-like and one at a time, so that the 32 MiB heap holds them.
// Past 2^20 elements these are harden.js's JS loops (V8's own builtins
// could abort the process on huge lengths). On a sparse array-like and one
// at a time, so that a 32 MiB heap holds them on both engines.
export function bulk() {
  const n = (1 << 20) + 3;
  const like = { length: n, 0: "first", [n - 1]: "last" };
  const { toReversed, with: withAt, toSpliced } = Array.prototype;
  // Each in a function of its own: QuickJS frees a block's locals only
  // when their function returns.
  const reversed = () => {
    const r = toReversed.call(like);
    return [r.length, r[0], r[n - 1]];
  };
  const replaced = () => {
    const w = withAt.call(like, -1, "w");
    return [w[n - 1], w[0]];
  };
  const out = [...reversed(), ...replaced()];
  out.push(toSpliced.call(like, 1, n - 3, "x"));
  const long = "x".repeat(1 << 20);
  out.push(
    (long + ",y,z").split(",").map((p) => p.slice(0, 1)),
    (long + ",y,z").split(",", 2).map((p) => p.slice(0, 1)),
  );
  const raw = () => {
    const r = String.raw({ raw: { length: n, 0: "<", [n - 1]: ">" } }, 1, 2);
    return [r.length, r.slice(0, 12), r.slice(-10)];
  };
  out.push(...raw());
  try {
    withAt.call(like, n, 0);
  } catch (e) {
    out.push(e.name);
  }
  return { body: out };
}

export function builtins() {
  const caught = (f) => {
    try {
      return f();
    } catch (e) {
      return e.name;
    }
  };
  class Sized extends ArrayBuffer {}
  const sized = new Sized(4);
  return {
    body: {
      sharedArrayBuffer: typeof SharedArrayBuffer,
      performance: typeof performance,
      queueMicrotask: typeof queueMicrotask,
      resizable: caught(() => new ArrayBuffer(1, { maxByteLength: 1 << 20 }).byteLength),
      fixed: new ArrayBuffer(8, {}).byteLength,
      called: caught(() => ArrayBuffer(8)),
      bufferIsArrayBuffer: new Uint8Array(4).buffer instanceof ArrayBuffer,
      constructorIsGlobal: new Uint8Array(4).buffer.constructor === ArrayBuffer,
      isView: ArrayBuffer.isView(new Uint8Array(1)),
      arrayBufferLength: ArrayBuffer.length,
      subclass: sized instanceof Sized && sized instanceof ArrayBuffer && sized.byteLength,
      slice: new ArrayBuffer(8).slice(2).byteLength,
      nfc: "e\u0301".normalize(),
      nfd: "\u00e9".normalize("NFD").length,
      nfkc: "\ufb01x\u2460".normalize("NFKC"),
      nfkd: "\u00bd".normalize("NFKD"),
      badForm: caught(() => "a".normalize("NFX")),
      fillSmall: [1, 2, 3, 4, 5].fill(0, 1, -1),
      fillBig: (() => {
        const n = (1 << 20) + 1000;
        const a = new Array(n).fill(7);
        return [a.length, a[0], a[n - 1]];
      })(),
      fillObject: Array.prototype.fill.call({ length: 3 }, "x", "1"),
      fillFrozen: caught(() => Object.freeze([1, 2]).fill(0)),
    },
  };
}

// Jobs (promise callbacks) a handler queues but does not await: they run
// within the request, before its response is read.
export function queued_jobs(request) {
  const map = ccf.kv["public:conformance"];
  switch (request.params.kind) {
    case "write":
      Promise.resolve().then(() => map.set(ccf.strToBuf("late"), ccf.strToBuf("1")));
      return { body: "queued" };
    case "apply_writes_false":
      map.set(ccf.strToBuf("w"), ccf.strToBuf("1"));
      Promise.resolve().then(() => ccf.rpc.setApplyWrites(false));
      return { body: "queued" };
    case "apply_writes_while_read":
      // A job queued while the response is read.
      map.set(ccf.strToBuf("w"), ccf.strToBuf("1"));
      return {
        get statusCode() {
          Promise.resolve().then(() => ccf.rpc.setApplyWrites(false));
          return 200;
        },
      };
    case "loop":
      map.set(ccf.strToBuf("w"), ccf.strToBuf("1"));
      Promise.resolve().then(() => {
        for (;;) {}
      });
      return { body: "queued" };
    case "heap":
      map.set(ccf.strToBuf("w"), ccf.strToBuf("1"));
      Promise.resolve().then(() => {
        const a = [];
        for (;;) a.push(new Array(1000).fill("x" + a.length));
      });
      return { body: "queued" };
    case "to_json":
      // A job queued while the response body is serialised.
      return {
        body: {
          toJSON() {
            Promise.resolve().then(() => {
              for (;;) {}
            });
            return "x";
          },
        },
      };
    default:
      return { body: "fine" };
  }
}

// Dynamic import() is refused on both engines (V8 has no import callback
// here; QuickJS would share a module loaded from `new Function` code
// between requests).
export async function dynamic_import() {
  const out = {};
  const attempts = [
    ["module", () => import("./bombs.js")],
    ["function", () => new Function('return import("./bombs.js")')()],
    ["eval", () => (0, eval)('import("./bombs.js")')],
  ];
  for (const [name, attempt] of attempts) {
    try {
      await attempt();
      out[name] = "loaded";
    } catch (e) {
      out[name] = "refused";
    }
  }
  return { body: out };
}
