//! Crash safety end to end: `strata standalone` killed with SIGKILL while
//! remote writes stream in, while the head is flushed into blocks, and
//! while blocks are compacted; after each restart every acknowledged sample
//! is present exactly once (per-series `count_over_time` and `sum_over_time`
//! over the whole range against what was acknowledged).
//!
//! Flushes and compactions are made frequent with the hidden flags (1 s
//! blocks, 100 ms flush interval, data written faster than real time), and
//! each test kills the process several times at varying moments.

mod common;
mod storage_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{Api, Proc, eventually, free_port, strata_bin};
use storage_common::{Writer, metric_value, past_t0, walk};

fn start_strata(dir: &Path, port: u16, flags: &[&str], log: &str) -> Result<Proc> {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "scrape_configs: []\n")?;
    let mut cmd = Command::new(strata_bin());
    cmd.args([
        "standalone".to_owned(),
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ]);
    cmd.args(flags);
    Proc::spawn("strata", &mut cmd, &dir.join(log))
}

/// A varying delay (no RNG dependency: the clock's nanoseconds).
fn jitter(max_ms: u64) -> Duration {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    Duration::from_millis(u64::from(n) % max_ms.max(1))
}

/// Block directories without `meta.json`: a flush or compaction the kill interrupted.
fn unfinished_blocks(data: &Path) -> usize {
    let files = walk(&data.join("blocks"));
    let dirs: std::collections::BTreeSet<_> = files.iter().filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
    dirs.iter().filter(|d| !d.join("meta.json").exists()).count()
}

/// Waits (at most `max`) until a block is being written (its directory has
/// files but no `meta.json` yet); true if one was seen.
async fn wait_for_block_write(data: &Path, max: Duration) -> bool {
    let deadline = std::time::Instant::now() + max;
    while std::time::Instant::now() < deadline {
        if unfinished_blocks(data) > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// Runs `cycles` rounds of: steady remote writes, SIGKILL after a varying
/// time (with `mid_write`, at a moment a block is being written, if one is
/// seen in time), restart, check every acknowledged sample. Returns the
/// writer and the number of blocks at the end.
async fn kill_cycles(
    flags: &[&str],
    series: usize,
    cycles: usize,
    min_run_ms: u64,
    mid_write: bool,
) -> Result<(Writer, usize)> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let api = Api::new(port);
    let mut w = Writer::new("crash_test", series, past_t0(), 50);
    let mut interrupted = 0;
    for cycle in 0..cycles {
        let mut strata = start_strata(dir.path(), port, flags, &format!("strata-{cycle}.log"))?;
        eventually("strata ready", Duration::from_secs(60), || async { api.ready().await.then_some(()) }).await?;
        if cycle > 0 {
            w.verify(&api).await.map_err(|e| e.context(format!("after restart {cycle}")))?;
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(async move {
            w.run(port, &stop_rx).await;
            w
        });
        tokio::time::sleep(Duration::from_millis(min_run_ms) + jitter(min_run_ms)).await;
        let caught = mid_write && wait_for_block_write(&dir.path().join("data"), Duration::from_secs(5)).await;
        strata.kill();
        if caught {
            eprintln!("cycle {cycle}: killed while a block was being written");
        }
        let _ = stop_tx.send(true);
        w = writer.await?;
        interrupted += unfinished_blocks(&dir.path().join("data"));
    }
    let strata = start_strata(dir.path(), port, flags, "strata-last.log")?;
    eventually("strata ready", Duration::from_secs(60), || async { api.ready().await.then_some(()) }).await?;
    w.verify(&api).await.map_err(|e| e.context("after the last restart"))?;
    // Blocks were written (the flush path really ran) unless the test is about ingest only.
    let blocks = walk(&dir.path().join("data/blocks")).iter().filter(|p| p.ends_with("meta.json")).count();
    eprintln!(
        "{} batches acknowledged, {} unacknowledged, {blocks} blocks, {interrupted} unfinished block directories seen after kills",
        w.acked.len(),
        w.unknown.len()
    );
    ensure!(w.acked.len() > cycles * 10, "too few batches acknowledged: {}", w.acked.len());
    drop(strata);
    Ok((w, blocks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_loses_no_acknowledged_sample() -> Result<()> {
    // Default 2 h blocks: everything stays in the head and the ingest log.
    let (_, blocks) = kill_cycles(&["--storage.flush-interval=100ms"], 50, 4, 500, false).await?;
    ensure!(blocks == 0, "no block expected with 2 h blocks, found {blocks}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_flushes_loses_no_acknowledged_sample() -> Result<()> {
    // 1 s blocks at 50 ms per batch: a flush every 20 batches; no compaction.
    let flags = [
        "--storage.tsdb.min-block-duration=1s",
        "--storage.tsdb.max-block-duration=1s",
        "--storage.flush-interval=100ms",
    ];
    let (_, blocks) = kill_cycles(&flags, 100, 5, 700, true).await?;
    ensure!(blocks > 0, "no block was flushed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_compactions_loses_no_acknowledged_sample() -> Result<()> {
    // 1 s blocks compacted into 3 s ranges as soon as a range is complete.
    let flags = [
        "--storage.tsdb.min-block-duration=1s",
        "--storage.tsdb.max-block-duration=3s",
        "--storage.flush-interval=100ms",
    ];
    let (_, blocks) = kill_cycles(&flags, 100, 5, 700, true).await?;
    ensure!(blocks > 0, "no block was written");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactions_happen_under_these_flags() -> Result<()> {
    // Guards the test above: with these flags compaction does run.
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let api = Api::new(port);
    let flags = [
        "--storage.tsdb.min-block-duration=1s",
        "--storage.tsdb.max-block-duration=3s",
        "--storage.flush-interval=100ms",
    ];
    let _strata = start_strata(dir.path(), port, &flags, "strata.log")?;
    eventually("strata ready", Duration::from_secs(60), || async { api.ready().await.then_some(()) }).await?;
    let mut w = Writer::new("compaction_test", 10, past_t0(), 50);
    for _ in 0..300 {
        ensure!(w.send_next(port).await, "batch not acknowledged");
    }
    eventually("blocks compacted", Duration::from_secs(30), || async {
        metric_value(&api, "strata_blocks_compacted_total").await.filter(|&v| v >= 2.0)
    })
    .await?;
    w.verify(&api).await
}
