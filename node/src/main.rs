//! `charter`: run a node of a Charter service, or a local sandbox.

mod config;
mod forward;
mod http;
mod identity;
mod node;
mod peer;
mod rpc;
mod sandbox;
mod signatures;
mod tables;
mod tls;

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
Nodes agree on one log with Raft; applications are JavaScript endpoints run by V8.\n\
Start here:  charter sandbox --nodes 3 --app samples/logging"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
    /// Offline verification for auditors.
    Verify {
        #[command(subcommand)]
        command: VerifyCommand,
    },
    /// Governance tools for members (more arrive with proposals and votes).
    Gov {
        #[command(subcommand)]
        command: GovCommand,
    },
}

#[derive(Subcommand)]
enum GovCommand {
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
enum VerifyCommand {
    /// Verify a JSON receipt (from GET /app/receipt) with nothing but the
    /// service certificate. Prints "valid" (exit 0) or which check failed:
    /// leaf, proof, signature or endorsement (exit 1).
    Receipt {
        /// The receipt file (JSON).
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
        Command::Verify {
            command: VerifyCommand::Receipt { file, service_cert },
        } => verify_receipt(&file, &service_cert),
        Command::Gov {
            command: GovCommand::Keygen { name, out },
        } => keygen(&name, &out),
    }
}

fn verify_receipt(file: &std::path::Path, service_cert: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let cert = std::fs::read_to_string(service_cert)
        .with_context(|| format!("reading {}", service_cert.display()))?;
    let receipt: charter_ledger::receipt::Receipt = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            println!(
                "invalid: format: {} is not a JSON receipt: {e}",
                file.display()
            );
            std::process::exit(1);
        }
    };
    match charter_ledger::receipt::verify(&receipt, &cert) {
        Ok(root) => {
            println!("valid (root {})", hex::encode(root));
            Ok(())
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
