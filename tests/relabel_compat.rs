//! Relabeling and file discovery compared against real Prometheus 2.42.
//!
//! Prometheus and `strata standalone` run as real processes with the same
//! `prometheus.yml`: every job reads the same `file_sd` file (targets with
//! `__meta_kubernetes_*` labels, as Kubernetes discovery would set them) and
//! applies a different set of relabel rules (every action, and the
//! `kubernetes-service-endpoints` annotation job of typical kube-prometheus
//! setups). The targets are small in-test exporters and a real
//! `prometheus-node-exporter`. The test compares `/api/v1/targets` (active
//! target labels, discovered labels, scrape URLs, health; dropped targets)
//! and the scraped series sets, then edits the file_sd file and compares
//! again once both have followed.
//!
//! Known 2.42-vs-3 differences, accounted for here:
//! - Prometheus 3 (and Strata) normalise `le`/`quantile` values as floats
//!   (`quantile="1"` → `"1.0"`); the series sets are compared after the same
//!   normalisation of both sides.
//! - Addresses all carry ports, so 2.42's default-port rule (dropped in 3)
//!   does not come into play.
//! - `lastError` texts differ (Go vs Rust errors) and are not compared;
//!   health is.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{Api, PageServer, Proc, eventually, free_port, start_prometheus, start_strata_standalone};
use serde_json::Value;

/// The page each in-test exporter serves; `port` tells them apart.
fn exporter_page(port: u16) -> String {
    format!(
        "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\n\
         app_requests_total{{code=\"200\",method=\"GET\"}} 10\n\
         app_requests_total{{code=\"500\",method=\"POST\"}} 1\n\
         # TYPE app_temperature gauge\napp_temperature{{Sensor=\"A\",instance=\"inner\",job=\"inner-job\"}} 21.5\n\
         # TYPE app_latency_seconds histogram\n\
         app_latency_seconds_bucket{{le=\"0.5\"}} 3\napp_latency_seconds_bucket{{le=\"1.0\"}} 4\n\
         app_latency_seconds_bucket{{le=\"+Inf\"}} 5\napp_latency_seconds_sum 2.5\napp_latency_seconds_count 5\n\
         app_port_info{{port=\"{port}\",path=\"x\"}} 1\n\
         go_goroutines 7\n"
    )
}

/// The file_sd targets: three service endpoints in two namespaces, a target
/// whose annotation points at a port, and one nobody listens on.
fn targets_file(a: &str, b: &str, c: &str, node: &str, dead: &str, b_port: u16) -> String {
    format!(
        r#"- targets: ['{a}']
  labels:
    env: prod
    __meta_kubernetes_namespace: monitoring
    __meta_kubernetes_service_name: api
    __meta_kubernetes_service_label_app_kubernetes_io_name: api
    __meta_kubernetes_service_label_Team: Core
    __meta_kubernetes_service_labelpresent_Team: "true"
    __meta_kubernetes_service_annotation_prometheus_io_scrape: "true"
    __meta_kubernetes_service_annotationpresent_prometheus_io_scrape: "true"
    __meta_kubernetes_service_annotation_prometheus_io_path: /metrics
    __meta_kubernetes_service_annotation_prometheus_io_param_format: prometheus
    __meta_kubernetes_pod_name: api-7d4f9
    __meta_kubernetes_pod_node_name: node-1
    __meta_kubernetes_endpoint_port_name: http
    __meta_kubernetes_endpoint_ready: "true"
- targets: ['127.0.0.1:1', '{c}']
  labels:
    __meta_kubernetes_namespace: kube-system
    __meta_kubernetes_service_name: dns
    __meta_kubernetes_service_label_app_kubernetes_io_name: dns
    __meta_kubernetes_service_annotation_prometheus_io_scrape: "true"
    __meta_kubernetes_service_annotation_prometheus_io_port: "{b_port}"
    __meta_kubernetes_service_annotation_prometheus_io_scheme: http
    __meta_kubernetes_pod_name: dns-1
    __meta_kubernetes_pod_node_name: node-2
    __meta_kubernetes_endpoint_port_name: metrics
- targets: ['{node}']
  labels:
    __meta_kubernetes_namespace: monitoring
    __meta_kubernetes_service_name: node-exporter
    __meta_kubernetes_service_label_app_kubernetes_io_name: node-exporter
    __meta_kubernetes_service_annotation_prometheus_io_scrape: "true"
    __meta_kubernetes_pod_node_name: node-1
    __meta_kubernetes_endpoint_port_name: metrics
- targets: ['{dead}']
  labels:
    __meta_kubernetes_namespace: default
    __meta_kubernetes_service_name: Broken
    __meta_kubernetes_service_annotation_prometheus_io_scrape: "false"
    __meta_kubernetes_pod_node_name: node-3
"#
    ) + &format!(
        "- targets: ['{b}']\n  labels:\n    __meta_kubernetes_namespace: kube-system\n    __meta_kubernetes_service_name: dns-direct\n"
    )
}

/// Two nodes as Kubernetes' `node` role describes them.
const NODES_JSON: &str = r#"[
  {"targets": ["10.0.0.1:10250"], "labels": {
    "__meta_kubernetes_node_name": "node-a",
    "__meta_kubernetes_node_provider_id": "aws:///eu-west-1a/i-0a",
    "__meta_kubernetes_node_label_kubernetes_io_hostname": "node-a",
    "__meta_kubernetes_node_labelpresent_kubernetes_io_hostname": "true",
    "__meta_kubernetes_node_label_kubernetes_io_os": "linux",
    "__meta_kubernetes_node_label_node_role_kubernetes_io_control_plane": "",
    "__meta_kubernetes_node_annotation_node_alpha_kubernetes_io_ttl": "0",
    "__meta_kubernetes_node_address_InternalIP": "10.0.0.1",
    "__meta_kubernetes_node_address_Hostname": "node-a"}},
  {"targets": ["10.0.0.2:10250"], "labels": {
    "__meta_kubernetes_node_name": "node-b",
    "__meta_kubernetes_node_label_kubernetes_io_hostname": "node-b",
    "__meta_kubernetes_node_label_kubernetes_io_os": "linux",
    "__meta_kubernetes_node_address_InternalIP": "10.0.0.2"}}
]"#;

/// The fake apiserver's node proxy: kubelet and cAdvisor pages per node, the
/// latter with explicit timestamps as cAdvisor writes them.
fn apiserver_page(path: &str) -> (u16, String, String) {
    let path = path.split('?').next().unwrap_or_default();
    let Some(rest) = path.strip_prefix("/api/v1/nodes/") else {
        return (404, "text/plain".into(), "not found\n".into());
    };
    let (node, what) = rest.split_once("/proxy/").unwrap_or((rest, ""));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let body = match what {
        "metrics" => format!(
            "# TYPE kubelet_running_pods gauge\nkubelet_running_pods 12\n\
             # TYPE kubelet_node_name gauge\nkubelet_node_name{{node=\"{node}\"}} 1\n\
             # TYPE rest_client_requests_total counter\nrest_client_requests_total{{code=\"200\",host=\"10.0.0.1:6443\",method=\"GET\"}} 100\n"
        ),
        "metrics/cadvisor" => {
            let pod = "container=\"app\",id=\"/kubepods/pod1/abc\",image=\"nginx:1.25\",name=\"abc\",namespace=\"default\",pod=\"web-1\"";
            let root = "container=\"\",id=\"/\",image=\"\",name=\"\",namespace=\"\",pod=\"\"";
            format!(
                "# TYPE container_cpu_usage_seconds_total counter\n\
                 container_cpu_usage_seconds_total{{cpu=\"total\",{pod}}} 12.5 {now}\n\
                 container_cpu_usage_seconds_total{{cpu=\"total\",{root}}} 100 {now}\n\
                 # TYPE container_memory_working_set_bytes gauge\n\
                 container_memory_working_set_bytes{{{pod}}} 1.2e+07 {now}\n\
                 # TYPE container_spec_memory_limit_bytes gauge\n\
                 container_spec_memory_limit_bytes{{{pod}}} 5e+08 {now}\n\
                 container_spec_memory_limit_bytes{{{root}}} 0 {now}\n\
                 # TYPE container_tasks_state gauge\n\
                 container_tasks_state{{state=\"running\",{pod}}} 3 {now}\n\
                 # TYPE machine_cpu_cores gauge\nmachine_cpu_cores{{node=\"{node}\"}} 4\n"
            )
        }
        _ => return (404, "text/plain".into(), "not found\n".into()),
    };
    (200, "text/plain; version=0.0.4".into(), body)
}

/// One job per case: (name, relabel_configs, metric_relabel_configs), as YAML flow sequences.
fn cases() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        // The kubernetes-service-endpoints job of the Prometheus Helm chart / kube-prometheus examples.
        (
            "kubernetes-service-endpoints",
            r#"
    - source_labels: [__meta_kubernetes_service_annotation_prometheus_io_scrape]
      action: keep
      regex: true
    - source_labels: [__meta_kubernetes_service_annotation_prometheus_io_scheme]
      action: replace
      target_label: __scheme__
      regex: (https?)
    - source_labels: [__meta_kubernetes_service_annotation_prometheus_io_path]
      action: replace
      target_label: __metrics_path__
      regex: (.+)
    - source_labels: [__address__, __meta_kubernetes_service_annotation_prometheus_io_port]
      action: replace
      target_label: __address__
      regex: ([^:]+)(?::\d+)?;(\d+)
      replacement: $1:$2
    - action: labelmap
      regex: __meta_kubernetes_service_annotation_prometheus_io_param_(.+)
      replacement: __param_$1
    - action: labelmap
      regex: __meta_kubernetes_service_label_(.+)
    - source_labels: [__meta_kubernetes_namespace]
      action: replace
      target_label: namespace
    - source_labels: [__meta_kubernetes_service_name]
      action: replace
      target_label: service
    - source_labels: [__meta_kubernetes_pod_node_name]
      action: replace
      target_label: node"#,
            r#"
    - source_labels: [__name__]
      regex: 'node_(cpu|memory_Mem|filesystem_avail|network_receive_bytes)_.*|app_.*|go_goroutines|up|scrape_.*'
      action: keep"#,
        ),
        (
            "replace",
            r#"
    - {source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_service_name], separator: /, target_label: svc}
    - {source_labels: [__meta_kubernetes_pod_name], regex: '(?P<app>[a-z]+)-(.*)', target_label: 'app_${app}', replacement: '${2}-$$-$1x'}
    - {source_labels: [__meta_kubernetes_service_name], regex: '(.*)', target_label: 'via_$1', replacement: yes}
    - {source_labels: [__meta_kubernetes_endpoint_port_name], regex: 'http', target_label: env, replacement: ''}
    - {source_labels: [__meta_kubernetes_service_name], regex: 'a', target_label: never, replacement: x}
    - {target_label: instance, source_labels: [__meta_kubernetes_pod_name]}
    - {source_labels: [missing_one, __meta_kubernetes_namespace], target_label: joined}"#,
            "[]",
        ),
        (
            "keep-drop",
            r#"
    - {source_labels: [__meta_kubernetes_namespace], regex: 'kube-.*|monitoring', action: keep}
    - {source_labels: [__meta_kubernetes_service_name], regex: 'dns', action: drop}
    - {source_labels: [__meta_kubernetes_namespace], regex: 'monitor', action: drop}"#,
            r#"
    - {source_labels: [__name__], regex: 'app_(requests|latency)_.*|up|scrape_samples_.*', action: keep}
    - {source_labels: [code], regex: '5..', action: drop}"#,
        ),
        (
            "equal",
            r#"
    - {source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_name], target_label: app}
    - {source_labels: [__meta_kubernetes_service_name], target_label: app, action: keepequal}
    - {source_labels: [__meta_kubernetes_pod_node_name], target_label: env, action: dropequal}"#,
            r#"
    - {source_labels: [instance], target_label: exported_instance, action: dropequal}"#,
        ),
        (
            "hashmod",
            r#"
    - {source_labels: [__meta_kubernetes_service_name], target_label: __tmp_hash, modulus: 3, action: hashmod}
    - {source_labels: [__address__, __meta_kubernetes_service_name], target_label: shard, modulus: 1000, action: hashmod}
    - {source_labels: [__tmp_hash], regex: '0|1', action: keep}"#,
            r#"
    - {source_labels: [__name__, code], target_label: series_shard, modulus: 7, action: hashmod}"#,
        ),
        (
            "labelmap-drop-keep",
            r#"
    - {action: labelmap, regex: '__meta_kubernetes_(.+)', replacement: 'k8s_${1}'}
    - {action: labeldrop, regex: 'k8s_service_annotation.*|k8s_.*present.*'}
    - {action: labelkeep, regex: '__.*|job|k8s_.*|env'}"#,
            r#"
    - {action: labeldrop, regex: 'k8s_pod_name|method'}
    - {action: labelmap, regex: '(S)ensor', replacement: 'sensor_$1'}"#,
        ),
        (
            "case",
            r#"
    - {source_labels: [__meta_kubernetes_service_label_Team], target_label: team, action: lowercase}
    - {source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_service_name], target_label: NS, action: uppercase}
    - {source_labels: [__meta_kubernetes_service_name], target_label: svc_lower, action: lowercase}"#,
            r#"
    - {source_labels: [Sensor], target_label: sensor, action: lowercase}
    - {source_labels: [method], target_label: method, action: lowercase}"#,
        ),
        (
            "scrape-settings",
            r#"
    - {source_labels: [__meta_kubernetes_service_name], regex: 'api|dns', action: keep}
    - {target_label: __metrics_path__, replacement: /other/metrics}
    - {target_label: __param_module, replacement: 'http 2xx'}
    - {target_label: __scrape_interval__, replacement: 2s}
    - {source_labels: [__meta_kubernetes_service_name], regex: dns, target_label: __scrape_timeout__, replacement: 1500ms}
    - {source_labels: [__scheme__, __metrics_path__], target_label: seen}
    - {target_label: __tmp_note, replacement: hidden}
    - {target_label: __custom, replacement: hidden}"#,
            "[]",
        ),
        // The apiserver-proxied kubelet and cAdvisor jobs of typical
        // kube-prometheus setups, over file_sd node targets; APISERVER stands
        // for kubernetes.default.svc:443 (here an in-test http server).
        (
            "kubernetes-nodes",
            r#"
    - action: labelmap
      regex: __meta_kubernetes_node_label_(.+)
    - target_label: __address__
      replacement: APISERVER
    - source_labels: [__meta_kubernetes_node_name]
      regex: (.+)
      target_label: __metrics_path__
      replacement: /api/v1/nodes/$1/proxy/metrics"#,
            "[]",
        ),
        (
            "kubernetes-cadvisor",
            r#"
    - action: labelmap
      regex: __meta_kubernetes_node_label_(.+)
    - target_label: __address__
      replacement: APISERVER
    - source_labels: [__meta_kubernetes_node_name]
      regex: (.+)
      target_label: __metrics_path__
      replacement: /api/v1/nodes/$1/proxy/metrics/cadvisor"#,
            r#"
    - source_labels: [__name__]
      regex: container_(network_tcp_usage_total|network_udp_usage_total|tasks_state|cpu_load_average_10s)
      action: drop
    - source_labels: [__name__, pod, namespace]
      regex: (container_fs_.*|container_spec_.*|container_blkio_device_usage_total|container_file_descriptors|container_sockets|container_threads_max|container_threads|container_start_time_seconds|container_last_seen);;
      action: drop"#,
        ),
        // honor_labels: the page's `instance`/`job` win over the target's.
        ("honor-labels", "[]", "[]"),
        // sample_limit counts samples after metric relabeling: the exporters
        // keep 9 (over the limit, scrape fails), node exporter keeps 3.
        ("sample-limit", "[]", "[{source_labels: [__name__], regex: 'app_.*|node_load.*|up', action: keep}]"),
        // label_name_length_limit: `exported_instance` (17) fails the exporters' scrapes.
        ("label-limits", "[]", "[]"),
    ]
}

/// The jobs whose targets are nodes (from `nodes/*.json`).
const NODE_JOBS: [&str; 2] = ["kubernetes-nodes", "kubernetes-cadvisor"];

/// The config with every case's job, but those in `skip`.
fn config(file_sd: &str, nodes_sd: &str, apiserver: &str, skip: &[&str]) -> String {
    let mut s = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
    for (name, relabel, metric_relabel) in cases().into_iter().filter(|(n, _, _)| !skip.contains(n)) {
        let file_sd = if NODE_JOBS.contains(&name) { nodes_sd } else { file_sd };
        let relabel = relabel.replace("APISERVER", apiserver);
        s.push_str(&format!(
            "  - job_name: {name}\n    params:\n      format: [text]\n    file_sd_configs:\n      - files: ['{file_sd}']\n        refresh_interval: 1s\n    relabel_configs: {relabel}\n    metric_relabel_configs: {metric_relabel}\n"
        ));
        s.push_str(match name {
            "honor-labels" => "    honor_labels: true\n",
            "sample-limit" => "    sample_limit: 5\n",
            "label-limits" => "    label_name_length_limit: 16\n",
            // As the in-cluster jobs authenticate to the apiserver (no TLS here).
            "kubernetes-nodes" | "kubernetes-cadvisor" => "    bearer_token: s3cr3t\n",
            _ => "",
        });
    }
    s
}

/// What both must agree on: per pool, the active targets' labels, scrape
/// URL, health, interval and timeout; and the number of dropped targets.
#[derive(Debug, PartialEq, Eq, Clone)]
struct TargetsView {
    active: BTreeMap<String, BTreeSet<String>>,
    dropped: usize,
}

/// The raw `/api/v1/targets` data.
async fn targets_data(api: &Api) -> Result<Value> {
    let (status, body) = api.get("/api/v1/targets", &[]).await?;
    if status != 200 || body["status"] != "success" {
        bail!("/api/v1/targets: {status} {body}");
    }
    Ok(body["data"].clone())
}

fn targets_view(data: &Value) -> Result<TargetsView> {
    let mut active: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in data["activeTargets"].as_array().context("activeTargets")? {
        let pool = t["scrapePool"].as_str().unwrap_or_default().to_owned();
        let row = format!(
            "labels={} url={} health={} interval={} timeout={}",
            t["labels"], t["scrapeUrl"], t["health"], t["scrapeInterval"], t["scrapeTimeout"]
        );
        active.entry(pool).or_default().insert(row);
    }
    let dropped = data["droppedTargets"].as_array().context("droppedTargets")?.len();
    Ok(TargetsView { active, dropped })
}

/// The labels every job's targets must show as `discoveredLabels` (the
/// labels before relabeling, as Prometheus 3 reports them), from the file.
fn expected_discovered(file: &str, job: &str) -> Result<BTreeSet<String>> {
    #[derive(serde::Deserialize)]
    struct Group {
        targets: Vec<String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }
    let groups: Vec<Group> = serde_saphyr::from_str(&std::fs::read_to_string(file)?)?;
    let mut out = BTreeSet::new();
    for g in groups {
        for t in g.targets {
            let mut l = g.labels.clone();
            l.insert("__address__".into(), t);
            l.insert("__meta_filepath".into(), file.to_owned());
            for (k, v) in [
                ("job", job),
                ("__scheme__", "http"),
                ("__metrics_path__", "/metrics"),
                ("__scrape_interval__", "1s"),
                ("__scrape_timeout__", "1s"),
                ("__param_format", "text"),
            ] {
                l.insert(k.into(), v.into());
            }
            // An empty value is no label (why Kubernetes SD has `labelpresent_*`).
            l.retain(|_, v| !v.is_empty());
            out.insert(serde_json::to_string(&l)?);
        }
    }
    Ok(out)
}

/// Strata's discovered labels, active and dropped, of one pool.
fn discovered_of(data: &Value, job: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for kind in ["activeTargets", "droppedTargets"] {
        for t in data[kind].as_array().into_iter().flatten() {
            if t["scrapePool"] == job {
                let m: BTreeMap<String, String> =
                    serde_json::from_value(t["discoveredLabels"].clone()).unwrap_or_default();
                out.insert(serde_json::to_string(&m).unwrap_or_default());
            }
        }
    }
    out
}

/// Prometheus 3's float normalisation of `le` and `quantile`, applied to both sides.
fn normalize(name: &str, value: &str) -> String {
    if (name == "le" || name == "quantile")
        && let Ok(f) = value.parse::<f64>()
    {
        return format!("{f:?}");
    }
    value.to_owned()
}

/// The label sets of every series of `job` with a current sample.
async fn series_of(api: &Api, job: &str) -> Result<BTreeSet<String>> {
    let r = api.query(&format!("{{job=\"{job}\"}}")).await?;
    Ok(r.iter()
        .map(|s| {
            let m = s["metric"].as_object().cloned().unwrap_or_default();
            let pairs: BTreeMap<String, String> =
                m.iter().map(|(k, v)| (k.clone(), normalize(k, v.as_str().unwrap_or_default()))).collect();
            format!("{pairs:?}")
        })
        .collect())
}

/// `labels => value` of every series a query returns.
async fn values_of(api: &Api, q: &str) -> Result<BTreeSet<String>> {
    Ok(api.query(q).await?.iter().map(|s| format!("{} => {}", s["metric"], s["value"][1])).collect())
}

/// `/api/v1/targets/metadata` entries for targets matching `selector`.
async fn metadata_of(api: &Api, selector: &str) -> Result<BTreeSet<String>, String> {
    let (status, body) =
        api.get("/api/v1/targets/metadata", &[("match_target", selector)]).await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    Ok(body["data"].as_array().into_iter().flatten().map(Value::to_string).collect())
}

/// Describes what differs between two sets, for the failure message.
fn diff(what: &str, prom: &BTreeSet<String>, strata: &BTreeSet<String>) -> String {
    let only_p: Vec<_> = prom.difference(strata).collect();
    let only_s: Vec<_> = strata.difference(prom).collect();
    format!("{what}:\n  only in Prometheus: {only_p:#?}\n  only in Strata: {only_s:#?}")
}

/// Polls every 500 ms, for at most `timeout`, until `f` gives `Ok`; the
/// last `Err` (a description of the difference) is the failure.
async fn until_agreed<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(why) if std::time::Instant::now() > deadline => {
                bail!("timed out after {timeout:?} waiting for {what}:\n{why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// What differs between two target views.
fn describe(p: &TargetsView, s: &TargetsView) -> String {
    let mut msg = format!("dropped targets: Prometheus {}, Strata {}\n", p.dropped, s.dropped);
    for pool in p.active.keys().chain(s.active.keys()).collect::<BTreeSet<_>>() {
        let (a, b) = (p.active.get(pool).cloned().unwrap_or_default(), s.active.get(pool).cloned().unwrap_or_default());
        if a != b {
            msg.push_str(&diff(&format!("active targets of {pool}"), &a, &b));
            msg.push('\n');
        }
    }
    msg
}

/// Waits until both sides agree on targets (health included, every active
/// target scraped) and `wanted` holds; returns the view and Strata's data.
async fn agreed_targets(
    prom: &Api,
    strata: &Api,
    what: &str,
    wanted: impl Fn(&TargetsView) -> bool,
) -> Result<(TargetsView, Value)> {
    let wanted = &wanted;
    until_agreed(what, Duration::from_secs(60), || async move {
        let p = targets_data(prom).await.and_then(|d| targets_view(&d)).map_err(|e| format!("Prometheus: {e}"))?;
        let data = targets_data(strata).await.map_err(|e| format!("Strata: {e}"))?;
        let s = targets_view(&data).map_err(|e| format!("Strata: {e}"))?;
        let scraped = |v: &TargetsView| v.active.values().flatten().all(|r| !r.contains("health=\"unknown\""));
        if p != s {
            return Err(describe(&p, &s));
        }
        if !scraped(&p) || p.active.is_empty() || !wanted(&p) {
            return Err(format!("not there yet: {p:#?}"));
        }
        Ok((p, data))
    })
    .await
}

/// Waits until both sides have the same non-empty series set for every job.
async fn agreed_series(prom: &Api, strata: &Api, skip: &[&str]) -> Result<BTreeMap<&'static str, usize>> {
    let mut counts = BTreeMap::new();
    for (job, _, _) in cases().into_iter().filter(|(n, _, _)| !skip.contains(n)) {
        let n = until_agreed(&format!("series of job {job}"), Duration::from_secs(30), || async move {
            let p = series_of(prom, job).await.map_err(|e| format!("Prometheus: {e}"))?;
            let s = series_of(strata, job).await.map_err(|e| format!("Strata: {e}"))?;
            if p != s || p.is_empty() {
                return Err(diff(&format!("series of job {job}"), &p, &s));
            }
            Ok(p.len())
        })
        .await?;
        counts.insert(job, n);
    }
    Ok(counts)
}

/// Every pool's discovered labels (active and dropped) are exactly the file's targets with the job's defaults.
fn check_discovered(data: &Value, sd_file: &std::path::Path, nodes_file: &std::path::Path) -> Result<()> {
    for (job, _, _) in cases() {
        let file = if NODE_JOBS.contains(&job) { nodes_file } else { sd_file }.display().to_string();
        let (want, got) = (expected_discovered(&file, job)?, discovered_of(data, job));
        // Each discovered set is one of the file's targets with the job's
        // defaults, unchanged by relabeling. Targets whose labels end up
        // identical (two addresses rewritten to one by the port annotation,
        // or one address in two groups once `__meta_*` labels are gone) are
        // one target, in Prometheus as here, so a few sets are not shown; the
        // numbers of active and dropped targets are compared with Prometheus.
        ensure!(
            !got.is_empty() && got.is_subset(&want),
            "{}",
            diff(&format!("discoveredLabels of {job} (file vs Strata)"), &want, &got)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabeling_and_file_sd_match_prometheus() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Each exporter serves its own page (its port in a label), on two paths.
    let mut exporters = Vec::new();
    for _ in 0..3 {
        let port: Arc<std::sync::OnceLock<u16>> = Arc::new(std::sync::OnceLock::new());
        let port2 = Arc::clone(&port);
        let page: Arc<common::PageFn> = Arc::new(move |path: &str| {
            if path.starts_with("/metrics") || path.starts_with("/other/metrics") {
                (200, "text/plain; version=0.0.4".to_owned(), exporter_page(port2.get().copied().unwrap_or(0)))
            } else {
                (404, "text/plain".to_owned(), "not found\n".to_owned())
            }
        });
        let server = PageServer::start(page)?;
        let _ = port.set(server.port);
        exporters.push(server);
    }
    let node_port = free_port();
    let _node = Proc::spawn(
        "prometheus-node-exporter",
        std::process::Command::new("prometheus-node-exporter").args([
            format!("--web.listen-address=127.0.0.1:{node_port}"),
            // A stable series set: only collectors whose series do not come and go.
            "--collector.disable-defaults".to_owned(),
            "--collector.cpu".to_owned(),
            "--collector.meminfo".to_owned(),
            "--collector.loadavg".to_owned(),
            "--collector.uname".to_owned(),
        ]),
        &dir.path().join("node-exporter.log"),
    )?;
    let (a, b, c) = (exporters[0].address(), exporters[1].address(), exporters[2].address());
    let node = format!("127.0.0.1:{node_port}");
    let dead = format!("127.0.0.1:{}", free_port());

    // The targets live in their own directory, found through a glob.
    let sd_dir = dir.path().join("sd");
    std::fs::create_dir(&sd_dir)?;
    let sd_file = sd_dir.join("targets.yml");
    std::fs::write(&sd_file, targets_file(&a, &b, &c, &node, &dead, exporters[1].port))?;
    // Nodes, in JSON, for the apiserver-proxied jobs.
    let nodes_dir = dir.path().join("nodes");
    std::fs::create_dir(&nodes_dir)?;
    let nodes_file = nodes_dir.join("nodes.json");
    std::fs::write(&nodes_file, NODES_JSON)?;
    let apiserver = PageServer::start(Arc::new(apiserver_page))?;
    let config_path = dir.path().join("prometheus.yml");
    let write_config = |skip: &[&str]| {
        std::fs::write(
            &config_path,
            config(
                &sd_dir.join("*.yml").display().to_string(),
                // Relative: resolved against the config file's directory.
                "nodes/*.json",
                &apiserver.address(),
                skip,
            ),
        )
    };
    write_config(&[])?;

    let (prom_port, strata_port) = (free_port(), free_port());
    let prom_proc =
        start_prometheus(&config_path, &dir.path().join("prom-data"), prom_port, &dir.path().join("prom.log"))?;
    let strata_proc = start_strata_standalone(
        &config_path,
        &dir.path().join("strata-data"),
        strata_port,
        &dir.path().join("strata.log"),
    )?;
    let (prom, strata) = (Api::new(prom_port), Api::new(strata_port));
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    for (api, name, logf) in [(&prom, "prometheus", "prom.log"), (&strata, "strata", "strata.log")] {
        eventually(&format!("{name} ready"), Duration::from_secs(30), || async { api.ready().await.then_some(()) })
            .await
            .with_context(|| format!("{name} log:\n{}", log(logf)))?;
    }

    // 1. Targets: labels, URLs, health, intervals of active targets, and the
    //    number of dropped ones, against Prometheus; discovered labels against
    //    the file (2.42 overwrites its discoveredLabels in place with relabeled
    //    values — the slice-reuse bug Prometheus later fixed — so they are not
    //    comparable with it).
    let (view, data) = agreed_targets(&prom, &strata, "the same targets", |_| true).await?;
    let n_active: usize = view.active.values().map(BTreeSet::len).sum();
    assert!(
        n_active >= 10 && view.dropped >= 10,
        "the cases exercise both: {n_active} active, {} dropped",
        view.dropped
    );
    check_discovered(&data, &sd_file, &nodes_file)?;
    let ksd = view.active.get("kubernetes-service-endpoints").cloned().unwrap_or_default();
    assert!(
        ksd.iter().any(|r| r.contains(&format!("url=\"http://{a}/metrics?format=prometheus\""))),
        "the param annotation became a URL parameter: {ksd:#?}"
    );
    assert!(
        ksd.iter().any(|r| r.contains(&format!("url=\"http://{b}/metrics?format=text\""))),
        "the port annotation rewrote the address: {ksd:#?}"
    );

    // 2. Series sets (metric relabeling included).
    let counts = agreed_series(&prom, &strata, &[]).await?;
    assert!(counts.values().all(|n| *n > 0), "{counts:?}");
    eprintln!(
        "agreed with Prometheus: {n_active} active and {} dropped targets; series per job: {counts:?}",
        view.dropped
    );

    // 2a. What every target's scrapes counted: up, samples scraped and left
    //     after metric relabeling (failed scrapes included: sample and label
    //     limits).
    let report = r#"{__name__=~"up|scrape_samples_scraped|scrape_samples_post_metric_relabeling"}"#;
    until_agreed("the same report series values", Duration::from_secs(30), || async {
        let p = values_of(&prom, report).await.map_err(|e| format!("Prometheus: {e}"))?;
        let s = values_of(&strata, report).await.map_err(|e| format!("Strata: {e}"))?;
        if p != s || p.is_empty() {
            return Err(diff("report series", &p, &s));
        }
        Ok(())
    })
    .await?;

    // 2b. Metric metadata per target, for two jobs (node exporter included).
    for job in ["replace", "kubernetes-cadvisor"] {
        let sel = format!("{{job=\"{job}\"}}");
        let (prom, strata) = (&prom, &strata);
        until_agreed(&format!("metadata of job {job}"), Duration::from_secs(20), || {
            let sel = sel.clone();
            async move {
                let (p, s) = (metadata_of(prom, &sel).await?, metadata_of(strata, &sel).await?);
                if p != s || p.is_empty() {
                    return Err(diff(&format!("metadata of {sel}"), &p, &s));
                }
                Ok(())
            }
        })
        .await?;
    }

    // 3. Discovery follows the file live: one target goes, a new group comes.
    std::fs::write(
        &sd_file,
        targets_file(&a, &b, &c, &node, &dead, exporters[1].port)
            .replace(&format!("- targets: ['{node}']"), "- targets: []")
            + &format!(
                "- targets: ['{c}']\n  labels:\n    __meta_kubernetes_namespace: monitoring\n    __meta_kubernetes_service_name: late\n    __meta_kubernetes_service_annotation_prometheus_io_scrape: \"true\"\n"
            ),
    )?;
    let (after, data) = agreed_targets(&prom, &strata, "both following the file change", |v| {
        let s = format!("{v:?}");
        s.contains("late") && !s.contains(&node)
    })
    .await?;
    assert_ne!(after, view);
    check_discovered(&data, &sd_file, &nodes_file)?;
    agreed_series(&prom, &strata, &[]).await?;

    // 4. SIGHUP with two jobs removed: both reload, the pools go.
    let removed = ["hashmod", "equal"];
    write_config(&removed)?;
    for p in [&prom_proc, &strata_proc] {
        let ok = std::process::Command::new("kill").args(["-HUP", &p.child.id().to_string()]).status()?.success();
        ensure!(ok, "kill -HUP {}", p.name);
    }
    agreed_targets(&prom, &strata, "both reloading the config", |v| removed.iter().all(|r| !v.active.contains_key(*r)))
        .await?;
    agreed_series(&prom, &strata, &removed).await?;
    // The loops of removed jobs write staleness markers when they stop, after
    // any scrape in flight: wait for them (bounded) rather than race them.
    for job in removed {
        eventually(&format!("the series of removed job {job} to be stale"), Duration::from_secs(20), || async {
            series_of(&strata, job).await.ok().filter(BTreeSet::is_empty)
        })
        .await?;
    }
    Ok(())
}
