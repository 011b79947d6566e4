//! `loadgen`: drives logging writes (or reads) against a running Charter
//! service and reports throughput and latency per client count.
//!
//! ```text
//! cargo run --release -p charter-e2e --bin loadgen -- \
//!     --workspace workspace/sandbox --nodes 3 --clients 1,8,32 --seconds 10
//! ```
//!
//! Clients are spread over the nodes round-robin, so writes that land on
//! backups are forwarded to the primary, as in real use. Every client keeps
//! one request in flight at a time (closed loop).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Load generator for a Charter service running the logging sample app")]
struct Args {
    /// The sandbox workspace: service_cert.pem and user0_cert.pem /
    /// user0_privk.pem are read from here.
    #[arg(long, default_value = "workspace/sandbox")]
    workspace: PathBuf,
    /// How many nodes the service has (node i serves on BASE_PORT+i).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 8000)]
    base_port: u16,
    /// Comma-separated client counts to run one after another.
    #[arg(long, default_value = "1,8,32")]
    clients: String,
    /// Seconds per client count.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// `write` (POST /app/log/private) or `read` (GET of ids written first).
    #[arg(long, default_value = "write")]
    mode: String,
    /// Bytes of message per write.
    #[arg(long, default_value_t = 64)]
    msg_bytes: usize,
}

#[derive(Default)]
struct Run {
    latencies_us: Vec<u64>,
    errors: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.mode != "write" && args.mode != "read" {
        bail!("--mode must be write or read");
    }
    let ws = &args.workspace;
    let client = charter_e2e::client(
        &ws.join("service_cert.pem"),
        Some((&ws.join("user0_cert.pem"), &ws.join("user0_privk.pem"))),
    )
    .with_context(|| format!("reading the sandbox identity files in {}", ws.display()))?;
    let urls: Vec<String> = (0..args.nodes)
        .map(|i| format!("https://127.0.0.1:{}", args.base_port as usize + i))
        .collect();
    let counts: Vec<usize> = args
        .clients
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .context("--clients is a comma-separated list of numbers")
        })
        .collect::<anyhow::Result<_>>()?;
    let msg = "m".repeat(args.msg_bytes);
    let next_id = Arc::new(AtomicU64::new(
        1_000_000_000 + (std::process::id() as u64) * 1_000_000,
    ));

    if args.mode == "read" {
        // Something to read: 100 ids, written once.
        for id in 0..100u64 {
            let r = client
                .post(format!("{}/app/log/private", urls[0]))
                .json(&serde_json::json!({"id": id, "msg": msg}))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("seeding id {id}: {}", r.status());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    println!("| mode | clients | requests/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---|---|---|---|---|---|");
    for clients in counts {
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let client = client.clone();
                let url = urls[c % urls.len()].clone();
                let msg = msg.clone();
                let next_id = next_id.clone();
                let write = args.mode == "write";
                tokio::spawn(async move {
                    let mut run = Run::default();
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let resp = if write {
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            client
                                .post(format!("{url}/app/log/private"))
                                .json(&serde_json::json!({"id": id, "msg": msg}))
                                .send()
                                .await
                        } else {
                            n += 1;
                            client
                                .get(format!("{url}/app/log/private?id={}", n % 100))
                                .send()
                                .await
                        };
                        let ok = match resp {
                            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        if ok {
                            run.latencies_us.push(t.elapsed().as_micros() as u64);
                        } else {
                            run.errors += 1;
                        }
                    }
                    run
                })
            })
            .collect();
        let mut all = Run::default();
        for t in tasks {
            let r = t.await?;
            all.latencies_us.extend(r.latencies_us);
            all.errors += r.errors;
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if all.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((all.latencies_us.len() as f64 - 1.0) * p).round() as usize;
            all.latencies_us[i] as f64 / 1000.0
        };
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
            args.mode,
            clients,
            all.latencies_us.len() as f64 / elapsed,
            pct(0.5),
            pct(0.99),
            pct(1.0),
            all.errors
        );
    }
    Ok(())
}
