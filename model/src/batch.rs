//! [`WriteBatch`]: the one unit of every write path.
//!
//! Scrapes, remote write, import and the ingest log all move batches: a
//! tenant and a list of series, each with its samples in time order.

use crate::{Labels, Sample};

/// One series and its new samples, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeries {
    /// The series' identity.
    pub labels: Labels,
    /// New samples, in increasing time order.
    pub samples: Vec<Sample>,
}

/// A batch of samples for one tenant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WriteBatch {
    /// The tenant the samples belong to.
    pub tenant: String,
    /// The series with their samples.
    pub series: Vec<TimeSeries>,
}

impl WriteBatch {
    /// An empty batch for `tenant`.
    pub fn new(tenant: impl Into<String>) -> Self {
        Self { tenant: tenant.into(), series: Vec::new() }
    }

    /// Adds one sample of one series.
    pub fn push(&mut self, labels: Labels, sample: Sample) {
        self.series.push(TimeSeries { labels, samples: vec![sample] });
    }

    /// Total number of samples.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    /// Whether the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.samples.is_empty())
    }
}
