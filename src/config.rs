//! The `--config.file`: Prometheus' `prometheus.yml`, the sections Strata
//! runs today (`global`, `scrape_configs`), plus Strata's
//! `prometheus_operator` section (ServiceMonitors and PodMonitors read from
//! the Kubernetes API). Unknown fields are errors, and every problem is
//! reported at once with `file:line:column`.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;
use strata_collector::config::{
    DEFAULT_SCRAPE_INTERVAL, DEFAULT_SCRAPE_TIMEOUT, GlobalConfig, Problem, ScrapeConfig, ScrapeJob, validate,
};
use strata_collector::discovery::kubernetes::monitors::{self, OperatorConfig, RawOperatorConfig};

/// The raw file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Prometheus' `global` section.
    #[serde(default)]
    pub global: GlobalConfig,
    /// Prometheus' `scrape_configs`.
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
    /// Strata: ServiceMonitors and PodMonitors to turn into scrape jobs
    /// (selectors named as in the Prometheus resource).
    pub prometheus_operator: Option<Spanned<RawOperatorConfig>>,
}

/// The validated file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Scrape jobs with their targets.
    pub scrape_jobs: Vec<ScrapeJob>,
    /// The `prometheus_operator` section, when present.
    pub operator: Option<OperatorConfig>,
}

/// Everything wrong with a config file.
#[derive(Debug)]
pub struct ConfigError {
    file: String,
    problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "invalid config file {:?} ({n} error{}):", self.file, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            if p.line > 0 {
                write!(f, "\n  {}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
            } else {
                write!(f, "\n  {}: {}", self.file, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        problems: vec![Problem { line: 0, column: 0, message: format!("cannot read: {e}") }],
    })?;
    let mut config = parse(&file, &text)?;
    // Relative file paths in the config are relative to its directory, as in Prometheus.
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    for job in &mut config.scrape_jobs {
        job.resolve_paths(dir);
    }
    if let Some(op) = &mut config.operator {
        op.resolve_paths(dir);
    }
    Ok(config)
}

/// Parses and validates config text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let raw: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        serde_saphyr::from_str(text)
            .map_err(|e| ConfigError { file: file.to_owned(), problems: vec![yaml_problem(&e)] })?
    };
    let jobs = validate(&raw.global, &raw.scrape_configs);
    let operator = raw.prometheus_operator.as_ref().map(|op| {
        let interval = raw.global.scrape_interval.as_ref().map_or(DEFAULT_SCRAPE_INTERVAL, |d| d.value.0);
        let timeout = raw.global.scrape_timeout.as_ref().map_or(DEFAULT_SCRAPE_TIMEOUT, |d| d.value.0).min(interval);
        monitors::validate(op, interval, timeout)
    });
    let mut problems = Vec::new();
    let scrape_jobs = jobs.unwrap_or_else(|p| {
        problems.extend(p);
        Vec::new()
    });
    let operator = match operator {
        Some(Err(p)) => {
            problems.extend(p);
            None
        }
        Some(Ok(o)) => Some(o),
        None => None,
    };
    if !problems.is_empty() {
        return Err(ConfigError { file: file.to_owned(), problems });
    }
    Ok(Config { scrape_jobs, operator })
}

fn yaml_problem(e: &serde_saphyr::Error) -> Problem {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    // The message proper, without the snippet the library may render around it.
    let first = e.to_string().lines().next().unwrap_or_default().to_owned();
    let message = strip_location_prefix(&first).to_owned();
    Problem { line, column, message }
}

/// `error: line 5 column 5: unknown field` → `unknown field` (the location is printed by us).
fn strip_location_prefix(msg: &str) -> &str {
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some((loc, tail)) = rest.split_once(": ")
        && loc.split(" column ").all(|n| n.bytes().all(|b| b.is_ascii_digit()))
    {
        return tail;
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_names_file_and_line() {
        let err = parse("p.yml", "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: x\n    bogus: 1\n")
            .expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("p.yml:5:"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn bad_duration_names_its_line() {
        let err = parse("p.yml", "global:\n  scrape_interval: 15x\n").expect_err("invalid");
        assert!(err.to_string().contains("p.yml:2:"), "{err}");
    }

    #[test]
    fn prometheus_operator_section_is_validated_with_the_rest() {
        let config = parse(
            "p.yml",
            "global: {scrape_interval: 30s}\nprometheus_operator:\n  api_server: http://127.0.0.1:1\n  serviceMonitorSelector: {matchLabels: {team: a}}\n  podMonitorNamespaceSelector: {}\n",
        )
        .expect("valid");
        let op = config.operator.expect("operator section");
        assert_eq!(op.interval, std::time::Duration::from_secs(30));
        assert!(op.service_monitor_selector.is_some() && op.pod_monitor_selector.is_none());
        let err = parse(
            "p.yml",
            "scrape_configs:\n- job_name: ''\nprometheus_operator:\n  api_server: http://x\n  kubeconfig_file: k\n  serviceDiscoveryRole: Nodes\n",
        )
        .expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("3 errors"), "{msg}");
        assert!(msg.contains("p.yml:4:") && msg.contains("simultaneously"), "{msg}");
        assert!(msg.contains("p.yml:6:") && msg.contains("serviceDiscoveryRole"), "{msg}");
    }

    #[test]
    fn empty_file_is_valid() {
        assert!(parse("p.yml", "").expect("valid").scrape_jobs.is_empty());
    }
}
