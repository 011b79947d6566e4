// Handlers that fail on purpose, for the e2e bad-input tests.
const MAP = "public:touched";

export function write_then_throw(request) {
  ccf.kv[MAP].set(ccf.strToBuf("k"), ccf.strToBuf("written before the throw"));
  throw new Error("deliberate failure after a write");
}

export function throw_string(request) {
  throw "a plain string";
}

// A 4xx answer: the handler's writes must be discarded.
// 65 MiB in one transaction: more than a ledger entry may hold.
export function write_too_much(request) {
  ccf.kv[MAP].set(ccf.strToBuf("k"), new ArrayBuffer(65 << 20));
  return { body: "written" };
}

export function write_then_fail(request) {
  ccf.kv[MAP].set(ccf.strToBuf("k"), ccf.strToBuf("written before a 400"));
  return { statusCode: 400, body: { error: { code: "Nope", message: "refused" } } };
}

export function read(request) {
  const v = ccf.kv[MAP].get(ccf.strToBuf("k"));
  return { body: { value: v === undefined ? null : ccf.bufToStr(v) } };
}
