//! `charter sandbox`: a local service of N nodes on loopback, for trying
//! Charter out. Each node is a real `charter node` process with its own
//! data directory under the workspace folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::identity;

#[derive(clap::Args)]
pub struct SandboxArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The app bundle to run (a directory with app.json and src/).
    #[arg(long, default_value = "samples/logging")]
    app: PathBuf,
    /// Where nodes keep their data, configs and logs. Reused on the next run.
    #[arg(long, default_value = "workspace/sandbox")]
    workspace: PathBuf,
    /// Node i serves clients on BASE+i and peers on BASE+100+i.
    #[arg(long, default_value_t = 8000)]
    base_port: u16,
    /// Run the app on this JS engine, whatever "engine" its app.json says
    /// (so one app can be benchmarked on both). New sandboxes only, and
    /// only the app given here: an app installed later by `set_js_app`
    /// runs on the engine its own app.json names (V8 if none).
    #[arg(long, value_name = "ENGINE", value_parser = ["v8", "quickjs"])]
    js_engine: Option<String>,
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &self.0 {
            // SIGTERM: each node shuts Raft down cleanly.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for child in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

fn node_config(
    ws: &Path,
    i: usize,
    base: u16,
    nodes_app: &Path,
    js_engine: Option<&str>,
) -> String {
    let rpc = base as usize + i;
    let peer = base as usize + 100 + i;
    let mut s = format!(
        "# written by `charter sandbox`\n\
data_dir = {:?}\n\
rpc_address = \"127.0.0.1:{rpc}\"\n\
node_address = \"127.0.0.1:{peer}\"\n\
service_cert = {:?}\n",
        ws.join(format!("node{i}")),
        ws.join("service_cert.pem"),
    );
    if i == 0 {
        // The first node seeds the new service with the app; every node
        // then runs the app from the governance tables.
        s.push_str(&format!("app = {nodes_app:?}\n"));
        if let Some(engine) = js_engine {
            s.push_str(&format!("app_engine = {engine:?}\n"));
        }
        s.push_str(&format!(
            "initial_users = [{:?}]\ninitial_members = [{:?}]\n",
            ws.join("user0_cert.pem"),
            ws.join("member0_cert.pem")
        ));
    } else {
        s.push_str(&format!("join_target = \"127.0.0.1:{base}\"\n"));
    }
    s
}

pub fn run(args: SandboxArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if args.base_port as usize + 100 + args.nodes > 65535 {
        bail!("--base-port is too high for {} nodes", args.nodes);
    }
    std::fs::create_dir_all(&args.workspace)
        .with_context(|| format!("creating {}", args.workspace.display()))?;
    let ws = args.workspace.canonicalize()?;
    let app = args
        .app
        .canonicalize()
        .with_context(|| format!("app bundle {} not found", args.app.display()))?;
    charter_js::AppBundle::load(&app)
        .map_err(|e| anyhow::anyhow!("app bundle {}: {e}", app.display()))?;
    for name in ["user0", "member0"] {
        let cert = ws.join(format!("{name}_cert.pem"));
        let key = ws.join(format!("{name}_privk.pem"));
        if !cert.exists() || !key.exists() {
            let id = identity::new_client_identity(name)?;
            identity::write_private(&key, &id.key_pem)?;
            identity::write_public(&cert, &id.cert_pem)?;
        }
    }
    let resume = ws.join("node0").join("node.json").exists();
    check_same_shape(&ws, &args, &app, resume)?;
    let exe = std::env::current_exe()?;
    let mut children = Nodes(Vec::new());
    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "{} a {}-node sandbox in {} ...",
        if resume { "Resuming" } else { "Starting" },
        args.nodes,
        ws.display()
    );
    for i in 0..args.nodes {
        let config = ws.join(format!("node{i}.toml"));
        identity::write_public(
            &config,
            &node_config(&ws, i, args.base_port, &app, args.js_engine.as_deref()),
        )?;
        children.0.push(spawn_node(&exe, &ws, i)?);
        if !resume {
            // A new service: the first node must be up before others join,
            // and joins go one at a time.
            runtime.block_on(wait_for_voters(&ws, args.base_port, i + 1, &mut children))?;
        }
    }
    runtime.block_on(wait_for_voters(
        &ws,
        args.base_port,
        args.nodes,
        &mut children,
    ))?;
    // The consortium (one member here) opens the service to users.
    let member = crate::gov_cli::Connection {
        server: format!("https://127.0.0.1:{}", args.base_port),
        service_cert: ws.join("service_cert.pem"),
        cert: ws.join("member0_cert.pem"),
        key: ws.join("member0_privk.pem"),
    };
    let open = runtime.block_on(async {
        let c = crate::tls::reqwest_client(
            crate::tls::service_client(&std::fs::read_to_string(&member.service_cert)?, None)?,
            Duration::from_secs(5),
        )?;
        let info: serde_json::Value = c
            .get(format!("{}/gov/service/info", member.server))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(info["status"] == "Open")
    })?;
    if !open {
        println!(
            "Opening the service (member0 acks, proposes transition_service_to_open, votes) ..."
        );
        runtime
            .block_on(crate::gov_cli::open_service(&member))
            .context("opening the service")?;
    }
    let engine = runtime.block_on(app_engine(&ws, args.base_port))?;
    if let Some(wanted) = args.js_engine.as_deref() {
        if wanted != engine {
            bail!(
                "this sandbox's app runs on {engine}: --js-engine {wanted} applies only when the \
                 sandbox is created. Use another --workspace (or delete {}) for a new one",
                ws.display()
            );
        }
    }
    print_banner(&ws, &args, &engine);
    // Ctrl-C (or SIGTERM) ends the sandbox; dropping `children` stops the
    // nodes. Meanwhile a node that exits is reported and started again
    // (it resumes from its data), a few times at most.
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = restart_exited_nodes(&exe, &ws, &mut children) => {}
        }
        anyhow::Ok(())
    })?;
    println!("\nStopping the nodes ...");
    drop(children);
    println!("Stopped. Run the same command again to resume with the same data.");
    Ok(())
}

/// Starts node `i` of the sandbox in `ws` (`start` for node 0, `join`
/// for the others; either resumes from the node's data if it has some),
/// its output appended to `node{i}.log`.
fn spawn_node(exe: &Path, ws: &Path, i: usize) -> anyhow::Result<Child> {
    let config = ws.join(format!("node{i}.toml"));
    let verb = if i == 0 { "start" } else { "join" };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ws.join(format!("node{i}.log")))?;
    Command::new(exe)
        .args(["node", verb, "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting node {i}"))
}

/// Restarts of one node after which the sandbox stops restarting it.
const MAX_RESTARTS: u32 = 3;

/// Runs until Ctrl-C: a node that exits is reported, with the end of its
/// log, and started again, at most [`MAX_RESTARTS`] times.
async fn restart_exited_nodes(exe: &Path, ws: &Path, children: &mut Nodes) {
    let mut restarts = vec![0u32; children.0.len()];
    let mut given_up = vec![false; children.0.len()];
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (i, child) in children.0.iter_mut().enumerate() {
            if given_up[i] {
                continue;
            }
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            let log = ws.join(format!("node{i}.log"));
            if restarts[i] >= MAX_RESTARTS {
                given_up[i] = true;
                eprintln!(
                    "\nnode {i} exited again ({status}) after {MAX_RESTARTS} restarts; not restarting it. \
                     See {}",
                    log.display()
                );
                continue;
            }
            restarts[i] += 1;
            eprintln!(
                "\nnode {i} exited ({status}); see {}. Restarting it ({}/{MAX_RESTARTS}) ...",
                log.display(),
                restarts[i]
            );
            match spawn_node(exe, ws, i) {
                Ok(c) => *child = c,
                Err(e) => {
                    given_up[i] = true;
                    eprintln!("node {i} could not be restarted: {e:#}");
                }
            }
        }
    }
}

/// Waits until the service reports `n` voters and a primary.
async fn wait_for_voters(
    ws: &Path,
    base: u16,
    n: usize,
    children: &mut Nodes,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let cert_path = ws.join("service_cert.pem");
    let mut client: Option<reqwest::Client> = None;
    loop {
        for (i, child) in children.0.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                let log =
                    std::fs::read_to_string(ws.join(format!("node{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "node {i} exited ({status}). Last lines of its log:\n{}",
                    tail.join("\n")
                );
            }
        }
        if client.is_none() {
            if let Ok(pem) = std::fs::read_to_string(&cert_path) {
                client = Some(crate::tls::reqwest_client(
                    crate::tls::service_client(&pem, None)?,
                    Duration::from_secs(2),
                )?);
            }
        }
        if let Some(c) = &client {
            for i in 0..children.0.len() {
                let url = format!("https://127.0.0.1:{}/node/network", base as usize + i);
                if let Ok(r) = c.get(url).send().await {
                    if let Ok(v) = r.json::<serde_json::Value>().await {
                        let voters = v["nodes"]
                            .as_array()
                            .map(|a| a.iter().filter(|n| n["voter"] == true).count())
                            .unwrap_or(0);
                        if voters >= n && v["primary_id"].is_string() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the sandbox did not reach {n} voting nodes within 120 s; see the node logs in {}",
                ws.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The JS engine the service's app runs on, as node 0 reports it.
async fn app_engine(ws: &Path, base: u16) -> anyhow::Result<String> {
    let c = crate::tls::reqwest_client(
        crate::tls::service_client(&std::fs::read_to_string(ws.join("service_cert.pem"))?, None)?,
        Duration::from_secs(5),
    )?;
    let version: serde_json::Value = c
        .get(format!("https://127.0.0.1:{base}/node/version"))
        .send()
        .await?
        .json()
        .await?;
    version["app_engine"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("/node/version has no app_engine: {version}"))
}

fn print_banner(ws: &Path, args: &SandboxArgs, engine: &str) {
    let ca = ws.join("service_cert.pem");
    let cert = ws.join("user0_cert.pem");
    let key = ws.join("user0_privk.pem");
    let curl = format!(
        "curl --cacert {} --cert {} --key {}",
        ca.display(),
        cert.display(),
        key.display()
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nThe sandbox is up: {} nodes running {} on {engine}",
        args.nodes,
        args.app.display()
    );
    for i in 0..args.nodes {
        let _ = writeln!(
            out,
            "  node {i}: https://127.0.0.1:{}  (peers: 127.0.0.1:{}; data {}, log {})",
            args.base_port as usize + i,
            args.base_port as usize + 100 + i,
            ws.join(format!("node{i}")).display(),
            ws.join(format!("node{i}.log")).display()
        );
    }
    let _ = writeln!(
        out,
        "  service certificate (trust this, nothing else): {}",
        ca.display()
    );
    let _ = writeln!(
        out,
        "  user identity: {} / {}",
        cert.display(),
        key.display()
    );
    let _ = writeln!(
        out,
        "  member identity (governance): {} / {}",
        ws.join("member0_cert.pem").display(),
        ws.join("member0_privk.pem").display()
    );
    let _ = writeln!(
        out,
        "\nTry it (any node; writes on a backup are forwarded to the primary):"
    );
    let p0 = args.base_port;
    let plast = args.base_port as usize + args.nodes - 1;
    let _ = writeln!(
        out,
        "  {curl} -X POST https://127.0.0.1:{p0}/app/log/private -H 'content-type: application/json' -d '{{\"id\": 1, \"msg\": \"hello\"}}'"
    );
    let _ = writeln!(
        out,
        "  {curl} 'https://127.0.0.1:{plast}/app/log/private?id=1'"
    );
    let _ = writeln!(
        out,
        "  {curl} -X POST https://127.0.0.1:{plast}/app/log/public -H 'content-type: application/json' -d '{{\"id\": 2, \"msg\": \"in clear\"}}'"
    );
    let _ = writeln!(
        out,
        "  curl --cacert {} https://127.0.0.1:{p0}/node/network",
        ca.display()
    );
    let _ = writeln!(
        out,
        "  curl --cacert {} https://127.0.0.1:{p0}/node/commit",
        ca.display()
    );
    let gov = format!(
        "--server https://127.0.0.1:{p0} --service-cert {} --cert {} --key {}",
        ca.display(),
        ws.join("member0_cert.pem").display(),
        ws.join("member0_privk.pem").display()
    );
    let _ = writeln!(out, "\nGovern it (see docs/governance.md):");
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "charter".into());
    let _ = writeln!(out, "  {exe} gov status {gov}");
    let _ = writeln!(
        out,
        "  {exe} gov propose set_user --cert-file NEW_USER_cert.pem {gov}"
    );
    let _ = writeln!(out, "\nPress Ctrl-C to stop all nodes.");
}

/// A sandbox's shape, recorded when it is created: node addresses are in
/// its membership and the app is in its ledger, so a resumed sandbox must
/// be run with the same `--nodes`, `--base-port` and `--app`.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Shape {
    nodes: usize,
    base_port: u16,
    app: PathBuf,
}

fn check_same_shape(ws: &Path, args: &SandboxArgs, app: &Path, resume: bool) -> anyhow::Result<()> {
    let path = ws.join("sandbox.json");
    let now = Shape {
        nodes: args.nodes,
        base_port: args.base_port,
        app: app.to_path_buf(),
    };
    let recorded = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Shape>(&b).ok());
    match recorded {
        Some(was) if resume && was != now => bail!(
            "{} holds a sandbox created with --nodes {} --base-port {} --app {}; resume it with \
             those (a different --app is installed by governance: charter gov propose set_js_app), \
             or use another --workspace for a new one",
            ws.display(),
            was.nodes,
            was.base_port,
            was.app.display()
        ),
        Some(_) if resume => Ok(()),
        // A new sandbox, or one made before its shape was recorded.
        _ => std::fs::write(&path, serde_json::to_vec_pretty(&now)?)
            .with_context(|| format!("writing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: usize, base_port: u16) -> SandboxArgs {
        SandboxArgs {
            nodes,
            app: PathBuf::from("samples/logging"),
            workspace: PathBuf::from("unused"),
            base_port,
            js_engine: None,
        }
    }

    #[test]
    fn a_resumed_sandbox_must_keep_its_shape() {
        let ws = tempfile::tempdir().unwrap();
        let app = Path::new("/apps/logging");
        // Created: the shape is recorded.
        check_same_shape(ws.path(), &args(3, 9800), app, false).unwrap();
        // Resumed the same way: fine.
        check_same_shape(ws.path(), &args(3, 9800), app, true).unwrap();
        // Resumed differently: refused, naming what it was made with.
        for (a, other_app) in [
            (args(2, 9800), app),
            (args(3, 9810), app),
            (args(3, 9800), Path::new("/apps/other")),
        ] {
            let e = check_same_shape(ws.path(), &a, other_app, true).unwrap_err();
            let e = e.to_string();
            assert!(
                e.contains("--nodes 3 --base-port 9800 --app /apps/logging"),
                "{e}"
            );
        }
        // A new sandbox in a workspace whose nodes were never started
        // records its own shape.
        check_same_shape(ws.path(), &args(2, 9900), app, false).unwrap();
        check_same_shape(ws.path(), &args(2, 9900), app, true).unwrap();
    }
}
