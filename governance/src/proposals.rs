//! Proposals and ballots: the life of a proposal, decided by the
//! constitution.
//!
//! ```text
//! create ──validate──▶ Open ──resolve──▶ Accepted ──apply ok──▶ Accepted
//!                       │  ▲                       └─apply threw─▶ Failed
//!                       │  └─ ballot (re-resolve)
//!                       ├──▶ Rejected      (resolve said so)
//!                       ├──▶ Withdrawn     (the proposer withdrew it)
//!                       └──▶ Dropped       (the constitution changed)
//! ```
//!
//! Every step runs in the caller's transaction: a step that fails leaves
//! the transaction as it found it (the constitution's `apply` is atomic,
//! see [`crate::qjs`]), and the node commits nothing.

use std::collections::BTreeMap;

use charter_ledger::Tx;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use crate::qjs::{self, Constitution, GovLimits};
use crate::request::SignedRequest;
use crate::tables::*;
use crate::GovError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalState {
    Open,
    Accepted,
    Withdrawn,
    Rejected,
    Failed,
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// What `public:ccf.gov.proposals_info` holds per proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalInfo {
    pub proposer_id: String,
    pub state: ProposalState,
    /// member id → ballot source.
    #[serde(default)]
    pub ballots: BTreeMap<String, String>,
    /// The votes that decided the proposal, once it is decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_votes: Option<BTreeMap<String, bool>>,
    /// Ballots that threw or did not return a boolean, with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vote_failures: BTreeMap<String, Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl ProposalInfo {
    /// The proposal as the API shows it (CCF's 2024-07-01 shape).
    pub fn view(&self, proposal_id: &str) -> Json {
        let mut v = json!({
            "proposalId": proposal_id,
            "proposerId": self.proposer_id,
            "proposalState": self.state,
            "ballotCount": self.ballots.len(),
        });
        if let Some(f) = &self.final_votes {
            v["finalVotes"] = json!(f);
        }
        if !self.vote_failures.is_empty() {
            v["voteFailures"] = json!(self.vote_failures);
        }
        if let Some(f) = &self.failure {
            v["failure"] = json!(f);
        }
        v
    }
}

fn internal(e: impl std::fmt::Display) -> GovError {
    GovError::internal(e.to_string())
}

fn read_json<T: for<'de> Deserialize<'de>>(tx: &mut Tx, map: &str, key: &[u8]) -> Option<T> {
    tx.get(map, key)
        .and_then(|v| serde_json::from_slice(&v).ok())
}

fn write_info(tx: &mut Tx, id: &str, info: &ProposalInfo) -> Result<(), GovError> {
    let bytes = serde_json::to_vec(info).map_err(internal)?;
    tx.set(PROPOSALS_INFO, id.as_bytes(), &bytes)
        .map_err(internal)
}

/// The constitution the service runs now.
pub fn constitution(tx: &mut Tx, limits: GovLimits) -> Result<Constitution, GovError> {
    let source = tx
        .get(CONSTITUTION, SINGLETON_KEY)
        .ok_or_else(|| GovError::internal("the service has no constitution"))?;
    let source = String::from_utf8(source)
        .map_err(|_| GovError::internal("the constitution is not UTF-8"))?;
    Ok(Constitution::new(source, limits))
}

/// The proposal and its info, or 404.
fn load(tx: &mut Tx, proposal_id: &str) -> Result<(String, ProposalInfo), GovError> {
    let not_found = || {
        GovError::new(
            404,
            "ProposalNotFound",
            format!("no proposal with id {proposal_id:?}"),
        )
    };
    let info: ProposalInfo =
        read_json(tx, PROPOSALS_INFO, proposal_id.as_bytes()).ok_or_else(not_found)?;
    let proposal = tx
        .get(PROPOSALS, proposal_id.as_bytes())
        .ok_or_else(not_found)?;
    Ok((String::from_utf8_lossy(&proposal).into_owned(), info))
}

/// `POST /gov/members/proposals:create`.
pub fn create(tx: &mut Tx, req: &SignedRequest, limits: GovLimits) -> Result<Json, GovError> {
    let proposal = std::str::from_utf8(&req.payload)
        .map_err(|_| {
            GovError::bad_request("ProposalFailedToValidate", "the proposal is not UTF-8 text")
        })?
        .to_string();
    let constitution = constitution(tx, limits)?;
    let validation = constitution.validate(tx, &proposal).map_err(|e| {
        GovError::bad_request("ProposalFailedToValidate", format!("validate threw: {e}"))
    })?;
    if !validation.valid {
        return Err(GovError::bad_request(
            "ProposalFailedToValidate",
            validation.description,
        ));
    }
    // Unique per signed request (its digest), as replays are refused.
    let proposal_id = hex::encode(Sha256::digest(req.digest));
    if tx.has(PROPOSALS_INFO, proposal_id.as_bytes()) {
        return Err(GovError::new(
            409,
            "ProposalCreatedTooRecently",
            "a proposal with this id exists already",
        ));
    }
    tx.set(PROPOSALS, proposal_id.as_bytes(), proposal.as_bytes())
        .map_err(internal)?;
    let mut info = ProposalInfo {
        proposer_id: req.member_id.clone(),
        state: ProposalState::Open,
        ballots: BTreeMap::new(),
        final_votes: None,
        vote_failures: BTreeMap::new(),
        failure: None,
    };
    // A constitution may accept a proposal with no votes at all.
    resolve(
        tx,
        &constitution,
        &proposal_id,
        &proposal,
        &mut info,
        limits,
    )?;
    write_info(tx, &proposal_id, &info)?;
    Ok(info.view(&proposal_id))
}

/// `POST /gov/members/proposals/{id}/ballots/{member}:submit`.
pub fn submit_ballot(
    tx: &mut Tx,
    req: &SignedRequest,
    proposal_id: &str,
    member_id: &str,
    limits: GovLimits,
) -> Result<Json, GovError> {
    check_signed_for(req, proposal_id, Some(member_id))?;
    let (proposal, mut info) = load(tx, proposal_id)?;
    if info.state != ProposalState::Open {
        return Err(GovError::bad_request(
            "ProposalNotOpen",
            format!(
                "proposal {proposal_id} is {:?}, not Open: it takes no more ballots",
                info.state
            ),
        ));
    }
    if info.ballots.contains_key(member_id) {
        return Err(GovError::bad_request(
            "VoteAlreadyExists",
            format!("member {member_id} has already voted on proposal {proposal_id}"),
        ));
    }
    let body: Json = serde_json::from_slice(&req.payload).map_err(|e| {
        GovError::bad_request("InvalidBallot", format!("the ballot is not JSON: {e}"))
    })?;
    let ballot = body.get("ballot").and_then(|b| b.as_str()).ok_or_else(|| {
        GovError::bad_request(
            "InvalidBallot",
            "expected {\"ballot\": \"export function vote(proposal, proposerId) { ... }\"}",
        )
    })?;
    qjs::check_ballot(ballot, limits).map_err(|e| {
        GovError::bad_request("InvalidBallot", format!("the ballot does not load: {e}"))
    })?;
    info.ballots
        .insert(member_id.to_string(), ballot.to_string());
    let constitution = constitution(tx, limits)?;
    resolve(tx, &constitution, proposal_id, &proposal, &mut info, limits)?;
    write_info(tx, proposal_id, &info)?;
    Ok(info.view(proposal_id))
}

/// `POST /gov/members/proposals/{id}:withdraw`.
pub fn withdraw(tx: &mut Tx, req: &SignedRequest, proposal_id: &str) -> Result<Json, GovError> {
    check_signed_for(req, proposal_id, None)?;
    let (_, mut info) = load(tx, proposal_id)?;
    if info.proposer_id != req.member_id {
        return Err(GovError::new(
            403,
            "AuthorizationFailed",
            format!(
                "only the proposer ({}) may withdraw proposal {proposal_id}",
                info.proposer_id
            ),
        ));
    }
    if info.state != ProposalState::Open {
        return Err(GovError::bad_request(
            "ProposalNotOpen",
            format!(
                "proposal {proposal_id} is {:?}; only Open proposals can be withdrawn",
                info.state
            ),
        ));
    }
    info.state = ProposalState::Withdrawn;
    write_info(tx, proposal_id, &info)?;
    Ok(info.view(proposal_id))
}

/// A ballot or withdrawal names its proposal in the signed header, so a
/// signature cannot be replayed against another proposal (or member).
fn check_signed_for(
    req: &SignedRequest,
    proposal_id: &str,
    member_id: Option<&str>,
) -> Result<(), GovError> {
    if req.proposal_id.as_deref() != Some(proposal_id) {
        return Err(GovError::bad_request(
            "InvalidCoseSign1",
            format!(
                "the signed ccf.gov.msg.proposal_id ({:?}) is not the proposal in the URL ({proposal_id})",
                req.proposal_id
            ),
        ));
    }
    if let Some(m) = member_id {
        if m != req.member_id {
            return Err(GovError::new(
                403,
                "AuthorizationFailed",
                format!("member {} cannot submit member {m}'s ballot", req.member_id),
            ));
        }
    }
    Ok(())
}

/// Runs the ballots and the constitution's `resolve`; applies the proposal
/// if it is accepted. Updates `info` (the caller writes it).
fn resolve(
    tx: &mut Tx,
    constitution: &Constitution,
    proposal_id: &str,
    proposal: &str,
    info: &mut ProposalInfo,
    limits: GovLimits,
) -> Result<(), GovError> {
    let mut votes = Vec::new();
    info.vote_failures.clear();
    for (member, ballot) in &info.ballots {
        match qjs::run_ballot(ballot, tx, proposal, &info.proposer_id, limits) {
            Ok(vote) => votes.push((member.clone(), vote)),
            Err(e) => {
                info.vote_failures.insert(
                    member.clone(),
                    Failure {
                        reason: e.to_string(),
                        trace: None,
                    },
                );
            }
        }
    }
    let outcome = match constitution.resolve(tx, proposal, &info.proposer_id, &votes) {
        Ok(state) => state,
        Err(e) => {
            info.state = ProposalState::Failed;
            info.failure = Some(Failure {
                reason: format!("resolve threw: {e}"),
                trace: None,
            });
            return Ok(());
        }
    };
    let final_votes = || votes.iter().cloned().collect::<BTreeMap<_, _>>();
    match outcome.as_str() {
        "Open" => {}
        "Rejected" => {
            info.state = ProposalState::Rejected;
            info.final_votes = Some(final_votes());
        }
        "Accepted" => {
            info.final_votes = Some(final_votes());
            let before = tx.get(CONSTITUTION, SINGLETON_KEY);
            match constitution.apply(tx, proposal, proposal_id) {
                Ok(()) => {
                    info.state = ProposalState::Accepted;
                    if tx.get(CONSTITUTION, SINGLETON_KEY) != before {
                        drop_open_proposals(tx, proposal_id)?;
                    }
                }
                Err(e) => {
                    info.state = ProposalState::Failed;
                    info.failure = Some(Failure {
                        reason: e.to_string(),
                        trace: None,
                    });
                }
            }
        }
        other => {
            return Err(GovError::internal(format!(
                "the constitution's resolve returned {other:?}"
            )))
        }
    }
    Ok(())
}

/// A new constitution invalidates every other open proposal: their votes
/// were cast under different rules.
fn drop_open_proposals(tx: &mut Tx, except: &str) -> Result<(), GovError> {
    let all = tx.entries(PROPOSALS_INFO);
    for (id, value) in all {
        if id == except.as_bytes() {
            continue;
        }
        let Ok(mut info) = serde_json::from_slice::<ProposalInfo>(&value) else {
            continue;
        };
        if info.state == ProposalState::Open {
            info.state = ProposalState::Dropped;
            let bytes = serde_json::to_vec(&info).map_err(internal)?;
            tx.set(PROPOSALS_INFO, &id, &bytes).map_err(internal)?;
        }
    }
    Ok(())
}

/// `GET /gov/members/proposals/{id}`.
pub fn get(tx: &mut Tx, proposal_id: &str) -> Result<Json, GovError> {
    let (_, info) = load(tx, proposal_id)?;
    Ok(info.view(proposal_id))
}

/// `GET /gov/members/proposals/{id}/actions`: the proposal as submitted.
pub fn actions(tx: &mut Tx, proposal_id: &str) -> Result<String, GovError> {
    load(tx, proposal_id).map(|(p, _)| p)
}

/// `GET /gov/members/proposals/{id}/ballots/{member}`.
pub fn get_ballot(tx: &mut Tx, proposal_id: &str, member_id: &str) -> Result<Json, GovError> {
    let (_, info) = load(tx, proposal_id)?;
    let ballot = info.ballots.get(member_id).ok_or_else(|| {
        GovError::new(
            404,
            "VoteNotFound",
            format!("member {member_id} has not voted on proposal {proposal_id}"),
        )
    })?;
    Ok(json!({"ballot": ballot}))
}

/// `GET /gov/members/proposals`.
pub fn list(tx: &mut Tx) -> Json {
    let value: Vec<Json> = tx
        .entries(PROPOSALS_INFO)
        .into_iter()
        .filter_map(|(id, v)| {
            let info: ProposalInfo = serde_json::from_slice(&v).ok()?;
            Some(info.view(&String::from_utf8_lossy(&id)))
        })
        .collect();
    json!({ "value": value })
}

/// `POST /gov/members/state-digests/{member}:update`: records the state
/// digest (supplied by the node: the current Merkle root) the member must
/// ack.
pub fn update_state_digest(
    tx: &mut Tx,
    req: &SignedRequest,
    member_id: &str,
    state_digest: &str,
) -> Result<Json, GovError> {
    if req.member_id != member_id {
        return Err(GovError::new(
            403,
            "AuthorizationFailed",
            format!(
                "member {} cannot update member {member_id}'s state digest",
                req.member_id
            ),
        ));
    }
    let value = json!({ "state_digest": state_digest }).to_string();
    tx.set(MEMBERS_ACKS, member_id.as_bytes(), value.as_bytes())
        .map_err(internal)?;
    Ok(json!({ "memberId": member_id, "stateDigest": state_digest }))
}

/// `POST /gov/members/state-digests/{member}:ack`: an Accepted member
/// that acks the digest it was given becomes Active.
pub fn ack(tx: &mut Tx, req: &SignedRequest, member_id: &str) -> Result<(), GovError> {
    if req.member_id != member_id {
        return Err(GovError::new(
            403,
            "AuthorizationFailed",
            format!("member {} cannot ack for member {member_id}", req.member_id),
        ));
    }
    let expected: Json = read_json(tx, MEMBERS_ACKS, member_id.as_bytes()).ok_or_else(|| {
        GovError::bad_request(
            "StateDigestNotFound",
            format!("no state digest to ack for member {member_id}: call :update first"),
        )
    })?;
    let body: Json = serde_json::from_slice(&req.payload)
        .map_err(|e| GovError::bad_request("InvalidAck", format!("the ack is not JSON: {e}")))?;
    let given = body.get("stateDigest").or_else(|| body.get("state_digest"));
    if given != expected.get("state_digest") {
        return Err(GovError::bad_request(
            "StateDigestMismatch",
            "the acked state digest is not the one this member was given by :update",
        ));
    }
    let mut info: Json = read_json(tx, MEMBERS_INFO, member_id.as_bytes()).unwrap_or(json!({}));
    info["status"] = json!(MEMBER_ACTIVE);
    tx.set(
        MEMBERS_INFO,
        member_id.as_bytes(),
        info.to_string().as_bytes(),
    )
    .map_err(internal)?;
    Ok(())
}
