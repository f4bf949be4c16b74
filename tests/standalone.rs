//! End to end: `strata standalone` as a real process scraping a real
//! `prometheus-node-exporter`, answering over HTTP, surviving SIGKILL.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use common::{Api, Proc, eventually, free_port, strata_bin};

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn start_strata(config: &std::path::Path, data: &std::path::Path, port: u16, log: &std::path::Path) -> Result<Proc> {
    Proc::spawn(
        "strata",
        Command::new(strata_bin()).args([
            "standalone",
            &format!("--config.file={}", config.display()),
            &format!("--storage.path={}", data.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            // Small blocks, flushed often, so this test reads blocks and the log.
            "--storage.tsdb.min-block-duration=4s",
            "--storage.flush-interval=500ms",
        ]),
        log,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_node_exporter_and_survives_sigkill() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ne_port = free_port();
    let _node_exporter = Proc::spawn(
        "prometheus-node-exporter",
        Command::new("prometheus-node-exporter").arg(format!("--web.listen-address=127.0.0.1:{ne_port}")),
        &dir.path().join("node-exporter.log"),
    )?;
    let http = reqwest::Client::new();
    let ne_url = format!("http://127.0.0.1:{ne_port}/metrics");
    eventually("node exporter", Duration::from_secs(20), || async {
        http.get(&ne_url).send().await.ok().filter(|r| r.status().is_success())
    })
    .await?;

    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{ne_port}']\n"
        ),
    )?;
    let data = dir.path().join("data");
    let port = free_port();
    let log = dir.path().join("strata.log");
    let mut strata = start_strata(&config, &data, port, &log)?;
    let api = Api::new(port);
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;

    // up{job="node"} is 1.
    let up = eventually("up{job=\"node\"} == 1", Duration::from_secs(30), || async {
        api.scalar_of(r#"up{job="node"}"#).await.filter(|v| *v == 1.0)
    })
    .await?;
    assert_eq!(up, 1.0);

    // count(node_cpu_seconds_total) equals the exporter's own sample count.
    let page = http.get(&ne_url).send().await?.text().await?;
    let expected = page.lines().filter(|l| l.starts_with("node_cpu_seconds_total{")).count();
    ensure!(expected > 0, "node exporter exposes no node_cpu_seconds_total");
    let count = api.scalar_of("count(node_cpu_seconds_total)").await.context("count query")?;
    assert_eq!(count, expected as f64, "count(node_cpu_seconds_total)");

    // Let data accumulate until at least one block is flushed, then pick a
    // window safely in the past.
    let blocks_dir = data.join("blocks");
    eventually("two blocks on disk", Duration::from_secs(60), || async {
        (block_count(&blocks_dir) >= 2).then_some(())
    })
    .await?;
    let end = (now_secs() - 3.0).floor();
    let start = end - 8.0;
    let queries = ["up", "node_cpu_seconds_total", "sum by (mode) (rate(node_cpu_seconds_total[3s]))"];
    let mut before = Vec::new();
    for q in queries {
        let (status, body) = api
            .get(
                "/api/v1/query_range",
                &[("query", q), ("start", &start.to_string()), ("end", &end.to_string()), ("step", "1")],
            )
            .await?;
        ensure!(status == 200, "range query {q} failed: {body}");
        let series = body["data"]["result"].as_array().map_or(0, Vec::len);
        ensure!(series > 0, "range query {q} returned nothing: {body}");
        before.push(body["data"].clone());
    }

    // SIGKILL: no clean shutdown, then restart on the same storage path.
    strata.kill();
    let mut strata = start_strata(&config, &data, port, &dir.path().join("strata-2.log"))?;
    eventually("strata ready after restart", Duration::from_secs(30), || async { api.ready().await.then_some(()) })
        .await?;
    for (q, expected) in queries.iter().zip(&before) {
        let (status, body) = api
            .get(
                "/api/v1/query_range",
                &[("query", q), ("start", &start.to_string()), ("end", &end.to_string()), ("step", "1")],
            )
            .await?;
        ensure!(status == 200, "range query {q} after restart failed: {body}");
        assert_eq!(&body["data"], expected, "range query {q} changed across SIGKILL + restart");
    }
    ensure!(strata.running(), "strata exited");
    Ok(())
}

fn block_count(dir: &std::path::Path) -> usize {
    walk(dir).iter().filter(|p| p.file_name().is_some_and(|n| n == "meta.json")).count()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Runs `strata standalone` with `config`; (exited successfully or kept
/// running for 20 s, stderr). A config it accepts would keep it running.
fn run_with_config(config: &std::path::Path, dir: &std::path::Path) -> Result<(bool, String)> {
    let mut child = Command::new(strata_bin())
        .args(["standalone", &format!("--config.file={}", config.display())])
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let accepted = loop {
        if let Some(status) = child.try_wait()? {
            break status.success();
        }
        if std::time::Instant::now() > deadline {
            child.kill()?;
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output()?;
    Ok((accepted, String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[tokio::test]
async fn malformed_config_fails_naming_the_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bad.yml");
    std::fs::write(
        &config,
        "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: x\n    scrape_intervall: 5s\n",
    )?;
    let (ok, stderr) = run_with_config(&config, dir.path())?;
    assert!(!ok, "strata accepted a malformed config");
    assert!(stderr.contains("bad.yml:5:"), "error does not name line 5: {stderr}");
    assert!(stderr.contains("scrape_intervall"), "error does not name the field: {stderr}");

    // Several problems are reported at once. (A target needs no port, as in
    // Prometheus 3; a URL is not a target.)
    std::fs::write(
        &config,
        "scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n  - job_name: a\n    static_configs:\n      - targets: ['http://no-port/']\n",
    )?;
    let (ok, stderr) = run_with_config(&config, dir.path())?;
    assert!(!ok, "strata accepted a malformed config");
    for line in ["bad.yml:4:", "bad.yml:5:", "bad.yml:7:"] {
        assert!(stderr.contains(line), "missing {line}: {stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn default_mode_scrapes_itself_and_refuses_bad_queries() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let _strata = Proc::spawn(
        "strata",
        Command::new(strata_bin()).args([
            "standalone",
            &format!("--storage.path={}", dir.path().join("data").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ]),
        &dir.path().join("strata.log"),
    )?;
    let api = Api::new(port);
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    for q in ["sum(up", "up{job=~\"(\"}", "rate(up)", ""] {
        let (status, body) = api.get("/api/v1/query", &[("query", q)]).await?;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["status"], "error", "{q}: {body}");
        assert_eq!(body["errorType"], "bad_data", "{q}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{q}: {body}");
    }
    let (status, body) =
        api.get("/api/v1/query_range", &[("query", "up"), ("start", "x"), ("end", "1"), ("step", "1")]).await?;
    assert_eq!((status, body["errorType"].as_str()), (400, Some("bad_data")), "{body}");
    let (status, body) =
        api.get("/api/v1/query_range", &[("query", "up"), ("start", "0"), ("end", "100000"), ("step", "1")]).await?;
    assert_eq!((status, body["errorType"].as_str()), (400, Some("bad_data")), "{body}");
    // Still serving after bad input.
    assert!(api.ready().await);

    // With no config file, Strata scrapes its own /metrics as job="strata".
    let instance = format!("127.0.0.1:{port}");
    let up = eventually("self-scrape up == 1", Duration::from_secs(40), || async {
        api.scalar_of(&format!(r#"up{{job="strata",instance="{instance}"}}"#)).await
    })
    .await?;
    assert_eq!(up, 1.0);
    let own = api.query(r#"strata_head_samples_appended_total{job="strata"}"#).await?;
    assert_eq!(own.len(), 1, "own metrics are scraped: {own:?}");
    Ok(())
}
