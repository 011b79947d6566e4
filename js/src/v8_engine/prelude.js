// Runs first in every fresh context. Rust passes in `native` (the host
// functions) and gets back the two functions it calls around a handler.
// Intrinsics are captured here, before any app code runs, so an app that
// replaces JSON.stringify or Object.keys cannot change how its own
// response is read.
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

  function makeMap(name) {
    const map = {
      get: (key) => native.kvGet(name, key),
      has: (key) => native.kvHas(name, key),
      set: (key, value) => {
        native.kvSet(name, key, value);
        return map;
      },
      delete: (key) => native.kvDelete(name, key),
      clear: () => native.kvClear(name),
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

  const handles = new Map();
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

  globalThis.ccf = {
    kv,
    strToBuf: native.strToBuf,
    bufToStr: native.bufToStr,
    jsonCompatibleToBuf: (value) => native.strToBuf(stringify(value)),
    bufToJsonCompatible: (buf) => parse(native.bufToStr(buf)),
    rpc: freeze({
      setClaimsDigest: (digest) => native.setClaimsDigest(digest),
    }),
  };
  globalThis.console = {
    log: logger("info"),
    info: logger("info"),
    warn: logger("warn"),
    error: logger("error"),
    debug: logger("debug"),
  };

  function makeRequest(meta, body) {
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
    return { status, headers, body: bytes };
  }

  return { makeRequest, toResponse };
})
