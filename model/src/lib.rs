//! Strata's data model, shared by every role.
//!
//! - [`labels`]: label sets, the identity of a series.
//! - [`sample`]: one `(timestamp, value)` point, and Prometheus' staleness marker.
//! - [`batch`]: [`WriteBatch`], the one unit every write path moves (scrapes,
//!   remote write, import, the ingest log).
//! - [`matcher`]: label matchers, the one way storage is asked for series.
//! - [`storage`]: the two narrow traits at the storage boundary,
//!   [`Append`] (write a batch durably) and [`Select`] (read series, label names
//!   and values by matchers, within a [`SelectHints`] sample budget).

pub mod batch;
pub mod error;
pub mod labels;
pub mod matcher;
pub mod sample;
pub mod storage;

pub use batch::{TimeSeries, WriteBatch};
pub use error::ModelError;
pub use labels::{Label, Labels, LabelsBuilder, METRIC_NAME};
pub use matcher::{MatchOp, Matcher};
pub use sample::{STALE_NAN_BITS, Sample, is_stale_nan, stale_nan};
pub use storage::{
    Append, AppendError, AppendSummary, BoxFuture, MergedBatches, OneBatch, SampleBudget, Select, SelectError,
    SelectHints, Series, SeriesBatches, TOO_MANY_SAMPLES, merge_label_sets, merge_parts, merge_samples,
    merge_series_sets,
};

/// The tenant used when a request names none (Mimir's and Cortex' default).
pub const DEFAULT_TENANT: &str = "anonymous";
