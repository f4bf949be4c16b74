//! The storage boundary: [`Append`] for writes, [`Select`] for reads.
//!
//! Every writer (scrape loops, remote write, import) talks to an `Append`;
//! every reader (PromQL, the series and label APIs) to a `Select`. Keeping the
//! two traits this narrow is what lets heads, blocks, remote aggregators and
//! test doubles stand in for one another.

use std::future::Future;
use std::pin::Pin;

use crate::{Labels, Matcher, Sample, WriteBatch};

/// A boxed future, for object-safe async traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an append did with the batch's samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendSummary {
    /// Samples now durable and queryable.
    pub accepted: usize,
    /// Samples refused as out of order or duplicate with another value.
    pub out_of_order: usize,
    /// Samples refused as older than what the head still accepts.
    pub out_of_bounds: usize,
}

/// Why an append failed as a whole; nothing of the batch was acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The batch is malformed (client error, not retryable).
    #[error("invalid batch: {0}")]
    Invalid(String),
    /// The ingest log could not make the batch durable (retryable).
    #[error("ingest log unavailable: {0}")]
    Unavailable(String),
    /// The storage is shutting down (retryable elsewhere).
    #[error("storage is shutting down")]
    ShuttingDown,
}

/// Durable writes of [`WriteBatch`]es.
pub trait Append: Send + Sync {
    /// Appends `batch`; resolves once the ingest log holds it. On `Ok`, every
    /// accepted sample survives a crash.
    fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>>;
}

/// One series read back from storage, samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' identity.
    pub labels: Labels,
    /// Samples in increasing time order.
    pub samples: Vec<Sample>,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// Reading a block or a remote head failed.
    #[error("storage read failed: {0}")]
    Storage(String),
    /// The read would exceed a configured limit.
    #[error("{0}")]
    Limit(String),
}

/// Reads of series by label matchers over a time range.
pub trait Select: Send + Sync {
    /// The series of `tenant` matching all `matchers`, with their samples in
    /// `[mint, maxt]` (milliseconds, inclusive), sorted by labels. Series with
    /// no sample in range are left out.
    fn select<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<Series>, SelectError>>;
}

/// Merges series sets (each sorted by labels) into one set sorted by labels.
/// Samples of the same series are merged by time; on equal timestamps the
/// sample from the earlier set wins, which deduplicates replicas and the
/// overlap of a head with the blocks flushed from it.
pub fn merge_series_sets(sets: Vec<Vec<Series>>) -> Vec<Series> {
    let mut non_empty: Vec<Vec<Series>> = sets.into_iter().filter(|s| !s.is_empty()).collect();
    match non_empty.len() {
        0 => return Vec::new(),
        1 => return non_empty.pop().unwrap_or_default(),
        _ => {}
    }
    let mut by_labels: std::collections::BTreeMap<Labels, Vec<Sample>> = std::collections::BTreeMap::new();
    for set in non_empty {
        for s in set {
            match by_labels.entry(s.labels) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(s.samples);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    let merged = merge_samples(e.get(), &s.samples);
                    *e.get_mut() = merged;
                }
            }
        }
    }
    by_labels.into_iter().map(|(labels, samples)| Series { labels, samples }).collect()
}

/// Merges two time-ordered sample lists; on equal timestamps `a` wins.
pub fn merge_samples(a: &[Sample], b: &[Sample]) -> Vec<Sample> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].t.cmp(&b[j].t) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, ts: &[i64]) -> Series {
        Series {
            labels: Labels::from_pairs([("__name__", name)]).unwrap_or_default(),
            samples: ts.iter().map(|&t| Sample::new(t, t as f64)).collect(),
        }
    }

    #[test]
    fn merge_dedupes_overlap() {
        let a = vec![series("a", &[1, 2, 3]), series("c", &[1])];
        let b = vec![series("a", &[3, 4]), series("b", &[5])];
        let m = merge_series_sets(vec![a, b]);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].samples.iter().map(|s| s.t).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(m[1].labels.metric_name(), Some("b"));
    }
}
