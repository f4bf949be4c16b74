//! Block size next to Prometheus' TSDB on the same OpenMetrics file: the
//! deterministic node-exporter style dataset (`strata_aggregator::synth`)
//! goes through `strata import` and `promtool tsdb create-blocks-from
//! openmetrics`, and the bytes per sample of both are printed.
//!
//! Ignored by default (it takes a minute); run with
//! `cargo test --test storage_size -- --ignored --nocapture`
//! (`STRATA_SIZE_NODES`, default 5 nodes of 96 series, 24 h at 15 s;
//! `STRATA_SIZE_DIR` keeps the file and both block directories there).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use strata_aggregator::synth::SynthSpec;

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
    }
    total
}

#[test]
#[ignore = "a benchmark: run explicitly"]
fn bytes_per_sample_next_to_promtool() {
    let nodes = std::env::var("STRATA_SIZE_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let spec = SynthSpec { nodes, start_ms: 1_700_006_400_000, interval_ms: 15_000, scrapes: 24 * 240 };
    let series = spec.generate();
    compare(&series, |w| spec.write_openmetrics(w));
}

/// The same comparison on `strata-bench`'s dataset (node exporter and
/// kube-prometheus shaped, histograms included), 24 h at 15 s.
#[test]
#[ignore = "a benchmark: run explicitly"]
fn bytes_per_sample_next_to_promtool_bench_dataset() {
    let cfg = strata_bench::dataset::DatasetConfig { duration_ms: 24 * 3600 * 1000, ..Default::default() };
    let data = strata_bench::dataset::generate(&cfg);
    let series: Vec<_> = data.iter().map(|s| (s.labels.clone(), s.samples.clone())).collect();
    compare(&series, |w| strata_bench::dataset::write_openmetrics(&data, w));
}

/// Head memory per series with 2 h at 15 s of `strata-bench`'s dataset, as
/// `strata_head_memory_bytes / strata_head_series` reports it.
#[test]
#[ignore = "a benchmark: run explicitly"]
fn head_memory_per_series_bench_dataset() {
    let cfg = strata_bench::dataset::DatasetConfig { duration_ms: 2 * 3600 * 1000, ..Default::default() };
    let data = strata_bench::dataset::generate(&cfg);
    let mut head = strata_aggregator::head::Head::new();
    let rounds = data.iter().map(|s| s.samples.len()).max().unwrap_or(0);
    for i in 0..rounds {
        let mut b = strata_model::WriteBatch::new("t");
        for s in &data {
            if let Some(&p) = s.samples.get(i) {
                b.push(s.labels.clone(), p);
            }
        }
        head.append(b);
    }
    let stats = head.stats();
    eprintln!(
        "head: {} series, {} samples, {} bytes/series",
        stats.series,
        stats.samples,
        head.memory_bytes() / stats.series.max(1)
    );
}

type Series = Vec<(strata_model::Labels, Vec<strata_model::Sample>)>;

fn compare(series: &Series, write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::var_os("STRATA_SIZE_DIR").map_or_else(|| tmp.path().to_owned(), std::path::PathBuf::from);
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("data.om");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    write(&mut w).unwrap();
    drop(w);
    let samples: u64 = series.iter().map(|(_, s)| s.len() as u64).sum();
    let series = series.len();

    let strata_dir = root.join("strata");
    let out = Command::new(common::strata_bin())
        .args(["import", "--storage.path"])
        .arg(&strata_dir)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let strata = dir_bytes(&strata_dir.join("blocks"));

    let prom_dir = root.join("prom");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(&prom_dir)
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let prom = dir_bytes(&prom_dir);

    eprintln!(
        "{series} series, {samples} samples, OpenMetrics file {} bytes\n\
         strata blocks: {strata} bytes, {:.3} bytes/sample\n\
         promtool TSDB blocks: {prom} bytes, {:.3} bytes/sample\n\
         ratio strata/prometheus: {:.2}",
        std::fs::metadata(&file).unwrap().len(),
        strata as f64 / samples as f64,
        prom as f64 / samples as f64,
        strata as f64 / prom as f64
    );
    assert!(strata < prom, "strata blocks must be smaller than Prometheus'");
}
