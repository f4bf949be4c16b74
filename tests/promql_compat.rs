//! Differential test: the same dataset in the real Prometheus 2.42 (blocks
//! built by `promtool tsdb create-blocks-from openmetrics`) and in Strata's
//! querier (in process, over a `MemStore`), the same dashboard queries
//! through both HTTP APIs, instant and range, results compared.
//!
//! Known Prometheus 2.42-vs-3 differences this test accounts for (Strata
//! follows Prometheus 3):
//! - Range selectors and the lookback window are left-open in 3 and closed
//!   in 2.42. The dataset's samples sit at whole seconds off the 15 s grid
//!   (see `strata_bench::dataset`) and every query time is a whole second
//!   plus 0.5 s, so no sample ever sits on a window's start; subquery steps
//!   (multiples of their step) likewise never meet a sample.
//! - 3 adds annotations (e.g. "PromQL info: metric might not be a
//!   counter") that 2.42 does not send: only `data` is compared.
//! - `holt_winters` (renamed in 3), `limitk`/`limit_ratio`,
//!   `sort_by_label` and UTF-8 names (new in 3) are not used; no label value
//!   holds a newline (`.` matches newlines only in 3); `le` values are the
//!   same strings on both sides (3 normalizes them only when scraping).
//! - Instant vectors are compared as sets: neither version promises an
//!   order for them (matrices are sorted by labels in both).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{Api, Proc, eventually, free_port};
use serde_json::Value;
use strata_bench::dataset::{DatasetConfig, generate, write_openmetrics};
use strata_common::{SystemClock, Telemetry};
use strata_model::{DEFAULT_TENANT, Select};
use strata_promql::memstore::MemStore;
use strata_querier::{QuerierDeps, QuerierSettings, api_router};

/// Dashboard queries of node-exporter and kube-prometheus mixins.
const QUERIES: &[&str] = &[
    // Node exporter: CPU, memory, load, disk, network.
    r#"sum by (job, mode) (rate(node_cpu_seconds_total[5m]))"#,
    r#"100 - avg by (instance) (irate(node_cpu_seconds_total{mode="idle"}[5m])) * 100"#,
    r#"1 - avg without (cpu, mode) (rate(node_cpu_seconds_total{mode=~"idle|iowait|steal"}[5m]))"#,
    r#"count(count by (cpu, instance) (node_cpu_seconds_total))"#,
    r#"node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes"#,
    r#"1 - (node_memory_MemAvailable_bytes{job="node"} / on (instance) node_memory_MemTotal_bytes{job="node"})"#,
    r#"avg_over_time(node_load1[10m])"#,
    r#"quantile_over_time(0.9, node_load1[30m])"#,
    r#"stddev by (job) (node_load1)"#,
    r#"bottomk(2, node_load1)"#,
    r#"clamp_min(node_load1 - 1, 0)"#,
    r#"round(node_load1, 0.5)"#,
    r#"predict_linear(node_filesystem_avail_bytes{mountpoint="/"}[1h], 4 * 3600) < 0"#,
    r#"predict_linear(node_filesystem_avail_bytes{mountpoint="/"}[30m], 3600)"#,
    r#"deriv(node_filesystem_avail_bytes[15m])"#,
    r#"delta(node_memory_MemAvailable_bytes[10m])"#,
    r#"topk(3, sum by (instance) (rate(node_network_receive_bytes_total{device!="lo"}[5m])))"#,
    r#"sum by (instance) (irate(node_network_transmit_bytes_total[5m]))"#,
    r#"increase(node_network_receive_bytes_total[1h])"#,
    r#"resets(node_network_receive_bytes_total[1h])"#,
    r#"time() - node_boot_time_seconds"#,
    r#"rate(node_cpu_seconds_total{cpu="0", mode="user"}[5m] offset 10m)"#,
    // Targets.
    r#"up"#,
    r#"sum by (job) (up)"#,
    r#"count by (job) (up == 1)"#,
    r#"min_over_time(up[10m]) == 0"#,
    r#"absent(up{job="nonexistent"})"#,
    r#"absent(up{job="node"})"#,
    r#"count_values("value", up)"#,
    r#"label_replace(up, "host", "$1", "instance", "([^:]+):.*")"#,
    r#"label_join(up, "target", "/", "job", "instance")"#,
    r#"group by (job) (up)"#,
    r#"changes(up[1h])"#,
    // Kubernetes workloads.
    r#"sum by (namespace, pod) (rate(container_cpu_usage_seconds_total[5m])) * on (namespace, pod) group_left (node) kube_pod_info"#,
    r#"sum by (node) (rate(container_cpu_usage_seconds_total[5m]) * on (namespace, pod) group_left (node) kube_pod_info)"#,
    r#"increase(kube_pod_container_status_restarts_total[1h]) > 0"#,
    r#"changes(kube_pod_container_status_restarts_total[30m])"#,
    r#"avg by (job) (process_resident_memory_bytes)"#,
    // Request rates, errors, latencies.
    r#"sum by (job) (rate(http_requests_total[5m]))"#,
    r#"sum by (job, code) (increase(http_requests_total[10m]))"#,
    r#"sum without (code) (rate(http_requests_total{code=~"5.."}[5m])) / sum without (code) (rate(http_requests_total[5m]))"#,
    r#"sum by (job) (rate(http_requests_total{code="500"}[5m])) / ignoring (code) sum by (job) (rate(http_requests_total[5m])) > bool 0.005"#,
    r#"rate(http_requests_total{code="404"}[5m]) / ignoring (code) group_left sum without (code) (rate(http_requests_total[5m]))"#,
    r#"quantile by (job) (0.9, rate(http_requests_total[5m]))"#,
    r#"histogram_quantile(0.99, sum by (le, job) (rate(http_request_duration_seconds_bucket[5m])))"#,
    r#"histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket{handler="/api/orders"}[5m])))"#,
    r#"histogram_quantile(0.9, rate(http_request_duration_seconds_bucket{pod="frontend-1", code="200"}[10m]))"#,
    r#"sum(rate(http_request_duration_seconds_sum[5m])) by (job) / sum(rate(http_request_duration_seconds_count[5m])) by (job)"#,
    r#"sum by (job) (rate(http_request_duration_seconds_bucket{le="0.25"}[5m])) / sum by (job) (rate(http_request_duration_seconds_count[5m]))"#,
    // Subqueries.
    r#"max_over_time(rate(http_requests_total{code="200"}[5m])[30m:1m])"#,
    r#"avg_over_time(sum by (job) (rate(http_requests_total[5m]))[1h:5m])"#,
    r#"max_over_time(sum by (instance) (irate(node_cpu_seconds_total{mode!="idle"}[2m]))[20m:])"#,
    // Scalars and literals.
    r#"scalar(sum(up))"#,
    r#"vector(1)"#,
    r#"sum(up) * 2 + 1"#,
];

/// Relative tolerance of value comparisons (the PromQL suite's).
const TOLERANCE: f64 = 1e-6;

fn values_match(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let parse = |s: &str| match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse::<f64>().ok(),
    };
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) if x.is_nan() || y.is_nan() => x.is_nan() && y.is_nan(),
        (Some(x), Some(y)) if x.is_infinite() || y.is_infinite() => x == y,
        (Some(x), Some(y)) => (x - y).abs() <= TOLERANCE * x.abs().max(y.abs()) || (x - y).abs() < 1e-12,
        _ => false,
    }
}

/// A result as `resultType` and, per label set, its `[time, value]` points.
type Normalized = (String, BTreeMap<String, Vec<(String, String)>>);

fn point(p: &Value) -> Result<(String, String)> {
    let t = p.get(0).context("point time")?.to_string();
    let v = p.get(1).and_then(Value::as_str).context("point value")?.to_owned();
    Ok((t, v))
}

fn normalize(body: &Value) -> Result<Normalized> {
    let data = &body["data"];
    let kind = data["resultType"].as_str().context("resultType")?.to_owned();
    let mut out = BTreeMap::new();
    match kind.as_str() {
        "scalar" | "string" => {
            out.insert(String::new(), vec![point(&data["result"])?]);
        }
        _ => {
            for r in data["result"].as_array().context("result array")? {
                // serde_json's map is sorted, so the key is canonical.
                let key = r["metric"].to_string();
                let points = match r.get("values") {
                    Some(vs) => vs.as_array().context("values")?.iter().map(point).collect::<Result<Vec<_>>>()?,
                    None => vec![point(&r["value"])?],
                };
                if out.insert(key.clone(), points).is_some() {
                    bail!("label set {key} twice in one result");
                }
            }
        }
    }
    Ok((kind, out))
}

/// Why two results differ, or `None`.
fn compare(prom: &Normalized, strata: &Normalized) -> Option<String> {
    if prom.0 != strata.0 {
        return Some(format!("resultType {} vs {}", prom.0, strata.0));
    }
    let only_prom: Vec<&String> = prom.1.keys().filter(|k| !strata.1.contains_key(*k)).collect();
    let only_strata: Vec<&String> = strata.1.keys().filter(|k| !prom.1.contains_key(*k)).collect();
    if !only_prom.is_empty() || !only_strata.is_empty() {
        return Some(format!("series only in Prometheus: {only_prom:?}; only in Strata: {only_strata:?}"));
    }
    for (key, pp) in &prom.1 {
        let sp = &strata.1[key];
        let pt: Vec<&String> = pp.iter().map(|p| &p.0).collect();
        let st: Vec<&String> = sp.iter().map(|p| &p.0).collect();
        if pt != st {
            return Some(format!("{key}: timestamps differ ({} vs {} points)", pp.len(), sp.len()));
        }
        if let Some((a, b)) = pp.iter().zip(sp).find(|(a, b)| !values_match(&a.1, &b.1)) {
            return Some(format!("{key} at {}: Prometheus {} vs Strata {}", a.0, a.1, b.1));
        }
    }
    None
}

/// A successful response, parsed and as sent.
async fn run_text(api: &Api, path: &str, params: &[(&str, &str)]) -> Result<(Value, String)> {
    let (status, text) = api.get_text(path, params).await?;
    let body: Value = serde_json::from_str(&text).with_context(|| format!("{path}: not JSON: {text}"))?;
    if status != 200 || body["status"] != "success" {
        bail!("{} {path} {params:?}: {status} {body}", api.base);
    }
    Ok((body, text))
}

async fn run(api: &Api, path: &str, params: &[(&str, &str)]) -> Result<Value> {
    Ok(run_text(api, path, params).await?.0)
}

/// One request of a query: what it is, the API path, the parameters.
type Case<'a> = (String, &'static str, Vec<(&'a str, &'a str)>);

/// Seconds with a 0.5 s fraction: never on a sample (see the module docs).
fn at(ms: i64) -> String {
    format!("{}.500", ms / 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_prometheus_2_42() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = DatasetConfig::default();
    let data = generate(&cfg);
    let samples: usize = data.iter().map(|s| s.samples.len()).sum();

    // Prometheus: blocks from OpenMetrics, then the server over them.
    let om_path = dir.path().join("data.om");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&om_path)?);
        write_openmetrics(&data, &mut w)?;
        w.flush()?;
    }
    let tsdb = dir.path().join("tsdb");
    let out = Command::new("promtool")
        .arg("tsdb")
        .arg("create-blocks-from")
        .arg("openmetrics")
        .arg(&om_path)
        .arg(&tsdb)
        .output()
        .context("running promtool: is the prometheus package installed? (scripts/install-test-deps.sh)")?;
    ensure!(out.status.success(), "promtool failed: {}", String::from_utf8_lossy(&out.stderr));
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n")?;
    let prom_port = free_port();
    let _prometheus = Proc::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--storage.tsdb.retention.time=100y"),
        &dir.path().join("prometheus.log"),
    )?;
    let prom = Api::new(prom_port);

    // Strata: the querier's router in process over the same samples.
    let store = MemStore::new();
    for s in data {
        store.add(DEFAULT_TENANT, s.labels, s.samples);
    }
    let deps = QuerierDeps {
        storage: Arc::new(store) as Arc<dyn Select>,
        telemetry: Telemetry::empty(),
        clock: Arc::new(SystemClock),
        settings: QuerierSettings::default(),
        flags: BTreeMap::new(),
        completeness: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let strata = Api::new(listener.local_addr()?.port());
    tokio::spawn(strata_common::serve_http(listener, api_router(deps), std::future::pending()));

    let mid = at(cfg.start_ms + cfg.duration_ms / 2);
    let expected_up = cfg.nodes as f64;
    eventually("Prometheus serving the imported blocks", Duration::from_secs(60), || async {
        let body = run(&prom, "/api/v1/query", &[("query", "count(up)"), ("time", &mid)]).await.ok()?;
        let v: f64 = body["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
        (v == expected_up).then_some(())
    })
    .await?;

    let end = cfg.start_ms + cfg.duration_ms;
    let instants = [at(cfg.start_ms + 20 * 60_000), mid.clone(), at(end - 60_000)];
    let (range_start, range_end) = (at(cfg.start_ms + 10 * 60_000), at(end + 5 * 60_000));
    let mut checked = 0;
    let mut empty = 0;
    let mut identical = 0;
    let mut failures = Vec::new();
    for q in QUERIES {
        let mut cases: Vec<Case<'_>> = instants
            .iter()
            .map(|t| (format!("instant @{t}"), "/api/v1/query", vec![("query", *q), ("time", t.as_str())]))
            .collect();
        for step in ["60", "300"] {
            cases.push((
                format!("range step {step}"),
                "/api/v1/query_range",
                vec![("query", *q), ("start", &range_start), ("end", &range_end), ("step", step)],
            ));
        }
        for (what, path, params) in cases {
            checked += 1;
            let (p, p_text) = run_text(&prom, path, &params).await?;
            let (s, s_text) = run_text(&strata, path, &params).await?;
            if p_text == s_text {
                identical += 1;
            }
            let (p, s) = (normalize(&p)?, normalize(&s)?);
            if p.1.is_empty() {
                empty += 1;
            }
            if let Some(why) = compare(&p, &s) {
                failures.push(format!("{q} ({what}): {why}"));
            }
        }
    }
    // Metadata endpoints and errors: the same bytes. (`limit` is newer than
    // 2.42; label queries with a time range are block-granular in
    // Prometheus, and every series here spans the whole dataset, so both
    // answer with every series.)
    let metadata: &[(&str, Vec<(&str, &str)>)] = &[
        ("/api/v1/labels", vec![]),
        ("/api/v1/labels", vec![("match[]", "node_load1"), ("match[]", "kube_pod_info")]),
        ("/api/v1/labels", vec![("match[]", "up"), ("start", &instants[0]), ("end", &mid)]),
        ("/api/v1/label/job/values", vec![]),
        ("/api/v1/label/__name__/values", vec![("start", &instants[0]), ("end", &mid)]),
        ("/api/v1/label/instance/values", vec![("match[]", r#"up{job="node"}"#)]),
        ("/api/v1/label/nonexistent/values", vec![]),
        ("/api/v1/series", vec![("match[]", "up")]),
        ("/api/v1/series", vec![("match[]", r#"http_requests_total{code="500"}"#), ("match[]", "kube_pod_info")]),
        ("/api/v1/series", vec![("match[]", r#"{__name__=~"node_(load1|boot_time_seconds)"}"#), ("end", &mid)]),
        ("/api/v1/series", vec![]),
        ("/api/v1/series", vec![("match[]", r#"{job=~".*"}"#)]),
        ("/api/v1/series", vec![("match[]", "up"), ("start", "yesterday")]),
        ("/api/v1/query_range", vec![("query", "up"), ("start", "10"), ("end", "20"), ("step", "0")]),
        ("/api/v1/query_range", vec![("query", "up"), ("start", "20"), ("end", "10"), ("step", "1")]),
        ("/api/v1/query_range", vec![("query", "up"), ("start", "0"), ("end", "12000"), ("step", "1")]),
        ("/api/v1/query_range", vec![("query", "up"), ("start", "x"), ("end", "20"), ("step", "1")]),
        ("/api/v1/query", vec![("query", "up"), ("time", "x")]),
        ("/api/v1/query", vec![("query", r#"label_replace(up, "a", "x", "b", "(")"#), ("time", &mid)]),
        ("/api/v1/query", vec![("query", "up + on(job) up"), ("time", &mid)]),
        ("/api/v1/query", vec![("query", r#""a string""#), ("time", &mid)]),
        ("/api/v1/query", vec![("query", "-7.5e-1"), ("time", &mid)]),
    ];
    let mut same_bytes = 0;
    for (path, params) in metadata {
        let p = prom.get_text(path, params).await?;
        let s = strata.get_text(path, params).await?;
        if p == s {
            same_bytes += 1;
        } else {
            failures.push(format!("{path} {params:?}:\n  Prometheus {p:?}\n  Strata     {s:?}"));
        }
    }
    eprintln!("promql_compat: {same_bytes} of {} metadata and error responses byte-identical", metadata.len());

    eprintln!(
        "promql_compat: {} queries, {checked} cases (3 instant + 2 range each) over {samples} samples: {} match, {} differ, {empty} empty, {identical} byte-identical",
        QUERIES.len(),
        checked - failures.len(),
        failures.len()
    );
    ensure!(failures.is_empty(), "results differ from Prometheus 2.42:\n{}", failures.join("\n"));
    // An empty answer matches trivially: most cases must have data.
    ensure!(empty * 10 < checked, "{empty} of {checked} cases had empty results in Prometheus");
    Ok(())
}

#[test]
fn value_comparison_rules() {
    assert!(values_match("1", "1.0000000001"));
    assert!(!values_match("1", "1.001"));
    assert!(values_match("NaN", "NaN"));
    assert!(values_match("+Inf", "+Inf"));
    assert!(!values_match("+Inf", "-Inf"));
    assert!(!values_match("NaN", "0"));
    assert!(values_match("0", "1e-15"));
}
