//! `charter`: run a node of a Charter service, or a local sandbox.

mod config;
mod consensus_view;
mod forward;
mod gov_cli;
mod gov_rpc;
mod http;
mod identity;
mod node;
mod peer;
mod rpc;
mod sandbox;
mod signatures;
mod tables;
mod tls;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "charter",
    version,
    about = "Charter: a replicated, verifiable ledger service running JavaScript apps",
    long_about = "Charter: a replicated, verifiable ledger service running JavaScript apps.\n\n\
Nodes agree on one log with Raft; applications are JavaScript endpoints run by V8\n\
(or QuickJS, if the app's app.json says \"engine\": \"quickjs\"), under heap, stack and\n\
time limits set by governance.\n\
Start here:  charter sandbox --nodes 3 --app samples/logging"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run one node of a service (operators).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Start a local multi-node service on loopback, with a user identity
    /// and ready-to-paste curl commands. Ctrl-C stops it; running it again
    /// resumes the same data.
    Sandbox(sandbox::SandboxArgs),
    /// Ledger files, offline (auditors).
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Offline verification for auditors.
    Verify {
        #[command(subcommand)]
        command: VerifyCommand,
    },
    /// Governance for members: keys, proposals, votes, acks, status.
    Gov {
        #[command(subcommand)]
        command: GovCommand,
    },
}

#[derive(Subcommand)]
enum GovCommand {
    /// Propose an action (or a whole proposal with --file), signed with
    /// your member key. Examples:
    ///   charter gov propose set_user --cert-file alice_cert.pem
    ///   charter gov propose transition_service_to_open
    ///   charter gov propose set_js_app --bundle samples/logging
    ///   charter gov propose set_js_runtime_options --args '{"max_heap_bytes": 104857600, "max_stack_bytes": 1048576, "max_execution_time_ms": 1000}'
    #[command(verbatim_doc_comment)]
    Propose {
        #[command(flatten)]
        conn: gov_cli::Connection,
        #[command(flatten)]
        proposal: gov_cli::ProposeArgs,
    },
    /// Vote on a proposal: accept, reject, or a ballot of your own
    /// (--ballot FILE with `export function vote(proposal, proposerId)`).
    Vote {
        #[command(flatten)]
        conn: gov_cli::Connection,
        /// The proposal id (from propose or status).
        proposal_id: String,
        /// accept or reject (omit with --ballot).
        decision: Option<String>,
        #[arg(long)]
        ballot: Option<PathBuf>,
    },
    /// Withdraw a proposal you made, while it is Open.
    Withdraw {
        #[command(flatten)]
        conn: gov_cli::Connection,
        proposal_id: String,
    },
    /// The service status and every proposal with its state, ballots and
    /// failures (or one proposal in full).
    Status {
        #[command(flatten)]
        conn: gov_cli::Connection,
        proposal_id: Option<String>,
    },
    /// Acknowledge the service's state: a newly added (Accepted) member
    /// becomes Active and may propose and vote.
    Ack {
        #[command(flatten)]
        conn: gov_cli::Connection,
    },
    /// Create an Ed25519 key and a self-signed certificate for a member or
    /// user: writes NAME_cert.pem and NAME_privk.pem.
    Keygen {
        #[arg(long)]
        name: String,
        /// Directory to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Audit a ledger directory (a node's DATA_DIR/ledger, live or not):
    /// re-parse every entry, recompute every Merkle leaf and root, check
    /// every signature and its node's endorsement by the service. Exit 0
    /// and counts, or exit 1 and the first bad seqno, file and byte offset.
    Audit {
        /// The ledger directory (ledger_* chunk files).
        dir: PathBuf,
        /// The service certificate (PEM) signatures must chain to.
        #[arg(long)]
        service_cert: PathBuf,
        /// Print the result as JSON (for machines).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum VerifyCommand {
    /// Verify a receipt (from GET /app/receipt: JSON, or COSE with
    /// `Accept: application/cose`) with nothing but the service
    /// certificate. Prints "valid" (exit 0) or which check failed: format,
    /// leaf, proof, signature or endorsement (exit 1).
    Receipt {
        /// The receipt file (JSON or COSE, told apart by content).
        file: PathBuf,
        /// The service certificate (PEM) the receipt must chain to.
        #[arg(long)]
        service_cert: PathBuf,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Start the first node of a new service (creating the service
    /// identity), or resume a node whose data directory already exists.
    Start {
        /// The node's TOML config (see docs/operator.md).
        #[arg(long)]
        config: PathBuf,
        /// App bundle directory (app.json + src/); overrides `app` in the config.
        #[arg(long)]
        app: Option<PathBuf>,
    },
    /// Join an existing service through `join_target` (trusting only
    /// `service_cert`), or resume a node whose data directory already exists.
    Join {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        app: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Node { .. } | Command::Sandbox(_)) {
        // A CLI whose output is piped into `head` should end quietly when
        // the pipe closes, as other Unix tools do, not panic.
        // SAFETY: restoring the default disposition of a signal.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Node { command } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(run_node(command))
        }
        Command::Sandbox(args) => sandbox::run(args),
        Command::Ledger {
            command:
                LedgerCommand::Audit {
                    dir,
                    service_cert,
                    json,
                },
        } => audit_ledger(&dir, &service_cert, json),
        Command::Verify {
            command: VerifyCommand::Receipt { file, service_cert },
        } => verify_receipt(&file, &service_cert),
        Command::Gov {
            command: GovCommand::Keygen { name, out },
        } => keygen(&name, &out),
        Command::Gov { command } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                match command {
                    GovCommand::Propose { conn, proposal } => {
                        gov_cli::propose(&conn, &proposal).await
                    }
                    GovCommand::Vote {
                        conn,
                        proposal_id,
                        decision,
                        ballot,
                    } => {
                        gov_cli::vote(&conn, &proposal_id, decision.as_deref(), ballot.as_deref())
                            .await
                    }
                    GovCommand::Withdraw { conn, proposal_id } => {
                        gov_cli::withdraw(&conn, &proposal_id).await
                    }
                    GovCommand::Status { conn, proposal_id } => {
                        gov_cli::status(&conn, proposal_id.as_deref()).await
                    }
                    GovCommand::Ack { conn } => gov_cli::ack(&conn).await,
                    GovCommand::Keygen { .. } => unreachable!("handled above"),
                }
            })
        }
    }
}

fn audit_ledger(
    dir: &std::path::Path,
    service_cert: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let cert = std::fs::read_to_string(service_cert)
        .with_context(|| format!("reading {}", service_cert.display()))?;
    let show_progress = !json && std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut progress = |done: u64, total: u64| {
        if show_progress && total > 0 {
            let width = 40;
            let filled = (done.min(total) * width / total) as usize;
            eprint!(
                "\r[{}{}] {:>3}%  {} MB",
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                done * 100 / total,
                done / 1_000_000
            );
            let _ = std::io::stderr().flush();
        }
    };
    let result = charter_ledger::audit::audit(dir, &cert, &mut progress);
    if show_progress {
        eprintln!();
    }
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "report": report, "seconds": seconds})
                );
            } else {
                println!(
                    "ok: {} entries in {} files ({} bytes), {} signatures verified; the last signature (seqno {}) covers seqnos up to {}; {} entries after it await a signature",
                    report.entries,
                    report.files,
                    report.bytes,
                    report.signatures,
                    report.last_signature_seqno.map_or("none".into(), |s| s.to_string()),
                    report.last_signed_seqno.map_or("none".into(), |s| s.to_string()),
                    report.unsigned_tail
                );
                println!("root of all entries: {}", report.root);
                if let Some(r) = &report.signed_root {
                    println!("last signed root:    {r}");
                }
                println!("{:.0} entries/s", report.entries as f64 / seconds.max(1e-9));
            }
            Ok(())
        }
        Err(failure) => {
            if json {
                println!("{}", serde_json::json!({"ok": false, "failure": failure}));
            } else {
                println!("FAILED: {failure}");
            }
            std::process::exit(1);
        }
    }
}

fn verify_receipt(file: &std::path::Path, service_cert: &std::path::Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let cert = std::fs::read_to_string(service_cert)
        .with_context(|| format!("reading {}", service_cert.display()))?;
    // JSON starts with '{' (after whitespace); anything else is tried as COSE.
    let json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    let result = if json {
        let receipt: charter_ledger::receipt::Receipt = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                println!(
                    "invalid: format: {} is not a JSON receipt: {e}",
                    file.display()
                );
                std::process::exit(1);
            }
        };
        charter_ledger::receipt::verify(&receipt, &cert)
    } else {
        charter_ledger::cose_receipt::verify(&bytes, &cert)
    };
    match result {
        Ok(root) => {
            println!("valid (root {})", hex::encode(root));
            Ok(())
        }
        Err(charter_ledger::receipt::ReceiptError::Format(e)) => {
            println!("invalid: format: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            println!("invalid: {e}");
            std::process::exit(1);
        }
    }
}

fn keygen(name: &str, out: &std::path::Path) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        anyhow::bail!(
            "--name must be letters, digits, '_' or '-' (it names the files), got {name:?}"
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let cert = out.join(format!("{name}_cert.pem"));
    let key = out.join(format!("{name}_privk.pem"));
    if cert.exists() || key.exists() {
        anyhow::bail!(
            "{} or {} already exists; not overwriting",
            cert.display(),
            key.display()
        );
    }
    let id = identity::new_client_identity(name)?;
    identity::write_private(&key, &id.key_pem)?;
    identity::write_public(&cert, &id.cert_pem)?;
    println!("{}\n{}", cert.display(), key.display());
    println!("id: {}", identity::cert_id_pem(&id.cert_pem)?);
    Ok(())
}

async fn run_node(command: NodeCommand) -> anyhow::Result<()> {
    let (join, config_path, app) = match command {
        NodeCommand::Start { config, app } => (false, config, app),
        NodeCommand::Join { config, app } => (true, config, app),
    };
    let config = config::NodeConfig::load(&config_path)?;
    // Bind first: a port in use is reported before anything is created.
    let rpc_listener = tokio::net::TcpListener::bind(config.rpc_address)
        .await
        .with_context(|| format!("binding rpc_address {}", config.rpc_address))?;
    let node_listener = tokio::net::TcpListener::bind(config.node_address)
        .await
        .with_context(|| format!("binding node_address {}", config.node_address))?;
    let max_body = config.max_body_bytes;
    let node = if join {
        node::Node::join(config, app).await?
    } else {
        node::Node::start(config, app).await?
    };
    let peer_tls = tls::node_to_node_server(&node.identity, &node.service.cert_pem)?;
    let rpc_tls = tls::client_api_server(&node.identity, &node.service.cert_pem)?;
    let n = node.clone();
    // Node-to-node messages carry whole batches of log entries.
    tokio::spawn(http::serve(
        node_listener,
        peer_tls,
        256 * 1024 * 1024,
        move |req| peer::handle(n.clone(), req),
    ));
    let n = node.clone();
    tokio::spawn(http::serve(rpc_listener, rpc_tls, max_body, move |req| {
        rpc::handle(n.clone(), req)
    }));
    tracing::info!(
        node_id = node.id,
        rpc = %node.config.rpc_address,
        node_to_node = %node.config.node_address,
        "node is up"
    );
    wait_for_stop_signal().await;
    tracing::info!("stopping");
    shutdown(node).await;
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn shutdown(node: Arc<node::Node>) {
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!("Raft shutdown: {e}");
    }
}
