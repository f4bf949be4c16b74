//! Remote-write ingest: server CPU-seconds per million samples, throughput
//! and peak memory, Strata vs Prometheus 2.42 receiving the same load in the
//! same run.
//!
//! ```text
//! cargo build --release -p strata
//! cargo bench -p strata-bench --bench ingest -- [--series 10000] [--steps 100] [--batch 2000]
//!     [--concurrency 4] [--repeats 3] [--scale 1,2,3]
//! ```
//!
//! 1. Generates `strata_bench::dataset` label sets (about `--series`
//!    series) and encodes `--steps` scrape rounds at 15 s as remote-write
//!    1.0 requests of `--batch` series each (snappy), before any server runs.
//! 2. For each receiver, `--repeats` times on a fresh data directory:
//!    - `prometheus`: Prometheus 2.42 with `--web.enable-remote-write-receiver`;
//!    - `strata`: `strata aggregator` on its local ingest log (no NATS);
//!    - `strata+nats`: `strata aggregator` publishing to a real
//!      `nats-server` with JetStream and consuming its shards back; the
//!      aggregator's CPU and the aggregator's plus NATS' are reported.
//!
//!    It sends every request with `--concurrency` in flight, waits until
//!    the receiver has everything in its head, and reads the servers' CPU
//!    time (`/proc/<pid>/stat`) and peak RSS (`VmHWM`).
//! 3. `--scale`: throughput of 1, 2, 3 aggregators on NATS (R = 1), the
//!    load spread over them.
//!
//! Prints medians and the ratios Strata / Prometheus.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use prost::Message;
use strata_bench::dataset::{DatasetConfig, generate};
use strata_proto::remote_write::v1;

struct Args {
    series: usize,
    steps: usize,
    batch: usize,
    concurrency: usize,
    repeats: usize,
    scale: Vec<usize>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args { series: 10_000, steps: 100, batch: 2000, concurrency: 4, repeats: 3, scale: vec![] };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--series" => a.series = value()?.parse()?,
            "--steps" => a.steps = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--repeats" => a.repeats = value()?.parse()?,
            "--scale" => a.scale = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(a.batch > 0 && a.concurrency > 0 && a.repeats > 0, "--batch, --concurrency and --repeats must be positive");
    Ok(a)
}

/// A child process killed when dropped.
struct Server {
    child: Child,
    name: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let log = std::fs::File::create(log)?;
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self { child, name: name.to_owned() })
    }

    /// User plus system CPU time so far.
    fn cpu(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces): state is field 3.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
        // Linux reports in USER_HZ, 100 on every architecture we run on.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Peak resident memory, bytes.
    fn peak_rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
            .with_context(|| format!("VmHWM of {}", self.name))?;
        Ok(kb * 1024)
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `strata` binary next to this benchmark's (`cargo build --release -p strata`).
fn strata_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let candidates = exe.ancestors().skip(1).take(2).map(|d| d.join("strata")).collect::<Vec<_>>();
    candidates
        .into_iter()
        .find(|p| p.exists())
        .context("the strata binary is not built: run `cargo build --release -p strata` first")
}

fn nats_bin() -> &'static str {
    if Path::new("/usr/sbin/nats-server").exists() { "/usr/sbin/nats-server" } else { "nats-server" }
}

async fn wait_ready(http: &reqwest::Client, url: &str) -> Result<()> {
    for _ in 0..600 {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} not ready after 60 s")
}

async fn wait_port(port: u16) -> Result<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("nothing listens on {port}")
}

/// A metric's value on a `/metrics` page.
async fn metric(http: &reqwest::Client, port: u16, name: &str) -> Option<f64> {
    let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The load: snappy remote-write requests in `--concurrency` lanes, and the
/// sample count. Like Prometheus' sender shards, each lane owns a fixed set
/// of series and sends them in time order, so no receiver sees a sample out
/// of order.
fn encode_load(a: &Args) -> Result<(Vec<Vec<bytes::Bytes>>, usize)> {
    let cfg = DatasetConfig::with_series(a.series, 15_000);
    let data = generate(&cfg);
    let labels: Vec<Vec<v1::Label>> = data
        .iter()
        .map(|s| s.labels.iter().map(|l| v1::Label { name: l.name.clone(), value: l.value.clone() }).collect())
        .collect();
    let start = now_ms() - (a.steps as i64) * 15_000;
    let mut lanes: Vec<Vec<bytes::Bytes>> = vec![Vec::new(); a.concurrency];
    let mut samples = 0;
    let mut encoder = snap::raw::Encoder::new();
    for step in 0..a.steps {
        let t = start + step as i64 * 15_000;
        for (c, chunk) in labels.chunks(a.batch).enumerate() {
            let timeseries = chunk
                .iter()
                .enumerate()
                .map(|(i, l)| v1::TimeSeries {
                    labels: l.clone(),
                    samples: vec![v1::Sample { value: (step * 7 + i) as f64 * 0.25, timestamp: t }],
                    ..v1::TimeSeries::default()
                })
                .collect::<Vec<_>>();
            samples += timeseries.len();
            let raw = v1::WriteRequest { timeseries, metadata: vec![] }.encode_to_vec();
            lanes[c % a.concurrency].push(bytes::Bytes::from(encoder.compress_vec(&raw)?));
        }
    }
    Ok((lanes, samples))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// Sends every lane's requests in order, the lanes at once, lane `i` to
/// `urls[i % urls.len()]`; fails on any non-2xx answer.
async fn send_all(http: &reqwest::Client, urls: &[String], lanes: &[Vec<bytes::Bytes>]) -> Result<()> {
    let sends = lanes.iter().enumerate().map(|(i, lane)| {
        let url = &urls[i % urls.len()];
        async move {
            for body in lane {
                let r = http
                    .post(url)
                    .header("Content-Type", "application/x-protobuf")
                    .header("Content-Encoding", "snappy")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(body.clone())
                    .send()
                    .await?;
                let status = r.status();
                ensure!(status.is_success(), "{url}: {status} {}", r.text().await.unwrap_or_default());
            }
            Ok(())
        }
    });
    futures::future::try_join_all(sends).await.map(|_| ())
}

/// One measured run.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Receiver CPU (aggregators, or Prometheus).
    cpu: Duration,
    /// NATS' CPU, when it took part.
    nats_cpu: Duration,
    wall: Duration,
    peak_rss: u64,
}

/// Runs Prometheus as the receiver.
async fn run_prometheus(dir: &Path, http: &reqwest::Client, load: &[Vec<bytes::Bytes>]) -> Result<Run> {
    let port = free_port()?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n")?;
    let server = Server::spawn(
        "prometheus",
        Command::new("prometheus").args([
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("prom").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
        ]),
        &dir.join("prometheus.log"),
    )?;
    wait_ready(http, &format!("http://127.0.0.1:{port}/-/ready")).await?;
    let cpu0 = server.cpu()?;
    let t0 = Instant::now();
    send_all(http, &[format!("http://127.0.0.1:{port}/api/v1/write")], load).await?;
    let wall = t0.elapsed();
    Ok(Run { cpu: server.cpu()? - cpu0, nats_cpu: Duration::ZERO, wall, peak_rss: server.peak_rss()? })
}

/// Runs `aggregators` Strata aggregators as the receivers, on NATS or (with
/// one aggregator and `nats` false) on the local ingest log.
async fn run_strata(
    dir: &Path,
    http: &reqwest::Client,
    load: &[Vec<bytes::Bytes>],
    samples: usize,
    nats: bool,
    aggregators: usize,
) -> Result<Run> {
    let bin = strata_bin()?;
    let nats_server = if nats {
        let port = free_port()?;
        let s = Server::spawn(
            "nats-server",
            Command::new(nats_bin())
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(dir.join("nats")),
            &dir.join("nats.log"),
        )?;
        wait_port(port).await?;
        Some((s, port))
    } else {
        None
    };
    let mut servers = Vec::new();
    for i in 0..aggregators {
        let port = free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.args([
            "aggregator",
            &format!("--storage.path={}", dir.join(format!("agg-{i}")).display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ]);
        if let Some((_, nats_port)) = &nats_server {
            cmd.args([
                &format!("--nats.url=nats://127.0.0.1:{nats_port}"),
                "--nats.shards=16",
                &format!("--aggregator.ordinal={i}"),
                &format!("--aggregator.count={aggregators}"),
                "--aggregator.replication-factor=1",
            ]);
        }
        let s = Server::spawn("strata aggregator", &mut cmd, &dir.join(format!("agg-{i}.log")))?;
        servers.push((s, port));
    }
    for (_, port) in &servers {
        wait_ready(http, &format!("http://127.0.0.1:{port}/-/ready")).await?;
    }
    let cpu0: Vec<Duration> = servers.iter().map(|(s, _)| s.cpu()).collect::<Result<_>>()?;
    let nats0 = nats_server.as_ref().map(|(s, _)| s.cpu()).transpose()?.unwrap_or_default();
    let urls: Vec<String> = servers.iter().map(|(_, p)| format!("http://127.0.0.1:{p}/api/v1/write")).collect();
    let t0 = Instant::now();
    send_all(http, &urls, load).await?;
    // Acknowledged means durable in the log; wait until the heads hold it all.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut appended = 0.0;
        for (_, port) in &servers {
            appended += metric(http, *port, "strata_head_samples_appended_total").await.unwrap_or(0.0);
        }
        if appended >= samples as f64 {
            break;
        }
        ensure!(Instant::now() < deadline, "heads hold {appended} of {samples} samples after 300 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t0.elapsed();
    let mut cpu = Duration::ZERO;
    let mut peak = 0;
    for ((s, _), c0) in servers.iter().zip(cpu0) {
        cpu += s.cpu()? - c0;
        peak += s.peak_rss()?;
    }
    let nats_cpu = nats_server.as_ref().map(|(s, _)| s.cpu()).transpose()?.unwrap_or_default() - nats0;
    Ok(Run { cpu, nats_cpu, wall, peak_rss: peak })
}

fn median_by<T: Copy + PartialOrd>(runs: &[Run], f: impl Fn(&Run) -> T) -> T {
    let mut v: Vec<T> = runs.iter().map(f).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(&a))
}

async fn run(a: &Args) -> Result<()> {
    let t0 = Instant::now();
    let (load, samples) = encode_load(a)?;
    let bytes: usize = load.iter().flatten().map(bytes::Bytes::len).sum();
    println!(
        "load: {} requests in {} lanes, {samples} samples, {:.1} MiB snappy ({:.1?} to encode)",
        load.iter().map(Vec::len).sum::<usize>(),
        load.len(),
        bytes as f64 / (1 << 20) as f64,
        t0.elapsed()
    );
    let http = reqwest::Client::new();
    let mut results: Vec<(&str, Vec<Run>)> = vec![("prometheus", vec![]), ("strata", vec![]), ("strata+nats", vec![])];
    for r in 0..a.repeats {
        for (name, runs) in &mut results {
            let tmp = tempfile::tempdir()?;
            let run = match *name {
                "prometheus" => run_prometheus(tmp.path(), &http, &load).await?,
                "strata" => run_strata(tmp.path(), &http, &load, samples, false, 1).await?,
                _ => run_strata(tmp.path(), &http, &load, samples, true, 1).await?,
            };
            println!(
                "  repeat {r} {name:<12} cpu {:>6.2}s (+nats {:>5.2}s) wall {:>6.2}s peak RSS {:>5} MiB",
                run.cpu.as_secs_f64(),
                run.nats_cpu.as_secs_f64(),
                run.wall.as_secs_f64(),
                run.peak_rss >> 20
            );
            runs.push(run);
        }
    }
    let per_m = |d: Duration| d.as_secs_f64() / (samples as f64 / 1e6);
    let prom = &results[0].1;
    let prom_cpu = per_m(median_by(prom, |r| r.cpu));
    let prom_rss = median_by(prom, |r| r.peak_rss) as f64;
    println!("\nmedians of {} runs, {samples} samples each:", a.repeats);
    println!("receiver       CPU-s/M samples  (+NATS)   samples/s   peak RSS   CPU ratio  RSS ratio");
    for (name, runs) in &results {
        let cpu = per_m(median_by(runs, |r| r.cpu));
        let nats = per_m(median_by(runs, |r| r.nats_cpu));
        let wall = median_by(runs, |r| r.wall).as_secs_f64();
        let rss = median_by(runs, |r| r.peak_rss) as f64;
        println!(
            "{name:<14} {cpu:>15.3}  {:>8}  {:>10.0}  {:>6.0} MiB  {:>8.2}x  {:>8.2}x",
            if *name == "strata+nats" { format!("{:.3}", cpu + nats) } else { "-".into() },
            samples as f64 / wall,
            rss / (1 << 20) as f64,
            cpu / prom_cpu,
            rss / prom_rss,
        );
    }
    for n in &a.scale {
        let mut runs = Vec::new();
        for _ in 0..a.repeats {
            let tmp = tempfile::tempdir()?;
            runs.push(run_strata(tmp.path(), &http, &load, samples, true, *n).await?);
        }
        let wall = median_by(&runs, |r| r.wall).as_secs_f64();
        println!("scale: {n} aggregator(s) on NATS, R=1: {:.0} samples/s", samples as f64 / wall);
    }
    Ok(())
}
