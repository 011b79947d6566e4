// Handlers that try to take the engine down: each must end in a clean
// error (or a clean answer) within its limit, on V8 and on QuickJS alike.

function down(n) {
  return down(n + 1) + 1;
}

export function bomb(request) {
  switch (request.params.kind) {
    case "loop":
      for (;;) {}
    case "loop_catch_all":
      // The time limit cannot be caught.
      for (;;) {
        try {
          for (;;) {}
        } catch (e) {
          // keep going
        }
      }
    case "regex":
      // Catastrophic backtracking: 2^25 steps.
      return { body: /(a+)+$/.test("a".repeat(25) + "b") };
    case "sparse_map":
      // V8's map walks the 2^30 holes without an interrupt check: about
      // 9 s past the time limit.
      return { body: new Array(2 ** 30).map((x) => x).length };
    case "fill_sparse":
      // V8's own fill aborted the process here.
      new Array(1e8).fill(0);
      return { body: "filled" };
    case "to_reversed_huge":
      // V8's own toReversed, with and toSpliced aborted the process on
      // these ("invalid table size"), as its split did on a string this
      // long.
      return { body: new Array(2 ** 32 - 1).toReversed().length };
    case "with_huge":
      return { body: new Array(2 ** 32 - 1).with(0, 1).length };
    case "to_spliced_huge":
      return { body: new Array(2 ** 32 - 1).toSpliced(0, 0).length };
    case "split_huge":
      return { body: "a".repeat(2 ** 27).split("").length };
    case "fill_object":
      Array.prototype.fill.call({ length: 1e8 }, 0);
      return { body: "filled" };
    case "heap": {
      const a = [];
      for (;;) a.push(new Array(1000).fill("x" + a.length));
    }
    case "heap_caught":
      // Running out of heap cannot be caught.
      try {
        const a = [];
        for (;;) a.push(new Array(100000).fill(a.length));
      } catch (e) {
        return { body: "survived: " + e };
      }
    case "heap_caught_in_a_loop":
      for (;;) {
        try {
          const a = [];
          for (;;) a.push({ n: a.length });
        } catch (e) {
          // try again
        }
      }
    case "one_huge_buffer":
      try {
        return { body: new Uint8Array(1 << 30).length };
      } catch (e) {
        return { body: e.name };
      }
    case "heap_objects": {
      const m = new Map();
      for (let i = 0; ; i++) m.set(i, { i, s: "v" + i });
    }
    case "array_buffers": {
      // 1 GiB in 1 MiB chunks, all kept.
      const a = [];
      for (let i = 0; i < 1024; i++) a.push(new ArrayBuffer(1 << 20));
      return { body: "allocated 1 GiB" };
    }
    case "array_buffer_churn": {
      // Buffers that become garbage do not add up.
      let n = 0;
      for (let i = 0; i < 128; i++) n += new Uint8Array(1 << 20).length;
      return { body: { n } };
    }
    case "string_doubling": {
      // Each doubling is read, so both engines hold the whole string.
      let s = "x";
      for (;;) {
        s = s + s;
        if (s.charCodeAt(s.length - 1) !== 120) return { body: "corrupt" };
      }
    }
    case "recursion":
      return { body: down(0) };
    case "recursion_caught":
      try {
        down(0);
      } catch (e) {
        return { body: { name: e.name, isRangeError: e instanceof RangeError } };
      }
      return { body: "no overflow" };
    case "recursion_then_work":
      // After an overflow the handler can go on normally.
      try {
        down(0);
      } catch (e) {
        // ignored
      }
      return { body: { sum: [1, 2, 3].reduce((a, b) => a + b, 0) } };
    default:
      return { body: "no such bomb" };
  }
}

// Parses a JSON body of any depth; answers its depth, or the error's name.
export function json_depth(request) {
  let value;
  try {
    value = request.body.json();
  } catch (e) {
    return { statusCode: 400, body: { error: e.name } };
  }
  let depth = 0;
  while (Array.isArray(value)) {
    depth += 1;
    value = value[0];
  }
  return { body: { depth } };
}

// Parses a JSON body and sends it back re-serialised.
export function json_echo(request) {
  try {
    return { body: { length: JSON.stringify(request.body.json()).length } };
  } catch (e) {
    return { statusCode: 400, body: { error: e.name } };
  }
}

export function huge(request) {
  const mib = Number(request.query.split("=")[1] || "8");
  switch (request.params.kind) {
    case "text":
      return { body: "x".repeat(mib << 20) };
    case "bytes":
      return { body: new Uint8Array(mib << 20).fill(1) };
    case "json":
      return { body: new Array(mib << 16).fill("0123456789abcd") };
    default:
      return { body: "no such kind" };
  }
}
