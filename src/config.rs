//! The `--config.file`: Prometheus' `prometheus.yml`, the sections Strata
//! runs today (`global`, `scrape_configs`, `rule_files`, `alerting`), plus
//! Strata's `prometheus_operator` section (ServiceMonitors and PodMonitors
//! read from the Kubernetes API). Unknown fields are errors, and every
//! problem is reported at once with `file:line:column` (rule files'
//! problems name the rule file).

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;
use strata_collector::config::{
    DEFAULT_SCRAPE_INTERVAL, DEFAULT_SCRAPE_TIMEOUT, GlobalConfig, Problem, ScrapeConfig, ScrapeJob, validate,
};
use strata_collector::discovery::kubernetes::monitors::{self, OperatorConfig, RawOperatorConfig};
use strata_ruler::RulerConfig;
use strata_ruler::notifier::RawAlertingConfig;

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
    /// Rule file globs, relative to the config file's directory.
    #[serde(default)]
    pub rule_files: Vec<Spanned<String>>,
    /// Where alerts go (`alertmanagers`, `alert_relabel_configs`).
    #[serde(default)]
    pub alerting: RawAlertingConfig,
    /// Strata: ServiceMonitors and PodMonitors to turn into scrape jobs
    /// (selectors named as in the Prometheus resource).
    pub prometheus_operator: Option<Spanned<RawOperatorConfig>>,
}

/// The validated file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Scrape jobs with their targets.
    pub scrape_jobs: Vec<ScrapeJob>,
    /// Rule groups, evaluation defaults and alerting.
    pub ruler: RulerConfig,
    /// The `prometheus_operator` section, when present.
    pub operator: Option<OperatorConfig>,
}

/// Everything wrong with a config file.
#[derive(Debug)]
pub struct ConfigError {
    file: String,
    problems: Vec<Problem>,
    /// Problems in other files (rule files), already prefixed with their file.
    others: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len() + self.others.len();
        write!(f, "invalid config file {:?} ({n} error{}):", self.file, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            if p.line > 0 {
                write!(f, "\n  {}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
            } else {
                write!(f, "\n  {}: {}", self.file, p.message)?;
            }
        }
        for o in &self.others {
            write!(f, "\n  {o}")?;
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
        others: Vec::new(),
    })?;
    // Relative file paths in the config are relative to its directory, as in Prometheus.
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut config = parse_in(&file, &text, Some(dir))?;
    for job in &mut config.scrape_jobs {
        job.resolve_paths(dir);
    }
    config.ruler.alerting.resolve_paths(dir);
    if let Some(op) = &mut config.operator {
        op.resolve_paths(dir);
    }
    Ok(config)
}

/// Reads the rule files `patterns` name (relative to `dir`); problems go to
/// `problems` (in the config file) and `others` (in the rule files).
fn load_rule_files(
    dir: &Path,
    patterns: &[Spanned<String>],
    interval: std::time::Duration,
    problems: &mut Vec<Problem>,
    others: &mut Vec<String>,
) -> Vec<strata_ruler::rulefile::RuleGroup> {
    let mut groups = Vec::new();
    for p in patterns {
        let paths = match strata_ruler::rulefile::expand_globs(dir, std::slice::from_ref(&p.value)) {
            Ok(paths) => paths,
            Err(message) => {
                problems.push(Problem { line: p.referenced.line(), column: p.referenced.column(), message });
                continue;
            }
        };
        for rf in paths {
            let name = rf.display().to_string();
            match std::fs::read_to_string(&rf) {
                Ok(text) => match strata_ruler::rulefile::parse_rule_file(&name, &text, interval) {
                    Ok(g) => groups.extend(g),
                    Err(e) => others.extend(e.problems.iter().map(|p| format!("{name}:{p}"))),
                },
                Err(e) => problems.push(Problem {
                    line: p.referenced.line(),
                    column: p.referenced.column(),
                    message: format!("cannot read rule file {name}: {e}"),
                }),
            }
        }
    }
    groups
}

/// Parses and validates config text; `file` names it in errors.
#[cfg(test)]
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    parse_in(file, text, None)
}

/// [`parse`], reading rule files relative to `dir` (none are read without one).
fn parse_in(file: &str, text: &str, dir: Option<&Path>) -> Result<Config, ConfigError> {
    let raw: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            problems: vec![yaml_problem(&e)],
            others: Vec::new(),
        })?
    };
    let (mut problems, mut others) = (Vec::new(), Vec::new());
    let scrape_jobs = validate(&raw.global, &raw.scrape_configs).unwrap_or_else(|p| {
        problems.extend(p);
        Vec::new()
    });
    let operator = raw.prometheus_operator.as_ref().and_then(|op| {
        let interval = raw.global.scrape_interval.as_ref().map_or(DEFAULT_SCRAPE_INTERVAL, |d| d.value.0);
        let timeout = raw.global.scrape_timeout.as_ref().map_or(DEFAULT_SCRAPE_TIMEOUT, |d| d.value.0).min(interval);
        monitors::validate(op, interval, timeout).map_err(|p| problems.extend(p)).ok()
    });
    let alerting = raw.alerting.validate(&mut problems);
    let evaluation_interval =
        raw.global.evaluation_interval.as_ref().map_or(std::time::Duration::from_secs(60), |d| d.value.0);
    let file_groups = match dir {
        Some(dir) => load_rule_files(dir, &raw.rule_files, evaluation_interval, &mut problems, &mut others),
        None => Vec::new(),
    };
    if !problems.is_empty() || !others.is_empty() {
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(ConfigError { file: file.to_owned(), problems, others });
    }
    let ruler =
        RulerConfig { file_groups, evaluation_interval, external_labels: raw.global.external_labels.clone(), alerting };
    Ok(Config { scrape_jobs, ruler, operator })
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
    fn rule_file_and_alerting_problems_are_reported_together() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("r.yml"), "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: sum(\n")
            .expect("write");
        let cfg = dir.path().join("prom.yaml");
        std::fs::write(&cfg, "rule_files: ['*.yml', missing.yml]\nalerting:\n  alertmanagers:\n  - api_version: v9\n")
            .expect("write");
        let msg = load(&cfg).expect_err("invalid").to_string();
        assert!(msg.contains("prom.yaml:4:"), "{msg}");
        assert!(msg.contains("r.yml:5:11: group \"g\", rule 1, \"A\": could not parse expression"), "{msg}");
        assert!(msg.contains("cannot read rule file"), "{msg}");
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
