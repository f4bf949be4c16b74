//! Sending alerts to Alertmanager, as Prometheus' notifier does: the
//! `alerting` section (`alertmanagers` with `static_configs` and
//! `file_sd_configs` (any collector [`Discoverer`] fits), `scheme`,
//! `path_prefix`, `timeout`, `api_version`, credentials, `relabel_configs`;
//! `alert_relabel_configs`), external labels added to every alert, a bounded
//! queue that drops the oldest alerts when full, batches of 64 posted to
//! every Alertmanager (`POST /api/v2/alerts`), sends, errors and drops counted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use strata_collector::config::{
    Problem, RawAuthorization, RawBasicAuth, RawTlsConfig, ScrapeAuth, Secret, StaticConfig, TlsConfig, TlsVersion,
};
use strata_collector::discovery::file::{
    DEFAULT_REFRESH_INTERVAL, FileDiscoverer, FileSdConfig, RawFileSdConfig, is_valid_file_sd_name,
};
use strata_collector::discovery::{Discoverer, GroupSender, TargetGroup, Update};
use strata_collector::relabel::{RawRelabelConfig, RelabelConfig, process_builder};
use strata_common::PromDuration;
use strata_model::{Labels, LabelsBuilder};

use crate::Metrics;
use crate::gofmt::rfc3339;
use crate::group::lock;

/// Most alerts per request, as Prometheus sends them.
pub const MAX_BATCH: usize = 64;

/// Prometheus' `alerting` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertingConfig {
    /// Relabeling applied to every alert before it is queued.
    #[serde(default)]
    pub alert_relabel_configs: Vec<Spanned<RawRelabelConfig>>,
    /// Where alerts go.
    #[serde(default)]
    pub alertmanagers: Vec<Spanned<RawAlertmanagerConfig>>,
}

/// One `alertmanagers` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertmanagerConfig {
    /// Alertmanager addresses (`host:port`).
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    /// Alertmanagers listed in files (Prometheus' file discovery).
    #[serde(default)]
    pub file_sd_configs: Vec<Spanned<RawFileSdConfig>>,
    /// `http` (default) or `https`.
    pub scheme: Option<Spanned<String>>,
    /// Prefix of the API path.
    pub path_prefix: Option<String>,
    /// Per-request timeout (default 10s).
    pub timeout: Option<Spanned<PromDuration>>,
    /// `v2` (default) or `v1`.
    pub api_version: Option<Spanned<String>>,
    /// HTTP basic authentication.
    pub basic_auth: Option<Spanned<RawBasicAuth>>,
    /// `Authorization` header.
    pub authorization: Option<Spanned<RawAuthorization>>,
    /// TLS settings of `scheme: https`.
    pub tls_config: Option<Spanned<RawTlsConfig>>,
    /// Relabeling of the Alertmanager targets (`__address__`, `__scheme__`, `__alerts_path__`).
    #[serde(default)]
    pub relabel_configs: Vec<Spanned<RawRelabelConfig>>,
}

/// One Alertmanager endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerTarget {
    /// The URL alerts are posted to.
    pub url: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Credentials.
    pub auth: ScrapeAuth,
    /// TLS settings (for `https`).
    pub tls: TlsConfig,
}

/// One validated `alertmanagers` entry: how to reach the Alertmanagers its
/// discovery finds.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerSet {
    /// `__scheme__` unless relabeled.
    pub scheme: String,
    /// `__alerts_path__`: path prefix and API path.
    pub alerts_path: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Credentials.
    pub auth: ScrapeAuth,
    /// TLS settings.
    pub tls: TlsConfig,
    /// `relabel_configs` over the discovered targets.
    pub relabel: Vec<RelabelConfig>,
    /// `static_configs` as target groups.
    pub static_groups: Vec<TargetGroup>,
    /// `file_sd_configs`.
    pub file_sd: Vec<FileSdConfig>,
}

impl AlertmanagerSet {
    /// The endpoints of `groups` after relabeling.
    fn targets<'a>(&self, groups: impl Iterator<Item = &'a TargetGroup>) -> Vec<AlertmanagerTarget> {
        let mut out = Vec::new();
        for g in groups {
            for t in &g.targets {
                let mut b = g.labels.builder();
                for l in t.iter() {
                    b.set(l.name.clone(), l.value.clone());
                }
                if b.get("__scheme__").is_none_or(str::is_empty) {
                    b.set("__scheme__", self.scheme.clone());
                }
                b.set("__alerts_path__", self.alerts_path.clone());
                if !process_builder(&mut b, &self.relabel) {
                    continue;
                }
                let l = b.build();
                let addr = l.get("__address__").unwrap_or_default();
                if addr.is_empty() {
                    continue;
                }
                let url = format!(
                    "{}://{}{}",
                    l.get("__scheme__").unwrap_or("http"),
                    addr,
                    l.get("__alerts_path__").unwrap_or("/api/v2/alerts")
                );
                if !out.iter().any(|o: &AlertmanagerTarget| o.url == url) {
                    out.push(AlertmanagerTarget {
                        url,
                        timeout: self.timeout,
                        auth: self.auth.clone(),
                        tls: self.tls.clone(),
                    });
                }
            }
        }
        out
    }
}

/// The validated `alerting` section.
#[derive(Debug, Clone, Default)]
pub struct AlertingConfig {
    /// `alert_relabel_configs`.
    pub relabel: Vec<RelabelConfig>,
    /// Every `alertmanagers` entry.
    pub sets: Vec<AlertmanagerSet>,
}

/// Discovered target groups by (set, provider, source).
type Discovered = BTreeMap<(usize, usize, String), TargetGroup>;

impl AlertingConfig {
    /// Every Alertmanager endpoint: static ones and those discovered so far.
    pub fn targets(&self, discovered: &Discovered) -> Vec<AlertmanagerTarget> {
        let mut out = Vec::new();
        for (i, set) in self.sets.iter().enumerate() {
            let found = discovered.range((i, 0, String::new())..(i + 1, 0, String::new())).map(|(_, g)| g);
            out.extend(set.targets(set.static_groups.iter().chain(found)));
        }
        out
    }

    /// Makes relative file paths (`file_sd_configs` files, TLS files,
    /// password and credentials files) relative to `dir`, as Prometheus does.
    pub fn resolve_paths(&mut self, dir: &std::path::Path) {
        let join = |p: &mut String| {
            if !p.is_empty() && std::path::Path::new(p.as_str()).is_relative() {
                *p = dir.join(p.as_str()).display().to_string();
            }
        };
        for set in &mut self.sets {
            for f in &mut set.file_sd {
                f.files.iter_mut().for_each(join);
            }
            for p in [&mut set.tls.ca_file, &mut set.tls.cert_file, &mut set.tls.key_file] {
                join(p);
            }
            match &mut set.auth {
                ScrapeAuth::Basic { password: Some(Secret::File(p)), .. }
                | ScrapeAuth::Header { credentials: Some(Secret::File(p)), .. } => join(p),
                _ => {}
            }
        }
    }
}

fn relabel_all(raw: &[Spanned<RawRelabelConfig>], problems: &mut Vec<Problem>) -> Vec<RelabelConfig> {
    raw.iter()
        .filter_map(|r| match r.value.validate() {
            Ok(c) => Some(c),
            Err(message) => {
                problems.push(Problem { line: r.referenced.line(), column: r.referenced.column(), message });
                None
            }
        })
        .collect()
}

impl RawAlertingConfig {
    /// Validates the section, adding every problem to `problems`.
    pub fn validate(&self, problems: &mut Vec<Problem>) -> AlertingConfig {
        let relabel = relabel_all(&self.alert_relabel_configs, problems);
        let mut sets = Vec::new();
        for am in &self.alertmanagers {
            let (line, column) = (am.referenced.line(), am.referenced.column());
            let c = &am.value;
            let mut push = |l: u64, col: u64, m: String| problems.push(Problem { line: l, column: col, message: m });
            let scheme = c.scheme.as_ref().map_or("http".to_owned(), |s| s.value.clone());
            if let Some(s) = &c.scheme
                && s.value != "http"
                && s.value != "https"
            {
                push(s.referenced.line(), s.referenced.column(), format!("unknown scheme {:?}", s.value));
            }
            if let Some(v) = &c.api_version
                && v.value != "v1"
                && v.value != "v2"
            {
                push(
                    v.referenced.line(),
                    v.referenced.column(),
                    format!("expected Alertmanager api version to be one of [v1 v2] but got {}", v.value),
                );
            }
            let version = c.api_version.as_ref().map_or("v2", |v| v.value.as_str());
            let timeout = c.timeout.as_ref().map_or(Duration::from_secs(10), |t| t.value.0);
            let am_relabel = relabel_all(&c.relabel_configs, problems);
            let auth = match (&c.basic_auth, &c.authorization) {
                (Some(_), Some(_)) => {
                    problems.push(Problem {
                        line,
                        column,
                        message: "at most one of basic_auth, oauth2 & authorization must be configured".into(),
                    });
                    ScrapeAuth::None
                }
                (Some(b), None) => {
                    let b = &b.value;
                    let password =
                        b.password_file.clone().map(Secret::File).or_else(|| b.password.clone().map(Secret::Inline));
                    ScrapeAuth::Basic { username: b.username.clone(), password }
                }
                (None, Some(a)) => {
                    let a = &a.value;
                    let kind = a.kind.clone().filter(|k| !k.trim().is_empty()).unwrap_or_else(|| "Bearer".to_owned());
                    let credentials = a
                        .credentials_file
                        .clone()
                        .map(Secret::File)
                        .or_else(|| a.credentials.clone().map(Secret::Inline));
                    ScrapeAuth::Header { kind, credentials }
                }
                (None, None) => ScrapeAuth::None,
            };
            let tls = validate_tls(c.tls_config.as_ref(), problems);
            let prefix = c.path_prefix.clone().unwrap_or_default();
            let alerts_path = format!("{}/api/{version}/alerts", prefix.trim_end_matches('/'));
            let static_groups = c
                .static_configs
                .iter()
                .enumerate()
                .map(|(i, sc)| {
                    let mut labels = LabelsBuilder::new();
                    for (k, v) in &sc.labels {
                        labels.set(k.clone(), v.clone());
                    }
                    let targets = sc
                        .targets
                        .iter()
                        .map(|t| {
                            let mut b = LabelsBuilder::new();
                            b.set("__address__", t.value.clone());
                            b.build()
                        })
                        .collect();
                    TargetGroup { source: i.to_string(), targets, labels: labels.build() }
                })
                .collect();
            let mut file_sd = Vec::new();
            for f in &c.file_sd_configs {
                for name in &f.value.files {
                    if !is_valid_file_sd_name(&name.value) {
                        problems.push(Problem {
                            line: name.referenced.line(),
                            column: name.referenced.column(),
                            message: format!("path name {:?} is not valid for file discovery", name.value),
                        });
                    }
                }
                file_sd.push(FileSdConfig {
                    files: f.value.files.iter().map(|n| n.value.clone()).collect(),
                    refresh_interval: f.value.refresh_interval.map_or(DEFAULT_REFRESH_INTERVAL, |d| d.0),
                });
            }
            sets.push(AlertmanagerSet {
                scheme,
                alerts_path,
                timeout,
                auth,
                tls,
                relabel: am_relabel,
                static_groups,
                file_sd,
            });
        }
        AlertingConfig { relabel, sets }
    }
}

/// `tls_config` as Prometheus' `TLSConfig.Validate` checks it.
fn validate_tls(raw: Option<&Spanned<RawTlsConfig>>, problems: &mut Vec<Problem>) -> TlsConfig {
    let Some(t) = raw else { return TlsConfig::default() };
    let mut push = |s: &Spanned<String>, m: &str| {
        problems.push(Problem { line: s.referenced.line(), column: s.referenced.column(), message: m.to_owned() });
    };
    let r = &t.value;
    if let (Some(c), None) = (&r.cert_file, &r.key_file) {
        push(c, "exactly one of key or key_file must be configured when a client certificate is configured");
    }
    if let (None, Some(k)) = (&r.cert_file, &r.key_file) {
        push(k, "exactly one of cert or cert_file must be configured when a client key is configured");
    }
    let min_version = match r.min_version.as_ref() {
        None => None,
        Some(v) if v.value == "TLS12" => Some(TlsVersion::Tls12),
        Some(v) if v.value == "TLS13" => Some(TlsVersion::Tls13),
        Some(v) => {
            push(v, &format!("unsupported TLS version {}: use TLS12 or TLS13", v.value));
            None
        }
    };
    let path = |f: &Option<Spanned<String>>| f.as_ref().map_or_else(String::new, |s| s.value.clone());
    TlsConfig {
        ca_file: path(&r.ca_file),
        cert_file: path(&r.cert_file),
        key_file: path(&r.key_file),
        server_name: r.server_name.clone().unwrap_or_default(),
        insecure_skip_verify: r.insecure_skip_verify,
        min_version,
    }
}

/// An alert as sent to Alertmanager.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyAlert {
    /// Labels.
    pub labels: Labels,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// `startsAt`, ms (0: unset).
    pub starts_at: i64,
    /// `endsAt`, ms.
    pub ends_at: i64,
    /// `generatorURL`.
    pub generator_url: String,
}

impl NotifyAlert {
    fn to_json(&self) -> serde_json::Value {
        let labels: serde_json::Map<String, serde_json::Value> =
            self.labels.iter().map(|l| (l.name.clone(), serde_json::Value::String(l.value.clone()))).collect();
        let ann: serde_json::Map<String, serde_json::Value> =
            self.annotations.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let mut m = serde_json::Map::new();
        m.insert("labels".into(), labels.into());
        m.insert("annotations".into(), ann.into());
        if self.starts_at != 0 {
            m.insert("startsAt".into(), rfc3339(self.starts_at).into());
        }
        if self.ends_at != 0 {
            m.insert("endsAt".into(), rfc3339(self.ends_at).into());
        }
        m.insert("generatorURL".into(), self.generator_url.clone().into());
        m.into()
    }
}

/// The notifier's live configuration.
#[derive(Debug, Clone, Default)]
pub struct NotifierConfig {
    /// The `alerting` section.
    pub alerting: AlertingConfig,
    /// `global.external_labels`, added to alerts that lack them.
    pub external_labels: BTreeMap<String, String>,
}

/// The alert queue and its sender.
pub struct Notifier {
    queue: Mutex<VecDeque<NotifyAlert>>,
    wake: tokio::sync::Notify,
    config: RwLock<Arc<NotifierConfig>>,
    /// Endpoints now: static and discovered Alertmanagers after relabeling.
    targets: RwLock<Arc<Vec<AlertmanagerTarget>>>,
    discovered: Mutex<Discovered>,
    /// Stops the running discoverers (set while [`Notifier::run`] runs).
    discovery: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    running: std::sync::atomic::AtomicBool,
    capacity: usize,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

impl Notifier {
    pub(crate) fn new(config: NotifierConfig, capacity: usize, metrics: Arc<Metrics>) -> Self {
        let targets = config.alerting.targets(&Discovered::new());
        metrics.alertmanagers.set(targets.len() as i64);
        Self {
            queue: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            config: RwLock::new(Arc::new(config)),
            targets: RwLock::new(Arc::new(targets)),
            discovered: Mutex::new(Discovered::new()),
            discovery: Mutex::new(None),
            running: std::sync::atomic::AtomicBool::new(false),
            capacity: capacity.max(1),
            metrics,
            client: reqwest::Client::new(),
        }
    }

    /// Replaces the configuration (on reload), restarting discovery.
    pub fn set_config(self: &Arc<Self>, config: NotifierConfig) {
        *self.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
        if self.running.load(std::sync::atomic::Ordering::SeqCst) {
            self.start_discovery();
        } else {
            lock(&self.discovered).clear();
            self.recompute();
        }
    }

    /// The Alertmanagers alerts go to now.
    pub fn targets(&self) -> Arc<Vec<AlertmanagerTarget>> {
        Arc::clone(&self.targets.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn recompute(&self) {
        let targets = self.config().alerting.targets(&lock(&self.discovered));
        self.metrics.alertmanagers.set(targets.len() as i64);
        *self.targets.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(targets);
    }

    /// (Re)starts one discoverer per `file_sd_configs` entry of every set.
    fn start_discovery(self: &Arc<Self>) {
        if let Some(old) = lock(&self.discovery).take() {
            let _ = old.send(true);
        }
        lock(&self.discovered).clear();
        self.recompute();
        let cfg = self.config();
        let mut discoverers: Vec<(usize, usize, Box<dyn Discoverer>)> = Vec::new();
        for (i, set) in cfg.alerting.sets.iter().enumerate() {
            for (j, f) in set.file_sd.iter().enumerate() {
                discoverers.push((i, j, Box::new(FileDiscoverer::new(f.clone()))));
            }
        }
        if discoverers.is_empty() {
            return;
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Update>(16);
        for (i, j, d) in discoverers {
            tokio::spawn(d.run(GroupSender::new(tx.clone(), i, j), stop_rx.clone()));
        }
        drop(tx);
        let me = Arc::clone(self);
        let mut stop = stop_rx;
        tokio::spawn(async move {
            loop {
                let update = tokio::select! {
                    u = rx.recv() => u,
                    _ = stop.changed() => None,
                };
                let Some(u) = update else { return };
                {
                    let mut d = lock(&me.discovered);
                    for g in u.groups {
                        let key = (u.job, u.provider, g.source.clone());
                        if g.targets.is_empty() {
                            d.remove(&key);
                        } else {
                            d.insert(key, g);
                        }
                    }
                }
                me.recompute();
            }
        });
        *lock(&self.discovery) = Some(stop_tx);
    }

    fn config(&self) -> Arc<NotifierConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Queues alerts after adding external labels and relabeling them.
    pub fn send(&self, alerts: Vec<NotifyAlert>) {
        let cfg = self.config();
        let mut out: Vec<NotifyAlert> = Vec::with_capacity(alerts.len());
        for mut a in alerts {
            let mut b = a.labels.builder();
            for (k, v) in &cfg.external_labels {
                if b.get(k).is_none_or(str::is_empty) {
                    b.set(k.clone(), v.clone());
                }
            }
            if !process_builder(&mut b, &cfg.alerting.relabel) {
                continue;
            }
            a.labels = b.build();
            if a.labels.is_empty() {
                continue;
            }
            out.push(a);
        }
        if out.is_empty() {
            return;
        }
        if out.len() > self.capacity {
            let d = out.len() - self.capacity;
            out.drain(..d);
            self.metrics.dropped.inc_by(d as u64);
        }
        let mut q = lock(&self.queue);
        let over = (q.len() + out.len()).saturating_sub(self.capacity);
        if over > 0 {
            q.drain(..over);
            self.metrics.dropped.inc_by(over as u64);
        }
        q.extend(out);
        self.metrics.queue_length.set(q.len() as i64);
        drop(q);
        self.wake.notify_one();
    }

    /// Alerts waiting in the queue.
    pub fn queue_len(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Sends queued alerts until `stop`, then flushes what is queued.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        self.running.store(true, std::sync::atomic::Ordering::SeqCst);
        self.start_discovery();
        loop {
            let batch: Vec<NotifyAlert> = {
                let mut q = lock(&self.queue);
                let n = q.len().min(MAX_BATCH);
                let b = q.drain(..n).collect();
                self.metrics.queue_length.set(q.len() as i64);
                b
            };
            if batch.is_empty() {
                if *stop.borrow() {
                    if let Some(d) = lock(&self.discovery).take() {
                        let _ = d.send(true);
                    }
                    return;
                }
                tokio::select! {
                    () = self.wake.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            self.send_all(&batch).await;
        }
    }

    async fn send_all(&self, batch: &[NotifyAlert]) {
        let targets = self.targets();
        if targets.is_empty() {
            return;
        }
        let body = serde_json::Value::Array(batch.iter().map(NotifyAlert::to_json).collect()).to_string();
        let sends = targets.iter().map(|t| {
            let body = body.clone();
            async move {
                let label = vec![("alertmanager".to_owned(), t.url.clone())];
                match self.post(t, body).await {
                    Ok(()) => {
                        self.metrics.sent.get_or_create(&label).inc_by(batch.len() as u64);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(alertmanager = %t.url, error = %e, count = batch.len(), "sending alerts failed");
                        self.metrics.errors.get_or_create(&label).inc_by(batch.len() as u64);
                        false
                    }
                }
            }
        });
        let results = futures::future::join_all(sends).await;
        if !results.iter().any(|ok| *ok) {
            self.metrics.dropped.inc_by(batch.len() as u64);
        }
    }

    async fn post(&self, t: &AlertmanagerTarget, body: String) -> Result<(), String> {
        let mut req = self
            .client
            .post(&t.url)
            .timeout(t.timeout)
            .header("Content-Type", "application/json")
            .header("User-Agent", "Strata")
            .body(body);
        match &t.auth {
            ScrapeAuth::None => {}
            ScrapeAuth::Basic { username, password } => {
                let p = match password {
                    Some(s) => Some(s.read()?),
                    None => None,
                };
                req = req.basic_auth(username, p);
            }
            ScrapeAuth::Header { kind, credentials } => {
                let c = match credentials {
                    Some(s) => s.read()?,
                    None => String::new(),
                };
                req = req.header("Authorization", format!("{kind} {c}"));
            }
        }
        let resp = if t.url.starts_with("https://") {
            // TLS goes through the collector's rustls client (ring backend, `tls_config`).
            let req = req.build().map_err(|e| e.to_string())?;
            tokio::time::timeout(t.timeout, strata_collector::tls::send(&t.tls, req))
                .await
                .map_err(|_| "context deadline exceeded".to_owned())??
        } else {
            req.send().await.map_err(|e| e.to_string())?
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("bad response status {status}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertmanager_urls_and_relabeling() {
        let yaml = "alertmanagers:\n- static_configs: [{targets: ['a:9093', 'b:9093']}]\n  path_prefix: /am/\n  relabel_configs:\n  - {source_labels: [__address__], regex: 'b:.*', action: drop}\n";
        let raw: RawAlertingConfig = serde_saphyr::from_str(yaml).expect("yaml");
        let mut problems = Vec::new();
        let c = raw.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let targets = c.targets(&Discovered::new());
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].url, "http://a:9093/am/api/v2/alerts");
    }

    #[test]
    fn bad_api_version_is_reported() {
        let raw: RawAlertingConfig = serde_saphyr::from_str("alertmanagers:\n- api_version: v3\n").expect("yaml");
        let mut problems = Vec::new();
        raw.validate(&mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 2);
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    fn alert(name: &str) -> NotifyAlert {
        NotifyAlert {
            labels: Labels::from_pairs([("alertname", name)]).expect("labels"),
            annotations: BTreeMap::new(),
            starts_at: 1,
            ends_at: 2,
            generator_url: String::new(),
        }
    }

    #[test]
    fn full_queue_drops_the_oldest_and_relabels() {
        let telemetry = strata_common::Telemetry::empty();
        let metrics = Arc::new(crate::Metrics::register(&telemetry));
        let raw: RawAlertingConfig = serde_saphyr::from_str(
            "alert_relabel_configs:\n- {source_labels: [alertname], regex: drop.*, action: drop}\n",
        )
        .expect("yaml");
        let mut problems = Vec::new();
        let alerting = raw.validate(&mut problems);
        let external = [("cluster".to_owned(), "eu1".to_owned())].into_iter().collect();
        let n = Notifier::new(NotifierConfig { alerting, external_labels: external }, 3, Arc::clone(&metrics));
        n.send(vec![alert("a"), alert("drop-me"), alert("b")]);
        n.send(vec![alert("c"), alert("d")]);
        assert_eq!(n.queue_len(), 3);
        assert_eq!(metrics.dropped.get(), 1);
        let q = lock(&n.queue);
        let names: Vec<_> = q.iter().map(|a| a.labels.get("alertname").unwrap_or_default().to_owned()).collect();
        assert_eq!(names, ["b", "c", "d"]);
        assert!(q.iter().all(|a| a.labels.get("cluster") == Some("eu1")));
    }
}
