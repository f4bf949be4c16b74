//! Range-query latency and peak memory: Strata vs Prometheus 2.42 on the
//! same data, in the same run.
//!
//! ```text
//! cargo bench -p strata-bench --bench promql -- [--series 10000] [--hours 24] [--repeats 5] [--step 60] [--dir DIR] [--s3]
//! ```
//!
//! With `--dir`, the data is written under `DIR` and kept; a later run with
//! the same `--dir` (and the same `--series`, `--hours` and `--s3`) reuses it.
//!
//! With `--s3` Strata's blocks live in a real S3-compatible server
//! (`s3s-fs` on loopback, as the tests use) instead of a local directory.
//! Either way the object store is counted: each query's GET requests and
//! bytes fetched are reported next to its latency.
//!
//! 1. Generates `strata_bench::dataset` with about `--series` series over
//!    `--hours` at 15 s.
//! 2. Writes it as Strata blocks (2 h each, Parquet, local object store)
//!    and as OpenMetrics, turned into Prometheus blocks by
//!    `promtool tsdb create-blocks-from openmetrics`.
//! 3. Starts `prometheus` over its blocks and a Strata querier process
//!    (this binary with `--serve-strata`) over Strata's blocks, each on a
//!    127.0.0.1 port, so each server's memory is its own.
//! 4. Runs each query as a range query over the whole dataset, once to warm
//!    up and then `--repeats` times alternating servers, and reports the
//!    median latency, each server's peak RSS (`VmHWM`) and RSS before the
//!    queries, and the ratios.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use strata_bench::dataset::{DatasetConfig, generate, write_openmetrics};
use strata_model::{DEFAULT_TENANT, Labels, Sample, Select};

const QUERIES: &[&str] = &[
    "sum by (job, mode) (rate(node_cpu_seconds_total[5m]))",
    "histogram_quantile(0.99, sum by (le, job) (rate(http_request_duration_seconds_bucket[5m])))",
    // An instant selector over many series (no range function).
    "max by (mode) (node_cpu_seconds_total)",
];

/// A child process killed when dropped.
struct Server {
    child: Child,
    name: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`).
    fn status_kb(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
            .with_context(|| format!("{field} of {}", self.name))
    }
}

struct Args {
    series: usize,
    hours: i64,
    repeats: usize,
    step: String,
    dir: Option<std::path::PathBuf>,
    s3: bool,
}

fn parse_args(args: &[String]) -> Result<Args> {
    let mut a = Args { series: 10_000, hours: 24, repeats: 5, step: "60".into(), dir: None, s3: false };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--series" => a.series = value()?.parse()?,
            "--hours" => a.hours = value()?.parse()?,
            "--repeats" => a.repeats = value()?.parse()?,
            "--step" => a.step = value()?.clone(),
            "--dir" => a.dir = Some(value()?.into()),
            "--s3" => a.s3 = true,
            // `cargo bench` passes `--bench`.
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve-strata") {
        let (Some(dir), Some(port)) = (args.get(1), args.get(2)) else { bail!("--serve-strata DIR PORT [S3PORT]") };
        let s3 = args.get(3).map(|p| p.parse()).transpose()?;
        return serve_strata(Path::new(dir), port.parse()?, s3);
    }
    let a = parse_args(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(&a))
}

const S3_BUCKET: &str = "bench";
const S3_KEY: &str = "bench";
const S3_SECRET: &str = "bench-secret";

/// The block store: `dir` on the local filesystem, or the bucket of the
/// S3 server on `s3_port`; requests and bytes counted into `counters`.
fn object_store(
    dir: &Path,
    s3_port: Option<u16>,
    counters: strata_block::counting::StoreCounters,
) -> Result<Arc<dyn object_store::ObjectStore>> {
    let inner: Arc<dyn object_store::ObjectStore> = match s3_port {
        None => Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir)?),
        Some(port) => {
            let config = strata_block::remote::ObjectStoreConfig {
                url: format!("s3://{S3_BUCKET}/blocks"),
                endpoint: Some(format!("http://127.0.0.1:{port}")),
                region: Some("us-east-1".into()),
                access_key_id: Some(S3_KEY.into()),
                secret_access_key: Some(S3_SECRET.into()),
                allow_http: true,
                virtual_hosted_style: false,
            };
            let settings = config.validate().map_err(|e| anyhow::anyhow!("{}", e.join("; ")))?;
            settings.build_remote()?.context("an S3 store")?
        }
    };
    Ok(Arc::new(strata_block::counting::CountingStore::new(inner, counters)))
}

/// The Strata side: the querier over the blocks in `dir` (or in S3), until killed.
fn serve_strata(dir: &Path, port: u16, s3_port: Option<u16>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let telemetry = strata_common::Telemetry::new();
        let store = strata_block::BlockStore::open(object_store(dir, s3_port, Default::default())?).await?;
        let deps = strata_querier::QuerierDeps {
            storage: Arc::new(store) as Arc<dyn Select>,
            telemetry: telemetry.clone(),
            clock: Arc::new(strata_common::SystemClock),
            settings: strata_querier::QuerierSettings::default(),
            flags: BTreeMap::new(),
            completeness: None,
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let router = strata_querier::api_router(deps).merge(strata_common::admin_router(telemetry, ready()));
        strata_common::serve_http(listener, router, std::future::pending()).await?;
        Ok(())
    })
}

fn ready() -> strata_common::Readiness {
    let r = strata_common::Readiness::new();
    r.set_ready();
    r
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_ready(http: &reqwest::Client, name: &str, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/-/ready")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{name} not ready after 300 s")
}

/// One range query; returns its latency and the number of series.
async fn range_query(
    http: &reqwest::Client,
    port: u16,
    q: &str,
    start: &str,
    end: &str,
    step: &str,
) -> Result<(Duration, usize)> {
    let qs = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("query", q), ("start", start), ("end", end), ("step", step)])
        .finish();
    let started = Instant::now();
    let r = http.get(format!("http://127.0.0.1:{port}/api/v1/query_range?{qs}")).send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    let took = started.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    ensure!(status.is_success(), "{q} on port {port}: {status} {v}");
    Ok((took, v["data"]["result"].as_array().map_or(0, Vec::len)))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The per-query object store figures the Strata querier counts: (GETs, bytes).
async fn strata_io(http: &reqwest::Client, port: u16) -> Result<(f64, f64)> {
    let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await?.text().await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .with_context(|| format!("{name} in the querier's metrics"))
    };
    Ok((value("strata_query_object_store_get_requests_total")?, value("strata_query_object_store_get_bytes_total")?))
}

/// Writes the dataset as Strata blocks of `block_ms` each.
async fn write_strata_blocks(
    dir: &Path,
    s3_port: Option<u16>,
    data: &[strata_model::Series],
    cfg: &DatasetConfig,
) -> Result<usize> {
    let store = strata_block::BlockStore::open(object_store(dir, s3_port, Default::default())?).await?;
    let block_ms = 2 * 3600 * 1000;
    let mut start = cfg.start_ms.div_euclid(block_ms) * block_ms;
    let mut blocks = 0;
    while start < cfg.start_ms + cfg.duration_ms + cfg.interval_ms {
        let end = start + block_ms;
        let part: Vec<(Labels, Vec<Sample>)> = data
            .iter()
            .filter_map(|s| {
                let lo = s.samples.partition_point(|p| p.t < start);
                let hi = s.samples.partition_point(|p| p.t < end);
                (lo < hi).then(|| (s.labels.clone(), s.samples[lo..hi].to_vec()))
            })
            .collect();
        if !part.is_empty() {
            store.write(DEFAULT_TENANT, part, end).await?;
            blocks += 1;
        }
        start = end;
    }
    Ok(blocks)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Generates the dataset and writes it as Strata blocks and Prometheus blocks.
async fn write_data(
    cfg: &DatasetConfig,
    data_dir: &Path,
    strata_dir: &Path,
    s3_port: Option<u16>,
    tsdb: &Path,
) -> Result<()> {
    let t0 = Instant::now();
    let data = generate(cfg);
    let samples: usize = data.iter().map(|s| s.samples.len()).sum();
    println!("dataset: {} series, {samples} samples ({:.1?} to generate)", data.len(), t0.elapsed());

    let t0 = Instant::now();
    let blocks = write_strata_blocks(strata_dir, s3_port, &data, cfg).await?;
    println!(
        "strata: {blocks} blocks, {} bytes in {} ({:.1?})",
        dir_bytes(strata_dir),
        if s3_port.is_some() { "S3 (s3s-fs on loopback)" } else { "a local directory" },
        t0.elapsed()
    );

    let om = data_dir.join("data.om");
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&om)?);
        write_openmetrics(&data, &mut w)?;
        w.flush()?;
    }
    drop(data);
    let t0 = Instant::now();
    let out = Command::new("promtool")
        .arg("tsdb")
        .arg("create-blocks-from")
        .arg("openmetrics")
        .arg(&om)
        .arg(tsdb)
        .output()
        .context("running promtool (Debian package `prometheus`)")?;
    ensure!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(&om)?;
    println!("prometheus: blocks of {} bytes ({:.1?})", dir_bytes(tsdb), t0.elapsed());
    Ok(())
}

async fn run(a: &Args) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = DatasetConfig::with_series(a.series, a.hours * 3600 * 1000);
    let data_dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let strata_dir = data_dir.join("strata");
    let tsdb = data_dir.join("prometheus");
    let done = data_dir.join(format!("done-{}-{}-{}", a.series, a.hours, if a.s3 { "s3" } else { "local" }));
    let reuse = done.exists();
    if !reuse {
        for d in [&strata_dir, &tsdb] {
            if d.exists() {
                std::fs::remove_dir_all(d)?;
            }
        }
    }
    std::fs::create_dir_all(&strata_dir)?;
    // With --s3: s3s-fs keeps the bucket under strata_dir.
    let s3 = if a.s3 {
        std::fs::create_dir_all(strata_dir.join(S3_BUCKET))?;
        let port = free_port()?;
        let bin = std::env::var("HOME").map(|h| format!("{h}/.cargo/bin/s3s-fs")).unwrap_or_default();
        let bin = if Path::new(&bin).exists() { bin } else { "s3s-fs".to_owned() };
        let server = Server {
            child: Command::new(bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", S3_KEY])
                .args(["--secret-key", S3_SECRET])
                .arg(&strata_dir)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(tmp.path().join("s3s-fs.log"))?)
                .spawn()
                .context("starting s3s-fs (scripts/install-test-deps.sh installs it)")?,
            name: "s3s-fs",
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            ensure!(Instant::now() < deadline, "s3s-fs did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some((server, port))
    } else {
        None
    };
    let s3_port = s3.as_ref().map(|(_, p)| *p);
    if reuse {
        println!("reusing the data in {}", data_dir.display());
    } else {
        write_data(&cfg, &data_dir, &strata_dir, s3_port, &tsdb).await?;
        std::fs::write(&done, b"")?;
    }
    // Prometheus compacts and writes into its directory: give it a fresh copy.
    let prom_tsdb = tmp.path().join("prometheus-run");
    let out = Command::new("cp").arg("-a").arg(&tsdb).arg(&prom_tsdb).output()?;
    ensure!(out.status.success(), "copying the Prometheus blocks: {}", String::from_utf8_lossy(&out.stderr));

    let config = tmp.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n")?;
    let prom_port = free_port()?;
    let prom = Server {
        child: Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", prom_tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--storage.tsdb.retention.time=100y")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("prometheus.log"))?)
            .spawn()?,
        name: "prometheus",
    };
    let strata_port = free_port()?;
    let strata = Server {
        child: Command::new(std::env::current_exe()?)
            .arg("--serve-strata")
            .arg(&strata_dir)
            .arg(strata_port.to_string())
            .args(s3_port.map(|p| p.to_string()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("strata.log"))?)
            .spawn()?,
        name: "strata",
    };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(600)).build()?;
    wait_ready(&http, "prometheus", prom_port).await?;
    wait_ready(&http, "strata", strata_port).await?;
    let rss_before = (prom.status_kb("VmRSS")?, strata.status_kb("VmRSS")?);

    // Both ends off the sample grid (see the dataset's docs).
    let start = format!("{}.500", cfg.start_ms / 1000 + 600);
    let end = format!("{}.500", (cfg.start_ms + cfg.duration_ms) / 1000);
    println!(
        "\nrange queries over {} h, step {} s, {} repeats (median):",
        (cfg.duration_ms / 3_600_000),
        a.step,
        a.repeats
    );
    println!(
        "{:<95} {:>12} {:>12} {:>8} {:>10} {:>12}",
        "query", "prometheus", "strata", "ratio", "GETs/query", "bytes/query"
    );
    for q in QUERIES {
        let (_, n_prom) = range_query(&http, prom_port, q, &start, &end, &a.step).await?;
        let (_, n_strata) = range_query(&http, strata_port, q, &start, &end, &a.step).await?;
        ensure!(n_prom == n_strata, "{q}: Prometheus returned {n_prom} series, Strata {n_strata}");
        let (mut tp, mut ts) = (Vec::new(), Vec::new());
        let io_before = strata_io(&http, strata_port).await?;
        for _ in 0..a.repeats {
            tp.push(range_query(&http, prom_port, q, &start, &end, &a.step).await?.0);
            ts.push(range_query(&http, strata_port, q, &start, &end, &a.step).await?.0);
        }
        let io_after = strata_io(&http, strata_port).await?;
        let n = a.repeats.max(1) as f64;
        let (gets, bytes) = ((io_after.0 - io_before.0) / n, (io_after.1 - io_before.1) / n);
        let (mp, ms) = (median(tp), median(ts));
        println!(
            "{q:<95} {:>10.1}ms {:>10.1}ms {:>7.2}x {gets:>10.0} {bytes:>12.0}",
            mp.as_secs_f64() * 1e3,
            ms.as_secs_f64() * 1e3,
            ms.as_secs_f64() / mp.as_secs_f64().max(1e-9)
        );
    }
    let peak = (prom.status_kb("VmHWM")?, strata.status_kb("VmHWM")?);
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!("\nmemory (MiB)        {:>12} {:>12} {:>8}", "prometheus", "strata", "ratio");
    println!(
        "RSS before queries  {:>12.0} {:>12.0} {:>7.2}x",
        mb(rss_before.0),
        mb(rss_before.1),
        rss_before.1 as f64 / rss_before.0.max(1) as f64
    );
    println!(
        "peak RSS (VmHWM)    {:>12.0} {:>12.0} {:>7.2}x",
        mb(peak.0),
        mb(peak.1),
        peak.1 as f64 / peak.0.max(1) as f64
    );
    Ok(())
}
