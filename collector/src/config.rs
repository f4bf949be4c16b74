//! Prometheus' scrape configuration: `global` and `scrape_configs`.
//!
//! The raw types mirror `prometheus.yml` field for field (unknown fields are
//! errors); [`validate`] checks everything at once and returns [`ScrapeJob`]s,
//! or every problem with its line and column. A job carries its target
//! sources (`static_configs`, `file_sd_configs`), its relabeling rules
//! (validated by [`crate::relabel`]), limits and credentials (`basic_auth`,
//! `authorization`, `bearer_token(_file)`, validated as Prometheus'
//! `HTTPClientConfig` does) and `tls_config` (used by `scheme: https`, see
//! `crate::tls`); targets themselves are built by
//! [`crate::target`] as discovery finds them.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use strata_common::PromDuration;
use strata_model::labels::is_valid_label_name;
use strata_model::{Labels, LabelsBuilder};

use crate::discovery::TargetGroup;
use crate::discovery::file::{DEFAULT_REFRESH_INTERVAL, FileSdConfig, RawFileSdConfig, is_valid_file_sd_name};
use crate::discovery::kubernetes::config as kubernetes;
use crate::discovery::kubernetes::config::{KubernetesSdConfig, RawKubernetesSdConfig};
use crate::relabel::{RawRelabelConfig, RelabelConfig};
use crate::target::ADDRESS_LABEL;
pub use crate::target::Target;

/// Prometheus' `global` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// Default scrape interval (Prometheus' default: 1m).
    pub scrape_interval: Option<Spanned<PromDuration>>,
    /// Default scrape timeout (Prometheus' default: 10s).
    pub scrape_timeout: Option<Spanned<PromDuration>>,
    /// Rule evaluation interval (used by the ruler).
    pub evaluation_interval: Option<Spanned<PromDuration>>,
    /// Labels added to every series and alert leaving this process.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
}

/// One `scrape_configs` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The `job` label of every target.
    pub job_name: Spanned<String>,
    /// Overrides `global.scrape_interval`.
    pub scrape_interval: Option<Spanned<PromDuration>>,
    /// Overrides `global.scrape_timeout`.
    pub scrape_timeout: Option<Spanned<PromDuration>>,
    /// HTTP path (default `/metrics`).
    pub metrics_path: Option<Spanned<String>>,
    /// `http` (default) or `https`.
    pub scheme: Option<Spanned<String>>,
    /// URL query parameters.
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    /// Keep the page's labels when they clash with target labels.
    #[serde(default)]
    pub honor_labels: bool,
    /// Use timestamps from the page (default true).
    pub honor_timestamps: Option<bool>,
    /// HTTP basic authentication.
    pub basic_auth: Option<Spanned<RawBasicAuth>>,
    /// The `Authorization` header.
    pub authorization: Option<Spanned<RawAuthorization>>,
    /// Deprecated form of `authorization.credentials`.
    pub bearer_token: Option<Spanned<String>>,
    /// Deprecated form of `authorization.credentials_file`.
    pub bearer_token_file: Option<Spanned<String>>,
    /// TLS settings of `https` scrapes.
    pub tls_config: Option<Spanned<RawTlsConfig>>,
    /// Fail the scrape when the page has more samples (0: no limit).
    #[serde(default)]
    pub sample_limit: u64,
    /// Fail the scrape when the body is larger, in bytes (0: no limit).
    #[serde(default)]
    pub body_size_limit: u64,
    /// Fail the scrape when a series has more labels (0: no limit).
    #[serde(default)]
    pub label_limit: u64,
    /// Fail the scrape when a label name is longer (0: no limit).
    #[serde(default)]
    pub label_name_length_limit: u64,
    /// Fail the scrape when a label value is longer (0: no limit).
    #[serde(default)]
    pub label_value_length_limit: u64,
    /// Targets listed in the file.
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    /// Targets read from files.
    #[serde(default)]
    pub file_sd_configs: Vec<Spanned<RawFileSdConfig>>,
    /// Targets discovered from the Kubernetes API.
    #[serde(default)]
    pub kubernetes_sd_configs: Vec<Spanned<RawKubernetesSdConfig>>,
    /// Rules applied to discovered targets.
    #[serde(default)]
    pub relabel_configs: Vec<Spanned<RawRelabelConfig>>,
    /// Rules applied to scraped series.
    #[serde(default)]
    pub metric_relabel_configs: Vec<Spanned<RawRelabelConfig>>,
}

/// `basic_auth` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// The user name.
    #[serde(default)]
    pub username: String,
    /// The password.
    pub password: Option<String>,
    /// A file holding the password (read at every scrape).
    pub password_file: Option<String>,
}

/// `tls_config` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsConfig {
    /// PEM file of the CAs that verify the server (default: the system's).
    pub ca_file: Option<Spanned<String>>,
    /// PEM file of the client certificate.
    pub cert_file: Option<Spanned<String>>,
    /// PEM file of the client key.
    pub key_file: Option<Spanned<String>>,
    /// The name checked against the server certificate (default: the target host).
    pub server_name: Option<String>,
    /// Accept any server certificate.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// `TLS12` or `TLS13`.
    pub min_version: Option<Spanned<String>>,
}

/// The lowest TLS version a scrape accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (the default).
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// Validated `tls_config` (an empty path: not set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA file; empty: the system's roots.
    pub ca_file: String,
    /// Client certificate file.
    pub cert_file: String,
    /// Client key file.
    pub key_file: String,
    /// Name checked against the server certificate; empty: the target host.
    pub server_name: String,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// Lowest accepted version (default TLS 1.2).
    pub min_version: Option<TlsVersion>,
}

/// Checks `tls_config` as Prometheus' `TLSConfig.Validate` does; files with
/// absolute paths are read now (relative ones follow the config file's
/// directory, known only to the caller, and are read at scrape time).
pub(crate) fn validate_tls(sc: &HttpClientFields<'_>, problems: &mut Vec<Problem>) -> TlsConfig {
    let Some(t) = sc.tls_config else { return TlsConfig::default() };
    let raw = &t.value;
    let path = |f: &Option<Spanned<String>>| f.as_ref().map_or_else(String::new, |s| s.value.clone());
    let tls = TlsConfig {
        ca_file: path(&raw.ca_file),
        cert_file: path(&raw.cert_file),
        key_file: path(&raw.key_file),
        server_name: raw.server_name.clone().unwrap_or_default(),
        insecure_skip_verify: raw.insecure_skip_verify,
        min_version: match &raw.min_version {
            None => None,
            Some(v) => match v.value.as_str() {
                "TLS12" => Some(TlsVersion::Tls12),
                "TLS13" => Some(TlsVersion::Tls13),
                "TLS10" | "TLS11" => {
                    problems
                        .push(Problem::at(v, format!("min_version {} is not supported: use TLS12 or TLS13", v.value)));
                    None
                }
                other => {
                    problems.push(Problem::at(v, format!("unknown TLS version: {other}")));
                    None
                }
            },
        },
    };
    if let (Some(c), None) = (&raw.cert_file, &raw.key_file) {
        problems.push(Problem::at(
            c,
            "exactly one of key or key_file must be configured when a client certificate is configured",
        ));
    }
    if let (None, Some(k)) = (&raw.cert_file, &raw.key_file) {
        problems.push(Problem::at(
            k,
            "exactly one of cert or cert_file must be configured when a client key is configured",
        ));
    }
    for (file, kind) in [(&raw.ca_file, "CA cert"), (&raw.cert_file, "client cert"), (&raw.key_file, "client key")] {
        let Some(f) = file else { continue };
        if !std::path::Path::new(&f.value).is_absolute() {
            continue;
        }
        let loaded = if kind == "client key" {
            crate::tls::load_key(&f.value).map(drop)
        } else {
            crate::tls::load_certs(&f.value).map(drop)
        };
        if let Err(e) = loaded {
            problems.push(Problem::at(f, format!("unable to load specified {kind} {e}")));
        }
    }
    tls
}

/// `authorization` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorization {
    /// The scheme (default `Bearer`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The credentials.
    pub credentials: Option<String>,
    /// A file holding the credentials (read at every scrape).
    pub credentials_file: Option<String>,
}

/// A secret given inline or in a file read at every use, trimmed as Prometheus does.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The value itself.
    Inline(String),
    /// A file holding it.
    File(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Secret(<inline>)"),
            Self::File(p) => write!(f, "Secret(file {p:?})"),
        }
    }
}

impl Secret {
    /// The secret's value now.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Self::Inline(s) => Ok(s.clone()),
            Self::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("unable to read secret file {p}: {e}")),
        }
    }
}

/// How a job authenticates its scrapes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ScrapeAuth {
    /// No credentials.
    #[default]
    None,
    /// `basic_auth`.
    Basic {
        /// The user name.
        username: String,
        /// The password (empty when absent).
        password: Option<Secret>,
    },
    /// `authorization` (or `bearer_token`): `Authorization: <type> <credentials>`.
    Header {
        /// The scheme, e.g. `Bearer`.
        kind: String,
        /// The credentials.
        credentials: Option<Secret>,
    },
}

/// The HTTP client settings of a scrape job or an SD config (Prometheus'
/// `HTTPClientConfig`), as written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpClientFields<'a> {
    pub(crate) basic_auth: Option<&'a Spanned<RawBasicAuth>>,
    pub(crate) authorization: Option<&'a Spanned<RawAuthorization>>,
    pub(crate) bearer_token: Option<&'a Spanned<String>>,
    pub(crate) bearer_token_file: Option<&'a Spanned<String>>,
    pub(crate) tls_config: Option<&'a Spanned<RawTlsConfig>>,
}

impl<'a> HttpClientFields<'a> {
    fn of(sc: &'a ScrapeConfig) -> Self {
        Self {
            basic_auth: sc.basic_auth.as_ref(),
            authorization: sc.authorization.as_ref(),
            bearer_token: sc.bearer_token.as_ref(),
            bearer_token_file: sc.bearer_token_file.as_ref(),
            tls_config: sc.tls_config.as_ref(),
        }
    }
}

/// Prometheus' `HTTPClientConfig.Validate` for the credentials a scrape can carry.
pub(crate) fn validate_auth(sc: &HttpClientFields<'_>, problems: &mut Vec<Problem>) -> ScrapeAuth {
    let mut push = |line: u64, column: u64, msg: &str| problems.push(Problem { line, column, message: msg.to_owned() });
    let at = |s: Option<(u64, u64)>| s.unwrap_or((0, 0));
    let pos = |s: &Spanned<String>| (s.referenced.line(), s.referenced.column());
    let bt = sc.bearer_token.map(pos).or(sc.bearer_token_file.map(pos));
    if sc.bearer_token.is_some() && sc.bearer_token_file.is_some() {
        let (l, c) = at(bt);
        push(l, c, "at most one of bearer_token & bearer_token_file must be configured");
    }
    if let Some(b) = sc.basic_auth {
        let (l, c) = (b.referenced.line(), b.referenced.column());
        if bt.is_some() {
            push(l, c, "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured");
        }
        if b.value.password.is_some() && b.value.password_file.is_some() {
            push(l, c, "at most one of basic_auth password & password_file must be configured");
        }
        if sc.authorization.is_some() {
            push(l, c, "at most one of basic_auth, oauth2 & authorization must be configured");
        }
    }
    if let Some(a) = sc.authorization {
        let (l, c) = (a.referenced.line(), a.referenced.column());
        if bt.is_some() {
            push(l, c, "authorization is not compatible with bearer_token & bearer_token_file");
        }
        if a.value.credentials.is_some() && a.value.credentials_file.is_some() {
            push(l, c, "at most one of authorization credentials & credentials_file must be configured");
        }
        if a.value.kind.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("basic")) {
            push(l, c, "authorization type cannot be set to \"basic\", use \"basic_auth\" instead");
        }
    }
    if let Some(b) = sc.basic_auth {
        let b = &b.value;
        let password = b.password_file.clone().map(Secret::File).or_else(|| b.password.clone().map(Secret::Inline));
        return ScrapeAuth::Basic { username: b.username.clone(), password };
    }
    if let Some(a) = sc.authorization {
        let a = &a.value;
        let kind = a.kind.clone().filter(|k| !k.trim().is_empty()).unwrap_or_else(|| "Bearer".to_owned());
        let credentials =
            a.credentials_file.clone().map(Secret::File).or_else(|| a.credentials.clone().map(Secret::Inline));
        return ScrapeAuth::Header { kind, credentials };
    }
    let credentials = sc
        .bearer_token_file
        .map(|f| Secret::File(f.value.clone()))
        .or_else(|| sc.bearer_token.map(|t| Secret::Inline(t.value.clone())));
    match credentials {
        Some(c) => ScrapeAuth::Header { kind: "Bearer".into(), credentials: Some(c) },
        None => ScrapeAuth::None,
    }
}

/// One `static_configs` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// `host:port` addresses.
    #[serde(default)]
    pub targets: Vec<Spanned<String>>,
    /// Labels added to these targets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when known.
    pub line: u64,
    /// 1-based column, when known.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    fn at<T>(s: &Spanned<T>, message: impl Into<String>) -> Self {
        Self { line: s.referenced.line(), column: s.referenced.column(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}:{}: {}", self.line, self.column, self.message)
    }
}

/// Validated settings of one scrape job.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeJob {
    /// The job name.
    pub job_name: String,
    /// Time between scrapes.
    pub interval: Duration,
    /// Time a scrape may take.
    pub timeout: Duration,
    /// HTTP path.
    pub metrics_path: String,
    /// `http` or `https`.
    pub scheme: String,
    /// URL query parameters.
    pub params: BTreeMap<String, Vec<String>>,
    /// Keep the page's labels on clashes.
    pub honor_labels: bool,
    /// Use timestamps from the page.
    pub honor_timestamps: bool,
    /// Samples per scrape before it fails (0: none).
    pub sample_limit: u64,
    /// Body bytes before the scrape fails (0: none).
    pub body_size_limit: u64,
    /// Credentials sent with every scrape.
    pub auth: ScrapeAuth,
    /// TLS settings of `https` scrapes.
    pub tls: TlsConfig,
    /// Labels per series before the scrape fails (0: none).
    pub label_limit: u64,
    /// Label name length before the scrape fails (0: none).
    pub label_name_length_limit: u64,
    /// Label value length before the scrape fails (0: none).
    pub label_value_length_limit: u64,
    /// `static_configs`, one group each (source: its index).
    pub static_groups: Vec<TargetGroup>,
    /// `file_sd_configs`.
    pub file_sd: Vec<FileSdConfig>,
    /// `kubernetes_sd_configs`.
    pub kubernetes_sd: Vec<KubernetesSdConfig>,
    /// Rules applied to discovered targets.
    pub relabel_configs: Vec<RelabelConfig>,
    /// Rules applied to scraped series.
    pub metric_relabel_configs: Vec<RelabelConfig>,
}

impl ScrapeJob {
    /// A job with Prometheus' defaults and no targets.
    pub fn new(job_name: impl Into<String>, interval: Duration, timeout: Duration) -> Self {
        Self {
            job_name: job_name.into(),
            interval,
            timeout,
            metrics_path: "/metrics".into(),
            scheme: "http".into(),
            params: BTreeMap::new(),
            honor_labels: false,
            honor_timestamps: true,
            sample_limit: 0,
            body_size_limit: 0,
            auth: ScrapeAuth::None,
            tls: TlsConfig::default(),
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            static_groups: Vec::new(),
            file_sd: Vec::new(),
            kubernetes_sd: Vec::new(),
            relabel_configs: Vec::new(),
            metric_relabel_configs: Vec::new(),
        }
    }

    /// Makes the job's relative file paths (`file_sd_configs` files, password,
    /// credential and token files) relative to `dir`, the config file's
    /// directory, as Prometheus does.
    pub fn resolve_paths(&mut self, dir: &std::path::Path) {
        let join = |p: &mut String| {
            if !p.is_empty() && std::path::Path::new(p.as_str()).is_relative() {
                *p = dir.join(p.as_str()).display().to_string();
            }
        };
        for f in &mut self.file_sd {
            f.files.iter_mut().for_each(join);
        }
        for k in &mut self.kubernetes_sd {
            k.resolve_paths(dir);
        }
        let tls = &mut self.tls;
        for p in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file] {
            join(p);
        }
        match &mut self.auth {
            ScrapeAuth::Basic { password: Some(Secret::File(p)), .. }
            | ScrapeAuth::Header { credentials: Some(Secret::File(p)), .. } => join(p),
            _ => {}
        }
    }

    /// Adds a static group of `addresses` with `labels`.
    pub fn with_static_targets<'a>(mut self, addresses: impl IntoIterator<Item = &'a str>, labels: Labels) -> Self {
        let targets = addresses
            .into_iter()
            .map(|a| Labels::from_sorted_unchecked(vec![strata_model::Label::new(ADDRESS_LABEL, a)]))
            .collect();
        let source = self.static_groups.len().to_string();
        self.static_groups.push(TargetGroup { source, targets, labels });
        self
    }
}

/// Prometheus' default scrape interval.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(60);
/// Prometheus' default scrape timeout.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks `global` and `scrape_configs` together, reporting every problem.
pub fn validate(global: &GlobalConfig, scrape_configs: &[ScrapeConfig]) -> Result<Vec<ScrapeJob>, Vec<Problem>> {
    let mut problems = Vec::new();
    let g_interval = global.scrape_interval.as_ref().map_or(DEFAULT_SCRAPE_INTERVAL, |d| d.value.0);
    let g_timeout = global.scrape_timeout.as_ref().map_or(DEFAULT_SCRAPE_TIMEOUT, |d| d.value.0);
    if let Some(i) = &global.scrape_interval
        && i.value.0.is_zero()
    {
        problems.push(Problem::at(i, "global.scrape_interval must be greater than 0"));
    }
    if let Some(t) = &global.scrape_timeout
        && t.value.0 > g_interval
    {
        problems.push(Problem::at(t, "global.scrape_timeout greater than scrape_interval"));
    }
    for name in global.external_labels.keys() {
        if !is_valid_label_name(name) {
            problems.push(Problem {
                line: 0,
                column: 0,
                message: format!("{name:?} is not a valid label name in global.external_labels"),
            });
        }
    }

    let mut seen = HashSet::new();
    let mut jobs = Vec::with_capacity(scrape_configs.len());
    for sc in scrape_configs {
        let job = sc.job_name.value.clone();
        if job.is_empty() {
            problems.push(Problem::at(&sc.job_name, "job_name is empty"));
        } else if !seen.insert(job.clone()) {
            problems.push(Problem::at(&sc.job_name, format!("found multiple scrape configs with job name {job:?}")));
        }
        let interval = sc.scrape_interval.as_ref().map_or(g_interval, |d| d.value.0);
        // As in Prometheus: a job's timeout defaults to the global one, capped by its interval.
        let timeout = match &sc.scrape_timeout {
            Some(t) => {
                if t.value.0 > interval {
                    problems.push(Problem::at(
                        t,
                        format!("scrape timeout greater than scrape interval for scrape config with job name {job:?}"),
                    ));
                }
                t.value.0
            }
            None => g_timeout.min(interval),
        };
        if let Some(i) = &sc.scrape_interval
            && i.value.0.is_zero()
        {
            problems.push(Problem::at(i, "scrape_interval must be greater than 0"));
        }
        let scheme = sc.scheme.as_ref().map_or_else(|| "http".to_owned(), |s| s.value.clone());
        if let Some(s) = &sc.scheme {
            match s.value.as_str() {
                "http" => {}
                "https" => {}
                other => problems
                    .push(Problem::at(s, format!("unknown scrape config scheme {other:?}: must be http or https"))),
            }
        }
        let metrics_path = sc.metrics_path.as_ref().map_or_else(|| "/metrics".to_owned(), |p| p.value.clone());
        let auth = validate_auth(&HttpClientFields::of(sc), &mut problems);
        let tls = validate_tls(&HttpClientFields::of(sc), &mut problems);
        if let Some(p) = &sc.metrics_path
            && !p.value.starts_with('/')
        {
            problems.push(Problem::at(p, format!("metrics_path {:?} must start with /", p.value)));
        }
        let mut static_groups = Vec::new();
        for (i, st) in sc.static_configs.iter().enumerate() {
            let mut group_labels = LabelsBuilder::new();
            for (name, value) in &st.labels {
                if !is_valid_label_name(name) {
                    let at = st.targets.first();
                    problems.push(Problem {
                        line: at.map_or(0, |t| t.referenced.line()),
                        column: at.map_or(0, |t| t.referenced.column()),
                        message: format!("{name:?} is not a valid label name in static_configs of job {job:?}"),
                    });
                }
                group_labels.set(name.clone(), value.clone());
            }
            let mut targets = Vec::new();
            for t in &st.targets {
                // Relabeling may rewrite the address; without rules it must be usable as is.
                if sc.relabel_configs.is_empty()
                    && let Err(msg) = check_address(&t.value)
                {
                    problems.push(Problem::at(t, msg));
                    continue;
                }
                targets.push(Labels::from_sorted_unchecked(vec![strata_model::Label::new(
                    ADDRESS_LABEL,
                    t.value.clone(),
                )]));
            }
            static_groups.push(TargetGroup { source: i.to_string(), targets, labels: group_labels.build() });
        }
        let mut file_sd = Vec::new();
        for f in &sc.file_sd_configs {
            for name in &f.value.files {
                if !is_valid_file_sd_name(&name.value) {
                    problems
                        .push(Problem::at(name, format!("path name {:?} is not valid for file discovery", name.value)));
                }
            }
            file_sd.push(FileSdConfig {
                files: f.value.files.iter().map(|n| n.value.clone()).collect(),
                refresh_interval: f.value.refresh_interval.map_or(DEFAULT_REFRESH_INTERVAL, |d| d.0),
            });
        }
        let kubernetes_sd =
            sc.kubernetes_sd_configs.iter().filter_map(|k| kubernetes::validate(k, &mut problems)).collect();
        let mut rules = |raws: &[Spanned<RawRelabelConfig>], what: &str| -> Vec<RelabelConfig> {
            let mut out = Vec::new();
            for r in raws {
                match r.value.validate() {
                    Ok(c) => out.push(c),
                    Err(e) => problems.push(Problem::at(r, format!("{what} of job {job:?}: {e}"))),
                }
            }
            out
        };
        let relabel_configs = rules(&sc.relabel_configs, "relabel_configs");
        let metric_relabel_configs = rules(&sc.metric_relabel_configs, "metric_relabel_configs");
        jobs.push(ScrapeJob {
            job_name: job,
            interval,
            timeout,
            metrics_path,
            scheme,
            params: sc.params.clone(),
            honor_labels: sc.honor_labels,
            honor_timestamps: sc.honor_timestamps.unwrap_or(true),
            sample_limit: sc.sample_limit,
            body_size_limit: sc.body_size_limit,
            auth,
            tls,
            label_limit: sc.label_limit,
            label_name_length_limit: sc.label_name_length_limit,
            label_value_length_limit: sc.label_value_length_limit,
            static_groups,
            file_sd,
            kubernetes_sd,
            relabel_configs,
            metric_relabel_configs,
        });
    }
    if problems.is_empty() { Ok(jobs) } else { Err(problems) }
}

/// What Prometheus' `CheckTargetAddress` refuses: a path (`/`), or nothing.
/// As in Prometheus 3, an address without a port is scraped on the scheme's
/// default port.
fn check_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() || addr.contains('/') {
        return Err(format!("{addr:?} is not a valid hostname"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        global: GlobalConfig,
        #[serde(default)]
        scrape_configs: Vec<ScrapeConfig>,
    }

    fn load(yaml: &str) -> Result<Vec<ScrapeJob>, Vec<Problem>> {
        let f: File =
            serde_saphyr::from_str(yaml).map_err(|e| vec![Problem { line: 0, column: 0, message: e.to_string() }])?;
        validate(&f.global, &f.scrape_configs)
    }

    #[test]
    fn static_targets_get_job_and_instance() {
        let jobs = load(
            "global:\n  scrape_interval: 15s\nscrape_configs:\n- job_name: node\n  static_configs:\n  - targets: ['localhost:9100']\n    labels: {env: prod}\n",
        )
        .expect("valid");
        assert_eq!(jobs[0].interval, Duration::from_secs(15));
        assert_eq!(jobs[0].timeout, Duration::from_secs(10));
        let t = first_target(&jobs[0]);
        assert_eq!(t.labels.get("job"), Some("node"));
        assert_eq!(t.labels.get("instance"), Some("localhost:9100"));
        assert_eq!(t.labels.get("env"), Some("prod"));
        assert_eq!(t.url, "http://localhost:9100/metrics");
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let problems = load(
            "scrape_configs:\n- job_name: a\n  scrape_interval: 5s\n  scrape_timeout: 10s\n- job_name: a\n  static_configs:\n  - targets: ['http://x:1/', 'x:1', 'nohost']\n",
        )
        .expect_err("invalid");
        let lines: Vec<u64> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [4, 5, 7], "{problems:?}");
    }

    #[test]
    fn unknown_field_is_an_error_naming_its_line() {
        let problems = load("scrape_configs:\n- job_name: a\n  scrape_intervl: 5s\n").expect_err("invalid");
        let msg = &problems[0].message;
        assert!(msg.contains("scrape_intervl") && msg.contains('3'), "{msg}");
    }

    #[test]
    fn params_are_url_encoded() {
        let jobs = load(
            "scrape_configs:\n- job_name: a\n  params: {module: [http 2xx]}\n  static_configs: [{targets: ['h:1']}]\n",
        )
        .expect("valid");
        assert_eq!(first_target(&jobs[0]).url, "http://h:1/metrics?module=http+2xx");
    }

    fn first_target(job: &ScrapeJob) -> Target {
        let outcomes = crate::target::targets_from_group(job, &job.static_groups[0]);
        match outcomes.into_iter().next() {
            Some(Ok(crate::target::Outcome::Active(t))) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relabel_and_file_sd_problems_name_their_lines() {
        let problems = load(
            "scrape_configs:\n- job_name: a\n  file_sd_configs:\n  - files: [a.txt, 'b/*.yml']\n  relabel_configs:\n  - source_labels: [a]\n    action: hashmod\n    target_label: b\n  metric_relabel_configs:\n  - {action: keep, regex: '('}\n",
        )
        .expect_err("invalid");
        let got: Vec<(u64, bool)> = problems.iter().map(|p| (p.line, p.message.is_empty())).collect();
        assert_eq!(got, [(4, false), (6, false), (10, false)], "{problems:?}");
        assert!(problems[0].message.contains("not valid for file discovery"), "{problems:?}");
        assert!(problems[1].message.contains("requires non-zero modulus"), "{problems:?}");
        assert!(problems[2].message.contains("metric_relabel_configs"), "{problems:?}");
    }

    #[test]
    fn tls_config_is_validated_with_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").expect("write");
        let missing = dir.path().join("missing.pem");
        let yaml = format!(
            "scrape_configs:\n- job_name: a\n  scheme: https\n  tls_config:\n    ca_file: {}\n    min_version: TLS10\n- job_name: b\n  scheme: https\n  tls_config:\n    cert_file: {}\n",
            ca.display(),
            missing.display()
        );
        let problems = load(&yaml).expect_err("invalid");
        let msgs: Vec<(u64, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert_eq!(msgs[0].0, 6);
        assert_eq!(msgs[0].1, "min_version TLS10 is not supported: use TLS12 or TLS13");
        assert_eq!(msgs[1].0, 5);
        assert!(msgs[1].1.starts_with("unable to load specified CA cert "), "{}", msgs[1].1);
        assert!(msgs[1].1.ends_with("no PEM certificate found"), "{}", msgs[1].1);
        assert_eq!(msgs[2].0, 10);
        assert_eq!(
            msgs[2].1,
            "exactly one of key or key_file must be configured when a client certificate is configured"
        );
        assert_eq!(msgs[3].0, 10);
        assert!(msgs[3].1.starts_with("unable to load specified client cert "), "{}", msgs[3].1);
        assert!(msgs[3].1.contains("No such file"), "{}", msgs[3].1);

        let jobs = load(
            "scrape_configs:\n- job_name: a\n  scheme: https\n  tls_config: {ca_file: ca.pem, server_name: s, insecure_skip_verify: true, min_version: TLS13}\n",
        )
        .expect("relative files are checked at scrape time");
        let mut job = jobs[0].clone();
        assert_eq!(job.scheme, "https");
        assert_eq!(job.tls.min_version, Some(TlsVersion::Tls13));
        assert!(job.tls.insecure_skip_verify);
        assert_eq!(job.tls.server_name, "s");
        job.resolve_paths(std::path::Path::new("/etc/prom"));
        assert_eq!(job.tls.ca_file, "/etc/prom/ca.pem");
        assert!(load("scrape_configs:\n- job_name: a\n  tls_config: {ca: x}\n").is_err(), "unknown field");
    }

    #[test]
    fn credentials_are_validated_as_prometheus_does() {
        let jobs = load(
            "scrape_configs:\n- job_name: a\n  basic_auth: {username: u, password_file: /p}\n- job_name: b\n  bearer_token: t\n- job_name: c\n  authorization: {credentials: x}\n",
        )
        .expect("valid");
        assert_eq!(jobs[0].auth, ScrapeAuth::Basic { username: "u".into(), password: Some(Secret::File("/p".into())) });
        assert_eq!(
            jobs[1].auth,
            ScrapeAuth::Header { kind: "Bearer".into(), credentials: Some(Secret::Inline("t".into())) }
        );
        assert_eq!(
            jobs[2].auth,
            ScrapeAuth::Header { kind: "Bearer".into(), credentials: Some(Secret::Inline("x".into())) }
        );
        let problems = load(
            "scrape_configs:\n- job_name: a\n  basic_auth: {username: u, password: p, password_file: /p}\n  bearer_token: t\n- job_name: b\n  authorization: {type: Basic, credentials: x}\n",
        )
        .expect_err("invalid");
        let msgs: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured",
                "at most one of basic_auth password & password_file must be configured",
                "authorization type cannot be set to \"basic\", use \"basic_auth\" instead",
            ]
        );
        assert_eq!(problems[0].line, 3);
        assert_eq!(problems[2].line, 6);
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let mut jobs = load(
            "scrape_configs:\n- job_name: a\n  bearer_token_file: tok\n  file_sd_configs: [{files: ['sd/*.yml', '/abs/x.json']}]\n",
        )
        .expect("valid");
        jobs[0].resolve_paths(std::path::Path::new("/etc/prometheus"));
        assert_eq!(jobs[0].file_sd[0].files, ["/etc/prometheus/sd/*.yml", "/abs/x.json"]);
        assert_eq!(
            jobs[0].auth,
            ScrapeAuth::Header { kind: "Bearer".into(), credentials: Some(Secret::File("/etc/prometheus/tok".into())) }
        );
    }

    #[test]
    fn kubernetes_sd_configs_are_validated_as_prometheus_does() {
        let jobs = load(
            "scrape_configs:\n- job_name: k\n  kubernetes_sd_configs:\n  - role: endpoints\n    api_server: https://k8s:6443\n    bearer_token_file: token\n    tls_config: {ca_file: ca.pem}\n    namespaces: {names: [a, b], own_namespace: true}\n    selectors:\n    - {role: pod, label: 'app=web', field: 'spec.nodeName=n1'}\n    attach_metadata: {node: true}\n  - role: node\n    kubeconfig_file: kc.yml\n  - role: pod\n",
        )
        .expect("valid");
        let mut job = jobs[0].clone();
        job.resolve_paths(std::path::Path::new("/etc/prom"));
        let k = &job.kubernetes_sd;
        assert_eq!(k.len(), 3);
        assert_eq!(k[0].role, crate::discovery::kubernetes::Role::Endpoints);
        assert_eq!(k[0].namespaces, ["a", "b"]);
        assert!(k[0].own_namespace && k[0].attach_node);
        assert_eq!(k[0].selectors[0].label, "app=web");
        match &k[0].access {
            crate::discovery::kubernetes::config::ApiAccess::Server { url, auth, tls } => {
                assert_eq!(url, "https://k8s:6443");
                assert_eq!(
                    *auth,
                    ScrapeAuth::Header {
                        kind: "Bearer".into(),
                        credentials: Some(Secret::File("/etc/prom/token".into()))
                    }
                );
                assert_eq!(tls.ca_file, "/etc/prom/ca.pem");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(k[1].access, crate::discovery::kubernetes::config::ApiAccess::Kubeconfig("/etc/prom/kc.yml".into()));
        assert_eq!(k[2].access, crate::discovery::kubernetes::config::ApiAccess::InCluster);

        let problems = load(
            "scrape_configs:\n- job_name: k\n  kubernetes_sd_configs:\n  - api_server: http://a\n  - role: ingres\n  - role: pod\n    api_server: http://a\n    kubeconfig_file: k\n  - role: pod\n    bearer_token: t\n  - role: service\n    selectors:\n    - {role: pod, label: 'a in b'}\n    - {role: service}\n    - {role: service}\n  - role: pod\n    kubeconfig_file: k\n    basic_auth: {username: u}\n  - role: pod\n    api_server: ftp://x\n  - role: pod\n    nonsense: 1\n",
        )
        .expect_err("invalid");
        let got: Vec<(u64, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(got.len(), 1, "an unknown field stops parsing: {got:?}");
        assert!(got[0].1.contains("nonsense"), "{got:?}");

        let problems = load(
            "scrape_configs:\n- job_name: k\n  kubernetes_sd_configs:\n  - api_server: http://a\n  - role: ingres\n  - role: pod\n    api_server: http://a\n    kubeconfig_file: k\n  - role: pod\n    bearer_token: t\n  - role: service\n    selectors:\n    - {role: pod, label: 'a in b'}\n    - {role: service}\n    - {role: service}\n  - role: pod\n    kubeconfig_file: k\n    basic_auth: {username: u}\n  - role: pod\n    api_server: ftp://x\n",
        )
        .expect_err("invalid");
        let got: Vec<(u64, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(
            got,
            [
                (4, "role missing (one of: pod, service, endpoints, endpointslice, node, ingress)"),
                (5, "unknown Kubernetes SD role \"ingres\""),
                (7, "cannot use 'kubeconfig_file' and 'api_server' simultaneously"),
                (9, "to use custom HTTP client configuration please provide the 'api_server' URL explicitly"),
                (13, "service role supports only service selectors"),
                (13, "invalid label selector: unable to parse requirement: \"a in b\""),
                (15, "duplicated selector role: service"),
                (17, "cannot use a custom HTTP client configuration together with 'kubeconfig_file'"),
                (20, "invalid api_server URL \"ftp://x\": must be http(s)://host[:port]"),
            ]
        );
    }

    #[test]
    fn relabeled_static_targets_are_not_checked_early() {
        let jobs = load(
            "scrape_configs:\n- job_name: a\n  relabel_configs: [{target_label: __address__, replacement: 'h:1'}]\n  file_sd_configs: [{files: ['/x/*.json'], refresh_interval: 1m}]\n  static_configs: [{targets: ['http://x/']}]\n",
        )
        .expect("valid");
        assert_eq!(first_target(&jobs[0]).address, "h:1");
        assert_eq!(jobs[0].file_sd[0].refresh_interval, Duration::from_secs(60));
    }
}
