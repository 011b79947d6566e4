// The logging sample app, in the style of CCF's: messages stored by
// numeric id, in a private map and in a public one.
import { badRequest, notFound, parseQuery } from "./util.js";

const PRIVATE = "records";
const PUBLIC = "public:records";

function idKey(id) {
  return ccf.strToBuf(String(id));
}

function parseEntry(request) {
  let body;
  try {
    body = request.body.json();
  } catch (e) {
    return { error: badRequest("request body is not valid JSON: " + e.message) };
  }
  if (body === null || typeof body !== "object") {
    return { error: badRequest("request body must be a JSON object {\"id\": N, \"msg\": \"...\"}") };
  }
  if (!Number.isInteger(body.id) || body.id < 0) {
    return { error: badRequest("\"id\" must be a non-negative integer") };
  }
  if (typeof body.msg !== "string" || body.msg.length === 0) {
    return { error: badRequest("\"msg\" must be a non-empty string") };
  }
  return { id: body.id, msg: body.msg };
}

function post(map, request) {
  const entry = parseEntry(request);
  if (entry.error) {
    return entry.error;
  }
  ccf.kv[map].set(idKey(entry.id), ccf.strToBuf(entry.msg));
  return { statusCode: 200, body: true };
}

function get(map, request) {
  const query = parseQuery(request.query);
  const id = Number(query.id);
  if (query.id === undefined || !Number.isInteger(id) || id < 0) {
    return badRequest("query parameter \"id\" must be a non-negative integer, e.g. ?id=1");
  }
  const value = ccf.kv[map].get(idKey(id));
  if (value === undefined) {
    return notFound(`no message with id ${id}`);
  }
  return { statusCode: 200, body: { msg: ccf.bufToStr(value) } };
}

export function post_private(request) {
  return post(PRIVATE, request);
}

export function get_private(request) {
  return get(PRIVATE, request);
}

export function post_public(request) {
  return post(PUBLIC, request);
}

export function get_public(request) {
  return get(PUBLIC, request);
}

export function count_private(request) {
  return { statusCode: 200, body: { count: ccf.kv[PRIVATE].size } };
}
