//! The `--config.file`: Prometheus' `prometheus.yml`, the sections Strata
//! runs today (`global`, `scrape_configs`). Unknown fields are errors, and
//! every problem is reported at once with `file:line:column`.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use strata_collector::config::{GlobalConfig, Problem, ScrapeConfig, ScrapeJob, validate};

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
}

/// The validated file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Scrape jobs with their targets.
    pub scrape_jobs: Vec<ScrapeJob>,
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
    let scrape_jobs = validate(&raw.global, &raw.scrape_configs)
        .map_err(|problems| ConfigError { file: file.to_owned(), problems })?;
    Ok(Config { scrape_jobs })
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
    fn empty_file_is_valid() {
        assert!(parse("p.yml", "").expect("valid").scrape_jobs.is_empty());
    }
}
