// Charter's default constitution, part 2 of 5: the actions.
//
// Each action has `validate(args)`, which returns a list of problems
// (empty when the arguments are fine) and reads nothing but its
// arguments, and `apply(args, proposalId)`, which performs it on the KV
// and throws if it cannot. The names and argument shapes are CCF's.

function action(check, perform) {
  return {
    validate(args) {
      const checker = new ArgChecker(args);
      check(checker, args);
      return checker.problems;
    },
    apply: perform,
  };
}

// --- members ---------------------------------------------------------

function activeMemberIds() {
  const ids = [];
  for (const [id, info] of jsonEntries(MEMBERS_INFO)) {
    if (info !== null && info.status === "Active") ids.push(id);
  }
  return ids;
}

const setMember = action(
  (c) => {
    c.require("cert", checkCert);
  },
  (args) => {
    const id = ccf.pemToId(args.cert);
    writeText(MEMBERS_CERTS, id, args.cert);
    const existing = readJson(MEMBERS_INFO, id);
    // A new member is Accepted; it becomes Active by acking the state
    // digest. Setting an existing member again keeps its status.
    const info = { status: existing !== undefined && existing.status ? existing.status : "Accepted" };
    if (args.member_data !== undefined && args.member_data !== null) info.member_data = args.member_data;
    writeJson(MEMBERS_INFO, id, info);
  },
);

const removeMember = action(
  (c) => {
    c.require("member_id", checkEntityId);
  },
  (args) => {
    const id = args.member_id;
    const info = readJson(MEMBERS_INFO, id);
    if (info === undefined && readText(MEMBERS_CERTS, id) === undefined) {
      return; // not a member: nothing to do
    }
    const active = activeMemberIds();
    if (info !== undefined && info.status === "Active" && active.length === 1 && active[0] === id) {
      throw new Error("remove_member: " + id + " is the last active member and cannot be removed");
    }
    removeKey(MEMBERS_CERTS, id);
    removeKey(MEMBERS_INFO, id);
    removeKey(MEMBERS_ACKS, id);
  },
);

const setMemberData = action(
  (c) => {
    c.require("member_id", checkEntityId);
    if (!("member_data" in c.args)) c.problem("args.member_data is missing");
  },
  (args) => {
    const info = readJson(MEMBERS_INFO, args.member_id);
    if (info === undefined) throw new Error("set_member_data: no member " + args.member_id);
    if (args.member_data === undefined || args.member_data === null) {
      delete info.member_data;
    } else {
      info.member_data = args.member_data;
    }
    writeJson(MEMBERS_INFO, args.member_id, info);
  },
);

// --- users -----------------------------------------------------------

function writeUserData(id, userData) {
  if (userData === undefined || userData === null) {
    removeKey(USERS_INFO, id);
  } else {
    writeJson(USERS_INFO, id, { user_data: userData });
  }
}

const setUser = action(
  (c) => {
    c.require("cert", checkCert);
  },
  (args) => {
    const id = ccf.pemToId(args.cert);
    writeText(USERS_CERTS, id, args.cert);
    writeUserData(id, args.user_data);
  },
);

const removeUser = action(
  (c) => {
    c.require("user_id", checkEntityId);
  },
  (args) => {
    removeKey(USERS_CERTS, args.user_id);
    removeKey(USERS_INFO, args.user_id);
  },
);

const setUserData = action(
  (c) => {
    c.require("user_id", checkEntityId);
    if (!("user_data" in c.args)) c.problem("args.user_data is missing");
  },
  (args) => {
    if (readText(USERS_CERTS, args.user_id) === undefined) {
      throw new Error("set_user_data: no user " + args.user_id);
    }
    writeUserData(args.user_id, args.user_data);
  },
);

// --- constitution and JS app -------------------------------------------

const setConstitution = action(
  (c) => {
    c.require("constitution", checkNonEmptyString);
  },
  (args) => {
    writeText(CONSTITUTION_TABLE, singletonKey(), args.constitution);
  },
);

const HTTP_METHODS = ["get", "put", "post", "delete", "patch", "head", "options"];
const ENDPOINT_MODES = ["readwrite", "readonly", "historical"];
const FORWARDING = ["sometimes", "always", "never"];
const APP_ENGINES = ["v8", "quickjs"];

function moduleName(name) {
  return name.startsWith("/") ? name.slice(1) : name;
}

function checkBundle(c, bundle) {
  if (!isPlainObject(bundle)) return;
  const modules = bundle.modules;
  const names = new Set();
  if (!Array.isArray(modules) || modules.length === 0) {
    c.problem("args.bundle.modules must be a non-empty array of {name, module}");
  } else {
    modules.forEach((m, i) => {
      const at = "args.bundle.modules[" + i + "]";
      if (!isPlainObject(m)) {
        c.problem(at + " must be an object {name, module}");
        return;
      }
      const nameProblem = checkNonEmptyString(m.name);
      if (nameProblem !== undefined) c.problem(at + ".name " + nameProblem);
      const moduleProblem = checkString(m.module);
      if (moduleProblem !== undefined) c.problem(at + ".module " + moduleProblem);
      if (typeof m.name === "string") {
        const key = moduleName(m.name);
        if (names.has(key)) c.problem(at + ".name " + JSON.stringify(m.name) + " appears twice");
        names.add(key);
      }
    });
  }
  const metadata = bundle.metadata;
  if (!isPlainObject(metadata)) {
    c.problem("args.bundle.metadata must be an object {endpoints}");
    return;
  }
  if (metadata.engine !== undefined && !APP_ENGINES.includes(metadata.engine)) {
    c.problem("args.bundle.metadata.engine must be one of " + APP_ENGINES.join(", "));
  }
  if (!isPlainObject(metadata.endpoints)) {
    c.problem("args.bundle.metadata.endpoints must be an object {\"/path\": {method: properties}}");
    return;
  }
  for (const [path, methods] of Object.entries(metadata.endpoints)) {
    const at = "args.bundle.metadata.endpoints[" + JSON.stringify(path) + "]";
    if (!path.startsWith("/")) c.problem(at + ": a path must start with /");
    if (!isPlainObject(methods)) {
      c.problem(at + " must be an object {method: properties}");
      continue;
    }
    for (const [method, props] of Object.entries(methods)) {
      const here = at + "." + method;
      if (!HTTP_METHODS.includes(method.toLowerCase())) {
        c.problem(here + ": unknown HTTP method (expected one of " + HTTP_METHODS.join(", ") + ")");
      }
      if (!isPlainObject(props)) {
        c.problem(here + " must be an object of endpoint properties");
        continue;
      }
      const jsModule = checkNonEmptyString(props.js_module);
      if (jsModule !== undefined) {
        c.problem(here + ".js_module " + jsModule);
      } else if (names.size > 0 && !names.has(moduleName(props.js_module))) {
        c.problem(here + ".js_module " + JSON.stringify(props.js_module) + " is not a module of the bundle");
      }
      const jsFunction = checkNonEmptyString(props.js_function);
      if (jsFunction !== undefined) c.problem(here + ".js_function " + jsFunction);
      if (
        !Array.isArray(props.authn_policies) ||
        !props.authn_policies.every((p) => typeof p === "string" || isPlainObject(p))
      ) {
        c.problem(here + ".authn_policies must be an array of policy names");
      }
      if (!ENDPOINT_MODES.includes(props.mode)) {
        c.problem(here + ".mode must be one of " + ENDPOINT_MODES.join(", "));
      }
      if (props.forwarding_required !== undefined && !FORWARDING.includes(props.forwarding_required)) {
        c.problem(here + ".forwarding_required must be one of " + FORWARDING.join(", "));
      }
      if (props.openapi !== undefined && !isPlainObject(props.openapi)) {
        c.problem(here + ".openapi must be an object");
      }
    }
  }
}

function clearApp() {
  table(APP_MODULES).clear();
  table(APP_ENDPOINTS).clear();
  table(APP_ENGINE).clear();
}

const setJsApp = action(
  (c, args) => {
    c.require("bundle", checkObject);
    checkBundle(c, args.bundle);
  },
  (args) => {
    clearApp();
    for (const m of args.bundle.modules) {
      writeText(APP_MODULES, m.name, m.module);
    }
    for (const [path, methods] of Object.entries(args.bundle.metadata.endpoints)) {
      for (const [method, props] of Object.entries(methods)) {
        writeJson(APP_ENDPOINTS, method.toLowerCase() + " " + path, props);
      }
    }
    if (args.bundle.metadata.engine !== undefined) {
      writeText(APP_ENGINE, singletonKey(), args.bundle.metadata.engine);
    }
  },
);

const removeJsApp = action(
  () => {},
  () => {
    clearApp();
  },
);

const setJsRuntimeOptions = action(
  (c) => {
    c.require("max_heap_bytes", checkIntegerUpTo(4 * 1024 * 1024 * 1024, "bytes"));
    c.require("max_stack_bytes", checkIntegerUpTo(64 * 1024 * 1024, "bytes"));
    c.require("max_execution_time_ms", checkIntegerUpTo(60000, "ms"));
    c.optional("log_exception_details", checkBoolean);
    c.optional("return_exception_details", checkBoolean);
  },
  (args) => {
    writeJson(JS_RUNTIME_OPTIONS, singletonKey(), {
      max_heap_bytes: args.max_heap_bytes,
      max_stack_bytes: args.max_stack_bytes,
      max_execution_time_ms: args.max_execution_time_ms,
      log_exception_details: args.log_exception_details === true,
      return_exception_details: args.return_exception_details === true,
    });
  },
);

// --- nodes and service -------------------------------------------------

function readNode(name, nodeId) {
  const info = readJson(NODES_INFO, nodeKey(nodeId));
  if (info === undefined) throw new Error(name + ": no node " + nodeKey(nodeId));
  return info;
}

const transitionNodeToTrusted = action(
  (c) => {
    c.require("node_id", checkNodeId);
    c.optional("valid_from", checkString);
  },
  (args) => {
    const info = readNode("transition_node_to_trusted", args.node_id);
    if (info.status === "Trusted") return;
    if (info.status !== "Pending") {
      throw new Error(
        "transition_node_to_trusted: node " + nodeKey(args.node_id) + " is " + info.status + ", not Pending",
      );
    }
    info.status = "Trusted";
    writeJson(NODES_INFO, nodeKey(args.node_id), info);
  },
);

const removeNode = action(
  (c) => {
    c.require("node_id", checkNodeId);
  },
  (args) => {
    const key = nodeKey(args.node_id);
    const info = readNode("remove_node", key);
    if (info.status === "Retired") return;
    if (info.status === "Trusted") {
      const trusted = jsonEntries(NODES_INFO).filter(([, n]) => n !== null && n.status === "Trusted");
      if (trusted.length === 1) {
        throw new Error("remove_node: node " + key + " is the last trusted node and cannot be retired");
      }
    }
    info.status = "Retired";
    writeJson(NODES_INFO, key, info);
  },
);

const setNodeData = action(
  (c) => {
    c.require("node_id", checkNodeId);
    if (!("node_data" in c.args)) c.problem("args.node_data is missing");
  },
  (args) => {
    const key = nodeKey(args.node_id);
    const info = readNode("set_node_data", key);
    if (args.node_data === undefined || args.node_data === null) {
      delete info.node_data;
    } else {
      info.node_data = args.node_data;
    }
    writeJson(NODES_INFO, key, info);
  },
);

const transitionServiceToOpen = action(
  () => {},
  () => {
    const info = readJson(SERVICE_INFO, singletonKey());
    if (info === undefined) throw new Error("transition_service_to_open: the service has no service info");
    if (info.status === "Open") throw new Error("transition_service_to_open: the service is already open");
    info.status = "Open";
    writeJson(SERVICE_INFO, singletonKey(), info);
  },
);

export const actions = new Map([
  ["set_member", setMember],
  ["remove_member", removeMember],
  ["set_member_data", setMemberData],
  ["set_user", setUser],
  ["remove_user", removeUser],
  ["set_user_data", setUserData],
  ["set_constitution", setConstitution],
  ["set_js_app", setJsApp],
  ["remove_js_app", removeJsApp],
  ["set_js_runtime_options", setJsRuntimeOptions],
  ["transition_node_to_trusted", transitionNodeToTrusted],
  ["remove_node", removeNode],
  ["set_node_data", setNodeData],
  ["transition_service_to_open", transitionServiceToOpen],
]);
