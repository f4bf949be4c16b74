//! `meta.json`: what a block holds; written last, so its presence commits the block.

use serde::{Deserialize, Serialize};

/// The block format version this code writes: 2 codes values as decimal
/// mantissas (`mantissa` column, `exponent` per series) with raw doubles
/// where that is not exact; 1 (still read) has only a `value` column.
pub const FORMAT_VERSION: u32 = 2;

/// Name of the samples file inside a block directory.
pub const SAMPLES_FILE: &str = "samples.parquet";
/// Name of the series file inside a block directory.
pub const SERIES_FILE: &str = "series.parquet";
/// Name of the meta file inside a block directory.
pub const META_FILE: &str = "meta.json";

/// The description of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockMeta {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The block's id, a ULID (sortable by creation time).
    pub ulid: String,
    /// The tenant whose samples the block holds.
    pub tenant: String,
    /// Smallest sample timestamp, milliseconds.
    pub min_time: i64,
    /// Largest sample timestamp, milliseconds.
    pub max_time: i64,
    /// Number of series.
    pub num_series: u64,
    /// Number of samples.
    pub num_samples: u64,
    /// Size in bytes of `samples.parquet`.
    pub samples_bytes: u64,
    /// Size in bytes of `series.parquet`.
    pub series_bytes: u64,
    /// The head watermark this block was cut at: every sample of the tenant
    /// older than this is in a block. A restarted aggregator replays its
    /// ingest log only from here.
    pub flushed_until: i64,
}

impl BlockMeta {
    /// The block's directory, `<tenant>/<ulid>`.
    pub fn dir(&self) -> String {
        format!("{}/{}", self.tenant, self.ulid)
    }

    /// Whether the block has samples in `[mint, maxt]`.
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.min_time <= maxt && self.max_time >= mint
    }
}
