//! Governance: members, users and nodes, and (to come) proposals, ballots
//! and the JS constitution on QuickJS.
//!
//! For now this crate only names the governance tables, with CCF's names,
//! so every crate agrees on them.

pub const USERS_CERTS: &str = "public:ccf.gov.users.certs";
pub const MEMBERS_CERTS: &str = "public:ccf.gov.members.certs";
pub const NODES_INFO: &str = "public:ccf.gov.nodes.info";
pub const SERVICE_INFO: &str = "public:ccf.gov.service.info";
