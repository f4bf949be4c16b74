//! Helpers for end-to-end tests: free ports, child processes that die with
//! the test, polling with a deadline, and a small Prometheus API client.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err)).spawn().with_context(|| {
                format!("starting {name}: is it installed? (the README's test command installs it)")
            })?;
        Ok(Self { child, name: name.to_owned() })
    }

    /// SIGKILL, no clean shutdown.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Exits with a status still unknown?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `strata` binary built for these tests.
pub fn strata_bin() -> &'static str {
    env!("CARGO_BIN_EXE_strata")
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client for one Prometheus-compatible HTTP API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(port: u16) -> Self {
        Self { base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() }
    }

    pub async fn ready(&self) -> bool {
        matches!(self.http.get(format!("{}/-/ready", self.base)).send().await, Ok(r) if r.status().is_success())
    }

    /// GET with form-encoded parameters; returns status and JSON body.
    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<(u16, Value)> {
        let qs = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let r = self.http.get(format!("{}{path}?{qs}", self.base)).send().await?;
        let status = r.status().as_u16();
        let bytes = r.bytes().await?;
        let body: Value = serde_json::from_slice(bytes.as_ref()).context("response is not JSON")?;
        Ok((status, body))
    }

    /// GET with form-encoded parameters; returns status and the body as sent.
    pub async fn get_text(&self, path: &str, params: &[(&str, &str)]) -> Result<(u16, String)> {
        let qs = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let r = self.http.get(format!("{}{path}?{qs}", self.base)).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }

    /// An instant query's result array (fails on an error response).
    pub async fn query(&self, q: &str) -> Result<Vec<Value>> {
        let (status, body) = self.get("/api/v1/query", &[("query", q)]).await?;
        if status != 200 || body["status"] != "success" {
            bail!("query {q:?} failed: {status} {body}");
        }
        Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The single value of an instant vector query, if exactly one series.
    pub async fn scalar_of(&self, q: &str) -> Option<f64> {
        let r = self.query(q).await.ok()?;
        if r.len() != 1 {
            return None;
        }
        r[0]["value"][1].as_str()?.parse().ok()
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 (one thread, `Connection: close`)
/// answering every GET with what `page` returns for the request path:
/// status, content type and body. Stops when dropped.
pub struct PageServer {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A page handler: request path (with query) → (status, content type, body).
pub type PageFn = dyn Fn(&str) -> (u16, String, String) + Send + Sync;

impl PageServer {
    pub fn start(page: std::sync::Arc<PageFn>) -> Result<Self> {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // Bounded by the stop flag, set on drop.
            while !stop2.load(Ordering::Relaxed) {
                let (stream, _) = match listener.accept() {
                    Ok(s) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(&stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                // Skip the headers (bounded by the read timeout and a line cap).
                for _ in 0..200 {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" || line == "\n" => break,
                        Ok(_) => {}
                    }
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, content_type, body) = page(&path);
                let mut out = &stream;
                let _ = write!(
                    out,
                    "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = out.flush();
            }
        });
        Ok(Self { port, stop, thread: Some(thread) })
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the real Prometheus (Debian's 2.42) on `port` with `config`.
pub fn start_prometheus(config: &Path, data: &Path, port: u16, log: &Path) -> Result<Proc> {
    Proc::spawn(
        "prometheus",
        Command::new("prometheus").args([
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", data.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn",
        ]),
        log,
    )
}

/// Starts `strata standalone` on `port` with `config`.
pub fn start_strata_standalone(config: &Path, data: &Path, port: u16, log: &Path) -> Result<Proc> {
    Proc::spawn(
        "strata",
        Command::new(strata_bin()).args([
            "standalone",
            &format!("--config.file={}", config.display()),
            &format!("--storage.path={}", data.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ]),
        log,
    )
}
