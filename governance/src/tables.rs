//! The governance tables, with CCF's names so CCF constitutions and apps
//! find them. Keys and values are UTF-8 text unless noted; the formats are
//! written down in `docs/governance.md`.

/// member id → certificate PEM.
pub const MEMBERS_CERTS: &str = "public:ccf.gov.members.certs";
/// member id → `{"status": "Accepted"|"Active", "member_data": ...}`.
pub const MEMBERS_INFO: &str = "public:ccf.gov.members.info";
/// member id → `{"state_digest": hex}`: what the member must ack.
pub const MEMBERS_ACKS: &str = "public:ccf.gov.members.acks";
/// user id → certificate PEM.
pub const USERS_CERTS: &str = "public:ccf.gov.users.certs";
/// user id → `{"user_data": ...}`.
pub const USERS_INFO: &str = "public:ccf.gov.users.info";
/// node id (decimal) → `{"cert", "status", "rpc_address", "node_address", "node_data"}`.
pub const NODES_INFO: &str = "public:ccf.gov.nodes.info";
/// singleton → `{"status": "Opening"|"Open", "cert": service cert PEM}`.
pub const SERVICE_INFO: &str = "public:ccf.gov.service.info";
/// singleton → the constitution's source text.
pub const CONSTITUTION: &str = "public:ccf.gov.constitution";
/// proposal id → the proposal as submitted (JSON text).
pub const PROPOSALS: &str = "public:ccf.gov.proposals";
/// proposal id → [`crate::proposals::ProposalInfo`] as JSON.
pub const PROPOSALS_INFO: &str = "public:ccf.gov.proposals_info";
/// singleton → JS runtime limits for apps (`set_js_runtime_options`).
pub const JS_RUNTIME_OPTIONS: &str = "public:ccf.gov.js_runtime_options";
/// module name → source text of the governance-installed JS app.
pub const MODULES: &str = "public:ccf.gov.modules";
/// `"<method> <path>"` → endpoint properties JSON of that app.
pub const ENDPOINTS: &str = "public:ccf.gov.endpoints";
/// singleton → `"v8"` or `"quickjs"`: the engine of that app (Charter's,
/// not CCF's: `"engine"` in the bundle's `app.json`). Absent means V8.
pub const JS_APP_ENGINE: &str = "public:ccf.gov.js_app_engine";
/// `"<created_at, 20 digits>:<hex SHA-256 of the request>"` → message
/// type: the signed requests seen within the freshness window, so a
/// replay is refused on every node.
pub const RECENT_REQUESTS: &str = "public:ccf.gov.cose_recent_requests";

/// CCF's key for single-value maps: eight zero bytes.
pub const SINGLETON_KEY: &[u8] = &[0u8; 8];

/// Member states.
pub const MEMBER_ACCEPTED: &str = "Accepted";
pub const MEMBER_ACTIVE: &str = "Active";
/// Node states.
pub const NODE_PENDING: &str = "Pending";
pub const NODE_TRUSTED: &str = "Trusted";
pub const NODE_RETIRED: &str = "Retired";
/// Service states.
pub const SERVICE_OPENING: &str = "Opening";
pub const SERVICE_OPEN: &str = "Open";
