// The bench app: one cheap write endpoint and one compute-heavy read, to
// compare the JS engines end to end (docs/benchmarks.md, "JS engines end
// to end"). The bombs are in bombs.js.
import { badRequest, intParam } from "./util.js";

const PRIVATE = "records";

// POST /log {"id": N, "msg": "..."}: the logging sample's private write.
export function post_log(request) {
  let body;
  try {
    body = request.body.json();
  } catch (e) {
    return badRequest("request body is not valid JSON: " + e.message);
  }
  if (body === null || typeof body !== "object") {
    return badRequest('request body must be a JSON object {"id": N, "msg": "..."}');
  }
  if (!Number.isInteger(body.id) || body.id < 0) {
    return badRequest('"id" must be a non-negative integer');
  }
  if (typeof body.msg !== "string" || body.msg.length === 0) {
    return badRequest('"msg" must be a non-empty string');
  }
  ccf.kv[PRIVATE].set(ccf.strToBuf(String(body.id)), ccf.strToBuf(body.msg));
  return { body: true };
}

const GROUPS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];

// A 32-bit xorshift generator: the same numbers on every engine.
function generator(seed) {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

// GET /compute?n=10000&seed=1: builds n pseudo-random records, sorts them
// (by amount, then name, then id), aggregates them per group and answers a
// small summary. Integers only, so every engine gives the same JSON.
export function compute(request) {
  let n, seed;
  try {
    n = intParam(request.query, "n", 10000, 1, 1000000);
    seed = intParam(request.query, "seed", 1, 1, 0x7fffffff);
  } catch (e) {
    return badRequest(e.message);
  }
  const next = generator(seed);
  const records = [];
  for (let id = 0; id < n; id++) {
    const r = next();
    records.push({
      id,
      group: GROUPS[r % GROUPS.length],
      name: "item-" + (next() % 100000).toString(36),
      amount: (r >>> 8) % 100000,
      qty: 1 + (next() % 50),
    });
  }
  records.sort((a, b) => a.amount - b.amount || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) || a.id - b.id);
  const groups = {};
  let checksum = 0;
  records.forEach((rec, i) => {
    const g = groups[rec.group] || (groups[rec.group] = { count: 0, amount: 0, value: 0, max: 0 });
    g.count += 1;
    g.amount += rec.amount;
    g.value += rec.amount * rec.qty;
    if (rec.amount > g.max) g.max = rec.amount;
    checksum = (Math.imul(checksum, 31) + rec.id + i) >>> 0;
  });
  const names = Object.keys(groups).sort();
  const byGroup = {};
  for (const name of names) byGroup[name] = groups[name];
  return {
    body: {
      records: n,
      seed,
      median: records[n >> 1].amount,
      first: records[0].id,
      last: records[n - 1].id,
      checksum,
      groups: byGroup,
    },
  };
}
