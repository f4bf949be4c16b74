//! Prometheus' scrape configuration: `global` and `scrape_configs`.
//!
//! The raw types mirror `prometheus.yml` field for field (unknown fields are
//! errors); [`validate`] checks everything at once and returns [`ScrapeJob`]s,
//! or every problem with its line and column.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use strata_common::PromDuration;
use strata_model::labels::is_valid_label_name;
use strata_model::{Labels, LabelsBuilder};

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
    /// Fail the scrape when the page has more samples (0: no limit).
    #[serde(default)]
    pub sample_limit: u64,
    /// Fail the scrape when the body is larger, in bytes (0: no limit).
    #[serde(default)]
    pub body_size_limit: u64,
    /// Targets listed in the file.
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
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
    /// The targets.
    pub targets: Vec<Target>,
}

/// One target to scrape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    /// The labels every scraped series gets (`job`, `instance`, static labels).
    pub labels: Labels,
}

impl ScrapeJob {
    /// The URL scraped for `target`.
    pub fn url(&self, target: &Target) -> String {
        let mut url = format!("{}://{}{}", self.scheme, target.address, self.metrics_path);
        let mut sep = '?';
        for (k, vs) in &self.params {
            for v in vs {
                url.push(sep);
                url.push_str(&urlencode(k));
                url.push('=');
                url.push_str(&urlencode(v));
                sep = '&';
            }
        }
        url
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
                "https" => problems
                    .push(Problem::at(s, "scheme \"https\" is not supported yet (TLS comes with the collector work)")),
                other => problems
                    .push(Problem::at(s, format!("unknown scrape config scheme {other:?}: must be http or https"))),
            }
        }
        let metrics_path = sc.metrics_path.as_ref().map_or_else(|| "/metrics".to_owned(), |p| p.value.clone());
        if let Some(p) = &sc.metrics_path
            && !p.value.starts_with('/')
        {
            problems.push(Problem::at(p, format!("metrics_path {:?} must start with /", p.value)));
        }
        let mut targets = Vec::new();
        for st in &sc.static_configs {
            for name in st.labels.keys() {
                if !is_valid_label_name(name) {
                    let at = st.targets.first();
                    problems.push(Problem {
                        line: at.map_or(0, |t| t.referenced.line()),
                        column: at.map_or(0, |t| t.referenced.column()),
                        message: format!("{name:?} is not a valid label name in static_configs of job {job:?}"),
                    });
                }
            }
            for t in &st.targets {
                if let Err(msg) = check_address(&t.value) {
                    problems.push(Problem::at(t, msg));
                    continue;
                }
                let mut b = LabelsBuilder::new();
                for (k, v) in &st.labels {
                    b.set(k.clone(), v.clone());
                }
                b.set("job", job.clone());
                if b.get("instance").is_none() {
                    b.set("instance", t.value.clone());
                }
                targets.push(Target { address: t.value.clone(), labels: b.build() });
            }
        }
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
            targets,
        });
    }
    if problems.is_empty() { Ok(jobs) } else { Err(problems) }
}

/// `host:port`, with no scheme or path, as Prometheus requires of `__address__`.
fn check_address(addr: &str) -> Result<(), String> {
    if addr.contains('/') || addr.is_empty() {
        return Err(format!("{addr:?} is not a valid hostname:port target"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("target {addr:?} has no port"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{addr:?} is not a valid hostname:port target"));
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
        let t = &jobs[0].targets[0];
        assert_eq!(t.labels.get("job"), Some("node"));
        assert_eq!(t.labels.get("instance"), Some("localhost:9100"));
        assert_eq!(t.labels.get("env"), Some("prod"));
        assert_eq!(jobs[0].url(t), "http://localhost:9100/metrics");
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let problems = load(
            "scrape_configs:\n- job_name: a\n  scrape_interval: 5s\n  scrape_timeout: 10s\n- job_name: a\n  static_configs:\n  - targets: ['nohost', 'x:1']\n",
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
        assert_eq!(jobs[0].url(&jobs[0].targets[0]), "http://h:1/metrics?module=http%202xx");
    }
}
