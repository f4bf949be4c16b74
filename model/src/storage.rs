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
    /// Samples dropped because they came from an HA replica that is not the
    /// elected one (the elected replica sends the same data).
    pub deduplicated: usize,
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
    /// The tenant is over one of its limits (HTTP 429, gRPC
    /// `RESOURCE_EXHAUSTED`); nothing of the batch was stored.
    #[error("{0}")]
    LimitExceeded(String),
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

/// The message of [`SelectError::Limit`] when a read would load more samples
/// than the reader allows (Prometheus' wording for the same failure).
pub const TOO_MANY_SAMPLES: &str = "query processing would load too many samples into memory in query execution";

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

impl SelectError {
    /// The error of a read that went over [`SelectHints::max_samples`].
    pub fn too_many_samples() -> Self {
        Self::Limit(TOO_MANY_SAMPLES.to_owned())
    }
}

/// What a reader tells storage about a select, so storage can stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectHints {
    /// Most samples the select may return. Storage stops reading once it has
    /// more and fails with [`SelectError::too_many_samples`], so a query over
    /// too much data fails before memory runs out.
    pub max_samples: usize,
}

impl Default for SelectHints {
    fn default() -> Self {
        Self { max_samples: usize::MAX }
    }
}

/// Counts samples against [`SelectHints::max_samples`] while a select reads.
#[derive(Debug, Clone, Copy)]
pub struct SampleBudget {
    left: usize,
}

impl SampleBudget {
    /// A budget of `hints.max_samples`.
    pub fn new(hints: &SelectHints) -> Self {
        Self { left: hints.max_samples }
    }

    /// Takes `n` samples from the budget; fails once it is exceeded.
    pub fn take(&mut self, n: usize) -> Result<(), SelectError> {
        match self.left.checked_sub(n) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(SelectError::too_many_samples()),
        }
    }

    /// Samples still allowed.
    pub fn left(&self) -> usize {
        self.left
    }
}

/// The series of one select, delivered in batches so a reader can work
/// through a large selection holding one batch at a time.
///
/// Every series comes in exactly one batch, whole (all its samples in the
/// range); each batch is sorted by labels and comes after every series of
/// the batches before it, so the concatenation of all batches is what
/// [`Select::select_with`] returns.
pub trait SeriesBatches: Send {
    /// The next batch, or `None` after the last one. The sample budget of
    /// the select ([`SelectHints::max_samples`]) spans all batches.
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<Vec<Series>>, SelectError>>;
}

/// [`SeriesBatches`] of one batch read at once (the default of
/// [`Select::select_batches`]).
#[derive(Debug)]
pub struct OneBatch(Option<Vec<Series>>);

impl OneBatch {
    /// All of `series` as one batch.
    pub fn new(series: Vec<Series>) -> Self {
        Self(Some(series))
    }
}

impl SeriesBatches for OneBatch {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<Vec<Series>>, SelectError>> {
        let next = self.0.take();
        Box::pin(async move { Ok(next) })
    }
}

/// The series of `front` (sorted by labels) merged into the batches of
/// `rest`, as [`merge_series_sets`] would merge `[front, all of rest]`: each
/// batch of `rest` takes the series of `front` up to its last label set,
/// and `front`'s samples win on equal timestamps. (A head in memory before
/// the blocks, for example.)
pub struct MergedBatches<'a> {
    front: std::collections::VecDeque<Series>,
    rest: Box<dyn SeriesBatches + 'a>,
}

impl<'a> MergedBatches<'a> {
    /// `front` merged into `rest`.
    pub fn new(front: Vec<Series>, rest: Box<dyn SeriesBatches + 'a>) -> Self {
        Self { front: front.into(), rest }
    }
}

impl SeriesBatches for MergedBatches<'_> {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<Vec<Series>>, SelectError>> {
        Box::pin(async move {
            while let Some(batch) = self.rest.next_batch().await? {
                let Some(last) = batch.last().map(|s| &s.labels) else { continue };
                let n = self.front.partition_point(|s| s.labels <= *last);
                let front: Vec<Series> = self.front.drain(..n).collect();
                return Ok(Some(merge_series_sets(vec![front, batch])));
            }
            let rest: Vec<Series> = self.front.drain(..).collect();
            Ok((!rest.is_empty()).then_some(rest))
        })
    }
}

/// Reads of series by label matchers over a time range.
///
/// Implementors provide [`Select::select_with`] and, for speed,
/// [`Select::series`] (label sets without samples); the label-name and
/// label-value queries derive from `series` unless overridden.
pub trait Select: Send + Sync {
    /// The series of `tenant` matching all `matchers`, with their samples in
    /// `[mint, maxt]` (milliseconds, inclusive), sorted by labels. Series with
    /// no sample in range are left out. Fails with
    /// [`SelectError::too_many_samples`] once more than `hints.max_samples`
    /// samples would be returned, without reading the rest.
    fn select_with<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> BoxFuture<'a, Result<Vec<Series>, SelectError>>;

    /// [`Select::select_with`] without limits.
    fn select<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<Series>, SelectError>> {
        self.select_with(tenant, matchers, mint, maxt, SelectHints::default())
    }

    /// [`Select::select_with`] delivered in batches (see [`SeriesBatches`]),
    /// for readers that process series one by one. The default reads
    /// everything as one batch; stores override it to bound memory.
    fn select_batches<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> BoxFuture<'a, Result<Box<dyn SeriesBatches + 'a>, SelectError>> {
        Box::pin(async move {
            let all = self.select_with(tenant, matchers, mint, maxt, hints).await?;
            Ok(Box::new(OneBatch::new(all)) as Box<dyn SeriesBatches + 'a>)
        })
    }

    /// The label sets of `tenant`'s series matching all `matchers` (all
    /// series when empty) with a sample in `[mint, maxt]`, sorted, without
    /// duplicates. The default reads samples; stores override it with an
    /// index lookup.
    fn series<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<Labels>, SelectError>> {
        Box::pin(async move {
            let got = self.select_with(tenant, matchers, mint, maxt, SelectHints::default()).await?;
            Ok(got.into_iter().map(|s| s.labels).collect())
        })
    }

    /// The label names of the series [`Select::series`] returns, sorted.
    fn label_names<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, SelectError>> {
        Box::pin(async move {
            let series = self.series(tenant, matchers, mint, maxt).await?;
            let names: std::collections::BTreeSet<&str> =
                series.iter().flat_map(|l| l.iter().map(|l| l.name.as_str())).collect();
            Ok(names.into_iter().map(str::to_owned).collect())
        })
    }

    /// The values of label `name` over the series [`Select::series`]
    /// returns, sorted; series without the label are skipped.
    fn label_values<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, SelectError>> {
        Box::pin(async move {
            let series = self.series(tenant, matchers, mint, maxt).await?;
            let values: std::collections::BTreeSet<&str> = series.iter().filter_map(|l| l.get(name)).collect();
            Ok(values.into_iter().map(str::to_owned).collect())
        })
    }
}

/// Merges sorted, duplicate-free label-set lists into one.
pub fn merge_label_sets(sets: Vec<Vec<Labels>>) -> Vec<Labels> {
    let mut non_empty: Vec<Vec<Labels>> = sets.into_iter().filter(|s| !s.is_empty()).collect();
    if non_empty.len() <= 1 {
        return non_empty.pop().unwrap_or_default();
    }
    let all: std::collections::BTreeSet<Labels> = non_empty.into_iter().flatten().collect();
    all.into_iter().collect()
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
    // Parts of each series, in set order; merged once at the end, so a
    // series spread over many blocks is copied once, not once per block.
    let mut by_labels: std::collections::BTreeMap<Labels, Vec<Vec<Sample>>> = std::collections::BTreeMap::new();
    for set in non_empty {
        for s in set {
            by_labels.entry(s.labels).or_default().push(s.samples);
        }
    }
    by_labels.into_iter().map(|(labels, parts)| Series { labels, samples: merge_parts(parts) }).collect()
}

/// Merges time-ordered sample lists of one series; on equal timestamps the
/// earlier list wins. Lists that do not overlap in time (blocks) are
/// concatenated.
pub fn merge_parts(mut parts: Vec<Vec<Sample>>) -> Vec<Sample> {
    parts.retain(|p| !p.is_empty());
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| parts[i].first().map_or(i64::MIN, |s| s.t));
    let disjoint = order.windows(2).all(|w| match (parts[w[0]].last(), parts[w[1]].first()) {
        (Some(a), Some(b)) => a.t < b.t,
        _ => true,
    });
    if disjoint {
        let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        for i in order {
            out.extend_from_slice(&parts[i]);
        }
        return out;
    }
    let mut iter = parts.into_iter();
    let first = iter.next().unwrap_or_default();
    iter.fold(first, |acc, p| merge_samples(&acc, &p))
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

    #[test]
    fn merge_concatenates_disjoint_parts_and_prefers_earlier_sets() {
        let a = vec![series("m", &[20, 21])];
        let b = vec![series("m", &[0, 1])];
        let c = vec![series("m", &[10])];
        let m = merge_series_sets(vec![a, b, c]);
        assert_eq!(m[0].samples.iter().map(|s| s.t).collect::<Vec<_>>(), [0, 1, 10, 20, 21]);
        let first = Series { labels: series("m", &[]).labels, samples: vec![Sample::new(1, 100.0)] };
        let m = merge_series_sets(vec![vec![first], vec![series("m", &[0, 1, 2])]]);
        assert_eq!(m[0].samples, vec![Sample::new(0, 0.0), Sample::new(1, 100.0), Sample::new(2, 2.0)]);
    }

    #[test]
    fn merged_batches_interleave_front_by_labels() {
        let front = vec![series("a", &[1]), series("c", &[5, 6]), series("z", &[1])];
        let rest = Box::new(Chunks(vec![vec![series("b", &[1]), series("c", &[6, 7])], vec![series("d", &[1])]]));
        let mut m = MergedBatches::new(front.clone(), rest);
        let mut got = Vec::new();
        while let Some(b) = futures_lite_block_on(m.next_batch()).expect("ok") {
            got.push(b.iter().map(|s| s.labels.metric_name().unwrap_or("").to_owned()).collect::<Vec<_>>().join(""));
            if let Some(c) = b.iter().find(|s| s.labels.metric_name() == Some("c")) {
                assert_eq!(c.samples.iter().map(|s| s.t).collect::<Vec<_>>(), [5, 6, 7]);
            }
        }
        assert_eq!(got, ["abc", "d", "z"]);
    }

    /// Batches handed out first to last.
    struct Chunks(Vec<Vec<Series>>);

    impl SeriesBatches for Chunks {
        fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<Vec<Series>>, SelectError>> {
            let next = (!self.0.is_empty()).then(|| self.0.remove(0));
            Box::pin(async move { Ok(next) })
        }
    }

    #[test]
    fn budget_fails_once_exceeded() {
        let mut b = SampleBudget::new(&SelectHints { max_samples: 5 });
        assert!(b.take(3).is_ok());
        assert!(b.take(2).is_ok());
        assert_eq!(b.left(), 0);
        let err = b.take(1).expect_err("over budget");
        assert_eq!(err.to_string(), TOO_MANY_SAMPLES);
    }

    /// A store that only implements `select_with`: the label queries derive from it.
    struct Fixed(Vec<Series>);

    impl Select for Fixed {
        fn select_with<'a>(
            &'a self,
            _tenant: &'a str,
            matchers: &'a [Matcher],
            _mint: i64,
            _maxt: i64,
            _hints: SelectHints,
        ) -> BoxFuture<'a, Result<Vec<Series>, SelectError>> {
            let out = self.0.iter().filter(|s| crate::matcher::matches_all(matchers, &s.labels)).cloned().collect();
            Box::pin(async move { Ok(out) })
        }
    }

    #[test]
    fn label_queries_derive_from_select() {
        let l = |pairs: &[(&str, &str)]| Labels::from_pairs(pairs.iter().copied()).expect("labels");
        let st = Fixed(vec![
            Series { labels: l(&[("__name__", "up"), ("job", "a")]), samples: vec![Sample::new(1, 1.0)] },
            Series { labels: l(&[("__name__", "up"), ("zone", "z")]), samples: vec![Sample::new(1, 1.0)] },
        ]);
        let run = |f: BoxFuture<'_, Result<Vec<String>, SelectError>>| futures_lite_block_on(f).expect("ok");
        assert_eq!(run(st.label_names("t", &[], 0, 1)), ["__name__", "job", "zone"]);
        assert_eq!(run(st.label_names("t", &[Matcher::equal("job", "a")], 0, 1)), ["__name__", "job"]);
        assert_eq!(run(st.label_values("t", "job", &[], 0, 1)), ["a"]);
        assert_eq!(merge_label_sets(vec![vec![l(&[("a", "1")])], vec![l(&[("a", "1")]), l(&[("a", "0")])]]).len(), 2);
    }

    /// Polls a future that never waits (the test store is synchronous).
    fn futures_lite_block_on<T>(f: BoxFuture<'_, T>) -> T {
        let mut f = f;
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("test store futures complete at once"),
        }
    }
}
