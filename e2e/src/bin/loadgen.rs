//! `loadgen`: drives requests against running Charter services and reports
//! throughput and latency per client count, or sends a run of "bomb"
//! requests and checks that every one is refused cleanly.
//!
//! ```text
//! cargo run --release -p charter-e2e --bin loadgen -- \
//!     --workspace workspace/sandbox --nodes 3 --clients 1,8,32 --seconds 10
//! ```
//!
//! Modes (`--mode`):
//!
//! - `write`, `read`: the logging sample (`POST /app/log/private`, and
//!   `GET /app/log/private?id=` of 100 ids written first);
//! - `log`, `compute`: the bench sample (`POST /app/log`, and
//!   `GET /app/compute?n=RECORDS`);
//! - `bombs`: the bench sample's `GET /app/bomb/{kind}`, `--count` of them
//!   cycling through the kinds, with every node's RSS (from
//!   `/node/js_metrics`) and a normal request checked every
//!   `--sample-every` bombs. Exits non-zero if a node stopped answering or
//!   a bomb got anything but its expected 500 error code.
//!
//! Clients are spread over the nodes round-robin, so writes that land on
//! backups are forwarded to the primary, as in real use. Every client keeps
//! one request in flight at a time (closed loop).
//!
//! `--workspace` and `--base-port` may be given more than once, one pair
//! per service (for example two sandboxes of one app, one per JS engine):
//! each client count then runs on every service in turn, the rows name the
//! engine each service reports, and a last table gives the first service's
//! throughput divided by each other's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use charter_e2e::BENCH_BOMBS;
use clap::Parser;
use serde_json::Value;

#[derive(Parser)]
#[command(
    about = "Load generator for a Charter service running the logging or the bench sample app"
)]
struct Args {
    /// The sandbox workspace: service_cert.pem and user0_cert.pem /
    /// user0_privk.pem are read from here. Repeat it (with --base-port)
    /// to drive several services in one run.
    #[arg(long, default_value = "workspace/sandbox")]
    workspace: Vec<PathBuf>,
    /// How many nodes each service has (node i serves on BASE_PORT+i).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Node 0's port; one per --workspace, in the same order.
    #[arg(long, default_value = "8000")]
    base_port: Vec<u16>,
    /// Comma-separated client counts to run one after another (default
    /// 1,8,32; for bombs one number, default 1).
    #[arg(long)]
    clients: Option<String>,
    /// Seconds per client count.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// `write` (POST /app/log/private), `read` (GET /app/log/private?id=),
    /// `log` (bench: POST /app/log), `compute` (bench: GET /app/compute) or
    /// `bombs` (bench: GET /app/bomb/{kind}).
    #[arg(long, default_value = "write")]
    mode: String,
    /// Bytes of message per write.
    #[arg(long, default_value_t = 64)]
    msg_bytes: usize,
    /// compute: records per request.
    #[arg(long, default_value_t = 10_000)]
    records: usize,
    /// bombs: how many to send.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// bombs: sample every node's RSS (and send a normal request) after
    /// this many bombs.
    #[arg(long, default_value_t = 1_000)]
    sample_every: usize,
    /// bombs: comma-separated kinds to cycle through (default: all).
    #[arg(long)]
    bombs: Option<String>,
}

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Default)]
struct Run {
    latencies_us: Vec<u64>,
    errors: u64,
}

/// One service: its client and node URLs.
struct Service {
    client: reqwest::Client,
    urls: Vec<String>,
    /// The engine its app runs on, as node 0 reports it.
    engine: String,
}

impl Service {
    async fn js_metrics(&self, node: usize) -> anyhow::Result<Value> {
        let r = self
            .client
            .get(format!("{}/node/js_metrics", self.urls[node]))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("GET /node/js_metrics on node {node}: {}", r.status());
        }
        Ok(r.json().await?)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !["write", "read", "log", "compute", "bombs"].contains(&args.mode.as_str()) {
        bail!("--mode must be write, read, log, compute or bombs");
    }
    if args.workspace.len() != args.base_port.len() {
        bail!(
            "give one --base-port per --workspace ({} workspaces, {} ports)",
            args.workspace.len(),
            args.base_port.len()
        );
    }
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let mut services = Vec::new();
    for (ws, port) in args.workspace.iter().zip(&args.base_port) {
        let client = charter_e2e::client(
            &ws.join("service_cert.pem"),
            Some((&ws.join("user0_cert.pem"), &ws.join("user0_privk.pem"))),
        )
        .with_context(|| format!("reading the sandbox identity files in {}", ws.display()))?;
        let urls: Vec<String> = (0..args.nodes)
            .map(|i| format!("https://127.0.0.1:{}", *port as usize + i))
            .collect();
        let mut service = Service {
            client,
            urls,
            engine: String::new(),
        };
        let metrics = service
            .js_metrics(0)
            .await
            .with_context(|| format!("the service on port {port} does not answer"))?;
        service.engine = metrics["engine"].as_str().unwrap_or("?").to_string();
        services.push(service);
    }
    let default_clients = if args.mode == "bombs" { "1" } else { "1,8,32" };
    let counts: Vec<usize> = args
        .clients
        .as_deref()
        .unwrap_or(default_clients)
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .context("--clients is a comma-separated list of numbers")
        })
        .collect::<anyhow::Result<_>>()?;
    if counts.contains(&0) {
        bail!("--clients must be at least 1");
    }
    if args.mode == "bombs" {
        let [clients] = counts[..] else {
            bail!("--mode bombs takes one client count");
        };
        let mut ok = true;
        for service in &services {
            ok &= bombs(&args, service, clients).await?;
        }
        if !ok {
            std::process::exit(1);
        }
        return Ok(());
    }
    throughput(&args, &services, &counts).await
}

async fn throughput(args: &Args, services: &[Service], counts: &[usize]) -> anyhow::Result<()> {
    let msg = "m".repeat(args.msg_bytes);
    let next_id = Arc::new(AtomicU64::new(
        1_000_000_000 + (std::process::id() as u64) * 1_000_000,
    ));

    if args.mode == "read" {
        // Something to read: 100 ids, written once on each service.
        for s in services {
            for id in 0..100u64 {
                let r = s
                    .client
                    .post(format!("{}/app/log/private", s.urls[0]))
                    .json(&serde_json::json!({"id": id, "msg": msg}))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("seeding id {id}: {}", r.status());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    println!("| engine | mode | clients | requests/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    // (clients, requests/s of each service)
    let mut rates: Vec<(usize, Vec<f64>)> = Vec::new();
    for &clients in counts {
        let mut row = Vec::new();
        for s in services {
            let rate = one_run(args, s, clients, &msg, &next_id).await?;
            row.push(rate);
        }
        rates.push((clients, row));
    }
    if services.len() > 1 {
        let names: Vec<String> = services[1..]
            .iter()
            .map(|s| format!("{} ÷ {} (requests/s)", services[0].engine, s.engine))
            .collect();
        println!();
        println!("| mode | clients | {} |", names.join(" | "));
        println!("|---|---|{}", "---|".repeat(names.len()));
        for (clients, row) in rates {
            let ratios: Vec<String> = row[1..]
                .iter()
                .map(|r| {
                    if *r > 0.0 {
                        format!("{:.2}", row[0] / r)
                    } else {
                        "-".into()
                    }
                })
                .collect();
            println!("| {} | {clients} | {} |", args.mode, ratios.join(" | "));
        }
    }
    Ok(())
}

/// Runs `clients` closed-loop clients for `--seconds` on one service,
/// prints the row and returns the throughput.
async fn one_run(
    args: &Args,
    service: &Service,
    clients: usize,
    msg: &str,
    next_id: &Arc<AtomicU64>,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client = service.client.clone();
            let url = service.urls[c % service.urls.len()].clone();
            let msg = msg.to_string();
            let next_id = next_id.clone();
            let mode = args.mode.clone();
            let records = args.records;
            tokio::spawn(async move {
                let mut run = Run::default();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let resp = match mode.as_str() {
                        "write" | "log" => {
                            let path = if mode == "write" {
                                "/app/log/private"
                            } else {
                                "/app/log"
                            };
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            client
                                .post(format!("{url}{path}"))
                                .json(&serde_json::json!({"id": id, "msg": msg}))
                                .send()
                                .await
                        }
                        "compute" => {
                            client
                                .get(format!("{url}/app/compute?n={records}"))
                                .send()
                                .await
                        }
                        _ => {
                            n += 1;
                            client
                                .get(format!("{url}/app/log/private?id={}", n % 100))
                                .send()
                                .await
                        }
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
    let rate = all.latencies_us.len() as f64 / elapsed;
    println!(
        "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
        service.engine,
        args.mode,
        clients,
        rate,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        all.errors
    );
    Ok(rate)
}

/// What one bomb came to: `"500 JSHeapLimitExceeded"`, `"200"`, or the
/// transport error.
async fn bomb_outcome(client: &reqwest::Client, url: &str) -> String {
    match client.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(body) => {
                    let code = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
                    match code {
                        Some(code) => format!("{status} {code}"),
                        None => status.to_string(),
                    }
                }
                Err(e) => format!("{status}, then the body failed: {e}"),
            }
        }
        Err(e) => format!("no answer: {e}"),
    }
}

#[derive(Default)]
struct KindStats {
    sent: u64,
    expected: u64,
    total_us: u64,
    /// outcome → how many, for everything but the expected outcome.
    other: BTreeMap<String, u64>,
}

/// Sends `--count` bombs to one service, `clients` at a time; prints the
/// RSS table and the outcomes. Returns whether everything was as expected.
async fn bombs(args: &Args, service: &Service, clients: usize) -> anyhow::Result<bool> {
    let kinds: Vec<(String, String)> = match &args.bombs {
        None => BENCH_BOMBS
            .iter()
            .map(|(k, c)| (k.to_string(), c.to_string()))
            .collect(),
        Some(list) => list
            .split(',')
            .map(|k| {
                let k = k.trim();
                BENCH_BOMBS
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(name, code)| (name.to_string(), code.to_string()))
                    .with_context(|| {
                        format!(
                            "unknown bomb {k:?}; the kinds are {:?}",
                            BENCH_BOMBS.iter().map(|b| b.0).collect::<Vec<_>>()
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let every = args.sample_every.max(1);
    let m0 = service.js_metrics(0).await?;
    println!(
        "{} bombs on the {} app ({} node(s), {} client(s)); limits in force: {}",
        args.count,
        service.engine,
        service.urls.len(),
        clients,
        m0["limits"]
    );
    println!();
    let header: Vec<String> = (0..service.urls.len())
        .map(|i| format!("node {i} RSS MiB"))
        .collect();
    println!(
        "| bombs | {} | normal request | elapsed s |",
        header.join(" | ")
    );
    println!("|---|{}---|---|", "---|".repeat(header.len()));

    let stats: Arc<Vec<std::sync::Mutex<KindStats>>> = Arc::new(
        kinds
            .iter()
            .map(|_| std::sync::Mutex::new(KindStats::default()))
            .collect(),
    );
    let kinds = Arc::new(kinds);
    let started = Instant::now();
    let mut all_up = true;
    let mut rss_first: Vec<Option<u64>> = Vec::new();
    let mut rss_last: Vec<Option<u64>>;
    let mut sent = 0usize;
    let next_id = 2_000_000_000 + (std::process::id() as u64) * 1_000_000;
    loop {
        // Sample: every node's RSS, and a normal request on each node.
        let mut cells = Vec::new();
        let mut rss_now = Vec::new();
        let mut up = true;
        for node in 0..service.urls.len() {
            match service.js_metrics(node).await {
                Ok(m) => {
                    let rss = m["rss_bytes"].as_u64();
                    rss_now.push(rss);
                    cells.push(rss.map_or("n/a".into(), |b| format!("{:.1}", b as f64 / MIB)));
                }
                Err(e) => {
                    up = false;
                    rss_now.push(None);
                    cells.push(format!("DOWN ({e})"));
                }
            }
        }
        let mut normal = Vec::new();
        for (node, url) in service.urls.iter().enumerate() {
            let r = service
                .client
                .post(format!("{url}/app/log"))
                .json(
                    &serde_json::json!({"id": next_id + sent as u64 + node as u64, "msg": "alive"}),
                )
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    up = false;
                    normal.push(format!("node {node}: {}", r.status()));
                }
                Err(e) => {
                    up = false;
                    normal.push(format!("node {node}: {e}"));
                }
            }
        }
        println!(
            "| {sent} | {} | {} | {:.1} |",
            cells.join(" | "),
            if normal.is_empty() {
                "200".to_string()
            } else {
                normal.join("; ")
            },
            started.elapsed().as_secs_f64()
        );
        if rss_first.is_empty() {
            rss_first = rss_now.clone();
        }
        rss_last = rss_now;
        if !up {
            all_up = false;
            break;
        }
        if sent >= args.count {
            break;
        }
        // The next batch: bombs sent..batch_end, `clients` at a time.
        let batch_end = (sent + every).min(args.count);
        let next = Arc::new(AtomicUsize::new(sent));
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let client = service.client.clone();
                let urls = service.urls.clone();
                let kinds = kinds.clone();
                let stats = stats.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= batch_end {
                            break;
                        }
                        let k = i % kinds.len();
                        let (kind, code) = &kinds[k];
                        let url = format!("{}/app/bomb/{kind}", urls[i % urls.len()]);
                        let t = Instant::now();
                        let outcome = bomb_outcome(&client, &url).await;
                        let us = t.elapsed().as_micros() as u64;
                        let mut s = stats[k].lock().unwrap_or_else(|e| e.into_inner());
                        s.sent += 1;
                        s.total_us += us;
                        if outcome == format!("500 {code}") {
                            s.expected += 1;
                        } else {
                            *s.other.entry(outcome).or_default() += 1;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await?;
        }
        sent = batch_end;
    }
    let elapsed = started.elapsed().as_secs_f64();

    println!();
    println!("| bomb | expected | sent | as expected | mean ms | other outcomes |");
    println!("|---|---|---|---|---|---|");
    let mut as_expected = true;
    // Other outcomes that are still a 500 with one of the engine's error
    // codes (typically the other limit hit first) are clean, if unexpected.
    let mut unclean = 0u64;
    for ((kind, code), s) in kinds.iter().zip(stats.iter()) {
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        as_expected &= s.expected == s.sent;
        unclean += s
            .other
            .iter()
            .filter(|(o, _)| !o.starts_with("500 JS"))
            .map(|(_, n)| n)
            .sum::<u64>();
        let other: Vec<String> = s.other.iter().map(|(o, n)| format!("{n}× {o}")).collect();
        println!(
            "| {kind} | 500 {code} | {} | {} | {:.1} | {} |",
            s.sent,
            s.expected,
            if s.sent > 0 {
                s.total_us as f64 / s.sent as f64 / 1000.0
            } else {
                0.0
            },
            if other.is_empty() {
                "-".to_string()
            } else {
                other.join("; ")
            }
        );
    }
    println!();
    let growth: Vec<String> = rss_first
        .iter()
        .zip(&rss_last)
        .enumerate()
        .map(|(i, (a, b))| match (a, b) {
            (Some(a), Some(b)) => format!(
                "node {i} {:.1} → {:.1} MiB ({:+.1})",
                *a as f64 / MIB,
                *b as f64 / MIB,
                (*b as f64 - *a as f64) / MIB
            ),
            _ => format!("node {i} n/a"),
        })
        .collect();
    println!(
        "{sent} bombs in {elapsed:.1} s ({:.0} per second); RSS {}",
        sent as f64 / elapsed.max(1e-9),
        growth.join(", ")
    );
    if !all_up {
        println!("FAILED: a node stopped answering (or refused a normal request)");
    }
    if unclean > 0 {
        println!("FAILED: {unclean} bomb(s) got something other than a 500 with a JS error code");
    } else if !as_expected {
        println!(
            "FAILED: some bombs got a clean 500 but not their expected error code \
             (with tight limits, the time limit can come before the heap limit)"
        );
    }
    Ok(all_up && as_expected)
}
