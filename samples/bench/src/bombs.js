// GET or POST /bomb/{kind}: handlers that try to take the node down. Each
// must end in a clean 500 with the error code below, under the node's JS
// limits (set_js_runtime_options), the node staying up. The codes assume
// a heap limit under 256 MiB (CCF's default is 100 MiB).
//
// | kind            | expected 500 error code   |
// |-----------------|---------------------------|
// | loop            | JSExecutionTimeExceeded   |
// | heap            | JSHeapLimitExceeded       |
// | array_buffers   | JSHeapLimitExceeded       |
// | string_doubling | JSHeapLimitExceeded       |
// | recursion       | JSException (RangeError)  |
// | deep_json       | JSException (RangeError)  |
// | huge_response   | JSHeapLimitExceeded       |
// | throw           | JSException               |
import { intParam } from "./util.js";

function down(n) {
  return down(n + 1) + 1;
}

export function bomb(request) {
  switch (request.params.kind) {
    case "loop":
      for (;;) {}
    case "heap": {
      // Live objects until the heap limit.
      const a = [];
      for (;;) a.push(new Array(1000).fill("x" + a.length));
    }
    case "array_buffers": {
      // 1 MiB buffers, all kept, up to 4 GiB (past any heap limit the
      // node allows): V8 keeps them outside its heap, so this checks that
      // they count against the limit too.
      const a = [];
      for (let i = 0; i < 4097; i++) a.push(new ArrayBuffer(1 << 20));
      return { body: "allocated 4 GiB of ArrayBuffers" };
    }
    case "string_doubling": {
      // Each doubling is read, so the engine holds the whole string.
      let s = "x";
      for (;;) {
        s = s + s;
        if (s.charCodeAt(s.length - 1) !== 120) return { body: "corrupt" };
      }
    }
    case "recursion":
      return { body: down(0) };
    case "deep_json": {
      // JSON nested `depth` deep (the request body if there is one),
      // parsed and serialised again, the error left uncaught.
      const text = request.body.text();
      const depth = intParam(request.query, "depth", 100000, 1, 10000000);
      const json = text.length > 0 ? text : "[".repeat(depth) + "]".repeat(depth);
      return { body: { length: JSON.stringify(JSON.parse(json)).length } };
    }
    case "huge_response": {
      // A response body of `mib` MiB (default 256).
      const mib = intParam(request.query, "mib", 256, 1, 4096);
      return { body: "x".repeat(mib * 1048576) };
    }
    case "throw":
      throw new Error("bomb: thrown on purpose");
    default:
      return { statusCode: 404, body: { error: { code: "ResourceNotFound", message: "no such bomb" } } };
  }
}
