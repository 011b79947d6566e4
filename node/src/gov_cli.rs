//! `charter gov ...`: the member's side of governance. Builds proposals
//! for the default constitution's actions, signs requests as COSE Sign1
//! with the member's key, sends them, and prints what the service answered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use serde_json::{json, Value as Json};

use crate::identity::{self, Identity};

const API: &str = "api-version=2024-07-01";

/// Where the service is and who is speaking.
#[derive(clap::Args, Clone)]
pub struct Connection {
    /// Any node of the service (writes are forwarded to the primary).
    #[arg(long, default_value = "https://127.0.0.1:8000", env = "CHARTER_SERVER")]
    pub server: String,
    /// The service certificate: the only thing this command trusts.
    #[arg(
        long,
        default_value = "workspace/sandbox/service_cert.pem",
        env = "CHARTER_SERVICE_CERT"
    )]
    pub service_cert: PathBuf,
    /// The member's certificate (its id is the SHA-256 of it).
    #[arg(
        long,
        default_value = "workspace/sandbox/member0_cert.pem",
        env = "CHARTER_MEMBER_CERT"
    )]
    pub cert: PathBuf,
    /// The member's private key (PEM, Ed25519), which signs each request.
    #[arg(
        long,
        default_value = "workspace/sandbox/member0_privk.pem",
        env = "CHARTER_MEMBER_KEY"
    )]
    pub key: PathBuf,
}

/// The arguments `charter gov propose` turns into an action.
#[derive(clap::Args)]
pub struct ProposeArgs {
    /// One of the default constitution's actions: set_member,
    /// remove_member, set_member_data, set_user, remove_user,
    /// set_user_data, set_constitution, set_js_app, remove_js_app,
    /// set_js_runtime_options, transition_node_to_trusted, remove_node,
    /// set_node_data, transition_service_to_open. Omit it with --file.
    pub action: Option<String>,
    /// A certificate PEM file (set_member, set_user; remove_* take it
    /// instead of --id).
    #[arg(long = "cert-file")]
    pub cert_file: Option<PathBuf>,
    /// A member, user or node id.
    #[arg(long)]
    pub id: Option<String>,
    /// member_data / user_data / node_data, as JSON.
    #[arg(long)]
    pub data: Option<String>,
    /// An app bundle directory (app.json + src/) for set_js_app.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// A constitution: a .js file or a directory of them (set_constitution).
    #[arg(long)]
    pub constitution: Option<PathBuf>,
    /// The action's args as a JSON object (any action; merged last).
    #[arg(long)]
    pub args: Option<String>,
    /// A whole proposal JSON file ({"actions": [...]}) instead of ACTION.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

pub struct Member {
    id: String,
    key: ed25519_dalek::SigningKey,
    client: reqwest::Client,
    server: String,
}

impl Member {
    pub fn connect(c: &Connection) -> anyhow::Result<Member> {
        let cert = read(&c.cert, "member certificate")?;
        let key_pem = read(&c.key, "member private key")?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&key_pem)
            .map_err(|e| anyhow!("{} is not an Ed25519 private key: {e}", c.key.display()))?;
        let service_cert = read(&c.service_cert, "service certificate")?;
        let client = crate::tls::reqwest_client(
            crate::tls::service_client(
                &service_cert,
                Some(&Identity {
                    key_pem,
                    cert_pem: cert.clone(),
                }),
            )?,
            Duration::from_secs(60),
        )?;
        Ok(Member {
            id: identity::cert_id_pem(&cert)?,
            key,
            client,
            server: c.server.trim_end_matches('/').to_string(),
        })
    }

    fn sign(&self, msg_type: &str, proposal_id: Option<&str>, payload: &[u8]) -> Vec<u8> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        charter_governance::request::sign(&self.key, &self.id, msg_type, now, proposal_id, payload)
    }

    /// Sends a signed request; returns the status and body.
    async fn post(
        &self,
        path: &str,
        msg_type: &str,
        proposal_id: Option<&str>,
        payload: &[u8],
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}?{API}", self.server);
        let mut answer = (0, String::new());
        // Ed25519 signatures are deterministic and created_at counts whole
        // seconds, so the same command twice within a second is the same
        // request, which the service refuses as a replay: sign it again
        // in the next second.
        for attempt in 0..2 {
            if attempt > 0 {
                // Until the clock's next whole second: then created_at differs.
                let into_second = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_millis())
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(u64::from(1000 - into_second) + 20)).await;
            }
            let body = self.sign(msg_type, proposal_id, payload);
            let r = self
                .client
                .post(&url)
                .header("content-type", "application/cose")
                .body(body)
                .send()
                .await
                .with_context(|| format!("sending to {url}"))?;
            answer = (r.status().as_u16(), r.text().await.unwrap_or_default());
            if !(answer.0 == 400 && answer.1.contains("RequestReplayed")) {
                break;
            }
        }
        Ok(answer)
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}?{API}", self.server);
        let r = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("sending to {url}"))?;
        Ok((r.status().as_u16(), r.text().await.unwrap_or_default()))
    }
}

fn read(p: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading the {what} {}", p.display()))
}

/// Prints the service's answer; a 4xx/5xx becomes the command's failure.
fn report((status, body): (u16, String)) -> anyhow::Result<()> {
    let shown = serde_json::from_str::<Json>(&body)
        .map(|v| serde_json::to_string_pretty(&v).unwrap_or(body.clone()))
        .unwrap_or(body);
    if (200..300).contains(&status) {
        if !shown.is_empty() {
            println!("{shown}");
        }
        Ok(())
    } else {
        bail!("the service answered {status}: {shown}")
    }
}

/// The proposal JSON for one action of the default constitution.
pub fn build_proposal(a: &ProposeArgs) -> anyhow::Result<Json> {
    if let Some(f) = &a.file {
        let text = read(f, "proposal")?;
        return serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()));
    }
    let action = a
        .action
        .as_deref()
        .ok_or_else(|| anyhow!("name an ACTION (e.g. set_user) or give --file PROPOSAL.json"))?;
    let data = || -> anyhow::Result<Option<Json>> {
        a.data
            .as_deref()
            .map(|d| serde_json::from_str(d).with_context(|| "--data is not JSON"))
            .transpose()
    };
    let cert = || -> anyhow::Result<String> {
        let f = a
            .cert_file
            .as_ref()
            .ok_or_else(|| anyhow!("{action} needs --cert-file CERT.pem"))?;
        read(f, "certificate")
    };
    let id_or_cert = || -> anyhow::Result<String> {
        match (&a.id, &a.cert_file) {
            (Some(id), _) => Ok(id.clone()),
            (None, Some(_)) => identity::cert_id_pem(&cert()?),
            (None, None) => bail!("{action} needs --id ID (or --cert-file CERT.pem)"),
        }
    };
    let node_id = || -> anyhow::Result<String> {
        a.id.clone()
            .ok_or_else(|| anyhow!("{action} needs --id NODE_ID (see /gov/service/nodes)"))
    };
    let mut args = match action {
        "set_member" => {
            let mut v = json!({"cert": cert()?});
            if let Some(d) = data()? {
                v["member_data"] = d;
            }
            v
        }
        "set_user" => {
            let mut v = json!({"cert": cert()?});
            if let Some(d) = data()? {
                v["user_data"] = d;
            }
            v
        }
        "remove_member" => json!({"member_id": id_or_cert()?}),
        "remove_user" => json!({"user_id": id_or_cert()?}),
        "set_member_data" => json!({"member_id": id_or_cert()?, "member_data": data()?}),
        "set_user_data" => json!({"user_id": id_or_cert()?, "user_data": data()?}),
        "set_constitution" => {
            let p = a
                .constitution
                .as_ref()
                .ok_or_else(|| anyhow!("set_constitution needs --constitution FILE_OR_DIR"))?;
            json!({"constitution": crate::node::read_constitution(Some(p))?})
        }
        "set_js_app" => {
            let dir = a
                .bundle
                .as_ref()
                .ok_or_else(|| anyhow!("set_js_app needs --bundle DIR (app.json + src/)"))?;
            let (meta, modules) = crate::node::read_app(dir)?;
            let metadata: Json = serde_json::from_str(&meta).context("app.json is not JSON")?;
            let modules: Vec<Json> = modules
                .into_iter()
                .map(|(name, module)| json!({"name": name, "module": module}))
                .collect();
            json!({"bundle": {"metadata": metadata, "modules": modules}})
        }
        "transition_node_to_trusted" => json!({"node_id": node_id()?}),
        "remove_node" => json!({"node_id": node_id()?}),
        "set_node_data" => json!({"node_id": node_id()?, "node_data": data()?}),
        _ => json!({}),
    };
    if let Some(extra) = &a.args {
        let extra: Json = serde_json::from_str(extra).context("--args is not JSON")?;
        let Some(extra) = extra.as_object() else {
            bail!("--args must be a JSON object");
        };
        for (k, v) in extra {
            args[k] = v.clone();
        }
    }
    Ok(json!({"actions": [{"name": action, "args": args}]}))
}

pub async fn propose(c: &Connection, a: &ProposeArgs) -> anyhow::Result<()> {
    let proposal = build_proposal(a)?;
    let m = Member::connect(c)?;
    report(
        m.post(
            "/gov/members/proposals:create",
            "proposal",
            None,
            proposal.to_string().as_bytes(),
        )
        .await?,
    )
}

pub async fn vote(
    c: &Connection,
    proposal_id: &str,
    decision: Option<&str>,
    ballot: Option<&Path>,
) -> anyhow::Result<()> {
    let source = match (decision, ballot) {
        (_, Some(f)) => read(f, "ballot")?,
        (Some("accept"), None) => {
            "export function vote(proposal, proposerId) { return true; }".to_string()
        }
        (Some("reject"), None) => {
            "export function vote(proposal, proposerId) { return false; }".to_string()
        }
        (Some(other), None) => bail!("vote accept, vote reject or --ballot FILE, not {other:?}"),
        (None, None) => bail!("say accept or reject, or give --ballot FILE"),
    };
    let m = Member::connect(c)?;
    let path = format!(
        "/gov/members/proposals/{proposal_id}/ballots/{}:submit",
        m.id
    );
    let body = json!({ "ballot": source }).to_string();
    report(
        m.post(&path, "ballot", Some(proposal_id), body.as_bytes())
            .await?,
    )
}

pub async fn withdraw(c: &Connection, proposal_id: &str) -> anyhow::Result<()> {
    let m = Member::connect(c)?;
    let path = format!("/gov/members/proposals/{proposal_id}:withdraw");
    report(m.post(&path, "withdrawal", Some(proposal_id), b"").await?)
}

fn ok_json((status, body): (u16, String), what: &str) -> anyhow::Result<Json> {
    if !(200..300).contains(&status) {
        bail!("{what}: the service answered {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{what}: the answer is not JSON"))
}

/// What the sandbox does once its nodes are up: the member acks, proposes
/// `transition_service_to_open` and votes for it. Quiet; errors say which
/// step failed.
pub async fn open_service(c: &Connection) -> anyhow::Result<()> {
    let m = Member::connect(c)?;
    let (s, b) = m.ack_exchange().await?;
    if !(200..300).contains(&s) {
        bail!("ack: the service answered {s}: {b}");
    }
    let proposal = json!({"actions": [{"name": "transition_service_to_open", "args": {}}]});
    let created = ok_json(
        m.post(
            "/gov/members/proposals:create",
            "proposal",
            None,
            proposal.to_string().as_bytes(),
        )
        .await?,
        "proposing transition_service_to_open",
    )?;
    if created["proposalState"] == "Accepted" {
        return Ok(());
    }
    let id = created["proposalId"]
        .as_str()
        .ok_or_else(|| anyhow!("the proposal answer has no proposalId: {created}"))?;
    let body = json!({"ballot": "export function vote(proposal, proposerId) { return true; }"});
    let voted = ok_json(
        m.post(
            &format!("/gov/members/proposals/{id}/ballots/{}:submit", m.id),
            "ballot",
            Some(id),
            body.to_string().as_bytes(),
        )
        .await?,
        "voting for transition_service_to_open",
    )?;
    if voted["proposalState"] != "Accepted" {
        bail!("transition_service_to_open did not pass: {voted}");
    }
    Ok(())
}

impl Member {
    /// `:update` then `:ack`; the answer of the last step that ran.
    async fn ack_exchange(&self) -> anyhow::Result<(u16, String)> {
        let (status, body) = self
            .post(
                &format!("/gov/members/state-digests/{}:update", self.id),
                "state_digest",
                None,
                b"",
            )
            .await?;
        if !(200..300).contains(&status) {
            return Ok((status, body));
        }
        let digest: Json = serde_json::from_str(&body).context("the :update answer is not JSON")?;
        let ack = json!({"stateDigest": digest["stateDigest"]}).to_string();
        self.post(
            &format!("/gov/members/state-digests/{}:ack", self.id),
            "ack",
            None,
            ack.as_bytes(),
        )
        .await
    }
}

/// Fetches the state digest and acks it: an Accepted member becomes Active.
pub async fn ack(c: &Connection) -> anyhow::Result<()> {
    let m = Member::connect(c)?;
    report(m.ack_exchange().await?)?;
    println!("member {} is Active", m.id);
    Ok(())
}

pub async fn status(c: &Connection, proposal_id: Option<&str>) -> anyhow::Result<()> {
    let m = Member::connect(c)?;
    if let Some(id) = proposal_id {
        return report(m.get(&format!("/gov/members/proposals/{id}")).await?);
    }
    let (code, body) = m.get("/gov/service/info").await?;
    if (200..300).contains(&code) {
        let v: Json = serde_json::from_str(&body).unwrap_or(Json::Null);
        println!("service: {}", v["status"].as_str().unwrap_or("?"));
    }
    let (code, body) = m.get("/gov/members/proposals").await?;
    if !(200..300).contains(&code) {
        return report((code, body));
    }
    let v: Json = serde_json::from_str(&body).context("the proposal list is not JSON")?;
    let list = v["value"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no proposals");
    }
    for p in list {
        let mut line = format!(
            "{}  {:<9} by {}  ballots: {}",
            p["proposalId"].as_str().unwrap_or("?"),
            p["proposalState"].as_str().unwrap_or("?"),
            &p["proposerId"].as_str().unwrap_or("?")
                [..12.min(p["proposerId"].as_str().unwrap_or("?").len())],
            p["ballotCount"]
        );
        if let Some(f) = p["failure"]["reason"].as_str() {
            line.push_str(&format!("  failure: {f}"));
        }
        if let Some(votes) = p["voteFailures"].as_object() {
            for (member, why) in votes {
                line.push_str(&format!("  ballot of {member} failed: {}", why["reason"]));
            }
        }
        println!("{line}");
    }
    Ok(())
}
