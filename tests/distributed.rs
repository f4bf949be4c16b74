//! End to end, distributed: a real `nats-server` with JetStream, a collector
//! scraping a real node exporter into the ingest log, two aggregators
//! (replication factor 2) consuming it and a querier fanning out to both.
//! Both replicas build the same head; one is SIGKILLed and restarted and
//! catches up from its durable consumers; the querier answers throughout,
//! each sample once.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use common::{Api, Proc, eventually, free_port, strata_bin};

fn nats_binary() -> &'static str {
    if Path::new("/usr/sbin/nats-server").exists() { "/usr/sbin/nats-server" } else { "nats-server" }
}

fn start_aggregator(dir: &Path, ordinal: u32, port: u16, nats: &str, log: &str) -> Result<Proc> {
    Proc::spawn(
        "strata aggregator",
        Command::new(strata_bin()).args([
            "aggregator",
            &format!("--storage.path={}", dir.join(format!("agg-{ordinal}")).display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            &format!("--nats.url={nats}"),
            "--nats.shards=8",
            &format!("--aggregator.ordinal={ordinal}"),
            "--aggregator.count=2",
            "--aggregator.replication-factor=2",
            // Head gauges are refreshed at every flush check.
            "--storage.flush-interval=500ms",
        ]),
        &dir.join(log),
    )
}

/// Starts `strata querier` over `aggregators` (ports); returns it and its API.
fn start_querier(dir: &Path, aggregators: &[u16]) -> Result<(Proc, Api)> {
    let port = free_port();
    let stores: Vec<String> = aggregators.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let proc = Proc::spawn(
        "strata querier",
        Command::new(strata_bin()).args([
            "querier",
            &format!("--web.listen-address=127.0.0.1:{port}"),
            &format!("--querier.aggregator={}", stores.join(",")),
        ]),
        &dir.join("querier.log"),
    )?;
    Ok((proc, Api::new(port)))
}

/// Starts `strata collector` scraping `target` every second as `job` into
/// the ingest log at `nats` with `shards` shards; returns it and its port.
fn start_collector(dir: &Path, job: &str, target: &str, nats: &str, shards: u32) -> Result<(Proc, u16)> {
    let config = dir.join("collector.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )?;
    let port = free_port();
    let proc = Proc::spawn(
        "strata collector",
        Command::new(strata_bin()).args([
            "collector",
            &format!("--config.file={}", config.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            &format!("--nats.url={nats}"),
            &format!("--nats.shards={shards}"),
            &format!("--buffer.path={}", dir.join("collector-buffer").display()),
        ]),
        &dir.join("collector.log"),
    )?;
    Ok((proc, port))
}

/// A metric's value from a process' own `/metrics`.
async fn own_metric(http: &reqwest::Client, port: u16, name: &str) -> Option<f64> {
    let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_to_jetstream_to_replicated_aggregators() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let nats_port = free_port();
    let _nats = Proc::spawn(
        "nats-server",
        Command::new(nats_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &nats_port.to_string(), "-sd"])
            .arg(dir.path().join("nats")),
        &dir.path().join("nats.log"),
    )?;
    eventually("nats-server", Duration::from_secs(20), || async {
        std::net::TcpStream::connect(("127.0.0.1", nats_port)).ok()
    })
    .await?;
    let nats = format!("nats://127.0.0.1:{nats_port}");

    let ne_port = free_port();
    let _ne = Proc::spawn(
        "prometheus-node-exporter",
        Command::new("prometheus-node-exporter").arg(format!("--web.listen-address=127.0.0.1:{ne_port}")),
        &dir.path().join("node-exporter.log"),
    )?;

    let (p0, p1) = (free_port(), free_port());
    let _agg0 = start_aggregator(dir.path(), 0, p0, &nats, "agg-0.log")?;
    let mut agg1 = start_aggregator(dir.path(), 1, p1, &nats, "agg-1.log")?;

    let (_querier, querier) = start_querier(dir.path(), &[p0, p1])?;
    let (mut collector, cport) = start_collector(dir.path(), "node", &format!("127.0.0.1:{ne_port}"), &nats, 8)?;

    // Both replicas hold every series (2 aggregators, R = 2), the same set.
    let started = std::time::Instant::now();
    let http = reqwest::Client::new();
    let series = eventually("both replicas hold the scraped series", Duration::from_secs(60), || async {
        let a = own_metric(&http, p0, "strata_head_series").await?;
        let b = own_metric(&http, p1, "strata_head_series").await?;
        (a > 100.0 && a == b).then_some(a)
    })
    .await?;
    eprintln!("replicas agree on {series} series after {:?}", started.elapsed());
    // The querier sees each series once, though two replicas hold it.
    eventually("the querier counts each series once", Duration::from_secs(30), || async {
        let n = querier.scalar_of("count({job=\"node\"})").await?;
        (n == series).then_some(())
    })
    .await?;
    let published = own_metric(&http, cport, "strata_ingest_published_messages_total").await.unwrap_or(0.0);
    assert!(published > 0.0, "the collector published to JetStream");

    // SIGKILL one replica while ingest goes on; after a restart it replays
    // its log, resumes its durable consumers and catches up.
    agg1.kill();
    // Queries keep working on the surviving replica, with no partial-data
    // warning: it holds every shard.
    let (status, body) = querier.get("/api/v1/query", &[("query", "count({job=\"node\"})")]).await?;
    assert_eq!(status, 200, "{body}");
    let n: f64 = body["data"]["result"][0]["value"][1].as_str().unwrap_or_default().parse()?;
    assert_eq!(n, series, "{body}");
    assert!(body.get("warnings").is_none(), "no warning while every shard has a replica: {body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut agg1 = start_aggregator(dir.path(), 1, p1, &nats, "agg-1b.log")?;
    eventually("the restarted replica consumes again", Duration::from_secs(60), || async {
        (own_metric(&http, p1, "strata_head_samples_appended_total").await? > 0.0).then_some(())
    })
    .await?;

    // Stop the collector: once both replicas have drained the log they hold
    // exactly the same samples, nothing lost during the outage.
    collector.kill();
    let samples = eventually("both replicas hold the same samples", Duration::from_secs(60), || async {
        let a = own_metric(&http, p0, "strata_head_samples").await?;
        let b = own_metric(&http, p1, "strata_head_samples").await?;
        (a > 0.0 && a == b).then_some(a)
    })
    .await?;
    // And stay equal: no late duplicate or straggler.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(own_metric(&http, p0, "strata_head_samples").await, Some(samples));
    assert_eq!(own_metric(&http, p1, "strata_head_samples").await, Some(samples));
    eprintln!("replicas agree on {samples} samples after {:?}", started.elapsed());

    // Through the querier every sample counts once: the same total with both
    // replicas as with one, and no more than one replica holds.
    let total = "sum(count_over_time({job=\"node\"}[1h]))";
    let both = querier.scalar_of(total).await.ok_or_else(|| anyhow::anyhow!("no answer for {total}"))?;
    assert!(both <= samples && both > 0.9 * samples, "querier total {both} vs replica samples {samples}");
    agg1.kill();
    let one = eventually("the querier answers from one replica", Duration::from_secs(10), || async {
        querier.scalar_of(total).await
    })
    .await?;
    assert_eq!(both, one, "deduplicated: both replicas give what one gives");
    eprintln!("querier: {both} samples through the fan-out, {one} from one replica");
    Ok(())
}

fn start_nats(dir: &Path, port: u16, log: &str) -> Result<Proc> {
    Proc::spawn(
        "nats-server",
        Command::new(nats_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("nats")),
        &dir.join(log),
    )
}

/// NATS goes away for a while under steady scraping: the collector buffers
/// on disk, then catches up, and the series have no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_leaves_no_gap() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let nats_port = free_port();
    let mut nats_proc = start_nats(dir.path(), nats_port, "nats.log")?;
    eventually("nats-server", Duration::from_secs(20), || async {
        std::net::TcpStream::connect(("127.0.0.1", nats_port)).ok()
    })
    .await?;
    let nats = format!("nats://127.0.0.1:{nats_port}");
    let agg_port = free_port();
    let _agg = Proc::spawn(
        "strata aggregator",
        Command::new(strata_bin()).args([
            "aggregator",
            &format!("--storage.path={}", dir.path().join("agg").display()),
            &format!("--web.listen-address=127.0.0.1:{agg_port}"),
            &format!("--nats.url={nats}"),
            "--nats.shards=4",
            "--aggregator.count=1",
            "--aggregator.replication-factor=1",
        ]),
        &dir.path().join("agg.log"),
    )?;
    let (_querier, querier) = start_querier(dir.path(), &[agg_port])?;
    // The collector scrapes the aggregator every second.
    let (_collector, _) = start_collector(dir.path(), "agg", &format!("127.0.0.1:{agg_port}"), &nats, 4)?;
    eventually("samples flow", Duration::from_secs(60), || async {
        // Enough history that the window checked below starts after the first scrape.
        (querier.scalar_of(r#"count_over_time(up{job="agg"}[1m])"#).await? >= 15.0).then_some(())
    })
    .await?;

    // NATS is down for 8 s.
    nats_proc.kill();
    let down_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let _nats2 = start_nats(dir.path(), nats_port, "nats-2.log")?;
    // Once the backlog is through, 30 s around the outage hold one sample per scrape.
    let at = down_at + 20.0;
    let q = r#"count_over_time(up{job="agg"}[30s])"#;
    let n = eventually("the backlog arrives", Duration::from_secs(90), || async {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
        if now < at + 3.0 {
            return None;
        }
        let (_, body) = querier.get("/api/v1/query", &[("query", q), ("time", &format!("{at:.3}"))]).await.ok()?;
        let n: f64 = body["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
        (n >= 29.0).then_some(n)
    })
    .await;
    let n = match n {
        Ok(n) => n,
        Err(e) => {
            for log in ["collector.log", "agg.log", "nats-2.log"] {
                let text = std::fs::read_to_string(dir.path().join(log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                eprintln!("--- {log}:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
            let (_, body) = querier.get("/api/v1/query", &[("query", "up[2m]")]).await?;
            eprintln!("down at {down_at}: {body}");
            return Err(e);
        }
    };
    eprintln!("{n} samples in the 30 s window around the NATS outage");
    assert!(n <= 31.0, "no duplicates: {n}");
    Ok(())
}
