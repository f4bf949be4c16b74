//! Prometheus Operator `ServiceMonitor` and `PodMonitor` objects
//! (monitoring.coreos.com/v1), read directly from the Kubernetes API and
//! turned into scrape jobs the way the Operator's config generator
//! (`pkg/prometheus/promcfg.go`) writes them: job names
//! `serviceMonitor/<ns>/<name>/<i>` and `podMonitor/<ns>/<name>/<i>`, a
//! `kubernetes_sd_configs` entry (role `endpoints`, `endpointslice` or `pod`)
//! in the namespaces of `namespaceSelector`, and the Operator's relabelings
//! for `selector`, `port`/`targetPort`, `jobLabel`, `targetLabels`,
//! `podTargetLabels`, the running-pod filter and the user's `relabelings`.
//!
//! Which monitors are used is the `prometheus_operator` section of the
//! config (see [`RawOperatorConfig`]), named after the `Prometheus`
//! resource's `serviceMonitorSelector`, `serviceMonitorNamespaceSelector`,
//! `podMonitorSelector`, `podMonitorNamespaceSelector`: a selector that is
//! absent selects nothing, `{}` selects everything; a namespace selector
//! that is absent selects the collector's own namespace. A
//! [`MonitorController`] watches the monitors (and namespaces) and sends
//! the whole generated job list whenever it changes; the scrape manager
//! applies it live next to the config file's jobs.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::SelectAll;
use k8s_openapi::api::core::v1::{Namespace, Secret as K8sSecret};
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use serde_saphyr::Spanned;
use strata_common::PromDuration;
use tokio::sync::{mpsc, watch};

use super::config::{ApiAccess, KubernetesSdConfig, Role, validate_access};
use super::sanitize_label_name;
use crate::config::{
    HttpClientFields, Problem, RawAuthorization, RawBasicAuth, RawTlsConfig, ScrapeAuth, ScrapeJob, Secret, TlsConfig,
};
use crate::relabel::{RawRelabelConfig, RelabelConfig};

/// A Kubernetes label selector (`matchLabels`, `matchExpressions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must have these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`.
    #[serde(default)]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector (unknown operators never match).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let v = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => v.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => !v.is_some_and(|v| e.values.contains(v)),
                    "Exists" => v.is_some(),
                    "DoesNotExist" => v.is_none(),
                    _ => false,
                }
            })
    }

    fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

/// The `prometheus_operator` section as written (a Strata extension of
/// `prometheus.yml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOperatorConfig {
    /// The API server URL; absent: in-cluster config (or `kubeconfig_file`).
    pub api_server: Option<Spanned<String>>,
    /// A kubeconfig file to read the server and credentials from.
    pub kubeconfig_file: Option<Spanned<String>>,
    /// HTTP basic authentication to the API server.
    pub basic_auth: Option<Spanned<RawBasicAuth>>,
    /// The `Authorization` header sent to the API server.
    pub authorization: Option<Spanned<RawAuthorization>>,
    /// Deprecated form of `authorization.credentials`.
    pub bearer_token: Option<Spanned<String>>,
    /// Deprecated form of `authorization.credentials_file`.
    pub bearer_token_file: Option<Spanned<String>>,
    /// TLS settings for an `https` API server.
    pub tls_config: Option<Spanned<RawTlsConfig>>,
    /// ServiceMonitors to use (absent: none; `{}`: all).
    #[serde(rename = "serviceMonitorSelector")]
    pub service_monitor_selector: Option<LabelSelector>,
    /// Namespaces to take ServiceMonitors from (absent: the own namespace; `{}`: all).
    #[serde(rename = "serviceMonitorNamespaceSelector")]
    pub service_monitor_namespace_selector: Option<LabelSelector>,
    /// PodMonitors to use (absent: none; `{}`: all).
    #[serde(rename = "podMonitorSelector")]
    pub pod_monitor_selector: Option<LabelSelector>,
    /// Namespaces to take PodMonitors from (absent: the own namespace; `{}`: all).
    #[serde(rename = "podMonitorNamespaceSelector")]
    pub pod_monitor_namespace_selector: Option<LabelSelector>,
    /// `Endpoints` (default) or `EndpointSlice`: the discovery role of ServiceMonitor jobs.
    #[serde(rename = "serviceDiscoveryRole")]
    pub service_discovery_role: Option<Spanned<String>>,
}

/// The validated `prometheus_operator` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorConfig {
    /// How to reach the API server.
    pub access: ApiAccess,
    /// ServiceMonitor selector.
    pub service_monitor_selector: Option<LabelSelector>,
    /// ServiceMonitor namespace selector.
    pub service_monitor_namespace_selector: Option<LabelSelector>,
    /// PodMonitor selector.
    pub pod_monitor_selector: Option<LabelSelector>,
    /// PodMonitor namespace selector.
    pub pod_monitor_namespace_selector: Option<LabelSelector>,
    /// `endpoints` or `endpointslice`.
    pub endpoint_role: Role,
    /// `global.scrape_interval`.
    pub interval: Duration,
    /// `global.scrape_timeout`.
    pub timeout: Duration,
}

impl OperatorConfig {
    /// Makes relative file paths relative to `dir` (the config file's directory).
    pub fn resolve_paths(&mut self, dir: &std::path::Path) {
        let mut k = KubernetesSdConfig {
            role: Role::Pod,
            access: self.access.clone(),
            own_namespace: false,
            namespaces: Vec::new(),
            selectors: Vec::new(),
            attach_node: false,
        };
        k.resolve_paths(dir);
        self.access = k.access;
    }
}

/// Validates the section; `interval` and `timeout` are the global defaults.
pub fn validate(
    raw: &Spanned<RawOperatorConfig>,
    interval: Duration,
    timeout: Duration,
) -> Result<OperatorConfig, Vec<Problem>> {
    let mut problems = Vec::new();
    let c = &raw.value;
    let fields = HttpClientFields {
        basic_auth: c.basic_auth.as_ref(),
        authorization: c.authorization.as_ref(),
        bearer_token: c.bearer_token.as_ref(),
        bearer_token_file: c.bearer_token_file.as_ref(),
        tls_config: c.tls_config.as_ref(),
    };
    let whole = (raw.referenced.line(), raw.referenced.column());
    let access = validate_access(c.api_server.as_ref(), c.kubeconfig_file.as_ref(), &fields, whole, &mut problems);
    let endpoint_role = match &c.service_discovery_role {
        None => Role::Endpoints,
        Some(r) => match r.value.as_str() {
            "Endpoints" => Role::Endpoints,
            "EndpointSlice" => Role::EndpointSlice,
            other => {
                problems.push(Problem {
                    line: r.referenced.line(),
                    column: r.referenced.column(),
                    message: format!("serviceDiscoveryRole {other:?}: must be Endpoints or EndpointSlice"),
                });
                Role::Endpoints
            }
        },
    };
    for s in [
        &c.service_monitor_selector,
        &c.service_monitor_namespace_selector,
        &c.pod_monitor_selector,
        &c.pod_monitor_namespace_selector,
    ]
    .into_iter()
    .flatten()
    {
        for e in &s.match_expressions {
            if !matches!(e.operator.as_str(), "In" | "NotIn" | "Exists" | "DoesNotExist") {
                problems.push(Problem {
                    line: whole.0,
                    column: whole.1,
                    message: format!("unknown label selector operator {:?} for key {:?}", e.operator, e.key),
                });
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(OperatorConfig {
        access,
        service_monitor_selector: c.service_monitor_selector.clone(),
        service_monitor_namespace_selector: c.service_monitor_namespace_selector.clone(),
        pod_monitor_selector: c.pod_monitor_selector.clone(),
        pod_monitor_namespace_selector: c.pod_monitor_namespace_selector.clone(),
        endpoint_role,
        interval,
        timeout,
    })
}

// ------------------------------------------------------------ the CRDs

/// A `namespaceSelector` of a monitor.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// All namespaces.
    #[serde(default)]
    pub any: bool,
    /// These namespaces.
    #[serde(default)]
    pub match_names: Vec<String>,
}

/// A reference to a key of a Secret in the monitor's namespace.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SecretKeySelector {
    /// The Secret.
    #[serde(default)]
    pub name: String,
    /// The key.
    #[serde(default)]
    pub key: String,
}

/// `basicAuth` of an endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BasicAuth {
    /// The user name's Secret key.
    pub username: Option<SecretKeySelector>,
    /// The password's Secret key.
    pub password: Option<SecretKeySelector>,
}

/// `authorization` of an endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Authorization {
    /// The scheme (default `Bearer`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The credentials' Secret key.
    pub credentials: Option<SecretKeySelector>,
}

/// `tlsConfig` of an endpoint (file paths; Secret/ConfigMap material is not read).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTls {
    /// CA file.
    pub ca_file: Option<String>,
    /// Client certificate file.
    pub cert_file: Option<String>,
    /// Client key file.
    pub key_file: Option<String>,
    /// Name checked against the server certificate.
    pub server_name: Option<String>,
    /// Accept any certificate.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A relabeling as the CRDs write it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrdRelabelConfig {
    /// Source labels.
    pub source_labels: Option<Vec<String>>,
    /// Separator.
    pub separator: Option<String>,
    /// Target label.
    pub target_label: Option<String>,
    /// Regex.
    pub regex: Option<String>,
    /// Modulus.
    pub modulus: Option<u64>,
    /// Replacement.
    pub replacement: Option<String>,
    /// Action (any case).
    pub action: Option<String>,
}

/// A port given by name or number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A name.
    Str(String),
}

impl IntOrString {
    fn as_string(&self) -> String {
        match self {
            Self::Int(i) => i.to_string(),
            Self::Str(s) => s.clone(),
        }
    }
}

/// One `endpoints` entry of a ServiceMonitor, or `podMetricsEndpoints` entry of a PodMonitor.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorEndpoint {
    /// Port name.
    pub port: Option<String>,
    /// Target port (name or number).
    pub target_port: Option<IntOrString>,
    /// HTTP path.
    pub path: Option<String>,
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// URL parameters.
    pub params: Option<BTreeMap<String, Vec<String>>>,
    /// Scrape interval.
    pub interval: Option<String>,
    /// Scrape timeout.
    pub scrape_timeout: Option<String>,
    /// TLS settings.
    pub tls_config: Option<EndpointTls>,
    /// A token file.
    pub bearer_token_file: Option<String>,
    /// A token Secret key.
    pub bearer_token_secret: Option<SecretKeySelector>,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// `Authorization` header.
    pub authorization: Option<Authorization>,
    /// Keep the page's labels on clashes.
    #[serde(default)]
    pub honor_labels: bool,
    /// Use the page's timestamps.
    pub honor_timestamps: Option<bool>,
    /// Drop targets of pods that have finished (default true).
    pub filter_running: Option<bool>,
    /// Target relabelings.
    #[serde(default)]
    pub relabelings: Vec<CrdRelabelConfig>,
    /// Metric relabelings.
    #[serde(default)]
    pub metric_relabelings: Vec<CrdRelabelConfig>,
}

/// `attachMetadata`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AttachMetadata {
    /// Attach node metadata.
    #[serde(default)]
    pub node: bool,
}

/// The spec of a ServiceMonitor or PodMonitor (the fields both use).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorSpec {
    /// Label whose value becomes `job`.
    pub job_label: Option<String>,
    /// Service labels copied onto targets (ServiceMonitor).
    #[serde(default)]
    pub target_labels: Vec<String>,
    /// Pod labels copied onto targets.
    #[serde(default)]
    pub pod_target_labels: Vec<String>,
    /// ServiceMonitor endpoints.
    #[serde(default)]
    pub endpoints: Vec<MonitorEndpoint>,
    /// PodMonitor endpoints.
    #[serde(default)]
    pub pod_metrics_endpoints: Vec<MonitorEndpoint>,
    /// Services or pods selected.
    #[serde(default)]
    pub selector: LabelSelector,
    /// Namespaces of the services or pods.
    #[serde(default)]
    pub namespace_selector: NamespaceSelector,
    /// Sample limit.
    pub sample_limit: Option<u64>,
    /// Label limit.
    pub label_limit: Option<u64>,
    /// Label name length limit.
    pub label_name_length_limit: Option<u64>,
    /// Label value length limit.
    pub label_value_length_limit: Option<u64>,
    /// Node metadata.
    pub attach_metadata: Option<AttachMetadata>,
}

/// Which CRD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MonitorKind {
    /// `ServiceMonitor`.
    Service,
    /// `PodMonitor`.
    Pod,
}

/// One monitor object.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// Which CRD.
    pub kind: MonitorKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its spec.
    pub spec: MonitorSpec,
}

/// Secret values the generated jobs need, by (namespace, name, key).
pub type Secrets = BTreeMap<(String, String, String), String>;

fn raw_rule(
    source: &[&str],
    separator: Option<&str>,
    regex: Option<&str>,
    target: Option<&str>,
    replacement: Option<&str>,
    action: Option<&str>,
) -> RawRelabelConfig {
    RawRelabelConfig {
        source_labels: (!source.is_empty()).then(|| source.iter().map(|s| (*s).to_owned()).collect()),
        separator: separator.map(str::to_owned),
        regex: regex.map(str::to_owned),
        modulus: None,
        target_label: target.map(str::to_owned),
        replacement: replacement.map(str::to_owned),
        action: action.map(str::to_owned),
    }
}

fn keep(source: &[&str], regex: &str) -> RawRelabelConfig {
    raw_rule(source, None, Some(regex), None, None, Some("keep"))
}

fn drop_rule(source: &[&str], regex: &str) -> RawRelabelConfig {
    raw_rule(source, None, Some(regex), None, None, Some("drop"))
}

fn copy(source: &str, target: &str) -> RawRelabelConfig {
    raw_rule(&[source], None, None, Some(target), None, None)
}

/// The Operator's selector relabelings over `<prefix>_label_*` /
/// `<prefix>_labelpresent_*` (prefix `__meta_kubernetes_service` or `__meta_kubernetes_pod`).
fn selector_rules(sel: &LabelSelector, prefix: &str, out: &mut Vec<RawRelabelConfig>) {
    for (k, v) in &sel.match_labels {
        let k = sanitize_label_name(k);
        out.push(keep(
            &[&format!("{prefix}_label_{k}"), &format!("{prefix}_labelpresent_{k}")],
            &format!("({v});true"),
        ));
    }
    for e in &sel.match_expressions {
        let k = sanitize_label_name(&e.key);
        let label = format!("{prefix}_label_{k}");
        let present = format!("{prefix}_labelpresent_{k}");
        let values = format!("({});true", e.values.join("|"));
        match e.operator.as_str() {
            "In" => out.push(keep(&[&label, &present], &values)),
            "NotIn" => out.push(drop_rule(&[&label, &present], &values)),
            "Exists" => out.push(keep(&[&present], "true")),
            "DoesNotExist" => out.push(drop_rule(&[&present], "true")),
            _ => {}
        }
    }
}

fn crd_rules(rules: &[CrdRelabelConfig]) -> Vec<RawRelabelConfig> {
    rules
        .iter()
        .map(|r| RawRelabelConfig {
            source_labels: r.source_labels.clone().filter(|s| !s.is_empty()),
            separator: r.separator.clone().filter(|s| !s.is_empty()),
            regex: r.regex.clone().filter(|s| !s.is_empty()),
            modulus: r.modulus.filter(|m| *m != 0),
            target_label: r.target_label.clone().filter(|s| !s.is_empty()),
            replacement: r.replacement.clone(),
            action: r.action.as_ref().map(|a| a.to_lowercase()),
        })
        .collect()
}

/// The Operator's relabelings of endpoint `ep` of `m` (before the user's own).
pub fn operator_relabelings(m: &Monitor, ep: &MonitorEndpoint, endpoint_role: Role) -> Vec<RawRelabelConfig> {
    let mut r = vec![copy("job", "__tmp_prometheus_job_name")];
    let running_filter = || drop_rule(&["__meta_kubernetes_pod_phase"], "(Failed|Succeeded)");
    let slice = endpoint_role == Role::EndpointSlice;
    match m.kind {
        MonitorKind::Service => {
            selector_rules(&m.spec.selector, "__meta_kubernetes_service", &mut r);
            if let Some(port) = ep.port.as_deref().filter(|p| !p.is_empty()) {
                let src = if slice {
                    "__meta_kubernetes_endpointslice_port_name"
                } else {
                    "__meta_kubernetes_endpoint_port_name"
                };
                r.push(keep(&[src], port));
            } else if let Some(tp) = &ep.target_port {
                match tp {
                    IntOrString::Str(s) if !s.is_empty() => {
                        r.push(keep(&["__meta_kubernetes_pod_container_port_name"], s))
                    }
                    IntOrString::Int(i) if *i != 0 => {
                        r.push(keep(&["__meta_kubernetes_pod_container_port_number"], &i.to_string()));
                    }
                    _ => {}
                }
            }
            let (kind, name) = if slice {
                (
                    "__meta_kubernetes_endpointslice_address_target_kind",
                    "__meta_kubernetes_endpointslice_address_target_name",
                )
            } else {
                ("__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name")
            };
            r.push(raw_rule(&[kind, name], Some(";"), Some("Node;(.*)"), Some("node"), Some("${1}"), None));
            r.push(raw_rule(&[kind, name], Some(";"), Some("Pod;(.*)"), Some("pod"), Some("${1}"), None));
            r.push(copy("__meta_kubernetes_namespace", "namespace"));
            r.push(copy("__meta_kubernetes_service_name", "service"));
            r.push(copy("__meta_kubernetes_pod_name", "pod"));
            r.push(copy("__meta_kubernetes_pod_container_name", "container"));
            if ep.filter_running.unwrap_or(true) {
                r.push(running_filter());
            }
            for l in &m.spec.target_labels {
                let l = sanitize_label_name(l);
                r.push(raw_rule(
                    &[&format!("__meta_kubernetes_service_label_{l}")],
                    None,
                    Some("(.+)"),
                    Some(&l),
                    Some("${1}"),
                    None,
                ));
            }
            for l in &m.spec.pod_target_labels {
                let l = sanitize_label_name(l);
                r.push(raw_rule(
                    &[&format!("__meta_kubernetes_pod_label_{l}")],
                    None,
                    Some("(.+)"),
                    Some(&l),
                    Some("${1}"),
                    None,
                ));
            }
            r.push(raw_rule(&["__meta_kubernetes_service_name"], None, None, Some("job"), Some("${1}"), None));
            if let Some(j) = m.spec.job_label.as_deref().filter(|j| !j.is_empty()) {
                let j = sanitize_label_name(j);
                r.push(raw_rule(
                    &[&format!("__meta_kubernetes_service_label_{j}")],
                    None,
                    Some("(.+)"),
                    Some("job"),
                    Some("${1}"),
                    None,
                ));
            }
        }
        MonitorKind::Pod => {
            if ep.filter_running.unwrap_or(true) {
                r.push(running_filter());
            }
            selector_rules(&m.spec.selector, "__meta_kubernetes_pod", &mut r);
            if let Some(port) = ep.port.as_deref().filter(|p| !p.is_empty()) {
                r.push(keep(&["__meta_kubernetes_pod_container_port_name"], port));
            } else if let Some(tp) = &ep.target_port {
                match tp {
                    IntOrString::Str(s) if !s.is_empty() => {
                        r.push(keep(&["__meta_kubernetes_pod_container_port_name"], s))
                    }
                    IntOrString::Int(i) if *i != 0 => {
                        r.push(keep(&["__meta_kubernetes_pod_container_port_number"], &i.to_string()));
                    }
                    _ => {}
                }
            }
            r.push(copy("__meta_kubernetes_namespace", "namespace"));
            r.push(copy("__meta_kubernetes_pod_container_name", "container"));
            r.push(copy("__meta_kubernetes_pod_name", "pod"));
            for l in &m.spec.pod_target_labels {
                let l = sanitize_label_name(l);
                r.push(raw_rule(
                    &[&format!("__meta_kubernetes_pod_label_{l}")],
                    None,
                    Some("(.+)"),
                    Some(&l),
                    Some("${1}"),
                    None,
                ));
            }
            r.push(raw_rule(&[], None, None, Some("job"), Some(&format!("{}/{}", m.namespace, m.name)), None));
            if let Some(j) = m.spec.job_label.as_deref().filter(|j| !j.is_empty()) {
                let j = sanitize_label_name(j);
                r.push(raw_rule(
                    &[&format!("__meta_kubernetes_pod_label_{j}")],
                    None,
                    Some("(.+)"),
                    Some("job"),
                    Some("${1}"),
                    None,
                ));
            }
        }
    }
    if let Some(port) = ep.port.as_deref().filter(|p| !p.is_empty()) {
        r.push(raw_rule(&[], None, None, Some("endpoint"), Some(port), None));
    } else if let Some(tp) = ep.target_port.as_ref().map(IntOrString::as_string).filter(|s| !s.is_empty()) {
        r.push(raw_rule(&[], None, None, Some("endpoint"), Some(&tp), None));
    }
    r.extend(crd_rules(&ep.relabelings));
    r
}

fn validate_rules(raw: &[RawRelabelConfig]) -> Result<Vec<RelabelConfig>, String> {
    raw.iter().map(RawRelabelConfig::validate).collect()
}

fn parse_duration(s: Option<&str>, what: &str) -> Result<Option<Duration>, String> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse::<PromDuration>().map(|d| Some(d.0)).map_err(|e| format!("{what} {s:?}: {e}")),
    }
}

/// The scrape job of endpoint `i` of `m`; `secrets` holds the values of the
/// Secret keys it references (missing ones are errors).
pub fn endpoint_job(
    m: &Monitor,
    i: usize,
    ep: &MonitorEndpoint,
    cfg: &OperatorConfig,
    secrets: &Secrets,
) -> Result<ScrapeJob, String> {
    let prefix = match m.kind {
        MonitorKind::Service => "serviceMonitor",
        MonitorKind::Pod => "podMonitor",
    };
    let job_name = format!("{prefix}/{}/{}/{i}", m.namespace, m.name);
    let interval = parse_duration(ep.interval.as_deref(), "interval")?.unwrap_or(cfg.interval);
    let timeout = parse_duration(ep.scrape_timeout.as_deref(), "scrapeTimeout")?.unwrap_or(cfg.timeout.min(interval));
    if timeout > interval {
        return Err(format!("scrapeTimeout {timeout:?} is greater than interval {interval:?}"));
    }
    if interval.is_zero() {
        return Err("interval must be greater than 0".into());
    }
    let mut job = ScrapeJob::new(job_name, interval, timeout);
    if let Some(p) = ep.path.as_deref().filter(|p| !p.is_empty()) {
        if !p.starts_with('/') {
            return Err(format!("path {p:?} must start with /"));
        }
        job.metrics_path = p.to_owned();
    }
    if let Some(s) = ep.scheme.as_deref().filter(|s| !s.is_empty()) {
        if s != "http" && s != "https" {
            return Err(format!("scheme {s:?}: must be http or https"));
        }
        s.clone_into(&mut job.scheme);
    }
    if let Some(p) = &ep.params {
        job.params = p.clone();
    }
    job.honor_labels = ep.honor_labels;
    job.honor_timestamps = ep.honor_timestamps.unwrap_or(true);
    job.sample_limit = m.spec.sample_limit.unwrap_or(0);
    job.label_limit = m.spec.label_limit.unwrap_or(0);
    job.label_name_length_limit = m.spec.label_name_length_limit.unwrap_or(0);
    job.label_value_length_limit = m.spec.label_value_length_limit.unwrap_or(0);
    if let Some(t) = &ep.tls_config {
        job.tls = TlsConfig {
            ca_file: t.ca_file.clone().unwrap_or_default(),
            cert_file: t.cert_file.clone().unwrap_or_default(),
            key_file: t.key_file.clone().unwrap_or_default(),
            server_name: t.server_name.clone().unwrap_or_default(),
            insecure_skip_verify: t.insecure_skip_verify,
            min_version: None,
        };
    }
    let secret = |s: &SecretKeySelector| -> Result<String, String> {
        secrets
            .get(&(m.namespace.clone(), s.name.clone(), s.key.clone()))
            .cloned()
            .ok_or_else(|| format!("key {:?} of secret {}/{} not found", s.key, m.namespace, s.name))
    };
    if let Some(f) = ep.bearer_token_file.as_deref().filter(|f| !f.is_empty()) {
        job.auth = ScrapeAuth::Header { kind: "Bearer".into(), credentials: Some(Secret::File(f.to_owned())) };
    }
    if let Some(s) = ep.bearer_token_secret.as_ref().filter(|s| !s.name.is_empty()) {
        job.auth = ScrapeAuth::Header { kind: "Bearer".into(), credentials: Some(Secret::Inline(secret(s)?)) };
    }
    if let Some(b) = &ep.basic_auth {
        let username = b.username.as_ref().map(secret).transpose()?.unwrap_or_default();
        let password = b.password.as_ref().map(secret).transpose()?.map(Secret::Inline);
        job.auth = ScrapeAuth::Basic { username, password };
    }
    if let Some(a) = &ep.authorization {
        let kind = a.kind.clone().filter(|k| !k.is_empty()).unwrap_or_else(|| "Bearer".into());
        let credentials = a.credentials.as_ref().map(secret).transpose()?.map(Secret::Inline);
        job.auth = ScrapeAuth::Header { kind, credentials };
    }
    let namespaces = if m.spec.namespace_selector.any {
        Vec::new()
    } else if m.spec.namespace_selector.match_names.is_empty() {
        vec![m.namespace.clone()]
    } else {
        m.spec.namespace_selector.match_names.clone()
    };
    job.kubernetes_sd = vec![KubernetesSdConfig {
        role: match m.kind {
            MonitorKind::Service => cfg.endpoint_role,
            MonitorKind::Pod => Role::Pod,
        },
        access: cfg.access.clone(),
        own_namespace: false,
        namespaces,
        selectors: Vec::new(),
        attach_node: m.spec.attach_metadata.as_ref().is_some_and(|a| a.node),
    }];
    job.relabel_configs =
        validate_rules(&operator_relabelings(m, ep, cfg.endpoint_role)).map_err(|e| format!("relabelings: {e}"))?;
    job.metric_relabel_configs =
        validate_rules(&crd_rules(&ep.metric_relabelings)).map_err(|e| format!("metricRelabelings: {e}"))?;
    Ok(job)
}

/// The Secret keys the endpoints of `m` reference: (namespace, name, key).
fn secret_refs(m: &Monitor) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let eps = m.spec.endpoints.iter().chain(&m.spec.pod_metrics_endpoints);
    for ep in eps {
        let mut add = |s: &Option<SecretKeySelector>| {
            if let Some(s) = s.as_ref().filter(|s| !s.name.is_empty()) {
                out.push((m.namespace.clone(), s.name.clone(), s.key.clone()));
            }
        };
        add(&ep.bearer_token_secret);
        if let Some(b) = &ep.basic_auth {
            add(&b.username);
            add(&b.password);
        }
        if let Some(a) = &ep.authorization {
            add(&a.credentials);
        }
    }
    out
}

/// Every job of the selected monitors, sorted by name; endpoints that cannot
/// become jobs are reported in the second list.
pub fn generate(monitors: &[Monitor], cfg: &OperatorConfig, secrets: &Secrets) -> (Vec<ScrapeJob>, Vec<String>) {
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for m in monitors {
        let eps = match m.kind {
            MonitorKind::Service => &m.spec.endpoints,
            MonitorKind::Pod => &m.spec.pod_metrics_endpoints,
        };
        for (i, ep) in eps.iter().enumerate() {
            match endpoint_job(m, i, ep, cfg, secrets) {
                Ok(j) => jobs.push(j),
                Err(e) => errors.push(format!("{:?} {}/{} endpoint {i}: {e}", m.kind, m.namespace, m.name)),
            }
        }
    }
    jobs.sort_by(|a, b| a.job_name.cmp(&b.job_name));
    (jobs, errors)
}

// ------------------------------------------------------------ the controller

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        api_version: "monitoring.coreos.com/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

enum Change {
    Monitor(MonitorKind, watcher::Event<DynamicObject>),
    Namespace(watcher::Event<Namespace>),
}

/// Watches ServiceMonitors, PodMonitors and namespaces and sends the
/// generated jobs whenever they change.
pub struct MonitorController {
    config: OperatorConfig,
    client: Option<kube::Client>,
    failures: Counter,
}

impl MonitorController {
    /// A controller building its client from the config.
    pub fn new(config: OperatorConfig) -> Self {
        Self { config, client: None, failures: Counter::default() }
    }

    /// A controller using `client`.
    pub fn with_client(config: OperatorConfig, client: kube::Client) -> Self {
        Self { config, client: Some(client), failures: Counter::default() }
    }

    /// Counts API and monitor failures in `counter`.
    pub fn with_failures(mut self, counter: Counter) -> Self {
        self.failures = counter;
        self
    }

    fn to_monitor(kind: MonitorKind, o: &DynamicObject) -> Result<Monitor, String> {
        let spec: MonitorSpec = serde_json::from_value(o.data.get("spec").cloned().unwrap_or_default())
            .map_err(|e| format!("spec: {e}"))?;
        Ok(Monitor {
            kind,
            namespace: o.metadata.namespace.clone().unwrap_or_default(),
            name: o.metadata.name.clone().unwrap_or_default(),
            labels: o.metadata.labels.clone().unwrap_or_default(),
            spec,
        })
    }

    /// Runs until shutdown, sending each new job list to `out`.
    pub async fn run(mut self, out: mpsc::Sender<Vec<ScrapeJob>>, mut shutdown: watch::Receiver<bool>) {
        let client = match self.client.take() {
            Some(c) => c,
            None => loop {
                match super::client::build(&self.config.access).await {
                    Ok(c) => break c,
                    Err(e) => {
                        self.failures.inc();
                        tracing::warn!(error = %e, "prometheus_operator: cannot build the API client");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.changed() => return,
                }
            },
        };
        let own_ns = std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| client.default_namespace().to_owned());
        let mut streams: SelectAll<futures::stream::BoxStream<'static, Result<Change, String>>> = SelectAll::new();
        let mut synced = BTreeMap::new();
        if self.config.service_monitor_selector.is_some() {
            let api = Api::<DynamicObject>::all_with(client.clone(), &resource("ServiceMonitor", "servicemonitors"));
            streams.push(
                super::watch_relisting(api, watcher::Config::default())
                    .map(|r| r.map(|e| Change::Monitor(MonitorKind::Service, e)).map_err(|e| e.to_string()))
                    .boxed(),
            );
            synced.insert("servicemonitors", false);
        }
        if self.config.pod_monitor_selector.is_some() {
            let api = Api::<DynamicObject>::all_with(client.clone(), &resource("PodMonitor", "podmonitors"));
            streams.push(
                super::watch_relisting(api, watcher::Config::default())
                    .map(|r| r.map(|e| Change::Monitor(MonitorKind::Pod, e)).map_err(|e| e.to_string()))
                    .boxed(),
            );
            synced.insert("podmonitors", false);
        }
        let needs_namespaces =
            [&self.config.service_monitor_namespace_selector, &self.config.pod_monitor_namespace_selector]
                .into_iter()
                .flatten()
                .any(|s| !s.is_empty());
        if needs_namespaces {
            streams.push(
                super::watch_relisting(Api::<Namespace>::all(client.clone()), watcher::Config::default())
                    .map(|r| r.map(Change::Namespace).map_err(|e| e.to_string()))
                    .boxed(),
            );
            synced.insert("namespaces", false);
        }
        if streams.is_empty() {
            return;
        }
        let mut monitors: BTreeMap<(MonitorKind, String, String), DynamicObject> = BTreeMap::new();
        let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut buffers: BTreeMap<&'static str, Vec<Change>> = BTreeMap::new();
        let mut last: Option<Vec<ScrapeJob>> = None;
        let mut reported: Vec<String> = Vec::new();
        loop {
            let next = tokio::select! {
                n = streams.next() => n,
                _ = shutdown.changed() => return,
            };
            let Some(first) = next else { return };
            let mut batch = vec![first];
            while let Some(Some(more)) = futures::FutureExt::now_or_never(streams.next()) {
                batch.push(more);
            }
            for ch in batch {
                let ch = match ch {
                    Ok(c) => c,
                    Err(e) => {
                        self.failures.inc();
                        tracing::warn!(error = %e, "prometheus_operator: watch failed; retrying");
                        continue;
                    }
                };
                apply_change(ch, &mut monitors, &mut namespaces, &mut buffers, &mut synced);
            }
            if !synced.values().all(|s| *s) {
                continue;
            }
            let selected = self.select(&monitors, &namespaces, &own_ns);
            let secrets = self.secrets(&client, &selected).await;
            let (jobs, errors) = generate(&selected, &self.config, &secrets);
            for e in &errors {
                if !reported.contains(e) {
                    self.failures.inc();
                    tracing::warn!(error = %e, "prometheus_operator: monitor endpoint ignored");
                }
            }
            reported = errors;
            if last.as_ref() != Some(&jobs) {
                tracing::info!(jobs = jobs.len(), "prometheus_operator: monitor jobs changed");
                last = Some(jobs.clone());
                if out.send(jobs).await.is_err() {
                    return;
                }
            }
        }
    }

    fn select(
        &self,
        objects: &BTreeMap<(MonitorKind, String, String), DynamicObject>,
        namespaces: &BTreeMap<String, BTreeMap<String, String>>,
        own_ns: &str,
    ) -> Vec<Monitor> {
        let mut out = Vec::new();
        for ((kind, ns, _), o) in objects {
            let (sel, ns_sel) = match kind {
                MonitorKind::Service => {
                    (&self.config.service_monitor_selector, &self.config.service_monitor_namespace_selector)
                }
                MonitorKind::Pod => (&self.config.pod_monitor_selector, &self.config.pod_monitor_namespace_selector),
            };
            let Some(sel) = sel else { continue };
            let empty = BTreeMap::new();
            if !sel.matches(o.metadata.labels.as_ref().unwrap_or(&empty)) {
                continue;
            }
            let ns_ok = match ns_sel {
                None => ns == own_ns,
                Some(s) if s.is_empty() => true,
                Some(s) => namespaces.get(ns).is_some_and(|l| s.matches(l)),
            };
            if !ns_ok {
                continue;
            }
            match Self::to_monitor(*kind, o) {
                Ok(m) => out.push(m),
                Err(e) => {
                    self.failures.inc();
                    tracing::warn!(error = %e, namespace = %ns, "prometheus_operator: malformed monitor ignored");
                }
            }
        }
        out
    }

    async fn secrets(&self, client: &kube::Client, monitors: &[Monitor]) -> Secrets {
        let mut out = Secrets::new();
        for (ns, name, key) in monitors.iter().flat_map(secret_refs) {
            if out.contains_key(&(ns.clone(), name.clone(), key.clone())) {
                continue;
            }
            let api = Api::<K8sSecret>::namespaced(client.clone(), &ns);
            match api.get(&name).await {
                Ok(s) => {
                    let value = s
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&key))
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        .or_else(|| s.string_data.as_ref().and_then(|d| d.get(&key)).cloned());
                    if let Some(v) = value {
                        out.insert((ns, name, key), v);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, secret = %format!("{ns}/{name}"), "prometheus_operator: cannot read secret");
                }
            }
        }
        out
    }
}

fn apply_change(
    ch: Change,
    monitors: &mut BTreeMap<(MonitorKind, String, String), DynamicObject>,
    namespaces: &mut BTreeMap<String, BTreeMap<String, String>>,
    buffers: &mut BTreeMap<&'static str, Vec<Change>>,
    synced: &mut BTreeMap<&'static str, bool>,
) {
    let key_of = |k: MonitorKind, o: &DynamicObject| {
        (k, o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default())
    };
    match ch {
        Change::Monitor(kind, ev) => {
            let stream = if kind == MonitorKind::Service { "servicemonitors" } else { "podmonitors" };
            match ev {
                watcher::Event::Init => {
                    buffers.insert(stream, Vec::new());
                }
                watcher::Event::InitApply(o) => {
                    buffers.entry(stream).or_default().push(Change::Monitor(kind, watcher::Event::Apply(o)));
                }
                watcher::Event::InitDone => {
                    monitors.retain(|(k, _, _), _| *k != kind);
                    for c in buffers.remove(stream).unwrap_or_default() {
                        if let Change::Monitor(_, watcher::Event::Apply(o)) = c {
                            monitors.insert(key_of(kind, &o), o);
                        }
                    }
                    synced.insert(stream, true);
                }
                watcher::Event::Apply(o) => {
                    monitors.insert(key_of(kind, &o), o);
                }
                watcher::Event::Delete(o) => {
                    monitors.remove(&key_of(kind, &o));
                }
            }
        }
        Change::Namespace(ev) => {
            let name_labels = |n: &Namespace| {
                (n.metadata.name.clone().unwrap_or_default(), n.metadata.labels.clone().unwrap_or_default())
            };
            match ev {
                watcher::Event::Init => {
                    buffers.insert("namespaces", Vec::new());
                }
                watcher::Event::InitApply(n) => {
                    buffers.entry("namespaces").or_default().push(Change::Namespace(watcher::Event::Apply(n)));
                }
                watcher::Event::InitDone => {
                    namespaces.clear();
                    for c in buffers.remove("namespaces").unwrap_or_default() {
                        if let Change::Namespace(watcher::Event::Apply(n)) = c {
                            let (k, v) = name_labels(&n);
                            namespaces.insert(k, v);
                        }
                    }
                    synced.insert("namespaces", true);
                }
                watcher::Event::Apply(n) => {
                    let (k, v) = name_labels(&n);
                    namespaces.insert(k, v);
                }
                watcher::Event::Delete(n) => {
                    namespaces.remove(n.metadata.name.as_deref().unwrap_or_default());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(kind: MonitorKind, spec: serde_json::Value) -> Monitor {
        Monitor {
            kind,
            namespace: "default".into(),
            name: "test".into(),
            labels: BTreeMap::new(),
            spec: match serde_json::from_value(spec) {
                Ok(s) => s,
                Err(e) => panic!("spec: {e}"),
            },
        }
    }

    fn config() -> OperatorConfig {
        OperatorConfig {
            access: ApiAccess::InCluster,
            service_monitor_selector: Some(LabelSelector::default()),
            service_monitor_namespace_selector: None,
            pod_monitor_selector: Some(LabelSelector::default()),
            pod_monitor_namespace_selector: None,
            endpoint_role: Role::Endpoints,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }

    /// A rule as the Operator's generated YAML shows it:
    /// (source_labels, separator, regex, target_label, replacement, action).
    type Rule = (Vec<String>, String, String, String, String, String);

    fn rules(raw: &[RawRelabelConfig]) -> Vec<Rule> {
        raw.iter()
            .map(|r| {
                (
                    r.source_labels.clone().unwrap_or_default(),
                    r.separator.clone().unwrap_or_default(),
                    r.regex.clone().unwrap_or_default(),
                    r.target_label.clone().unwrap_or_default(),
                    r.replacement.clone().unwrap_or_default(),
                    r.action.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn rule(src: &[&str], sep: &str, regex: &str, target: &str, replacement: &str, action: &str) -> Rule {
        (
            src.iter().map(|s| (*s).to_owned()).collect(),
            sep.into(),
            regex.into(),
            target.into(),
            replacement.into(),
            action.into(),
        )
    }

    #[test]
    fn service_monitor_relabelings_are_the_operators() {
        let m = monitor(
            MonitorKind::Service,
            serde_json::json!({
                "selector": {"matchLabels": {"group": "group1"},
                             "matchExpressions": [{"key": "alpha", "operator": "In", "values": ["beta", "gamma"]},
                                                  {"key": "canary", "operator": "DoesNotExist"}]},
                "jobLabel": "app.kubernetes.io/name",
                "targetLabels": ["team"],
                "podTargetLabels": ["version"],
                "endpoints": [{"port": "web", "interval": "15s", "path": "/m",
                               "relabelings": [{"action": "Replace", "targetLabel": "x", "replacement": "y"}]}],
            }),
        );
        let got = rules(&operator_relabelings(&m, &m.spec.endpoints[0], Role::Endpoints));
        let want = vec![
            rule(&["job"], "", "", "__tmp_prometheus_job_name", "", ""),
            rule(
                &["__meta_kubernetes_service_label_group", "__meta_kubernetes_service_labelpresent_group"],
                "",
                "(group1);true",
                "",
                "",
                "keep",
            ),
            rule(
                &["__meta_kubernetes_service_label_alpha", "__meta_kubernetes_service_labelpresent_alpha"],
                "",
                "(beta|gamma);true",
                "",
                "",
                "keep",
            ),
            rule(&["__meta_kubernetes_service_labelpresent_canary"], "", "true", "", "", "drop"),
            rule(&["__meta_kubernetes_endpoint_port_name"], "", "web", "", "", "keep"),
            rule(
                &["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"],
                ";",
                "Node;(.*)",
                "node",
                "${1}",
                "",
            ),
            rule(
                &["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"],
                ";",
                "Pod;(.*)",
                "pod",
                "${1}",
                "",
            ),
            rule(&["__meta_kubernetes_namespace"], "", "", "namespace", "", ""),
            rule(&["__meta_kubernetes_service_name"], "", "", "service", "", ""),
            rule(&["__meta_kubernetes_pod_name"], "", "", "pod", "", ""),
            rule(&["__meta_kubernetes_pod_container_name"], "", "", "container", "", ""),
            rule(&["__meta_kubernetes_pod_phase"], "", "(Failed|Succeeded)", "", "", "drop"),
            rule(&["__meta_kubernetes_service_label_team"], "", "(.+)", "team", "${1}", ""),
            rule(&["__meta_kubernetes_pod_label_version"], "", "(.+)", "version", "${1}", ""),
            rule(&["__meta_kubernetes_service_name"], "", "", "job", "${1}", ""),
            rule(&["__meta_kubernetes_service_label_app_kubernetes_io_name"], "", "(.+)", "job", "${1}", ""),
            rule(&[], "", "", "endpoint", "web", ""),
            rule(&[], "", "", "x", "y", "replace"),
        ];
        assert_eq!(got, want);
        let job = endpoint_job(&m, 0, &m.spec.endpoints[0], &config(), &Secrets::new()).expect("job");
        assert_eq!(job.job_name, "serviceMonitor/default/test/0");
        assert_eq!((job.interval, job.timeout), (Duration::from_secs(15), Duration::from_secs(10)));
        assert_eq!(job.metrics_path, "/m");
        assert_eq!(job.kubernetes_sd[0].role, Role::Endpoints);
        assert_eq!(job.kubernetes_sd[0].namespaces, ["default"], "no namespaceSelector: the monitor's namespace");
        assert_eq!(job.relabel_configs.len(), want.len());

        // EndpointSlice flavour: the slice's port and target labels.
        let got = rules(&operator_relabelings(&m, &m.spec.endpoints[0], Role::EndpointSlice));
        assert_eq!(got[4], rule(&["__meta_kubernetes_endpointslice_port_name"], "", "web", "", "", "keep"));
        assert_eq!(got[5].0[0], "__meta_kubernetes_endpointslice_address_target_kind");
    }

    #[test]
    fn pod_monitor_relabelings_are_the_operators() {
        let m = monitor(
            MonitorKind::Pod,
            serde_json::json!({
                "selector": {"matchLabels": {"app": "web"}},
                "namespaceSelector": {"any": true},
                "podMetricsEndpoints": [{"targetPort": 8080, "filterRunning": false}],
            }),
        );
        let got = rules(&operator_relabelings(&m, &m.spec.pod_metrics_endpoints[0], Role::Endpoints));
        let want = vec![
            rule(&["job"], "", "", "__tmp_prometheus_job_name", "", ""),
            rule(
                &["__meta_kubernetes_pod_label_app", "__meta_kubernetes_pod_labelpresent_app"],
                "",
                "(web);true",
                "",
                "",
                "keep",
            ),
            rule(&["__meta_kubernetes_pod_container_port_number"], "", "8080", "", "", "keep"),
            rule(&["__meta_kubernetes_namespace"], "", "", "namespace", "", ""),
            rule(&["__meta_kubernetes_pod_container_name"], "", "", "container", "", ""),
            rule(&["__meta_kubernetes_pod_name"], "", "", "pod", "", ""),
            rule(&[], "", "", "job", "default/test", ""),
            rule(&[], "", "", "endpoint", "8080", ""),
        ];
        assert_eq!(got, want);
        let job = endpoint_job(&m, 0, &m.spec.pod_metrics_endpoints[0], &config(), &Secrets::new()).expect("job");
        assert_eq!(job.job_name, "podMonitor/default/test/0");
        assert_eq!(job.kubernetes_sd[0].role, Role::Pod);
        assert!(job.kubernetes_sd[0].namespaces.is_empty(), "any: every namespace");
    }

    #[test]
    fn endpoint_credentials_come_from_secrets_and_bad_endpoints_are_reported() {
        let m = monitor(
            MonitorKind::Service,
            serde_json::json!({
                "endpoints": [
                    {"port": "a", "basicAuth": {"username": {"name": "s", "key": "user"}, "password": {"name": "s", "key": "pass"}}},
                    {"port": "b", "bearerTokenSecret": {"name": "s", "key": "missing"}},
                    {"port": "c", "interval": "5s", "scrapeTimeout": "10s"},
                    {"port": "d", "metricRelabelings": [{"action": "keep", "regex": "("}]},
                    {"port": "e", "authorization": {"credentials": {"name": "s", "key": "user"}}, "scheme": "https",
                     "tlsConfig": {"insecureSkipVerify": true, "serverName": "x"}},
                ],
            }),
        );
        let secrets: Secrets = [
            (("default".into(), "s".into(), "user".into()), "alice".into()),
            (("default".into(), "s".into(), "pass".into()), "pw".into()),
        ]
        .into();
        let (jobs, errors) = generate(std::slice::from_ref(&m), &config(), &secrets);
        let names: Vec<&str> = jobs.iter().map(|j| j.job_name.as_str()).collect();
        assert_eq!(names, ["serviceMonitor/default/test/0", "serviceMonitor/default/test/4"]);
        assert_eq!(
            jobs[0].auth,
            ScrapeAuth::Basic { username: "alice".into(), password: Some(Secret::Inline("pw".into())) }
        );
        assert_eq!(
            jobs[1].auth,
            ScrapeAuth::Header { kind: "Bearer".into(), credentials: Some(Secret::Inline("alice".into())) }
        );
        assert!(jobs[1].tls.insecure_skip_verify && jobs[1].scheme == "https");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("missing"), "{errors:?}");
        assert!(errors[1].contains("scrapeTimeout"), "{errors:?}");
        assert!(errors[2].contains("metricRelabelings"), "{errors:?}");
    }

    #[test]
    fn label_selectors_match_as_kubernetes_does() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"a": "1"},
            "matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["x"]}, {"key": "c", "operator": "Exists"}],
        }))
        .expect("selector");
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        assert!(sel.matches(&l(&[("a", "1"), ("c", "")])));
        assert!(!sel.matches(&l(&[("a", "1"), ("b", "x"), ("c", "")])));
        assert!(!sel.matches(&l(&[("a", "1")])));
        assert!(LabelSelector::default().matches(&l(&[])));
    }
}
