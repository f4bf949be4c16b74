//! A small deterministic dataset in the style of node-exporter and
//! kube-state-metrics, for storage measurements and tests: per node, CPU
//! seconds counters (2 decimals), memory and filesystem gauges (multiples of
//! 4 KiB), network byte and packet counters, load averages, scrape
//! self-metrics, and pod phase and restart series; samples on a 15 s grid
//! with a per-target offset and an occasional millisecond of jitter, as
//! Prometheus' scrape timestamps look.
//!
//! The same seed always gives the same series and samples.

use std::io::Write;

use strata_model::{Labels, Sample};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct SynthSpec {
    /// Number of nodes (about 100 series each).
    pub nodes: usize,
    /// First scrape, milliseconds.
    pub start_ms: i64,
    /// Scrape interval, milliseconds.
    pub interval_ms: i64,
    /// Scrapes per series.
    pub scrapes: usize,
}

/// SplitMix64: small, fast and deterministic.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How one series' values move.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Constant(f64),
    /// A counter growing by up to `max_step` hundredths per scrape.
    CentiCounter {
        max_step: u64,
    },
    /// An integer counter growing by up to `max_step` per scrape.
    IntCounter {
        max_step: u64,
    },
    /// A gauge in multiples of `unit`, random-walking from `base` by up to
    /// `spread` units a scrape.
    Wander {
        base: f64,
        unit: f64,
        spread: u64,
    },
    /// A gauge with two decimals between 0 and `max`.
    Load {
        max: f64,
    },
    /// A raw measured duration (not decimal).
    Duration,
}

fn labels(name: &str, pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(std::iter::once(("__name__", name)).chain(pairs.iter().copied())).unwrap_or_default()
}

fn series_of_node(node: usize) -> Vec<(Labels, Shape)> {
    let instance = format!("10.0.{}.{}:9100", node / 250, node % 250 + 1);
    let base = [("instance", instance.as_str()), ("job", "node-exporter")];
    let mk = |name: &str, extra: &[(&str, &str)]| {
        let pairs: Vec<(&str, &str)> = base.iter().chain(extra.iter()).copied().collect();
        labels(name, &pairs)
    };
    let mut out = Vec::new();
    for cpu in ["0", "1", "2", "3"] {
        for (mode, step) in [("idle", 1500), ("user", 300), ("system", 100), ("iowait", 10), ("irq", 0), ("softirq", 3)]
        {
            out.push((
                mk("node_cpu_seconds_total", &[("cpu", cpu), ("mode", mode)]),
                Shape::CentiCounter { max_step: step },
            ));
        }
    }
    for (name, base) in [
        ("node_memory_MemTotal_bytes", 0.0),
        ("node_memory_MemAvailable_bytes", 8e9),
        ("node_memory_MemFree_bytes", 2e9),
        ("node_memory_Cached_bytes", 4e9),
        ("node_memory_Buffers_bytes", 3e8),
    ] {
        let shape = if base == 0.0 {
            Shape::Constant(16_777_216_000.0)
        } else {
            Shape::Wander { base, unit: 4096.0, spread: 2_000 }
        };
        out.push((mk(name, &[]), shape));
    }
    for dev in ["eth0", "lo"] {
        for (name, step) in [
            ("node_network_receive_bytes_total", 200_000),
            ("node_network_transmit_bytes_total", 150_000),
            ("node_network_receive_packets_total", 300),
            ("node_network_transmit_packets_total", 250),
        ] {
            out.push((mk(name, &[("device", dev)]), Shape::IntCounter { max_step: step }));
        }
    }
    for mp in ["/", "/boot", "/var/lib/kubelet"] {
        let fs = [("device", "/dev/sda1"), ("fstype", "ext4"), ("mountpoint", mp)];
        out.push((mk("node_filesystem_size_bytes", &fs), Shape::Constant(107_374_182_400.0)));
        out.push((mk("node_filesystem_avail_bytes", &fs), Shape::Wander { base: 5e10, unit: 4096.0, spread: 100 }));
        out.push((mk("node_filesystem_readonly", &fs), Shape::Constant(0.0)));
    }
    for (name, max) in [("node_load1", 4.0), ("node_load5", 3.0), ("node_load15", 2.0)] {
        out.push((mk(name, &[]), Shape::Load { max }));
    }
    out.push((mk("node_context_switches_total", &[]), Shape::IntCounter { max_step: 40_000 }));
    out.push((mk("node_boot_time_seconds", &[]), Shape::Constant(1_699_990_000.0)));
    out.push((mk("up", &[]), Shape::Constant(1.0)));
    out.push((mk("scrape_duration_seconds", &[]), Shape::Duration));
    out.push((mk("scrape_samples_scraped", &[]), Shape::Constant(1017.0)));
    // kube-state-metrics: a few pods per node.
    for pod in 0..6 {
        let pod_name = format!("app-{node}-{pod}");
        let ns = if pod % 2 == 0 { "default" } else { "monitoring" };
        let ksm = [("instance", "10.1.0.5:8080"), ("job", "kube-state-metrics"), ("namespace", ns), ("pod", &pod_name)];
        for phase in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
            let v = if phase == "Running" { 1.0 } else { 0.0 };
            let mut l = ksm.to_vec();
            l.push(("phase", phase));
            out.push((labels("kube_pod_status_phase", &l), Shape::Constant(v)));
        }
        let mut l = ksm.to_vec();
        l.push(("container", "app"));
        out.push((labels("kube_pod_container_status_restarts_total", &l), Shape::Constant(f64::from(pod % 3))));
        out.push((
            labels(
                "kube_pod_container_resource_requests",
                &[l.as_slice(), &[("resource", "cpu"), ("unit", "core")]].concat(),
            ),
            Shape::Constant(0.25),
        ));
    }
    out
}

impl SynthSpec {
    /// Every series with its samples, sorted by labels.
    pub fn generate(&self) -> Vec<(Labels, Vec<Sample>)> {
        let mut out = Vec::new();
        for node in 0..self.nodes {
            // Prometheus spreads targets over the interval: a fixed offset per target.
            let mut rng = Rng(node as u64 ^ 0x5eed);
            let offset = (rng.below(self.interval_ms.unsigned_abs()) as i64).min(self.interval_ms - 1).max(0);
            let times: Vec<i64> = (0..self.scrapes)
                .map(|i| {
                    let jitter = if rng.below(20) == 0 { rng.below(5) as i64 - 2 } else { 0 };
                    self.start_ms + offset + i as i64 * self.interval_ms + jitter
                })
                .collect();
            for (idx, (l, shape)) in series_of_node(node).into_iter().enumerate() {
                let mut rng = Rng((node as u64) << 20 ^ idx as u64);
                let mut acc = rng.below(1_000_000) as f64;
                let samples = times
                    .iter()
                    .map(|&t| {
                        let v = match shape {
                            Shape::Constant(v) => v,
                            Shape::CentiCounter { max_step } => {
                                acc += rng.below(max_step + 1) as f64;
                                acc / 100.0
                            }
                            Shape::IntCounter { max_step } => {
                                acc += rng.below(max_step + 1) as f64;
                                acc
                            }
                            Shape::Wander { base, unit, spread } => {
                                acc += rng.below(2 * spread + 1) as f64 - spread as f64;
                                base + unit * acc
                            }
                            Shape::Load { max } => (rng.below((max * 100.0) as u64)) as f64 / 100.0,
                            Shape::Duration => 0.004 + rng.below(1 << 20) as f64 / 1e8,
                        };
                        Sample::new(t, v)
                    })
                    .collect();
                out.push((l, samples));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Writes the dataset as OpenMetrics text with timestamps (what
    /// `promtool tsdb create-blocks-from openmetrics` and `strata import` read).
    pub fn write_openmetrics(&self, w: &mut impl Write) -> std::io::Result<()> {
        write_openmetrics(&self.generate(), w)
    }
}

/// Writes series as OpenMetrics text, one family after the other, each
/// sample with its timestamp in seconds; `# EOF` at the end.
pub fn write_openmetrics(series: &[(Labels, Vec<Sample>)], w: &mut impl Write) -> std::io::Result<()> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&(Labels, Vec<Sample>)>> = Default::default();
    for s in series {
        by_name.entry(s.0.metric_name().unwrap_or("")).or_default().push(s);
    }
    for (name, list) in by_name {
        writeln!(w, "# TYPE {name} unknown")?;
        for (labels, samples) in list {
            let mut head = String::from(name);
            crate::export::write_label_set(&mut head, labels);
            for s in samples {
                writeln!(w, "{head} {} {}", crate::export::format_value(s.v), crate::export::format_timestamp(s.t))?;
            }
        }
    }
    writeln!(w, "# EOF")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let spec = SynthSpec { nodes: 2, start_ms: 1_700_000_000_000, interval_ms: 15_000, scrapes: 10 };
        let a = spec.generate();
        let b = spec.generate();
        assert_eq!(a.len(), b.len());
        assert!(a.len() > 150, "{}", a.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.0 == y.0 && x.1 == y.1));
        assert!(a.iter().all(|(_, s)| s.len() == 10 && s.windows(2).all(|w| w[0].t < w[1].t)));
    }
}
