// The `ccf` and `console` globals, written once for both engines (V8 and
// QuickJS). Runs first in every new context, before harden.js. Rust passes
// in `native` (the host functions of the engine, with the same names and
// behaviour on both: v8_engine/host.rs, qjs_engine/host.rs) and gets back
// the two functions it calls around a handler. A context may serve many
// requests: `makeRequest` starts one and resets what belongs to it. Intrinsics are captured here, before any app code
// runs, so an app that replaces JSON.stringify or Object.keys cannot change
// how its own response is read.
(function (native) {
  "use strict";
  const stringify = JSON.stringify;
  const parse = JSON.parse;
  const keys = Object.keys;
  const isInteger = Number.isInteger;
  const isView = ArrayBuffer.isView;
  const ArrayBufferType = ArrayBuffer;
  const StringType = String;
  const freeze = Object.freeze;
  const defineProperty = Object.defineProperty;
  const headerName = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
  const badHeaderValue = /[\r\n\0]/;
  // How the body is framed on the connection is the node's business: a
  // handler's content-length could split one response into two.
  const framingHeaders = Object.assign(Object.create(null), {
    "content-length": true,
    "transfer-encoding": true,
    "connection": true,
    "keep-alive": true,
    "upgrade": true,
    "te": true,
    "trailer": true,
    "proxy-connection": true,
  });
  const construct = Reflect.construct;
  const apply = Reflect.apply;
  const getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  const TypeErrorType = TypeError;
  const RangeErrorType = RangeError;

  // A host function the engine may not have (yet): calling it throws.
  function host(name, api) {
    const f = native[name];
    if (typeof f === "function") return f;
    return () => {
      throw new Error(api + " is not available on this JS engine");
    };
  }

  // Keys, values and digests are ArrayBuffers; a TypedArray or DataView is
  // passed on as a copy of the bytes it views. Anything else goes to the
  // host as it is, which throws a TypeError.
  function bytes(value) {
    return isView(value)
      ? value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength)
      : value;
  }

  function makeMap(name) {
    const map = {
      get: (key) => native.kvGet(name, bytes(key)),
      has: (key) => native.kvHas(name, bytes(key)),
      set: (key, value) => {
        native.kvSet(name, bytes(key), bytes(value));
        return map;
      },
      delete: (key) => native.kvDelete(name, bytes(key)),
      clear: () => native.kvClear(name),
      getVersionOfPreviousWrite: (key) => kvVersion(name, bytes(key)),
      forEach: (callback) => {
        const entries = native.kvEntries(name);
        for (let i = 0; i < entries.length; i++) {
          callback(entries[i][1], entries[i][0], map);
        }
      },
    };
    defineProperty(map, "size", { get: () => native.kvSize(name) });
    return freeze(map);
  }

  const kvVersion = host("kvVersionOfPreviousWrite", "getVersionOfPreviousWrite");
  let handles = new Map();
  const kv = new Proxy(
    {},
    {
      get(_target, name) {
        if (typeof name !== "string") return undefined;
        let map = handles.get(name);
        if (map === undefined) {
          map = makeMap(name);
          handles.set(name, map);
        }
        return map;
      },
      set() {
        return false;
      },
    },
  );

  const ErrorType = Error;
  function show(value) {
    if (typeof value === "string") return value;
    // An Error's own properties are not enumerable: JSON shows `{}`.
    if (value instanceof ErrorType) {
      try {
        return StringType(value);
      } catch (e) {
        return "[an Error that cannot be shown]";
      }
    }
    try {
      const s = stringify(value);
      return s === undefined ? StringType(value) : s;
    } catch (e) {
      return StringType(value);
    }
  }
  // One console line is at most this many characters: the node's log is
  // not the place for megabytes an app prints by mistake (or on purpose).
  const MAX_LOG_LINE = 16384;
  const lineBreaks = /[\r\n\u2028\u2029]/g;
  const escapeLineBreak = (c) =>
    c === "\n" ? "\\n" : c === "\r" ? "\\r" : c === "\u2028" ? "\\u2028" : "\\u2029";
  function logger(level) {
    return (...args) => {
      // Line breaks are escaped: one console call is one log line, and
      // an app (or input it logs) cannot forge the node's own lines.
      let line = args.map(show).join(" ").replace(lineBreaks, escapeLineBreak);
      if (line.length > MAX_LOG_LINE) {
        line = line.slice(0, MAX_LOG_LINE) + " ... [" + (line.length - MAX_LOG_LINE) + " more characters not logged]";
      }
      native.log(level, line);
    };
  }

  // Date and time: as in CCF, the clock reads 0 (the epoch) until the
  // request calls ccf.enableUntrustedDateTime(true). The host's time is
  // untrusted and differs between nodes. `Date` is replaced by a proxy
  // whose `new Date()` / `Date()` / `Date.now()` read `now()`; Intl's
  // date formatting without a date does too.
  let untrustedDateTime = false;
  const RealDate = Date;
  const realNow = RealDate.now;
  const clockNow = () => (untrustedDateTime ? realNow() : 0);
  defineProperty(RealDate, "now", {
    value: function now() {
      return clockNow();
    },
    writable: true,
    configurable: true,
  });
  const DateProxy = new Proxy(RealDate, {
    construct(target, args, newTarget) {
      return construct(target, args.length === 0 ? [clockNow()] : args, newTarget);
    },
    apply() {
      return new RealDate(clockNow()).toString();
    },
  });
  defineProperty(RealDate.prototype, "constructor", {
    value: DateProxy,
    writable: true,
    configurable: true,
  });
  globalThis.Date = DateProxy;
  // Locale-dependent formatting: V8 here has no ICU locale data, and some
  // of it (Intl.DateTimeFormat, Intl.Segmenter, Date's toLocale*String)
  // aborts the whole process instead of throwing. It is also not
  // deterministic across nodes, and QuickJS has none of it. So `Intl` is
  // removed and the toLocale* methods and localeCompare behave the same,
  // locale-free way on both engines: toLocale*String as the plain
  // toString forms, localeCompare by UTF-16 code units.
  delete globalThis.Intl;
  const plain = (proto, name, of) => {
    if (typeof proto[name] === "function") {
      defineProperty(proto, name, {
        value: {
          [name]() {
            return of.call(this);
          },
        }[name],
        writable: true,
        configurable: true,
      });
    }
  };
  plain(RealDate.prototype, "toLocaleString", RealDate.prototype.toString);
  plain(RealDate.prototype, "toLocaleDateString", RealDate.prototype.toDateString);
  plain(RealDate.prototype, "toLocaleTimeString", RealDate.prototype.toTimeString);
  plain(Number.prototype, "toLocaleString", Number.prototype.toString);
  if (typeof BigInt === "function") plain(BigInt.prototype, "toLocaleString", BigInt.prototype.toString);
  defineProperty(String.prototype, "localeCompare", {
    value: function localeCompare(that) {
      const a = String(this);
      const b = String(that);
      return a < b ? -1 : a > b ? 1 : 0;
    },
    writable: true,
    configurable: true,
  });

  // String.prototype.normalize: V8 here has ICU's code but not its data,
  // and its NFKC and NFKD crash the process, so on V8 the host normalizes
  // (QuickJS has no such host function and keeps its own, which works).
  if (typeof native.normalize === "function") {
    const normalizeNative = native.normalize;
    defineProperty(String.prototype, "normalize", {
      value: {
        normalize(form) {
          if (this === undefined || this === null) {
            throw new TypeErrorType("String.prototype.normalize called on null or undefined");
          }
          const text = StringType(this);
          const f = form === undefined ? "NFC" : StringType(form);
          if (f !== "NFC" && f !== "NFD" && f !== "NFKC" && f !== "NFKD") {
            throw new RangeErrorType("The normalization form should be one of NFC, NFD, NFKC, NFKD.");
          }
          return normalizeNative(text, f);
        },
      }.normalize,
      writable: true,
      configurable: true,
    });
  }

  // ccf.rpc.setApplyWrites: undefined (not called) leaves the decision to
  // the status code; toResponse hands it to the engine.
  let applyWrites;

  // An algorithm argument of ccf.crypto: an object with a string `name`
  // (and `hash` for ECDSA, a string or {name}).
  function algorithmOf(algorithm, api) {
    if (algorithm === null || typeof algorithm !== "object") {
      throw new TypeErrorType(api + ": the algorithm must be an object such as {name: \"EdDSA\"}");
    }
    const hash = algorithm.hash;
    return {
      name: algorithm.name,
      hash: hash !== null && typeof hash === "object" ? hash.name : hash,
    };
  }
  function expectKty(jwk, kty, api) {
    if (jwk.kty !== kty) throw new RangeErrorType(api + " needs an Ed25519 key");
    return jwk;
  }
  const c = {
    digest: host("cryptoDigest", "ccf.crypto.digest"),
    sign: host("cryptoSign", "ccf.crypto.sign"),
    verify: host("cryptoVerify", "ccf.crypto.verifySignature"),
    eddsaPair: host("cryptoGenerateEddsaKeyPair", "ccf.crypto.generateEddsaKeyPair"),
    ecdsaPair: host("cryptoGenerateEcdsaKeyPair", "ccf.crypto.generateEcdsaKeyPair"),
    aesKey: host("cryptoGenerateAesKey", "ccf.crypto.generateAesKey"),
    wrap: host("cryptoWrapKey", "ccf.crypto.wrapKey"),
    unwrap: host("cryptoUnwrapKey", "ccf.crypto.unwrapKey"),
    certBundle: host("cryptoIsValidX509CertBundle", "ccf.crypto.isValidX509CertBundle"),
    pubJwk: host("cryptoPubPemToJwk", "ccf.crypto.pubPemToJwk"),
    jwk: host("cryptoPemToJwk", "ccf.crypto.pemToJwk"),
  };
  const crypto = freeze({
    digest: (algorithm, data) => c.digest(algorithm, bytes(data)),
    sign: (algorithm, key, data) => {
      const a = algorithmOf(algorithm, "ccf.crypto.sign");
      return c.sign(a.name, a.hash, key, bytes(data));
    },
    verifySignature: (algorithm, key, signature, data) => {
      const a = algorithmOf(algorithm, "ccf.crypto.verifySignature");
      return c.verify(a.name, a.hash, key, bytes(signature), bytes(data));
    },
    generateEddsaKeyPair: (curve) => parse(c.eddsaPair(curve)),
    generateEcdsaKeyPair: (curve) => parse(c.ecdsaPair(curve)),
    generateAesKey: (size) => c.aesKey(size),
    wrapKey: (key, wrappingKey, parameters) => {
      const a = algorithmOf(parameters, "ccf.crypto.wrapKey");
      return c.wrap(bytes(key), bytes(wrappingKey), a.name);
    },
    unwrapKey: (wrappedKey, unwrappingKey, parameters) => {
      const a = algorithmOf(parameters, "ccf.crypto.unwrapKey");
      return c.unwrap(bytes(wrappedKey), bytes(unwrappingKey), a.name);
    },
    isValidX509CertBundle: (pem) => c.certBundle(pem),
    pubPemToJwk: (pem, kid) => parse(c.pubJwk(pem, kid)),
    pemToJwk: (pem, kid) => parse(c.jwk(pem, kid)),
    pubEddsaPemToJwk: (pem, kid) =>
      expectKty(parse(c.pubJwk(pem, kid)), "OKP", "ccf.crypto.pubEddsaPemToJwk"),
    eddsaPemToJwk: (pem, kid) =>
      expectKty(parse(c.jwk(pem, kid)), "OKP", "ccf.crypto.eddsaPemToJwk"),
  });

  const lastCommitted = host("consensusLastCommitted", "ccf.consensus.getLastCommittedTxId");
  const consensus = freeze({
    getLastCommittedTxId: () => {
      const id = lastCommitted();
      return { view: id[0], seqno: id[1] };
    },
    getStatusForTxId: host("consensusStatus", "ccf.consensus.getStatusForTxId"),
    getViewForSeqno: host("consensusViewForSeqno", "ccf.consensus.getViewForSeqno"),
  });

  globalThis.ccf = {
    kv,
    strToBuf: native.strToBuf,
    bufToStr: (buf) => native.bufToStr(bytes(buf)),
    jsonCompatibleToBuf: (value) => native.strToBuf(stringify(value)),
    bufToJsonCompatible: (buf) => parse(native.bufToStr(bytes(buf))),
    rpc: freeze({
      setClaimsDigest: (digest) => native.setClaimsDigest(bytes(digest)),
      setApplyWrites: (...args) => {
        if (args.length !== 1) {
          throw new TypeErrorType("ccf.rpc.setApplyWrites takes one argument, a boolean");
        }
        applyWrites = !!args[0];
      },
    }),
    crypto,
    consensus,
    enableUntrustedDateTime: (enable) => {
      if (typeof enable !== "boolean") {
        throw new TypeErrorType("ccf.enableUntrustedDateTime takes a boolean");
      }
      const previous = untrustedDateTime;
      untrustedDateTime = enable;
      return previous;
    },
  };
  globalThis.console = {
    log: logger("info"),
    info: logger("info"),
    warn: logger("warn"),
    error: logger("error"),
    debug: logger("debug"),
  };

  function makeRequest(meta, body) {
    untrustedDateTime = false;
    applyWrites = undefined;
    handles = new Map();
    const request = parse(meta);
    request.body = {
      text: () => native.bufToStr(body),
      json: () => parse(native.bufToStr(body)),
      arrayBuffer: () => body,
    };
    return request;
  }

  // Returns {status, headers: [[name, value], ...], body: ArrayBuffer}, or
  // {error: "..."} when the handler's answer is not a valid response.
  function toResponse(r) {
    if (r === undefined || r === null) r = {};
    if (typeof r !== "object") {
      return { error: "a handler must return an object {statusCode, headers, body}, got " + typeof r };
    }
    const status = r.statusCode === undefined ? 200 : r.statusCode;
    if (!isInteger(status) || status < 100 || status > 599) {
      return { error: "statusCode must be an integer from 100 to 599, got " + show(status) };
    }
    const headers = [];
    let hasContentType = false;
    if (r.headers !== undefined && r.headers !== null) {
      if (typeof r.headers !== "object") return { error: "headers must be an object" };
      for (const name of keys(r.headers)) {
        const value = StringType(r.headers[name]);
        if (!headerName.test(name)) return { error: "invalid header name " + show(name) };
        if (framingHeaders[name.toLowerCase()] === true) {
          return { error: "header " + name + " is set by the node, not by a handler" };
        }
        if (badHeaderValue.test(value)) return { error: "invalid value for header " + name };
        if (name.toLowerCase() === "content-type") hasContentType = true;
        headers.push([name, value]);
      }
    }
    const body = r.body;
    let bytes;
    let type;
    if (body === undefined || body === null) {
      bytes = new ArrayBufferType(0);
    } else if (body instanceof ArrayBufferType) {
      bytes = body;
      type = "application/octet-stream";
    } else if (isView(body)) {
      bytes = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength);
      type = "application/octet-stream";
    } else if (typeof body === "string") {
      bytes = native.strToBuf(body);
      type = "text/plain";
    } else {
      let json;
      try {
        json = stringify(body);
      } catch (e) {
        return { error: "body is not JSON-serializable: " + (e && e.message) };
      }
      if (json === undefined) return { error: "body is not JSON-serializable" };
      bytes = native.strToBuf(json);
      type = "application/json";
    }
    if (type !== undefined && !hasContentType) headers.push(["content-type", type]);
    // Read by the engine after the jobs queued while this ran have run:
    // a `setApplyWrites` in one of them counts, as their writes do.
    return {
      status,
      headers,
      body: bytes,
      get applyWrites() {
        return applyWrites;
      },
    };
  }

  return { makeRequest, toResponse };
})
