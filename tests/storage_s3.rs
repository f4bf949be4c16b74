//! End to end: `strata standalone` with its blocks in a real S3-compatible
//! server (`s3s-fs` on loopback).
//!
//! - blocks flushed to the bucket are read back after a restart;
//! - the S3 server stopped under steady ingest: flushes fail and are retried
//!   with backoff, `/-/ready` answers 503 meanwhile, and once the server is
//!   back every acknowledged sample is stored exactly once.

mod common;
mod storage_common;

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{Api, Proc, eventually, free_port, strata_bin};
use storage_common::{S3Server, Writer, metric_value, past_t0, ready_status};

fn start_strata(dir: &std::path::Path, s3: &S3Server, port: u16, log: &str) -> Result<Proc> {
    // No scrape jobs: only the test's remote writes (self-scraped samples at
    // the current time would make the head cut the test's older ranges early).
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "scrape_configs: []\n")?;
    let mut cmd = Command::new(strata_bin());
    cmd.args([
        "standalone".to_owned(),
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--storage.tsdb.min-block-duration=2s".to_owned(),
        "--storage.tsdb.max-block-duration=2s".to_owned(),
        "--storage.flush-interval=200ms".to_owned(),
    ]);
    cmd.args(s3.flags("tenants"));
    Proc::spawn("strata", &mut cmd, &dir.join(log))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_go_to_s3_and_read_back_after_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s3 = S3Server::start(dir.path()).await?;
    let port = free_port();
    let api = Api::new(port);
    let mut strata = start_strata(dir.path(), &s3, port, "strata-1.log")?;
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;

    // 20 s of data at 100 ms for 20 series: several 2 s blocks.
    let mut w = Writer::new("s3_test", 20, past_t0(), 100);
    for _ in 0..200 {
        ensure!(w.send_next(port).await, "batch {} not acknowledged", w.next - 1);
    }
    // The head keeps 1.5 block ranges (3 s) of the 20 s: 7 or more 2 s blocks
    // get flushed; wait for 7 (14 s), however slow the machine.
    eventually("blocks in the bucket", Duration::from_secs(60), || async {
        (s3.block_metas().len() >= 7).then_some(())
    })
    .await?;
    ensure!(!dir.path().join("data/blocks").exists(), "blocks went to the local directory");
    w.verify(&api).await?;

    strata.kill();
    // The ingest log is gone with the data directory: what comes back is in S3 only.
    std::fs::remove_dir_all(dir.path().join("data"))?;
    let _strata = start_strata(dir.path(), &s3, port, "strata-2.log")?;
    eventually("strata ready after restart", Duration::from_secs(30), || async { api.ready().await.then_some(()) })
        .await?;
    // Everything in flushed blocks is back; the head's unflushed tail went with the log.
    let flushed = s3.block_metas().len();
    ensure!(flushed >= 7, "blocks: {flushed}");
    let counts =
        storage_common::per_series(&api, "count_over_time(s3_test[1h])", (w.last_ts() + 1000) as f64 / 1e3).await?;
    ensure!(counts.len() == 20, "series after restart: {counts:?}");
    // Blocks are cut at 2 s boundaries and the head keeps 1.5 ranges: at least 14 s of 20 are in S3.
    ensure!(counts.values().all(|&c| (140.0..=200.0).contains(&c)), "samples per series from S3: {counts:?}");
    // The query's GETs and bytes are counted.
    let gets = metric_value(&api, "strata_query_object_store_get_requests_total").await.unwrap_or(0.0);
    let bytes = metric_value(&api, "strata_query_object_store_get_bytes_total").await.unwrap_or(0.0);
    ensure!(gets >= 1.0 && bytes > 0.0, "per-query object store reads counted: {gets} GETs, {bytes} bytes");
    let before = gets;
    storage_common::per_series(&api, "count_over_time(s3_test[1s])", (w.last_ts() + 1000) as f64 / 1e3).await?;
    let after = metric_value(&api, "strata_query_object_store_get_requests_total").await.unwrap_or(0.0);
    ensure!(after == before, "a query over the head only makes no GET: {before} -> {after}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_during_flushes_loses_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s3 = S3Server::start(dir.path()).await?;
    let port = free_port();
    let api = Api::new(port);
    let mut strata = start_strata(dir.path(), &s3, port, "strata-1.log")?;
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;

    let mut w = Writer::new("outage_test", 10, past_t0(), 100);
    for _ in 0..60 {
        ensure!(w.send_next(port).await, "batch not acknowledged");
    }
    eventually("first blocks in the bucket", Duration::from_secs(30), || async {
        (!s3.block_metas().is_empty()).then_some(())
    })
    .await?;

    // The server goes away under steady ingest: writes are still acknowledged
    // (the ingest log is local), flushes fail.
    s3.stop();
    let blocks_before = s3.block_metas().len();
    for _ in 0..100 {
        ensure!(w.send_next(port).await, "batch {} not acknowledged during the outage", w.next - 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = eventually("/-/ready reports the outage", Duration::from_secs(60), || async {
        ready_status(&api).await.filter(|&s| s == 503)
    })
    .await?;
    ensure!(status == 503);
    let failures = metric_value(&api, "strata_block_upload_failures_total").await.unwrap_or(0.0);
    ensure!(failures >= 1.0, "upload failures counted: {failures}");
    let body = api.http.get(format!("{}/-/ready", api.base)).send().await?.text().await?;
    ensure!(body.contains("block uploads"), "/-/ready names the condition: {body:?}");
    // More writes while it retries.
    for _ in 0..40 {
        ensure!(w.send_next(port).await, "batch {} not acknowledged during the outage", w.next - 1);
    }
    // Queries over data still in the head keep working.
    ensure!(api.query("count(outage_test)").await.is_ok(), "query during the outage");

    s3.restart().await?;
    eventually("ready again once uploads succeed", Duration::from_secs(60), || async {
        api.ready().await.then_some(())
    })
    .await?;
    ensure!(s3.block_metas().len() > blocks_before, "blocks written after the outage");
    ensure!(strata.running(), "strata exited");
    w.verify(&api).await?;

    // And after a restart, from the ingest log and the bucket.
    strata.kill();
    let _strata = start_strata(dir.path(), &s3, port, "strata-2.log")?;
    eventually("strata ready after restart", Duration::from_secs(30), || async { api.ready().await.then_some(()) })
        .await?;
    w.verify(&api).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_cli_writes_blocks_into_s3() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s3 = S3Server::start(dir.path()).await?;
    // Two series, 10 samples each, 15 min apart (2 h 15 min: two or three 2 h blocks).
    let mut om = String::from("# TYPE imported gauge\n");
    for i in 0..10 {
        let t = 1_700_000_000 + i * 900;
        om.push_str(&format!("imported{{series=\"a\"}} {i} {t}\nimported{{series=\"b\"}} {} {t}\n", i * 2));
    }
    om.push_str("# EOF\n");
    let file = dir.path().join("in.om");
    std::fs::write(&file, om)?;
    let out = Command::new(strata_bin())
        .arg("import")
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .args(s3.flags("tenants"))
        .arg(&file)
        .output()?;
    ensure!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    ensure!(!s3.block_metas().is_empty(), "no block in the bucket");
    ensure!(!dir.path().join("data/blocks").exists(), "blocks went to the local directory");

    let port = free_port();
    let api = Api::new(port);
    let _strata = start_strata(dir.path(), &s3, port, "strata.log")?;
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    let end = (1_700_000_000 + 9 * 900) as f64;
    let counts = storage_common::per_series(&api, "count_over_time(imported[3h])", end).await?;
    let sums = storage_common::per_series(&api, "sum_over_time(imported[3h])", end).await?;
    ensure!(counts.get("a") == Some(&10.0) && counts.get("b") == Some(&10.0), "counts {counts:?}");
    ensure!(sums.get("a") == Some(&45.0) && sums.get("b") == Some(&90.0), "sums {sums:?}");
    Ok(())
}
