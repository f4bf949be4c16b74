//! Storage settings: raw (from flags or a file) and validated.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Storage settings as given by the user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory for the ingest log and (with the local object store) blocks.
    pub path: PathBuf,
    /// Time range of the blocks the head is cut into (`--storage.tsdb.min-block-duration`).
    #[serde(default = "default_block_duration")]
    pub block_duration: strata_common::PromDuration,
    /// How often the head is checked for a range ready to flush.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: strata_common::PromDuration,
    /// Ingest log segment size before a new segment is started.
    #[serde(default = "default_segment_bytes")]
    pub segment_max_bytes: u64,
}

fn default_block_duration() -> strata_common::PromDuration {
    strata_common::PromDuration(Duration::from_secs(2 * 3600))
}
fn default_flush_interval() -> strata_common::PromDuration {
    strata_common::PromDuration(Duration::from_secs(60))
}
const fn default_segment_bytes() -> u64 {
    128 << 20
}

impl StorageConfig {
    /// Settings at `path` with every default.
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            block_duration: default_block_duration(),
            flush_interval: default_flush_interval(),
            segment_max_bytes: default_segment_bytes(),
        }
    }

    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<StorageSettings, Vec<String>> {
        let mut errors = Vec::new();
        if self.path.as_os_str().is_empty() {
            errors.push("storage path must not be empty".to_owned());
        }
        if self.block_duration.0 < Duration::from_secs(1) {
            errors.push(format!("block duration {} is below the minimum of 1s", self.block_duration));
        }
        if self.flush_interval.0 < Duration::from_millis(100) {
            errors.push(format!("flush interval {} is below the minimum of 100ms", self.flush_interval));
        }
        if self.segment_max_bytes < 1 << 16 {
            errors.push(format!("segment size {} is below the minimum of 65536 bytes", self.segment_max_bytes));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(StorageSettings {
            wal_dir: self.path.join("wal"),
            blocks_dir: self.path.join("blocks"),
            block_duration_ms: self.block_duration.as_millis_i64(),
            flush_interval: self.flush_interval.0,
            segment_max_bytes: self.segment_max_bytes,
        })
    }
}

/// Validated storage settings.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// The ingest log directory.
    pub wal_dir: PathBuf,
    /// Root of the local object store for blocks.
    pub blocks_dir: PathBuf,
    /// Block range in milliseconds.
    pub block_duration_ms: i64,
    /// Flush check interval.
    pub flush_interval: Duration,
    /// Ingest log segment size.
    pub segment_max_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_every_problem() {
        let mut c = StorageConfig::with_path("");
        c.block_duration = strata_common::PromDuration(Duration::from_millis(10));
        c.segment_max_bytes = 10;
        let errs = c.validate().expect_err("invalid");
        assert_eq!(errs.len(), 3, "{errs:?}");
    }
}
