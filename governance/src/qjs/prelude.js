// Runs first in every fresh governance context, before the constitution
// or ballot module. Rust passes in `native` (the host functions, see
// host.rs); this builds the CCF-shaped `ccf` and `console` globals on top.
// Intrinsics are captured up front so that module code replacing
// JSON.stringify or ArrayBuffer cannot change how the host reads its
// arguments.
(function (native) {
  "use strict";
  const stringify = JSON.stringify;
  const parse = JSON.parse;
  const isView = ArrayBuffer.isView;
  const ArrayBufferType = ArrayBuffer;
  const StringType = String;
  const freeze = Object.freeze;
  const defineProperty = Object.defineProperty;
  const MapType = Map;
  const mapGet = Map.prototype.get;
  const mapSet = Map.prototype.set;

  // Keys and values are ArrayBuffers, as in CCF. Typed arrays and
  // DataViews are accepted too and passed on as a copy of the bytes they
  // view.
  function bytes(value, what) {
    if (value instanceof ArrayBufferType) return value;
    if (isView(value)) {
      return value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength);
    }
    throw new TypeError(
      what + " must be an ArrayBuffer (use ccf.strToBuf or ccf.jsonCompatibleToBuf), got " +
        (value === null ? "null" : typeof value),
    );
  }

  function makeMap(name) {
    const map = {
      get: (key) => native.kvGet(name, bytes(key, "key")),
      has: (key) => native.kvHas(name, bytes(key, "key")),
      set: (key, value) => {
        native.kvSet(name, bytes(key, "key"), bytes(value, "value"));
        return map;
      },
      delete: (key) => native.kvDelete(name, bytes(key, "key")),
      clear: () => {
        native.kvClear(name);
      },
      forEach: (callback) => {
        if (typeof callback !== "function") {
          throw new TypeError("forEach expects a function (value, key, map) => ...");
        }
        const entries = native.kvEntries(name);
        for (let i = 0; i < entries.length; i++) {
          callback(entries[i][1], entries[i][0], map);
        }
      },
    };
    defineProperty(map, "size", { get: () => native.kvSize(name) });
    return freeze(map);
  }

  const handles = new MapType();
  const kv = new Proxy(
    {},
    {
      get(_target, name) {
        if (typeof name !== "string") return undefined;
        let map = mapGet.call(handles, name);
        if (map === undefined) {
          map = makeMap(name);
          mapSet.call(handles, name, map);
        }
        return map;
      },
      set() {
        return false;
      },
      deleteProperty() {
        return false;
      },
    },
  );

  function show(value) {
    if (typeof value === "string") return value;
    try {
      const s = stringify(value);
      return s === undefined ? StringType(value) : s;
    } catch (e) {
      return StringType(value);
    }
  }
  function logger(level) {
    return (...args) => native.log(level, args.map(show).join(" "));
  }

  function toStr(value, what) {
    if (typeof value !== "string") {
      throw new TypeError(what + " must be a string, got " + (value === null ? "null" : typeof value));
    }
    return value;
  }

  globalThis.ccf = freeze({
    kv,
    strToBuf: (s) => native.strToBuf(toStr(s, "ccf.strToBuf's argument")),
    bufToStr: (b) => native.bufToStr(bytes(b, "ccf.bufToStr's argument")),
    jsonCompatibleToBuf: (value) => {
      const s = stringify(value);
      if (s === undefined) throw new TypeError("ccf.jsonCompatibleToBuf: value is not JSON-serializable");
      return native.strToBuf(s);
    },
    bufToJsonCompatible: (b) => parse(native.bufToStr(bytes(b, "ccf.bufToJsonCompatible's argument"))),
    pemToId: (pem) => native.pemToId(toStr(pem, "ccf.pemToId's argument")),
    isValidX509CertBundle: (pem) => native.isValidX509CertBundle(toStr(pem, "ccf.isValidX509CertBundle's argument")),
    crypto: freeze({
      digest: (algorithm, data) => native.digest(toStr(algorithm, "algorithm"), bytes(data, "data")),
    }),
  });
  globalThis.console = freeze({
    log: logger("info"),
    info: logger("info"),
    warn: logger("warn"),
    error: logger("error"),
    debug: logger("debug"),
  });
})
