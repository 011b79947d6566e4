//! Governance end to end: real nodes, real members signing COSE requests
//! with `charter gov`, the default constitution on QuickJS.

use std::path::Path;
use std::time::Duration;

use charter_e2e::{eventually, keygen, repo_root, Cluster, ClusterOptions};
use serde_json::{json, Value};

fn id_of(v: &Value) -> String {
    v["proposalId"].as_str().expect("proposalId").to_string()
}

fn state_of(v: &Value) -> String {
    v["proposalState"]
        .as_str()
        .expect("proposalState")
        .to_string()
}

fn propose(c: &Cluster, member: usize, args: &[&str]) -> String {
    let mut all = vec!["propose"];
    all.extend_from_slice(args);
    let v = c
        .gov_json(member, &all)
        .expect("proposal accepted for voting");
    assert_eq!(state_of(&v), "Open", "{v}");
    id_of(&v)
}

fn vote(c: &Cluster, member: usize, id: &str, decision: &str) -> String {
    state_of(&c.gov_json(member, &["vote", id, decision]).expect("ballot"))
}

fn proposal(c: &Cluster, id: &str) -> Value {
    c.gov_json(0, &["status", id]).expect("status")
}

/// Polls `check` on every node until it holds on all of them.
async fn on_every_node<F, Fut>(c: &Cluster, what: &str, check: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for i in 0..c.nodes.len() {
        eventually(
            &format!("{what} on node {i}"),
            Duration::from_secs(20),
            || check(i),
        )
        .await;
    }
}

/// A copy of the logging app with `/log/public` removed and `/hello` added.
fn logging_v2(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("logging_v2");
    std::fs::create_dir_all(out.join("src")).unwrap();
    for m in ["logging.js", "util.js"] {
        std::fs::copy(
            repo_root().join("samples/logging/src").join(m),
            out.join("src").join(m),
        )
        .unwrap();
    }
    std::fs::write(
        out.join("src/hello.js"),
        "export function hello(request) { return { body: { hello: 'world' } }; }\n",
    )
    .unwrap();
    let mut meta: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("samples/logging/app.json")).unwrap(),
    )
    .unwrap();
    let eps = meta["endpoints"].as_object_mut().unwrap();
    assert!(eps.remove("/log/public").is_some());
    eps.insert(
        "/hello".into(),
        json!({"get": {"js_module": "hello.js", "js_function": "hello",
            "forwarding_required": "sometimes", "authn_policies": ["user_cert"],
            "mode": "readonly", "openapi": {}}}),
    );
    std::fs::write(out.join("app.json"), meta.to_string()).unwrap();
    out
}

/// The default constitution with `resolve` replaced by a unanimity rule.
fn unanimity_constitution(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("unanimity");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(repo_root().join("samples/constitution")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if p.extension().is_some_and(|x| x == "js")
            && !name.to_string_lossy().ends_with("resolve.js")
        {
            std::fs::copy(&p, out.join(name)).unwrap();
        }
    }
    std::fs::write(
        out.join("30_resolve.js"),
        r#"
export function resolve(proposal, proposerId, votes) {
  const active = [];
  ccf.kv["public:ccf.gov.members.info"].forEach((v, k) => {
    if (ccf.bufToJsonCompatible(v).status === "Active") active.push(ccf.bufToStr(k));
  });
  const yes = votes.filter((v) => v.vote && active.includes(v.member_id)).length;
  const no = votes.filter((v) => !v.vote && active.includes(v.member_id)).length;
  if (yes === active.length) return "Accepted";
  if (no > 0) return "Rejected";
  return "Open";
}
"#,
    )
    .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_govern_users_the_app_and_the_constitution() -> anyhow::Result<()> {
    let mut opts = ClusterOptions::new(3);
    opts.members = 3;
    let c = Cluster::start(opts).await?;
    let work = c.dir.path().to_path_buf();

    // set_user: Open after one vote, Accepted after two of three.
    let (alice_cert, alice_key) = keygen(&work, "alice")?;
    let alice = c.client_for(&alice_cert, &alice_key)?;
    let write = |n: usize, id: u64| {
        alice
            .post(c.nodes[n].url("/app/log/private"))
            .json(&json!({"id": id, "msg": "from alice"}))
            .send()
    };
    assert_eq!(write(0, 1).await?.status(), 401, "alice is not a user yet");
    let p = propose(
        &c,
        0,
        &["set_user", "--cert-file", alice_cert.to_str().unwrap()],
    );
    assert_eq!(vote(&c, 0, &p, "accept"), "Open");
    assert_eq!(vote(&c, 1, &p, "accept"), "Accepted");
    let (ok, _, err) = c.gov(2, &["vote", &p, "accept"])?;
    assert!(
        !ok && err.contains("ProposalNotOpen"),
        "no ballots once decided: {err}"
    );
    let final_votes = &proposal(&c, &p)["finalVotes"];
    assert_eq!(
        final_votes.as_object().map(|o| o.len()),
        Some(2),
        "{final_votes}"
    );
    on_every_node(&c, "alice can write", |n| {
        let w = write(n, 10 + n as u64);
        async move { w.await.map(|r| r.status() == 200).unwrap_or(false) }
    })
    .await;

    // A majority against: Rejected, and nothing changes.
    let (bob_cert, bob_key) = keygen(&work, "bob")?;
    let p = propose(
        &c,
        0,
        &["set_user", "--cert-file", bob_cert.to_str().unwrap()],
    );
    assert_eq!(vote(&c, 1, &p, "reject"), "Open");
    assert_eq!(vote(&c, 2, &p, "reject"), "Rejected");
    let bob = c.client_for(&bob_cert, &bob_key)?;
    let r = bob
        .get(c.nodes[0].url("/app/log/private?id=1"))
        .send()
        .await?;
    assert_eq!(r.status(), 401, "a rejected set_user registers no one");

    // set_js_app: an endpoint added and one removed, on all nodes, no restart.
    let bundle = logging_v2(&work);
    let p = propose(&c, 2, &["set_js_app", "--bundle", bundle.to_str().unwrap()]);
    vote(&c, 0, &p, "accept");
    assert_eq!(vote(&c, 2, &p, "accept"), "Accepted");
    on_every_node(&c, "the new app is live", |n| {
        let hello = alice.get(c.nodes[n].url("/app/hello")).send();
        let public = alice.get(c.nodes[n].url("/app/log/public?id=1")).send();
        async move {
            let hello = match hello.await {
                Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
                _ => None,
            };
            let public = public.await.map(|r| r.status().as_u16()).unwrap_or(0);
            hello == Some(json!({"hello": "world"})) && public == 404
        }
    })
    .await;
    let mut c = c;
    for n in &mut c.nodes {
        assert!(n.is_running(), "no node restarted");
    }
    let c = c;

    // set_js_runtime_options: the limits change on every node, no restart.
    let p = propose(
        &c,
        1,
        &[
            "set_js_runtime_options",
            "--args",
            r#"{"max_heap_bytes": 67108864, "max_stack_bytes": 524288, "max_execution_time_ms": 1234}"#,
        ],
    );
    vote(&c, 1, &p, "accept");
    assert_eq!(vote(&c, 2, &p, "accept"), "Accepted");
    on_every_node(&c, "the new JS limits are in force", |n| {
        let m = c.anonymous.get(c.nodes[n].url("/node/js_metrics")).send();
        async move {
            let Ok(r) = m.await else { return false };
            let v: Value = r.json().await.unwrap_or_default();
            v["limits"]["max_execution_time_ms"] == 1234
                && v["limits"]["max_heap_bytes"] == 67108864
                && v["limits"]["max_stack_bytes"] == 524288
        }
    })
    .await;

    // set_constitution to unanimity: the open proposal at the switch is
    // Dropped, and the next one needs all three votes.
    let (carol_cert, _) = keygen(&work, "carol")?;
    let carol = carol_cert.to_str().unwrap();
    let pending = propose(&c, 1, &["set_user", "--cert-file", carol]);
    vote(&c, 1, &pending, "accept");
    let constitution = unanimity_constitution(&work);
    let p = propose(
        &c,
        0,
        &[
            "set_constitution",
            "--constitution",
            constitution.to_str().unwrap(),
        ],
    );
    vote(&c, 0, &p, "accept");
    assert_eq!(vote(&c, 1, &p, "accept"), "Accepted");
    assert_eq!(state_of(&proposal(&c, &pending)), "Dropped");
    let p = propose(&c, 0, &["set_user", "--cert-file", carol]);
    assert_eq!(vote(&c, 0, &p, "accept"), "Open");
    assert_eq!(
        vote(&c, 1, &p, "accept"),
        "Open",
        "2 of 3 no longer suffice"
    );
    assert_eq!(vote(&c, 2, &p, "accept"), "Accepted");

    // Withdrawal: only Open proposals, only by their proposer; no ballots after.
    let p = propose(&c, 0, &["remove_user", "--cert-file", carol]);
    let (ok, _, err) = c.gov(1, &["withdraw", &p])?;
    assert!(!ok && err.contains("403"), "{err}");
    assert_eq!(state_of(&c.gov_json(0, &["withdraw", &p])?), "Withdrawn");
    let (ok, _, err) = c.gov(1, &["vote", &p, "accept"])?;
    assert!(!ok && err.contains("ProposalNotOpen"), "{err}");

    // The whole history is visible.
    let (ok, out, err) = c.gov(0, &["status"])?;
    assert!(ok, "{err}");
    for state in ["Accepted", "Rejected", "Dropped", "Withdrawn"] {
        assert!(
            out.contains(state),
            "status lists a {state} proposal:\n{out}"
        );
    }
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Signer {
    id: String,
    key: ed25519_dalek::SigningKey,
}

fn signer(cert: &Path, key: &Path) -> Signer {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(key).unwrap();
    let cert = std::fs::read_to_string(cert).unwrap();
    Signer {
        id: charter_governance::cert_id_pem(&cert).unwrap(),
        key: ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).unwrap(),
    }
}

impl Signer {
    fn sign(
        &self,
        msg_type: &str,
        created_at: i64,
        proposal: Option<&str>,
        payload: &Value,
    ) -> Vec<u8> {
        charter_governance::request::sign(
            &self.key,
            &self.id,
            msg_type,
            created_at,
            proposal,
            payload.to_string().as_bytes(),
        )
    }
}

async fn post(c: &Cluster, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r = c
        .anonymous
        .post(c.nodes[0].url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Proposes `proposal` as the first signer, has every signer vote yes,
/// and returns the proposal as the service then shows it.
async fn pass(c: &Cluster, signers: &[&Signer], proposal: &Value) -> Value {
    let created = "/gov/members/proposals:create";
    let envelope = signers[0].sign("proposal", now(), None, proposal);
    let (s, v) = post(c, created, "application/cose", envelope).await;
    assert_eq!(s, 200, "{v}");
    let id = id_of(&v);
    let yes = json!({"ballot": "export function vote(p, who) { return true; }"});
    for m in signers {
        let path = format!("/gov/members/proposals/{id}/ballots/{}:submit", m.id);
        let envelope = m.sign("ballot", now(), Some(&id), &yes);
        let (s, v) = post(c, &path, "application/cose", envelope).await;
        assert_eq!(s, 200, "{v}");
    }
    c.get_json(0, &format!("/gov/members/proposals/{id}"))
        .await
        .unwrap()
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_governance_requests_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let mut opts = ClusterOptions::new(1);
    opts.members = 2;
    let c = Cluster::start(opts).await?;
    let work = c.dir.path().to_path_buf();
    let m0 = signer(&c.members[0].0, &c.members[0].1);
    let m1 = signer(&c.members[1].0, &c.members[1].1);
    let (stranger_cert, stranger_key) = keygen(&work, "stranger")?;
    let stranger = signer(&stranger_cert, &stranger_key);
    let (user_cert, _) = keygen(&work, "newuser")?;
    let set_user = json!({"actions": [{"name": "set_user",
        "args": {"cert": std::fs::read_to_string(&user_cert)?}}]});
    let create = "/gov/members/proposals:create";
    let before = c.get_json(0, "/gov/members/proposals").await?;
    let users_before = c.get_json(0, "/gov/service/users").await?;

    // Malformed COSE, wrong content type.
    let (s, v) = post(&c, create, "application/cose", b"\xa1\x01not cose".to_vec()).await;
    assert_eq!((s, code(&v)), (400, "InvalidCoseSign1"), "{v}");
    let (s, v) = post(
        &c,
        create,
        "application/json",
        set_user.to_string().into_bytes(),
    )
    .await;
    assert_eq!((s, code(&v)), (415, "UnsupportedContentType"), "{v}");
    // Unknown member.
    let (s, v) = post(
        &c,
        create,
        "application/cose",
        stranger.sign("proposal", now(), None, &set_user),
    )
    .await;
    assert_eq!((s, code(&v)), (401, "InvalidAuthenticationInfo"), "{v}");
    // Signed by another key than kid names.
    let forged = Signer {
        id: m0.id.clone(),
        key: stranger.key.clone(),
    };
    let (s, v) = post(
        &c,
        create,
        "application/cose",
        forged.sign("proposal", now(), None, &set_user),
    )
    .await;
    assert_eq!((s, code(&v)), (401, "InvalidAuthenticationInfo"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{v}"
    );
    // Stale and future created_at (the window is 300 s).
    for t in [now() - 3600, now() + 3600] {
        let (s, v) = post(
            &c,
            create,
            "application/cose",
            m0.sign("proposal", t, None, &set_user),
        )
        .await;
        assert_eq!((s, code(&v)), (400, "InvalidCreatedAt"), "{v}");
    }
    // Wrong message type for the endpoint.
    let (s, v) = post(
        &c,
        create,
        "application/cose",
        m0.sign("ballot", now(), None, &set_user),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "InvalidCoseSign1"), "{v}");
    // Unknown action; invalid arguments (validate names them).
    let unknown = json!({"actions": [{"name": "make_me_rich", "args": {}}]});
    let (s, v) = post(
        &c,
        create,
        "application/cose",
        m0.sign("proposal", now(), None, &unknown),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "ProposalFailedToValidate"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("make_me_rich"),
        "{v}"
    );
    let bad_args =
        json!({"actions": [{"name": "set_user", "args": {"cert": "not a certificate"}}]});
    let (s, v) = post(
        &c,
        create,
        "application/cose",
        m0.sign("proposal", now(), None, &bad_args),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "ProposalFailedToValidate"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("cert"),
        "{v}"
    );
    assert_eq!(
        c.get_json(0, "/gov/members/proposals").await?,
        before,
        "nothing was proposed"
    );

    // A good proposal, then its replay.
    let envelope = m0.sign("proposal", now(), None, &set_user);
    let (s, v) = post(&c, create, "application/cose", envelope.clone()).await;
    assert_eq!(s, 200, "{v}");
    let id = id_of(&v);
    let (s, v) = post(&c, create, "application/cose", envelope).await;
    assert_eq!((s, code(&v)), (400, "RequestReplayed"), "{v}");

    // Ballots: a second ballot from the same member; a ballot signed for
    // another proposal; a ballot that loops forever is stopped and reported.
    let ballot_path =
        |id: &str, m: &Signer| format!("/gov/members/proposals/{id}/ballots/{}:submit", m.id);
    let yes = json!({"ballot": "export function vote(p, who) { return true; }"});
    let (s, v) = post(
        &c,
        &ballot_path(&id, &m1),
        "application/cose",
        m1.sign("ballot", now(), Some("0000"), &yes),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "InvalidCoseSign1"), "{v}");
    let looping = json!({"ballot": "export function vote(p, who) { while (true) {} }"});
    let (s, v) = post(
        &c,
        &ballot_path(&id, &m1),
        "application/cose",
        m1.sign("ballot", now(), Some(&id), &looping),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(state_of(&v), "Open");
    let failure = v["voteFailures"][&m1.id]["reason"]
        .as_str()
        .unwrap_or("")
        .to_lowercase();
    assert!(failure.contains("longer than the limit"), "{v}");
    let (s, v) = post(
        &c,
        &ballot_path(&id, &m1),
        "application/cose",
        m1.sign("ballot", now(), Some(&id), &yes),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "VoteAlreadyExists"), "{v}");
    // Withdrawn: no more ballots.
    let (s, v) = post(
        &c,
        &format!("/gov/members/proposals/{id}:withdraw"),
        "application/cose",
        m0.sign("withdrawal", now(), Some(&id), &json!({})),
    )
    .await;
    assert_eq!((s, state_of(&v).as_str()), (200, "Withdrawn"), "{v}");
    let (s, v) = post(
        &c,
        &ballot_path(&id, &m0),
        "application/cose",
        m0.sign("ballot", now(), Some(&id), &yes),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "ProposalNotOpen"), "{v}");
    assert_eq!(
        c.get_json(0, "/gov/service/users").await?,
        users_before,
        "no user was added"
    );

    // An apply that throws: the proposal is Failed with the reason, and
    // nothing it wrote stays (the service is already open).
    let again = json!({"actions": [
        {"name": "set_user", "args": {"cert": std::fs::read_to_string(&user_cert)?}},
        {"name": "transition_service_to_open", "args": {}}]});
    let v = pass(&c, &[&m0, &m1], &again).await;
    assert_eq!(state_of(&v), "Failed", "{v}");
    assert!(
        !v["failure"]["reason"].as_str().unwrap_or("").is_empty(),
        "{v}"
    );
    assert_eq!(
        c.get_json(0, "/gov/service/users").await?,
        users_before,
        "the failed apply left no user behind"
    );

    // A removed member can no longer sign anything.
    let remove = json!({"actions": [{"name": "remove_member", "args": {"member_id": m1.id}}]});
    assert_eq!(state_of(&pass(&c, &[&m0, &m1], &remove).await), "Accepted");
    let (s, v) = post(
        &c,
        create,
        "application/cose",
        m1.sign("proposal", now(), None, &set_user),
    )
    .await;
    assert_eq!((s, code(&v)), (401, "InvalidAuthenticationInfo"), "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_opens_by_vote_and_new_nodes_wait_to_be_trusted() -> anyhow::Result<()> {
    let mut opts = ClusterOptions::new(2);
    opts.start = Some(1);
    opts.open = false;
    let mut c = Cluster::start(opts).await?;

    // Opening: users are turned away with a clear code.
    let r = c
        .user
        .get(c.nodes[0].url("/app/log/private?id=1"))
        .send()
        .await?;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await?;
    assert_eq!(code(&v), "ServiceNotOpen", "{v}");
    assert_eq!(
        c.get_json(0, "/gov/service/info").await?["status"],
        "Opening"
    );
    c.open_service()?;
    c.wait_until_open(Duration::from_secs(10)).await?;
    c.log_write(0, "/app/log/private", 1).await?;

    // Once open, a joining node waits as Pending: a learner, no voter.
    c.restart(1)?;
    eventually(
        "node 2 shows as Pending",
        Duration::from_secs(30),
        || async {
            c.get_json(0, "/gov/service/nodes")
                .await
                .is_ok_and(|nodes| {
                    nodes["value"].as_array().is_some_and(|a| {
                        a.iter()
                            .any(|n| n["nodeId"] == "2" && n["status"] == "Pending")
                    })
                })
        },
    )
    .await;
    let net = c.get_json(0, "/node/network").await?;
    let n2 = net["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "2")
        .cloned();
    assert_eq!(
        n2.as_ref().map(|n| n["voter"].clone()),
        Some(json!(false)),
        "{net}"
    );
    assert!(
        c.anonymous
            .get(c.nodes[1].url("/node/state"))
            .send()
            .await
            .is_err(),
        "a pending node does not serve yet (it has no service key)"
    );

    // Trusted by vote: it becomes a voter and serves.
    let p = propose(&c, 0, &["transition_node_to_trusted", "--id", "2"]);
    assert_eq!(vote(&c, 0, &p, "accept"), "Accepted");
    c.wait_for_voters(2, Duration::from_secs(60)).await?;
    eventually(
        "node 2 serves the write made before it joined",
        Duration::from_secs(30),
        || async {
            let r = c
                .user
                .get(c.nodes[1].url("/app/log/private?id=1"))
                .send()
                .await;
            r.is_ok_and(|r| r.status() == 200)
        },
    )
    .await;

    // remove_node: it is retired and leaves the Raft membership.
    let p = propose(&c, 0, &["remove_node", "--id", "2"]);
    assert_eq!(vote(&c, 0, &p, "accept"), "Accepted");
    eventually(
        "node 2 leaves the membership",
        Duration::from_secs(30),
        || async {
            c.get_json(0, "/node/network").await.is_ok_and(|net| {
                net["nodes"]
                    .as_array()
                    .is_some_and(|a| !a.iter().any(|n| n["node_id"] == "2"))
            })
        },
    )
    .await;
    let nodes = c.get_json(0, "/gov/service/nodes").await?;
    assert!(
        nodes["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["nodeId"] == "2" && n["status"] == "Retired"),
        "{nodes}"
    );
    c.log_write(0, "/app/log/private", 2).await?;
    // The retired node refuses app traffic instead of serving stale state.
    eventually(
        "node 2 answers NodeRetired",
        Duration::from_secs(30),
        || async {
            let Ok(r) = c
                .user
                .get(c.nodes[1].url("/app/log/private?id=2"))
                .send()
                .await
            else {
                return false;
            };
            let v: Value = r.json().await.unwrap_or_default();
            code(&v) == "NodeRetired"
        },
    )
    .await;
    Ok(())
}
