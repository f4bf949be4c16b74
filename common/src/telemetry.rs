//! The metric registry handed to every component, and process metrics.
//!
//! There is no global registry: each process (or each role inside one test
//! process) makes a [`Telemetry`] and passes it to what it builds.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry};

/// A shared metric registry.
#[derive(Clone, Default)]
pub struct Telemetry {
    registry: Arc<Mutex<Registry>>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Telemetry {
    /// A registry holding the process metrics (`process_*`).
    pub fn new() -> Self {
        let t = Self::default();
        t.lock().register_collector(Box::new(ProcessCollector));
        t
    }

    /// A registry with nothing in it, for tests.
    pub fn empty() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A poisoned registry is still a valid registry: keep serving it.
        self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers `metric` under its full name (a `_total` suffix is added to counters).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Registers a collector called on every scrape.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.lock().register_collector(collector);
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.lock()) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// `process_*` metrics read from `/proc/self`, as Prometheus' Go client exports them.
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second for `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(p) = read_process_stats() else { return Ok(()) };
        let gauge = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64| -> Result<(), fmt::Error> {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
        };
        let c = ConstCounter::new(p.cpu_seconds);
        c.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            c.metric_type(),
        )?)?;
        gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size in bytes", p.rss_bytes)?;
        gauge(&mut encoder, "process_virtual_memory_bytes", "Virtual memory size in bytes", p.vsize_bytes)?;
        gauge(&mut encoder, "process_open_fds", "Number of open file descriptors", p.open_fds)?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            p.start_time_seconds,
        )?;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct ProcessStats {
    cpu_seconds: f64,
    rss_bytes: f64,
    vsize_bytes: f64,
    open_fds: f64,
    start_time_seconds: f64,
}

fn read_process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is f[N - 3].
    let num = |n: usize| f.get(n - 3).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |v| v * 1024.0)
    };
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or(0.0);
    let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    Some(ProcessStats {
        cpu_seconds: (num(14) + num(15)) / TICKS_PER_SECOND,
        rss_bytes: kb("VmRSS:"),
        vsize_bytes: kb("VmSize:"),
        open_fds: open_fds as f64,
        start_time_seconds: boot_time + num(22) / TICKS_PER_SECOND,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_exported() {
        let text = Telemetry::new().encode();
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .expect("rss line");
        assert!(rss > 1_000_000.0, "rss {rss}");
    }
}
