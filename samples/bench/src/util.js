// Small helpers shared by the bench app's endpoints.

export function badRequest(message) {
  return { statusCode: 400, body: { error: { code: "InvalidInput", message } } };
}

// "a=1&b=two" -> { a: "1", b: "two" } (values are not percent-decoded:
// the bench's parameters are plain numbers).
export function parseQuery(query) {
  const out = {};
  for (const part of (query || "").split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    out[eq < 0 ? part : part.slice(0, eq)] = eq < 0 ? "" : part.slice(eq + 1);
  }
  return out;
}

// An integer query parameter in [min, max], or `fallback` if absent.
export function intParam(query, name, fallback, min, max) {
  const raw = parseQuery(query)[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new RangeError(`query parameter "${name}" must be an integer in [${min}, ${max}]`);
  }
  return n;
}
