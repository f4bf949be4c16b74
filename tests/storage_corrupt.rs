//! End to end: corrupt and truncated block files. A query touching the
//! affected block answers Prometheus' error JSON (`internal`, HTTP 500)
//! naming the block and its time range; queries over other ranges keep
//! working, the failure is counted, and the process stays up and ready.

mod common;
mod storage_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{Api, Proc, eventually, free_port, strata_bin};
use storage_common::{Writer, metric_value, past_t0, per_series, walk};

fn start_strata(dir: &Path, port: u16, log: &str) -> Result<Proc> {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "scrape_configs: []\n")?;
    Proc::spawn(
        "strata",
        Command::new(strata_bin()).args([
            "standalone".to_owned(),
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--storage.tsdb.min-block-duration=2s".to_owned(),
            "--storage.tsdb.max-block-duration=2s".to_owned(),
            "--storage.flush-interval=200ms".to_owned(),
        ]),
        &dir.join(log),
    )
}

struct Block {
    dir: PathBuf,
    ulid: String,
    max_time: i64,
}

fn blocks(data: &Path) -> Result<Vec<Block>> {
    let mut out = Vec::new();
    for meta in walk(&data.join("blocks")).into_iter().filter(|p| p.ends_with("meta.json")) {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta)?)?;
        out.push(Block {
            dir: meta.parent().context("block dir")?.to_owned(),
            ulid: v["ulid"].as_str().context("ulid")?.to_owned(),
            max_time: v["max_time"].as_i64().context("max_time")?,
        });
    }
    out.sort_by_key(|b| b.max_time);
    Ok(out)
}

/// `count_over_time` over the last second of `block`: touches that block only.
async fn query_block(api: &Api, block: &Block) -> Result<(u16, serde_json::Value)> {
    api.get(
        "/api/v1/query",
        &[("query", "count_over_time(corrupt_test[1s])"), ("time", &format!("{}", block.max_time as f64 / 1e3))],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blocks_fail_their_range_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let api = Api::new(port);
    let data = dir.path().join("data");
    let mut strata = start_strata(dir.path(), port, "strata-1.log")?;
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    let mut w = Writer::new("corrupt_test", 5, past_t0(), 50);
    for _ in 0..400 {
        ensure!(w.send_next(port).await, "batch not acknowledged");
    }
    eventually("blocks flushed", Duration::from_secs(30), || async { (blocks(&data).ok()?.len() >= 8).then_some(()) })
        .await?;
    strata.kill();

    let all = blocks(&data)?;
    let (truncated, garbled, good) = (&all[1], &all[3], &all[5]);
    // samples.parquet cut in half (opens fine, fails when read).
    let samples = truncated.dir.join("samples.parquet");
    let bytes = std::fs::read(&samples)?;
    std::fs::write(&samples, &bytes[..bytes.len() / 2])?;
    // series.parquet overwritten (fails when the block is opened).
    std::fs::write(garbled.dir.join("series.parquet"), b"PAR1 this is not a parquet file PAR1")?;

    let mut strata = start_strata(dir.path(), port, "strata-2.log")?;
    eventually("strata ready with corrupt blocks", Duration::from_secs(30), || async {
        api.ready().await.then_some(())
    })
    .await?;

    for bad in [truncated, garbled] {
        let (status, body) = query_block(&api, bad).await?;
        ensure!(status == 500, "query over a corrupt block: {status} {body}");
        ensure!(body["status"] == "error" && body["errorType"] == "internal", "{body}");
        let msg = body["error"].as_str().unwrap_or_default();
        ensure!(msg.contains(&bad.ulid) && msg.contains("unreadable"), "error names the block: {msg}");
    }
    let (status, body) = query_block(&api, good).await?;
    ensure!(status == 200, "query over a good block: {status} {body}");
    let counts = per_series(&api, "count_over_time(corrupt_test[1s])", good.max_time as f64 / 1e3).await?;
    ensure!(counts.len() == 5 && counts.values().all(|&c| c == 20.0), "20 samples a second per series: {counts:?}");
    // The newest data (head and later blocks) is intact.
    let last = per_series(&api, "count_over_time(corrupt_test[2s])", w.last_ts() as f64 / 1e3).await?;
    ensure!(last.values().all(|&c| c == 40.0), "last 2 s: {last:?}");

    ensure!(metric_value(&api, "strata_block_read_failures_total").await.unwrap_or(0.0) >= 1.0, "failures counted");
    ensure!(strata.running() && api.ready().await, "the process stays up and ready");
    Ok(())
}
