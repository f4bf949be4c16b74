//! NATS settings: raw (`deny_unknown_fields`) and validated.

use std::time::Duration;

use serde::Deserialize;
use strata_common::PromDuration;

/// How Strata uses NATS JetStream, as the user writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Stream name (default `STRATA_INGEST`).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Subject prefix; shard `n` is `<prefix>.<n>` (default `strata.ingest`).
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// Number of logical shards; fixed for the life of a stream (default 64).
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// How long the stream keeps messages: longer than a block range plus a
    /// flush, so a replacement aggregator can replay (default 6h).
    #[serde(default = "default_max_age")]
    pub max_age: PromDuration,
    /// JetStream replicas of the stream (1 or 3 in a NATS cluster).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
}

fn default_stream() -> String {
    "STRATA_INGEST".into()
}
fn default_prefix() -> String {
    "strata.ingest".into()
}
const fn default_shards() -> u32 {
    64
}
fn default_max_age() -> PromDuration {
    PromDuration(Duration::from_secs(6 * 3600))
}
const fn default_replicas() -> usize {
    1
}

impl NatsConfig {
    /// Defaults for a server at `url`.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: default_stream(),
            subject_prefix: default_prefix(),
            shards: default_shards(),
            max_age: default_max_age(),
            replicas: default_replicas(),
        }
    }

    /// Checks every setting; reports all problems at once.
    pub fn validate(&self) -> Result<NatsSettings, Vec<String>> {
        let mut errors = Vec::new();
        if !(self.url.starts_with("nats://") || self.url.starts_with("tls://")) {
            errors.push(format!("nats url {:?} must start with nats:// or tls://", self.url));
        }
        let token_ok =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !token_ok(&self.stream) {
            errors.push(format!("stream name {:?} may hold only letters, digits, '_' and '-'", self.stream));
        }
        if self.subject_prefix.is_empty()
            || self.subject_prefix.split('.').any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
        {
            errors.push(format!("subject prefix {:?} is not a valid NATS subject", self.subject_prefix));
        }
        if !(1..=4096).contains(&self.shards) {
            errors.push(format!("shards must be between 1 and 4096, got {}", self.shards));
        }
        if self.max_age.0 < Duration::from_secs(60) {
            errors.push(format!("max_age {} is below the minimum of 1m", self.max_age));
        }
        if !(1..=5).contains(&self.replicas) {
            errors.push(format!("replicas must be between 1 and 5, got {}", self.replicas));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(NatsSettings {
            url: self.url.clone(),
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            shards: self.shards,
            max_age: self.max_age.0,
            replicas: self.replicas,
        })
    }
}

/// Validated NATS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Server URL.
    pub url: String,
    /// Stream name.
    pub stream: String,
    /// Subject prefix.
    pub subject_prefix: String,
    /// Number of shards.
    pub shards: u32,
    /// Message retention.
    pub max_age: Duration,
    /// Stream replicas.
    pub replicas: usize,
}

impl NatsSettings {
    /// The subject of shard `shard`.
    pub fn subject(&self, shard: u32) -> String {
        format!("{}.{shard}", self.subject_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_every_problem() {
        let mut c = NatsConfig::with_url("http://x");
        c.stream = "a.b".into();
        c.shards = 0;
        c.subject_prefix = "a..b".into();
        assert_eq!(c.validate().expect_err("invalid").len(), 4);
        assert!(NatsConfig::with_url("nats://127.0.0.1:4222").validate().is_ok());
    }
}
