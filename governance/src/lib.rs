//! Governance: the consortium of members runs the service by signed
//! proposals and ballots, decided by a JavaScript constitution that runs on
//! QuickJS (never on V8).
//!
//! - [`request`]: COSE Sign1 governance requests: who signed, is it fresh,
//!   has it been seen before.
//! - [`proposals`]: proposals, ballots, withdrawal, member acks; the
//!   constitution decides, the outcome is written to the KV.
//! - [`qjs`]: the QuickJS runner for the constitution and ballots, and the
//!   default constitution.
//!
//! Everything here works on a [`charter_ledger::Tx`]; the node decides
//! where the transaction runs (the primary) and commits it. Effects of
//! governance on the running node (a node trusted, the app replaced, the
//! service opened) follow from the tables the constitution writes: the node
//! watches them.

pub mod proposals;
pub mod qjs;
pub mod request;
pub mod service;
pub mod tables;

/// A governance failure as the client sees it: an HTTP status, CCF's error
/// code and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct GovError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl GovError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        GovError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        GovError::new(400, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        GovError::new(500, "InternalError", message)
    }
}

pub use tables::*;

/// The id of a member, user or node certificate: hex SHA-256 of its DER.
pub fn cert_id_pem(pem: &str) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if parsed.label != "CERTIFICATE" {
        return Err(format!("PEM block is {:?}, not CERTIFICATE", parsed.label));
    }
    Ok(hex::encode(Sha256::digest(&parsed.contents)))
}
