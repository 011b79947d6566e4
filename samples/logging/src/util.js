// Small helpers shared by the logging app's endpoints.

export function error(statusCode, code, message) {
  return { statusCode, body: { error: { code, message } } };
}

export function badRequest(message) {
  return error(400, "InvalidInput", message);
}

export function notFound(message) {
  return error(404, "ResourceNotFound", message);
}

// "a=1&b=two" -> { a: "1", b: "two" }
export function parseQuery(query) {
  const out = {};
  for (const part of (query || "").split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? "" : part.slice(eq + 1);
    out[decode(key)] = decode(value);
  }
  return out;
}

// Malformed percent-encoding is kept as it is rather than thrown.
function decode(s) {
  try {
    return decodeURIComponent(s.replace(/\+/g, " "));
  } catch (e) {
    return s;
  }
}
