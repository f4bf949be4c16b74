//! Helpers for the storage end-to-end tests: a real S3-compatible server
//! (`s3s-fs`) on loopback, a remote-write client that records exactly which
//! samples were acknowledged, and per-series counts read back with PromQL.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use prost::Message;
use strata_proto::remote_write::v1;

use crate::common::{Api, Proc, eventually, free_port};

pub const ACCESS_KEY: &str = "strata-test";
pub const SECRET_KEY: &str = "strata-test-secret";
pub const BUCKET: &str = "strata-blocks";

/// `s3s-fs`, an S3-compatible server keeping objects in a directory, so a
/// stopped server restarted on the same directory has everything it had.
pub struct S3Server {
    pub port: u16,
    pub root: PathBuf,
    proc: Option<Proc>,
    log_dir: PathBuf,
    starts: usize,
}

/// Where `cargo install` puts `s3s-fs` (the install script runs it), or `PATH`.
fn s3s_bin() -> String {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    let installed = home.join("bin").join("s3s-fs");
    if installed.exists() { installed.display().to_string() } else { "s3s-fs".to_owned() }
}

impl S3Server {
    /// Starts the server on a free port with one empty bucket, [`BUCKET`].
    pub async fn start(dir: &Path) -> Result<Self> {
        let root = dir.join("s3");
        std::fs::create_dir_all(root.join(BUCKET))?;
        let mut s = Self { port: free_port(), root, proc: None, log_dir: dir.to_owned(), starts: 0 };
        s.restart().await?;
        Ok(s)
    }

    /// Stops the server (SIGKILL): every request fails until [`S3Server::restart`].
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts the server again on the same port and directory; waits until it answers.
    pub async fn restart(&mut self) -> Result<()> {
        self.starts += 1;
        let log = self.log_dir.join(format!("s3s-fs-{}.log", self.starts));
        let proc = Proc::spawn(
            "s3s-fs",
            Command::new(s3s_bin()).args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
                &self.root.display().to_string(),
            ]),
            &log,
        )?;
        self.proc = Some(proc);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually("s3s-fs listening", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await
        .with_context(|| format!("s3s-fs did not start; see {}", log.display()))
    }

    /// The `strata` flags that put blocks in this server's bucket under `prefix`.
    pub fn flags(&self, prefix: &str) -> Vec<String> {
        vec![
            format!("--storage.object-store.url=s3://{BUCKET}/{prefix}"),
            format!("--storage.object-store.endpoint=http://127.0.0.1:{}", self.port),
            "--storage.object-store.allow-http".to_owned(),
            "--storage.object-store.region=us-east-1".to_owned(),
            format!("--storage.object-store.access-key-id={ACCESS_KEY}"),
            format!("--storage.object-store.secret-access-key={SECRET_KEY}"),
        ]
    }

    /// Paths of the `meta.json` files (committed blocks) in the bucket.
    pub fn block_metas(&self) -> Vec<PathBuf> {
        walk(&self.root.join(BUCKET)).into_iter().filter(|p| p.file_name().is_some_and(|n| n == "meta.json")).collect()
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
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

/// Sends batches of `series` series named `metric`: batch `k` holds one
/// sample per series at `t0 + k * step_ms` with value `k`, and records which
/// batches were acknowledged (HTTP 204).
pub struct Writer {
    pub metric: String,
    pub series: usize,
    pub t0: i64,
    pub step_ms: i64,
    http: reqwest::Client,
    /// Acknowledged batch numbers.
    pub acked: Vec<i64>,
    /// Batches sent without an answer (the server died or refused): they may
    /// or may not be stored.
    pub unknown: Vec<i64>,
    /// The next batch number to send.
    pub next: i64,
}

impl Writer {
    pub fn new(metric: &str, series: usize, t0: i64, step_ms: i64) -> Self {
        Self {
            metric: metric.to_owned(),
            series,
            t0,
            step_ms,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
            acked: Vec::new(),
            unknown: Vec::new(),
            next: 0,
        }
    }

    fn body(&self, k: i64) -> Vec<u8> {
        let ts = self.t0 + k * self.step_ms;
        let req = v1::WriteRequest {
            timeseries: (0..self.series)
                .map(|i| v1::TimeSeries {
                    labels: vec![
                        v1::Label { name: "__name__".into(), value: self.metric.clone() },
                        v1::Label { name: "series".into(), value: i.to_string() },
                    ],
                    samples: vec![v1::Sample { value: k as f64, timestamp: ts }],
                    exemplars: vec![],
                    histograms: vec![],
                })
                .collect(),
            metadata: vec![],
        };
        snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap()
    }

    /// Sends the next batch; true if acknowledged.
    pub async fn send_next(&mut self, port: u16) -> bool {
        let k = self.next;
        self.next += 1;
        let r = self
            .http
            .post(format!("http://127.0.0.1:{port}/api/v1/write"))
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(self.body(k))
            .send()
            .await;
        match r {
            Ok(r) if r.status().as_u16() == 204 => {
                self.acked.push(k);
                true
            }
            _ => {
                self.unknown.push(k);
                false
            }
        }
    }

    /// Sends batches until `stop` says so or a batch is not acknowledged.
    pub async fn run(&mut self, port: u16, stop: &tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            if !self.send_next(port).await {
                return;
            }
        }
    }

    /// The newest timestamp sent.
    pub fn last_ts(&self) -> i64 {
        self.t0 + (self.next - 1) * self.step_ms
    }

    /// Checks, per series, that every acknowledged sample is stored exactly
    /// once and nothing else is (other than unacknowledged batches): with
    /// `count_over_time`, `sum_over_time` and `max_over_time` over the whole
    /// range, evaluated with PromQL by the server.
    pub async fn verify(&self, api: &Api) -> Result<()> {
        let end_s = (self.last_ts() + 1000) as f64 / 1000.0;
        let range_s = ((self.last_ts() - self.t0) / 1000 + 10).max(10);
        let counts = per_series(api, &format!("count_over_time({}[{range_s}s])", self.metric), end_s).await?;
        let sums = per_series(api, &format!("sum_over_time({}[{range_s}s])", self.metric), end_s).await?;
        ensure!(counts.len() == self.series, "{} series found, {} written: {counts:?}", counts.len(), self.series);
        let acked = self.acked.len() as f64;
        let acked_sum: f64 = self.acked.iter().map(|&k| k as f64).sum();
        for (labels, &count) in &counts {
            let sum = sums.get(labels).copied().unwrap_or(f64::NAN);
            // Which unacknowledged batches landed is unknown; find a subset
            // that explains count and sum (few unknown batches: brute force).
            let extra = count - acked;
            ensure!(
                extra >= 0.0 && extra <= self.unknown.len() as f64,
                "series {labels}: {count} samples stored, {acked} acknowledged, {} unacknowledged sent",
                self.unknown.len()
            );
            let found = (0u32..(1 << self.unknown.len().min(16))).any(|mask| {
                let chosen: Vec<i64> =
                    self.unknown.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, &k)| k).collect();
                chosen.len() as f64 == extra && acked_sum + chosen.iter().map(|&k| k as f64).sum::<f64>() == sum
            });
            ensure!(
                found,
                "series {labels}: count {count} sum {sum} is not the {acked} acknowledged samples (sum {acked_sum}) \
                 plus some of the unacknowledged {:?}",
                self.unknown
            );
        }
        Ok(())
    }
}

/// Evaluates `q` at `time` (seconds) and returns value by `series` label.
pub async fn per_series(api: &Api, q: &str, time: f64) -> Result<BTreeMap<String, f64>> {
    let (status, body) = api.get("/api/v1/query", &[("query", q), ("time", &time.to_string())]).await?;
    if status != 200 || body["status"] != "success" {
        bail!("query {q} failed: {status} {body}");
    }
    let mut out = BTreeMap::new();
    for r in body["data"]["result"].as_array().cloned().unwrap_or_default() {
        let label = r["metric"]["series"].as_str().unwrap_or_default().to_owned();
        let v: f64 = r["value"][1].as_str().context("value")?.parse()?;
        out.insert(label, v);
    }
    Ok(out)
}

/// A metric's value from the server's `/metrics` (summed over label sets), if present.
pub async fn metric_value(api: &Api, name: &str) -> Option<f64> {
    let text = api.http.get(format!("{}/metrics", api.base)).send().await.ok()?.text().await.ok()?;
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// The `/-/ready` status code.
pub async fn ready_status(api: &Api) -> Option<u16> {
    api.http.get(format!("{}/-/ready", api.base)).send().await.ok().map(|r| r.status().as_u16())
}

/// A Unix-millisecond start an hour back, aligned to a minute, for data
/// written faster than real time.
pub fn past_t0() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    (now as i64 - 3_600_000) / 60_000 * 60_000
}
