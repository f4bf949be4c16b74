//! A deterministic metrics dataset for differential tests and benchmarks.
//!
//! [`generate`] returns series shaped like node exporter's and
//! kube-prometheus' (`node_cpu_seconds_total`, memory and filesystem
//! gauges, network counters with resets, `up`, `kube_pod_info`, container
//! CPU, restarts, and classic `http_request_duration_seconds` histograms),
//! sampled every `interval_ms`. The same [`DatasetConfig`] always gives the
//! same series, bit for bit.
//!
//! Sample times are whole seconds and never a multiple of 15 s from
//! `start_ms` (each target scrapes at its own offset of 1 to 14 s), so a
//! query at whole seconds plus a fraction never has a sample exactly on a
//! window's edge: such queries answer the same under Prometheus 2's closed
//! and Prometheus 3's left-open windows.
//!
//! [`write_openmetrics`] writes the series as OpenMetrics text (untyped,
//! series by series, `# EOF` last) for `promtool tsdb create-blocks-from
//! openmetrics`; values are written in Rust's shortest round-trip form, so
//! Prometheus parses back the exact same `f64`s.

use std::io::{self, Write};

use strata_model::{Labels, Sample, Series};

/// How much data to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetConfig {
    /// Time of the first scrape round, ms (a multiple of 15 s keeps the
    /// offsets described in the module docs).
    pub start_ms: i64,
    /// Length of the dataset, ms.
    pub duration_ms: i64,
    /// Scrape interval, ms.
    pub interval_ms: i64,
    /// Node exporter targets.
    pub nodes: usize,
    /// CPUs per node.
    pub cpus: usize,
    /// Pods per kube-prometheus-style application (two applications).
    pub pods: usize,
    /// Seed of the pseudo-random values.
    pub seed: u64,
}

impl Default for DatasetConfig {
    /// Three hours at 15 s of 4 nodes × 4 CPUs and 2 × 3 pods: about 900
    /// series, 650k samples.
    fn default() -> Self {
        Self {
            // 2026-01-01T00:00:00Z
            start_ms: 1_767_225_600_000,
            duration_ms: 3 * 3600 * 1000,
            interval_ms: 15_000,
            nodes: 4,
            cpus: 4,
            pods: 3,
            seed: 42,
        }
    }
}

impl DatasetConfig {
    /// A config with about `series` series over `duration_ms` (for the
    /// benchmark: mostly `node_cpu_seconds_total` and histogram buckets).
    pub fn with_series(series: usize, duration_ms: i64) -> Self {
        // Per node: cpus × 8 modes + 10 others; per pod (2 apps): 3 handlers ×
        // 3 codes × (1 counter + 14 histogram series) + 4 others.
        let per_node = 8 * 8 + 10;
        let nodes = (series / 2 / per_node).max(1);
        let per_pod = 3 * 3 * 15 + 4;
        let pods = (series / 2 / (2 * per_pod)).max(1);
        Self { duration_ms, nodes, cpus: 8, pods, ..Self::default() }
    }
}

/// A small, fast, deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        let mut r = Self(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Rounds to `decimals` decimal places (metric values are mostly decimals).
fn round_to(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).unwrap_or_default()
}

/// The scrape times of one target: whole seconds, offset 1 to 14 s from the grid.
fn scrape_times(cfg: &DatasetConfig, target: usize) -> Vec<i64> {
    let offset = 1000 * (1 + (target as i64 * 5) % 14);
    let n = cfg.duration_ms / cfg.interval_ms.max(1);
    (0..n).map(|k| cfg.start_ms + k * cfg.interval_ms + offset).collect()
}

/// A counter: increments of `mean_per_s × interval × (0.5..1.5)`, rounded
/// to `decimals`, restarting at 0 at each time in `resets`.
fn counter(rng: &mut Rng, times: &[i64], mean_per_s: f64, decimals: i32, resets: &[i64]) -> Vec<Sample> {
    let mut v = round_to(rng.unit() * mean_per_s * 3600.0, decimals);
    let mut prev_t = times.first().copied().unwrap_or(0);
    times
        .iter()
        .map(|&t| {
            if resets.iter().any(|&r| prev_t < r && r <= t) {
                v = 0.0;
            }
            let dt = (t - prev_t) as f64 / 1000.0;
            v = round_to(v + mean_per_s * dt * (0.5 + rng.unit()), decimals);
            prev_t = t;
            Sample::new(t, v)
        })
        .collect()
}

/// A gauge: a bounded random walk around `mean`.
fn gauge(rng: &mut Rng, times: &[i64], mean: f64, spread: f64, decimals: i32) -> Vec<Sample> {
    let mut x = 0.0f64;
    times
        .iter()
        .map(|&t| {
            x = (x + (rng.unit() - 0.5) * 0.2).clamp(-1.0, 1.0);
            Sample::new(t, round_to(mean + x * spread, decimals))
        })
        .collect()
}

fn constant(times: &[i64], v: f64) -> Vec<Sample> {
    times.iter().map(|&t| Sample::new(t, v)).collect()
}

const CPU_MODES: [(&str, f64); 8] = [
    ("idle", 0.70),
    ("user", 0.15),
    ("system", 0.08),
    ("iowait", 0.02),
    ("irq", 0.005),
    ("softirq", 0.01),
    ("steal", 0.001),
    ("nice", 0.003),
];

/// Upper bounds of the request-duration histogram (plus `+Inf`).
pub const BUCKETS: [&str; 11] = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"];

fn node_series(cfg: &DatasetConfig, out: &mut Vec<Series>) {
    for n in 0..cfg.nodes {
        let instance = format!("node-{n}:9100");
        let times = scrape_times(cfg, n);
        let mut rng = Rng::new(cfg.seed, n as u64);
        let base = [("instance", instance.as_str()), ("job", "node")];
        let with = |extra: &[(&str, &str)], name: &str| {
            let mut p: Vec<(&str, &str)> = vec![("__name__", name)];
            p.extend_from_slice(&base);
            p.extend_from_slice(extra);
            labels(&p)
        };
        // Node 1 reboots a third of the way in: its counters reset.
        let resets = if n == 1 { vec![cfg.start_ms + cfg.duration_ms / 3] } else { Vec::new() };
        for cpu in 0..cfg.cpus {
            let cpu = cpu.to_string();
            for (mode, share) in CPU_MODES {
                let samples = counter(&mut rng, &times, share, 2, &resets);
                out.push(Series { labels: with(&[("cpu", &cpu), ("mode", mode)], "node_cpu_seconds_total"), samples });
            }
        }
        let total = 16e9 * (1 + n % 2) as f64;
        out.push(Series { labels: with(&[], "node_memory_MemTotal_bytes"), samples: constant(&times, total) });
        out.push(Series {
            labels: with(&[], "node_memory_MemAvailable_bytes"),
            samples: gauge(&mut rng, &times, total * 0.4, total * 0.2, 0),
        });
        out.push(Series {
            labels: with(&[], "node_load1"),
            samples: gauge(&mut rng, &times, 1.0 + n as f64 * 0.5, 0.9, 2),
        });
        let mut avail = 100e9 - n as f64 * 10e9;
        let fs: Vec<Sample> = times
            .iter()
            .map(|&t| {
                avail -= 1e5 * (0.5 + rng.unit());
                Sample::new(t, avail.round())
            })
            .collect();
        out.push(Series {
            labels: with(&[("device", "sda1"), ("mountpoint", "/")], "node_filesystem_avail_bytes"),
            samples: fs,
        });
        for dev in ["eth0", "lo"] {
            let rate = if dev == "eth0" { 125_000.0 } else { 2_000.0 };
            let rx = counter(&mut rng, &times, rate, 0, &resets);
            out.push(Series { labels: with(&[("device", dev)], "node_network_receive_bytes_total"), samples: rx });
            let tx = counter(&mut rng, &times, rate / 2.0, 0, &resets);
            out.push(Series { labels: with(&[("device", dev)], "node_network_transmit_bytes_total"), samples: tx });
        }
        let boot = (cfg.start_ms / 1000 - 86_400 * (n as i64 + 1)) as f64;
        out.push(Series { labels: with(&[], "node_boot_time_seconds"), samples: constant(&times, boot) });
        // Node 2 is down for twenty minutes in the middle.
        let down = (cfg.start_ms + cfg.duration_ms / 2, cfg.start_ms + cfg.duration_ms / 2 + 20 * 60_000);
        let up: Vec<Sample> = times
            .iter()
            .map(|&t| Sample::new(t, if n == 2 && t >= down.0 && t < down.1 { 0.0 } else { 1.0 }))
            .collect();
        out.push(Series { labels: with(&[], "up"), samples: up });
    }
}

fn kube_series(cfg: &DatasetConfig, out: &mut Vec<Series>) {
    let apps = [("shop", "frontend"), ("shop", "api-server")];
    for (a, (namespace, job)) in apps.iter().enumerate() {
        for p in 0..cfg.pods {
            let target = cfg.nodes + a * cfg.pods + p;
            let times = scrape_times(cfg, target);
            let mut rng = Rng::new(cfg.seed, 1000 + target as u64);
            let pod = format!("{job}-{p}");
            let instance = format!("10.0.{a}.{p}:8080");
            let node = format!("node-{}", p % cfg.nodes.max(1));
            // Every third pod restarts twice: its counters reset.
            let resets: Vec<i64> = if p % 3 == 0 {
                vec![cfg.start_ms + cfg.duration_ms / 4, cfg.start_ms + cfg.duration_ms * 2 / 3]
            } else {
                Vec::new()
            };
            let base =
                [("instance", instance.as_str()), ("job", *job), ("namespace", *namespace), ("pod", pod.as_str())];
            let with = |extra: &[(&str, &str)], name: &str| {
                let mut v: Vec<(&str, &str)> = vec![("__name__", name)];
                v.extend_from_slice(&base);
                v.extend_from_slice(extra);
                labels(&v)
            };
            for handler in ["/", "/api/orders", "/api/users"] {
                for (code, share) in [("200", 0.95), ("404", 0.04), ("500", 0.01)] {
                    let mean = 20.0 * share * (1.0 + a as f64);
                    let reqs = counter(&mut rng, &times, mean, 0, &resets);
                    let ls = [("code", code), ("handler", handler)];
                    out.push(Series { labels: with(&ls, "http_requests_total"), samples: reqs.clone() });
                    histogram(&mut rng, &reqs, &resets, handler, &with, &ls, out);
                }
            }
            out.push(Series {
                labels: labels(&[
                    ("__name__", "kube_pod_info"),
                    ("job", "kube-state-metrics"),
                    ("namespace", namespace),
                    ("node", &node),
                    ("pod", &pod),
                ]),
                samples: constant(&times, 1.0),
            });
            out.push(Series {
                labels: labels(&[
                    ("__name__", "container_cpu_usage_seconds_total"),
                    ("container", job),
                    ("job", "kubelet"),
                    ("namespace", namespace),
                    ("pod", &pod),
                ]),
                samples: counter(&mut rng, &times, 0.2 + 0.1 * p as f64, 3, &resets),
            });
            let mut restarts = 0.0;
            let rs: Vec<Sample> = times
                .iter()
                .map(|&t| {
                    if resets.iter().any(|&r| r <= t && r > t - cfg.interval_ms) {
                        restarts += 1.0;
                    }
                    Sample::new(t, restarts)
                })
                .collect();
            out.push(Series {
                labels: labels(&[
                    ("__name__", "kube_pod_container_status_restarts_total"),
                    ("container", job),
                    ("job", "kube-state-metrics"),
                    ("namespace", namespace),
                    ("pod", &pod),
                ]),
                samples: rs,
            });
            out.push(Series {
                labels: with(&[], "process_resident_memory_bytes"),
                samples: gauge(&mut rng, &times, 2e8, 5e7, 0),
            });
        }
    }
}

/// The `_bucket`, `_sum` and `_count` series of one handler's request
/// durations, consistent with the request counter `reqs`.
fn histogram<F: Fn(&[(&str, &str)], &str) -> Labels>(
    rng: &mut Rng,
    reqs: &[Sample],
    resets: &[i64],
    handler: &str,
    with: &F,
    ls: &[(&str, &str)],
    out: &mut Vec<Series>,
) {
    let slow = if handler == "/" { 0.02 } else { 0.12 };
    let nb = BUCKETS.len() + 1;
    let mut counts = vec![0.0f64; nb];
    let mut sum = 0.0f64;
    let mut buckets: Vec<Vec<Sample>> = vec![Vec::with_capacity(reqs.len()); nb];
    let mut sums = Vec::with_capacity(reqs.len());
    let mut prev: Option<Sample> = None;
    for s in reqs {
        let new = match prev {
            Some(p) if s.v >= p.v && !resets.iter().any(|&r| p.t < r && r <= s.t) => s.v - p.v,
            Some(_) => {
                counts.iter_mut().for_each(|c| *c = 0.0);
                sum = 0.0;
                s.v
            }
            None => s.v,
        };
        prev = Some(*s);
        // Spread the new requests over the buckets with a long-tailed law.
        let observations = (new as u64).min(64);
        let weight = if observations == 0 { 0.0 } else { new / observations as f64 };
        for _ in 0..observations {
            let d = slow * (-(1.0 - rng.unit()).ln()) * (1.0 + rng.below(3) as f64);
            let idx = BUCKETS.iter().position(|b| d <= b.parse::<f64>().unwrap_or(f64::INFINITY)).unwrap_or(nb - 1);
            counts[idx] += weight;
            sum += d * weight;
        }
        let mut cumulative = 0.0;
        for (i, c) in counts.iter().enumerate() {
            cumulative += c;
            buckets[i].push(Sample::new(s.t, cumulative.round()));
        }
        sums.push(Sample::new(s.t, round_to(sum, 3)));
    }
    for (i, samples) in buckets.into_iter().enumerate() {
        let le = BUCKETS.get(i).copied().unwrap_or("+Inf");
        let mut l: Vec<(&str, &str)> = ls.to_vec();
        l.push(("le", le));
        out.push(Series { labels: with(&l, "http_request_duration_seconds_bucket"), samples });
    }
    out.push(Series { labels: with(ls, "http_request_duration_seconds_sum"), samples: sums });
    out.push(Series { labels: with(ls, "http_request_duration_seconds_count"), samples: reqs.to_vec() });
}

/// The dataset of `cfg`, sorted by labels.
pub fn generate(cfg: &DatasetConfig) -> Vec<Series> {
    let mut out = Vec::new();
    node_series(cfg, &mut out);
    kube_series(cfg, &mut out);
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

fn write_label_value(w: &mut impl Write, v: &str) -> io::Result<()> {
    for c in v.chars() {
        match c {
            '\\' => w.write_all(b"\\\\")?,
            '"' => w.write_all(b"\\\"")?,
            '\n' => w.write_all(b"\\n")?,
            c => write!(w, "{c}")?,
        }
    }
    Ok(())
}

/// Writes `series` as OpenMetrics text: one line per sample, series by
/// series (samples of a metric name together), timestamps in seconds.
pub fn write_openmetrics(series: &[Series], w: &mut impl Write) -> io::Result<()> {
    for s in series {
        let mut head = Vec::with_capacity(128);
        head.extend_from_slice(s.labels.metric_name().unwrap_or_default().as_bytes());
        let mut first = true;
        for l in s.labels.iter().filter(|l| l.name != strata_model::METRIC_NAME) {
            head.push(if first { b'{' } else { b',' });
            first = false;
            write!(head, "{}=\"", l.name)?;
            write_label_value(&mut head, &l.value)?;
            head.push(b'"');
        }
        if !first {
            head.push(b'}');
        }
        for p in &s.samples {
            w.write_all(&head)?;
            // Whole-second timestamps are exact in Prometheus' float parse.
            if p.t % 1000 == 0 {
                writeln!(w, " {} {}", p.v, p.t / 1000)?;
            } else {
                writeln!(w, " {} {}.{:03}", p.v, p.t.div_euclid(1000), p.t.rem_euclid(1000))?;
            }
        }
    }
    w.write_all(b"# EOF\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> DatasetConfig {
        DatasetConfig { duration_ms: 3600 * 1000, nodes: 3, cpus: 2, pods: 3, ..DatasetConfig::default() }
    }

    #[test]
    fn deterministic_and_sorted() {
        let a = generate(&small());
        assert_eq!(a, generate(&small()));
        assert!(a.windows(2).all(|w| w[0].labels < w[1].labels));
        let other = generate(&DatasetConfig { seed: 7, ..small() });
        assert_ne!(a, other);
    }

    #[test]
    fn samples_avoid_the_15s_grid_and_counters_reset() {
        let cfg = small();
        let data = generate(&cfg);
        for s in &data {
            assert_eq!(s.samples.len(), 240, "{}", s.labels);
            for p in &s.samples {
                assert_eq!(p.t % 1000, 0);
                assert_ne!((p.t - cfg.start_ms) % 15_000, 0, "{}", s.labels);
            }
        }
        let cpu = data
            .iter()
            .find(|s| s.labels.get("instance") == Some("node-1:9100") && s.labels.get("mode") == Some("idle"))
            .expect("node-1 idle cpu");
        assert!(cpu.samples.windows(2).any(|w| w[1].v < w[0].v), "node 1 reboots");
        let cpu0 = data.iter().find(|s| s.labels.get("instance") == Some("node-0:9100")).expect("node-0");
        assert!(cpu0.samples.windows(2).all(|w| w[1].v >= w[0].v), "node 0 never resets");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let data = generate(&small());
        let buckets: Vec<&Series> = data
            .iter()
            .filter(|s| {
                s.labels.metric_name() == Some("http_request_duration_seconds_bucket")
                    && s.labels.get("pod") == Some("api-server-1")
                    && s.labels.get("handler") == Some("/api/orders")
                    && s.labels.get("code") == Some("200")
            })
            .collect();
        assert_eq!(buckets.len(), BUCKETS.len() + 1);
        let mut by_le: Vec<(f64, &Series)> =
            buckets.iter().map(|s| (s.labels.get("le").and_then(|l| l.parse().ok()).unwrap_or(f64::NAN), *s)).collect();
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        for i in 0..by_le[0].1.samples.len() {
            assert!(by_le.windows(2).all(|w| w[0].1.samples[i].v <= w[1].1.samples[i].v));
        }
        assert!(by_le.last().is_some_and(|(_, s)| s.samples.last().is_some_and(|p| p.v > 0.0)));
    }

    #[test]
    fn openmetrics_text() {
        let s = vec![Series {
            labels: labels(&[("__name__", "up"), ("job", "a\"b")]),
            samples: vec![Sample::new(1_000, 1.0), Sample::new(2_500, 0.25)],
        }];
        let mut out = Vec::new();
        write_openmetrics(&s, &mut out).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "up{job=\"a\\\"b\"} 1 1\nup{job=\"a\\\"b\"} 0.25 2.500\n# EOF\n"
        );
    }
}
