//! Strata's block format: immutable Parquet files on object storage.
//!
//! A block holds every sample of one tenant in a time range `[min_time, max_time]`:
//!
//! ```text
//! <tenant>/<ulid>/samples.parquet   series_id, timestamp_ms, mantissa, value   (sorted by series_id, timestamp)
//! <tenant>/<ulid>/series.parquet    series_id, metric_name, labels, first_row, num_rows, min_time, max_time, exponent
//! <tenant>/<ulid>/meta.json         written last: a block without it does not exist
//! ```
//!
//! - [`counting`]: object store requests and bytes, in total and per query.
//! - [`meta`]: `meta.json`, the block's description and commit marker.
//! - [`decimal`]: values as integer mantissas with a per-series exponent.
//! - [`writer`]: turns sorted series into the two Parquet files.
//! - [`reader`]: matchers → exact row ranges → samples, with ranged reads.
//! - [`remote`]: S3-compatible object stores (settings, validation, HTTP client).
//! - [`store`]: the set of blocks of every tenant, readable as one [`strata_model::Select`].
//!
//! `docs/storage.md` documents the schema for users reading files with other tools.

pub mod counting;
pub mod decimal;
pub mod error;
pub mod io;
pub mod meta;
pub mod reader;
pub mod remote;
pub mod store;
pub mod writer;

pub use error::BlockError;
pub use meta::BlockMeta;
pub use reader::BlockReader;
pub use store::BlockStore;
pub use writer::write_block;
