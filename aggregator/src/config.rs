//! Storage settings: raw (from flags or a file) and validated.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
pub use strata_block::remote::{ObjectStoreConfig, ObjectStoreSettings};

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
    /// Time range blocks are compacted into once the range is complete.
    #[serde(default = "default_compaction_range")]
    pub compaction_range: strata_common::PromDuration,
    /// Blocks whose newest sample is older than this are deleted (0: keep forever).
    #[serde(default = "default_retention")]
    pub retention: strata_common::PromDuration,
    /// Per-tenant retention, overriding `retention`.
    #[serde(default)]
    pub tenant_retention: std::collections::BTreeMap<String, strata_common::PromDuration>,
    /// Where blocks go: the local filesystem under `path` (default) or an
    /// S3-compatible bucket. The ingest log always stays on local disk.
    #[serde(default)]
    pub object_store: ObjectStoreConfig,
}

fn default_block_duration() -> strata_common::PromDuration {
    strata_common::PromDuration(Duration::from_secs(2 * 3600))
}
fn default_flush_interval() -> strata_common::PromDuration {
    strata_common::PromDuration(Duration::from_secs(60))
}
fn default_retention() -> strata_common::PromDuration {
    strata_common::PromDuration(Duration::ZERO)
}
fn default_compaction_range() -> strata_common::PromDuration {
    strata_common::PromDuration(Duration::from_secs(24 * 3600))
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
            compaction_range: default_compaction_range(),
            retention: default_retention(),
            tenant_retention: Default::default(),
            object_store: ObjectStoreConfig::default(),
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
        if self.compaction_range.0 < self.block_duration.0 {
            errors.push(format!(
                "compaction range {} is shorter than the block duration {}",
                self.compaction_range, self.block_duration
            ));
        }
        let object_store = self.object_store.validate().map_err(|e| errors.extend(e)).ok();
        let Some(object_store) = object_store.filter(|_| errors.is_empty()) else { return Err(errors) };
        Ok(StorageSettings {
            object_store,
            wal_dir: self.path.join("wal"),
            blocks_dir: self.path.join("blocks"),
            block_duration_ms: self.block_duration.as_millis_i64(),
            flush_interval: self.flush_interval.0,
            segment_max_bytes: self.segment_max_bytes,
            compaction_range_ms: self.compaction_range.as_millis_i64(),
            retention_ms: self.retention.as_millis_i64(),
            tenant_retention_ms: self.tenant_retention.iter().map(|(t, d)| (t.clone(), d.as_millis_i64())).collect(),
        })
    }
}

/// Validated storage settings.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Where blocks go.
    pub object_store: ObjectStoreSettings,
    /// The ingest log directory.
    pub wal_dir: PathBuf,
    /// Root of the local object store for blocks (when `object_store` is local).
    pub blocks_dir: PathBuf,
    /// Block range in milliseconds.
    pub block_duration_ms: i64,
    /// Flush check interval.
    pub flush_interval: Duration,
    /// Ingest log segment size.
    pub segment_max_bytes: u64,
    /// Compaction range in milliseconds.
    pub compaction_range_ms: i64,
    /// Retention in milliseconds; 0 keeps blocks forever.
    pub retention_ms: i64,
    /// Per-tenant retention in milliseconds, overriding `retention_ms`.
    pub tenant_retention_ms: std::collections::BTreeMap<String, i64>,
}

impl StorageSettings {
    /// The retention of `tenant` in milliseconds (0: forever).
    pub fn retention_of(&self, tenant: &str) -> i64 {
        self.tenant_retention_ms.get(tenant).copied().unwrap_or(self.retention_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_every_problem() {
        let mut c = StorageConfig::with_path("");
        c.block_duration = strata_common::PromDuration(Duration::from_millis(10));
        c.segment_max_bytes = 10;
        c.object_store.url = "s3:/bucket".into();
        let errs = c.validate().expect_err("invalid");
        assert_eq!(errs.len(), 4, "{errs:?}");
    }
}
