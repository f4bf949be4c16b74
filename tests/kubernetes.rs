//! End to end: the real `strata standalone` discovers pods and endpoints from
//! the fake Kubernetes API server (`strata-fake-apiserver`, in this test
//! process, over TCP), once through `api_server` with `authorization` and
//! once through a `kubeconfig_file`; the discovered pods point at test HTTP
//! servers. `/api/v1/targets` shows Prometheus' meta labels and the
//! relabeled labels, the samples are queryable, and targets follow pods
//! that change and disappear. A ServiceMonitor and a PodMonitor applied
//! live become jobs named and labeled as the Prometheus Operator does.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use common::{Api, PageServer, eventually, free_port, start_strata_standalone};
use serde_json::{Value, json};
use strata_fake_apiserver::FakeApiServer;

const WAIT: Duration = Duration::from_secs(30);

fn page(value: u32) -> Arc<common::PageFn> {
    Arc::new(move |_path: &str| {
        (200, "text/plain; version=0.0.4".to_owned(), format!("# TYPE k8s_test_value gauge\nk8s_test_value {value}\n"))
    })
}

fn pod(name: &str, port: u16, scrape: bool, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "apps", "uid": format!("uid-{name}"),
            "labels": {"app.kubernetes.io/name": app},
            "annotations": {"prometheus.io/scrape": if scrape { "true" } else { "false" }},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-rs"),
                                 "uid": "rs", "controller": true}],
        },
        "spec": {"nodeName": "node-1", "containers": [
            {"name": "app", "image": "example/app:1", "ports": [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]}
        ]},
        "status": {"podIP": "127.0.0.1", "hostIP": "10.0.0.1", "phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

fn pool_targets(v: &Value, pool: &str) -> Vec<Value> {
    v["data"]["activeTargets"]
        .as_array()
        .map(|a| a.iter().filter(|t| t["scrapePool"] == pool).cloned().collect())
        .unwrap_or_default()
}

fn active_targets(v: &Value, job: &str) -> Vec<Value> {
    v["data"]["activeTargets"]
        .as_array()
        .map(|a| a.iter().filter(|t| t["labels"]["job"] == job).cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_scrapes_pods_and_endpoints_discovered_from_the_kubernetes_api() -> Result<()> {
    let server = FakeApiServer::start().await?;
    server.require_authorization(Some("Bearer k8s-token"));
    let a = PageServer::start(page(11))?;
    let b = PageServer::start(page(22))?;
    let c = PageServer::start(page(33))?;
    server.apply(pod("a", a.port, true, "web")).map_err(anyhow::Error::msg)?;
    server.apply(pod("b", b.port, true, "api")).map_err(anyhow::Error::msg)?;
    server.apply(pod("c", c.port, false, "batch")).map_err(anyhow::Error::msg)?;
    server
        .apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": "apps", "labels": {"team": "core"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "ports": [{"name": "metrics", "port": 80}]},
        }))
        .map_err(anyhow::Error::msg)?;
    server
        .apply(json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "api", "namespace": "apps"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "name": "b", "namespace": "apps"}}],
                         "ports": [{"name": "metrics", "port": b.port, "protocol": "TCP"}]}],
        }))
        .map_err(anyhow::Error::msg)?;

    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, Some("k8s-token"), "apps")?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            r#"global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
- job_name: kubernetes-pods
  kubernetes_sd_configs:
  - role: pod
    api_server: {url}
    authorization: {{credentials: k8s-token}}
    namespaces: {{names: [apps]}}
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    action: keep
    regex: "true"
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
  - action: labelmap
    regex: __meta_kubernetes_pod_label_app_kubernetes_io_(.+)
- job_name: kubernetes-service-endpoints
  kubernetes_sd_configs:
  - role: endpoints
    kubeconfig_file: kubeconfig
    namespaces: {{own_namespace: true}}
  relabel_configs:
  - source_labels: [__meta_kubernetes_service_name]
    target_label: service
  - source_labels: [__meta_kubernetes_service_label_team]
    target_label: team
prometheus_operator:
  api_server: {url}
  authorization: {{credentials: k8s-token}}
  serviceMonitorSelector: {{matchLabels: {{release: strata}}}}
  serviceMonitorNamespaceSelector: {{matchLabels: {{monitoring: enabled}}}}
  podMonitorSelector: {{}}
  podMonitorNamespaceSelector: {{}}
"#,
            url = server.url()
        ),
    )?;
    let port = free_port();
    let _strata = start_strata_standalone(&config, &dir.path().join("data"), port, &dir.path().join("strata.log"))?;
    let api = Api::new(port);
    let log = dir.path().join("strata.log");
    let targets = eventually("two active pod targets and one endpoints target", WAIT, || {
        let api = api.clone();
        async move {
            let (_, v) = api.get("/api/v1/targets", &[]).await.ok()?;
            let pods = active_targets(&v, "kubernetes-pods");
            let eps = active_targets(&v, "kubernetes-service-endpoints");
            (pods.len() == 2 && eps.len() == 1 && pods.iter().chain(&eps).all(|t| t["health"] == "up")).then_some(v)
        }
    })
    .await
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    let pods = active_targets(&targets, "kubernetes-pods");
    let ta = pods.iter().find(|t| t["labels"]["pod"] == "a").context("target of pod a")?;
    assert_eq!(
        ta["labels"],
        json!({"instance": a.address(), "job": "kubernetes-pods", "namespace": "apps", "pod": "a", "name": "web"})
    );
    let d = &ta["discoveredLabels"];
    assert_eq!(d["__address__"], a.address());
    assert_eq!(d["__meta_kubernetes_pod_name"], "a");
    assert_eq!(d["__meta_kubernetes_pod_uid"], "uid-a");
    assert_eq!(d["__meta_kubernetes_pod_controller_kind"], "ReplicaSet");
    assert_eq!(d["__meta_kubernetes_pod_controller_name"], "web-rs");
    assert_eq!(d["__meta_kubernetes_pod_container_port_name"], "metrics");
    assert_eq!(d["__meta_kubernetes_pod_container_init"], "false");
    assert_eq!(d["__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name"], "true");
    assert_eq!(d["__meta_kubernetes_pod_ready"], "true");
    assert_eq!(d["__meta_kubernetes_pod_phase"], "Running");
    let dropped = targets["data"]["droppedTargets"].as_array().context("dropped targets")?;
    assert!(
        dropped.iter().any(|t| t["discoveredLabels"]["__meta_kubernetes_pod_name"] == "c"),
        "pod c (not annotated) is dropped: {dropped:?}"
    );
    let eps = active_targets(&targets, "kubernetes-service-endpoints");
    assert_eq!(eps[0]["labels"]["service"], "api");
    assert_eq!(eps[0]["labels"]["team"], "core");
    assert_eq!(eps[0]["discoveredLabels"]["__meta_kubernetes_pod_name"], "b");

    // The samples are queryable with the relabeled labels.
    let value = eventually("k8s_test_value of pod a", WAIT, || {
        let api = api.clone();
        async move { api.scalar_of(r#"sum(k8s_test_value{job="kubernetes-pods",pod="a",namespace="apps"})"#).await }
    })
    .await?;
    assert_eq!(value, 11.0);
    let value = eventually("k8s_test_value of service api", WAIT, || {
        let api = api.clone();
        async move { api.scalar_of(r#"sum(k8s_test_value{job="kubernetes-service-endpoints",service="api"})"#).await }
    })
    .await?;
    assert_eq!(value, 22.0);

    // Pod c becomes scrapeable, pod a goes away: the targets follow.
    server.apply(pod("c", c.port, true, "batch")).map_err(anyhow::Error::msg)?;
    assert!(server.delete("v1", "Pod", "apps", "a"));
    eventually("targets of pods b and c only", WAIT, || {
        let api = api.clone();
        async move {
            let (_, v) = api.get("/api/v1/targets", &[]).await.ok()?;
            let mut names: Vec<String> = active_targets(&v, "kubernetes-pods")
                .iter()
                .filter_map(|t| t["labels"]["pod"].as_str().map(str::to_owned))
                .collect();
            names.sort();
            (names == ["b", "c"]).then_some(())
        }
    })
    .await?;
    let value = eventually("k8s_test_value of pod c", WAIT, || {
        let api = api.clone();
        async move { api.scalar_of(r#"sum(k8s_test_value{pod="c"})"#).await }
    })
    .await?;
    assert_eq!(value, 33.0);

    // A ServiceMonitor applied live becomes a scrape job named as the
    // Operator names it, with the Operator's target labels; one in a
    // namespace the namespace selector does not select is ignored.
    server
        .apply(json!({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "apps", "labels": {"monitoring": "enabled"}}}))
        .map_err(anyhow::Error::msg)?;
    let service_monitor = |ns: &str| {
        json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "api-monitor", "namespace": ns, "labels": {"release": "strata"}},
            "spec": {
                "selector": {"matchLabels": {"team": "core"}},
                "endpoints": [{"port": "metrics", "interval": "1s",
                               "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "k8s_test_value",
                                                       "targetLabel": "monitored", "replacement": "yes"}]}],
                "targetLabels": ["team"],
            },
        })
    };
    server.apply(service_monitor("apps")).map_err(anyhow::Error::msg)?;
    server.apply(service_monitor("elsewhere")).map_err(anyhow::Error::msg)?;
    let v = eventually("the ServiceMonitor's target", WAIT, || {
        let api = api.clone();
        async move {
            let (_, v) = api.get("/api/v1/targets", &[]).await.ok()?;
            let t = pool_targets(&v, "serviceMonitor/apps/api-monitor/0");
            (t.len() == 1 && t[0]["health"] == "up").then_some(v)
        }
    })
    .await
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    let t = &pool_targets(&v, "serviceMonitor/apps/api-monitor/0")[0];
    assert_eq!(
        t["labels"],
        json!({"container": "app", "endpoint": "metrics", "instance": b.address(), "job": "api",
               "namespace": "apps", "pod": "b", "service": "api", "team": "core"})
    );
    assert!(pool_targets(&v, "serviceMonitor/elsewhere/api-monitor/0").is_empty(), "namespace not selected");
    let value = eventually("samples of the ServiceMonitor job", WAIT, || {
        let api = api.clone();
        async move { api.scalar_of(r#"sum(k8s_test_value{job="api",endpoint="metrics",monitored="yes"})"#).await }
    })
    .await?;
    assert_eq!(value, 22.0);

    // A PodMonitor: job `<namespace>/<name>`, its port filter, live removal.
    server
        .apply(json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": {"name": "batch", "namespace": "apps"},
            "spec": {"selector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In", "values": ["batch"]}]},
                     "podMetricsEndpoints": [{"port": "metrics", "interval": "1s"}, {"port": "nope"}]},
        }))
        .map_err(anyhow::Error::msg)?;
    let v = eventually("the PodMonitor's target", WAIT, || {
        let api = api.clone();
        async move {
            let (_, v) = api.get("/api/v1/targets", &[]).await.ok()?;
            (pool_targets(&v, "podMonitor/apps/batch/0").len() == 1).then_some(v)
        }
    })
    .await?;
    let t = &pool_targets(&v, "podMonitor/apps/batch/0")[0];
    assert_eq!(t["labels"]["job"], "apps/batch");
    assert_eq!(t["labels"]["pod"], "c");
    assert_eq!(t["labels"]["endpoint"], "metrics");
    assert!(pool_targets(&v, "podMonitor/apps/batch/1").is_empty(), "no container port named nope");
    assert!(server.delete("monitoring.coreos.com/v1", "PodMonitor", "apps", "batch"));
    eventually("the PodMonitor's job gone", WAIT, || {
        let api = api.clone();
        async move {
            let (_, v) = api.get("/api/v1/targets", &[]).await.ok()?;
            let pools: Vec<&str> =
                v["data"]["activeTargets"].as_array()?.iter().filter_map(|t| t["scrapePool"].as_str()).collect();
            (!pools.iter().any(|p| p.starts_with("podMonitor/"))).then_some(())
        }
    })
    .await?;
    Ok(())
}
