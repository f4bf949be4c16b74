//! End-to-end delay from scrape to queryable, through the distributed path:
//! a target page → `strata collector` → NATS JetStream → `strata
//! aggregator` → `strata querier`.
//!
//! ```text
//! cargo build --release -p strata
//! cargo bench -p strata-bench --bench e2e_delay -- [--scrapes 120] [--interval 1s]
//! ```
//!
//! The target serves `probe_seq N`, N going up by one per scrape, and notes
//! when it served each N. The benchmark polls the querier every 20 ms for
//! `probe_seq` and notes when each N first answers. The delay of N is the
//! time between the two; the median, p99 and maximum are printed.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    scrapes: usize,
    interval: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args { scrapes: 120, interval: "1s".into() };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--scrapes" => a.scrapes = value()?.parse()?,
            "--interval" => a.interval = value()?.clone(),
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// A child process killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Server> {
    let log = std::fs::File::create(log)?;
    Ok(Server(cmd.stdout(Stdio::null()).stderr(log).spawn()?))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn strata_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("strata"))
        .find(|p| p.exists())
        .context("the strata binary is not built: run `cargo build --release -p strata` first")
}

/// When each sequence number was served.
type Served = Arc<Mutex<Vec<Instant>>>;

/// Serves `probe_seq N` on every request, N = requests so far.
async fn serve_target(listener: tokio::net::TcpListener, served: Served) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { return };
        let served = Arc::clone(&served);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let Ok(n) = conn.read(&mut buf).await else { return };
            if n == 0 {
                return;
            }
            let seq = {
                let Ok(mut s) = served.lock() else { return };
                s.push(Instant::now());
                s.len()
            };
            let body = format!("# TYPE probe_seq gauge\nprobe_seq {seq}\n");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

async fn wait_ready(http: &reqwest::Client, port: u16) -> Result<()> {
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/-/ready")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("port {port} not ready after 30 s")
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(&a))
}

async fn run(a: &Args) -> Result<()> {
    let bin = strata_bin()?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let http = reqwest::Client::new();

    let nats_port = free_port()?;
    let nats_bin = if Path::new("/usr/sbin/nats-server").exists() { "/usr/sbin/nats-server" } else { "nats-server" };
    let _nats = spawn(
        Command::new(nats_bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &nats_port.to_string(), "-sd"])
            .arg(dir.join("nats")),
        &dir.join("nats.log"),
    )?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nats = format!("nats://127.0.0.1:{nats_port}");
    let agg = free_port()?;
    let _agg = spawn(
        Command::new(&bin).args([
            "aggregator",
            &format!("--storage.path={}", dir.join("agg").display()),
            &format!("--web.listen-address=127.0.0.1:{agg}"),
            &format!("--nats.url={nats}"),
            "--aggregator.count=1",
            "--aggregator.replication-factor=1",
        ]),
        &dir.join("agg.log"),
    )?;
    let q = free_port()?;
    let _querier = spawn(
        Command::new(&bin).args([
            "querier",
            &format!("--web.listen-address=127.0.0.1:{q}"),
            &format!("--querier.aggregator=127.0.0.1:{agg}"),
        ]),
        &dir.join("querier.log"),
    )?;
    wait_ready(&http, agg).await?;
    wait_ready(&http, q).await?;

    let served: Served = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let target = listener.local_addr()?;
    tokio::spawn(serve_target(listener, Arc::clone(&served)));
    let config = dir.join("collector.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: {}\nscrape_configs:\n  - job_name: probe\n    static_configs:\n      - targets: ['{target}']\n",
            a.interval
        ),
    )?;
    let c = free_port()?;
    let _collector = spawn(
        Command::new(&bin).args([
            "collector",
            &format!("--config.file={}", config.display()),
            &format!("--web.listen-address=127.0.0.1:{c}"),
            &format!("--nats.url={nats}"),
            &format!("--buffer.path={}", dir.join("buffer").display()),
        ]),
        &dir.join("collector.log"),
    )?;

    // Poll the querier; note when each sequence number first answers.
    let mut seen: Vec<Option<Instant>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30 + 5 * a.scrapes as u64);
    let mut last = 0usize;
    while last < a.scrapes {
        ensure!(Instant::now() < deadline, "only {last} of {} scrapes became queryable", a.scrapes);
        let r = http.get(format!("http://127.0.0.1:{q}/api/v1/query?query=probe_seq")).send().await;
        let now = Instant::now();
        if let Ok(r) = r
            && let Ok(body) = r.bytes().await
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
            && let Some(n) = v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<usize>().ok())
            && n > last
        {
            if seen.len() < n {
                seen.resize(n, None);
            }
            seen[n - 1] = Some(now);
            last = n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let served = served.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    // The first scrapes happen while the pipeline starts: skip them.
    let mut delays: Vec<Duration> =
        seen.iter().zip(&served).skip(5).filter_map(|(s, t)| s.map(|s| s.saturating_duration_since(*t))).collect();
    ensure!(!delays.is_empty(), "no delay measured");
    delays.sort();
    let pct = |p: f64| delays[((delays.len() as f64 * p).ceil() as usize).saturating_sub(1).min(delays.len() - 1)];
    println!(
        "scrape → queryable over {} scrapes at {}: median {:.0} ms, p99 {:.0} ms, max {:.0} ms (target: p99 < 2000 ms)",
        delays.len(),
        a.interval,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        delays[delays.len() - 1].as_secs_f64() * 1e3
    );
    Ok(())
}
