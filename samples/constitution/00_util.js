// Charter's default constitution, part 1 of 5: helpers.
//
// The governance crate joins the files of this directory in name order
// into one ES module. The module exports `validate`, `resolve`, `apply`
// and `actions`. It runs on QuickJS with the `ccf` host API (see
// docs/governance.md).

const MEMBERS_CERTS = "public:ccf.gov.members.certs";
const MEMBERS_INFO = "public:ccf.gov.members.info";
const MEMBERS_ACKS = "public:ccf.gov.members.acks";
const USERS_CERTS = "public:ccf.gov.users.certs";
const USERS_INFO = "public:ccf.gov.users.info";
const NODES_INFO = "public:ccf.gov.nodes.info";
const SERVICE_INFO = "public:ccf.gov.service.info";
const CONSTITUTION_TABLE = "public:ccf.gov.constitution";
const JS_RUNTIME_OPTIONS = "public:ccf.gov.js_runtime_options";
const APP_MODULES = "public:ccf.gov.modules";
const APP_ENDPOINTS = "public:ccf.gov.endpoints";
// Charter's: the app's "engine" ("v8" or "quickjs"); absent means V8.
const APP_ENGINE = "public:ccf.gov.js_app_engine";

// Single-value maps use eight zero bytes as their only key, as in CCF.
function singletonKey() {
  return new ArrayBuffer(8);
}

function table(name) {
  return ccf.kv[name];
}

function readText(map, key) {
  const buf = table(map).get(typeof key === "string" ? ccf.strToBuf(key) : key);
  return buf === undefined ? undefined : ccf.bufToStr(buf);
}

function writeText(map, key, text) {
  table(map).set(typeof key === "string" ? ccf.strToBuf(key) : key, ccf.strToBuf(text));
}

function readJson(map, key) {
  const text = readText(map, key);
  return text === undefined ? undefined : JSON.parse(text);
}

function writeJson(map, key, value) {
  writeText(map, key, JSON.stringify(value));
}

function removeKey(map, key) {
  table(map).delete(typeof key === "string" ? ccf.strToBuf(key) : key);
}

// Every value of a map whose values are JSON, as [keyText, value] pairs.
function jsonEntries(map) {
  const out = [];
  table(map).forEach((value, key) => {
    out.push([ccf.bufToStr(key), JSON.parse(ccf.bufToStr(value))]);
  });
  return out;
}

// --- argument checks -------------------------------------------------
//
// Each check returns undefined when the value is fine, or a sentence
// fragment saying what is wrong with it ("is not a string").

function describeType(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return "a " + typeof value;
}

function isPlainObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function checkString(value) {
  if (typeof value !== "string") return "must be a string, got " + describeType(value);
  return undefined;
}

function checkNonEmptyString(value) {
  if (typeof value !== "string") return "must be a string, got " + describeType(value);
  if (value.length === 0) return "must not be empty";
  return undefined;
}

function checkObject(value) {
  if (!isPlainObject(value)) return "must be an object, got " + describeType(value);
  return undefined;
}

function checkBoolean(value) {
  if (typeof value !== "boolean") return "must be a boolean, got " + describeType(value);
  return undefined;
}

function checkPositiveInteger(value) {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    return "must be a positive integer, got " + JSON.stringify(value === undefined ? null : value);
  }
  return undefined;
}

// A positive integer no larger than `max`: limits beyond these would let
// one request hold a JS worker for minutes or claim the node's memory.
function checkIntegerUpTo(max, unit) {
  return (value) => {
    const problem = checkPositiveInteger(value);
    if (problem !== undefined) return problem;
    if (value > max) return "must be at most " + max + " " + unit + ", got " + value;
    return undefined;
  };
}

function checkCert(value) {
  if (typeof value !== "string") return "must be a PEM string, got " + describeType(value);
  if (!ccf.isValidX509CertBundle(value)) return "is not a valid X509 certificate bundle";
  return undefined;
}

// Member and user ids are the hex SHA-256 of the certificate's DER.
function checkEntityId(value) {
  if (typeof value !== "string") return "must be a string, got " + describeType(value);
  if (!/^[0-9a-f]{64}$/.test(value)) return "must be 64 lowercase hex characters (a certificate's SHA-256)";
  return undefined;
}

// Node ids are decimal numbers; a string of digits or an integer is taken.
function checkNodeId(value) {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return undefined;
  if (typeof value === "string" && /^(0|[1-9][0-9]*)$/.test(value)) return undefined;
  return "must be a node id (a decimal number), got " + JSON.stringify(value === undefined ? null : value);
}

function nodeKey(nodeId) {
  return String(nodeId);
}

// Collects problems with one action's arguments. `require(field, check)`
// and `optional(field, check)` record "args.<field> <problem>".
class ArgChecker {
  constructor(args) {
    this.args = args;
    this.problems = [];
  }
  require(field, check) {
    if (this.args[field] === undefined) {
      this.problems.push("args." + field + " is missing");
      return;
    }
    const problem = check(this.args[field]);
    if (problem !== undefined) this.problems.push("args." + field + " " + problem);
  }
  optional(field, check) {
    const value = this.args[field];
    if (value === undefined || value === null) return;
    const problem = check(value);
    if (problem !== undefined) this.problems.push("args." + field + " " + problem);
  }
  problem(text) {
    this.problems.push(text);
  }
}
