//! The head: recent samples of every series, in memory, with an inverted
//! index (label name → value → series) for matchers.
//!
//! Samples are kept in plain vectors for now; compressed chunks come with
//! the storage work. Each tenant has its own series and index.

use std::collections::HashMap;

use strata_model::{AppendSummary, Labels, MatchOp, Matcher, Sample, Series, TimeSeries, WriteBatch};

type SeriesRef = u32;

#[derive(Debug)]
struct MemSeries {
    labels: Labels,
    samples: Vec<Sample>,
}

/// One tenant's part of the head.
#[derive(Debug, Default)]
struct TenantHead {
    series: Vec<MemSeries>,
    by_labels: HashMap<Labels, SeriesRef>,
    /// name → value → series refs, ascending.
    postings: HashMap<String, HashMap<String, Vec<SeriesRef>>>,
    /// Samples older than this are refused: they belong to flushed blocks.
    min_valid_time: i64,
    num_samples: usize,
}

impl TenantHead {
    fn new(min_valid_time: i64) -> Self {
        Self { min_valid_time, ..Self::default() }
    }

    fn get_or_create(&mut self, labels: &Labels) -> SeriesRef {
        if let Some(&r) = self.by_labels.get(labels) {
            return r;
        }
        let r = SeriesRef::try_from(self.series.len()).unwrap_or(SeriesRef::MAX);
        for l in labels {
            self.postings.entry(l.name.clone()).or_default().entry(l.value.clone()).or_default().push(r);
        }
        self.by_labels.insert(labels.clone(), r);
        self.series.push(MemSeries { labels: labels.clone(), samples: Vec::new() });
        r
    }

    fn last_sample(&self, labels: &Labels) -> Option<Sample> {
        self.by_labels.get(labels).and_then(|&r| self.series[r as usize].samples.last().copied())
    }

    fn candidates(&self, matchers: &[Matcher]) -> Vec<SeriesRef> {
        // Intersect with the shortest postings list of an equality matcher;
        // the full matcher check follows, so this only narrows.
        let shortest = matchers
            .iter()
            .filter(|m| m.op == MatchOp::Equal && !m.value.is_empty())
            .map(|m| self.postings.get(&m.name).and_then(|v| v.get(&m.value)).map_or(&[][..], Vec::as_slice))
            .min_by_key(|p| p.len());
        match shortest {
            Some(p) => p.to_vec(),
            None => (0..SeriesRef::try_from(self.series.len()).unwrap_or(SeriesRef::MAX)).collect(),
        }
    }

    fn rebuild_index(&mut self) {
        self.by_labels.clear();
        self.postings.clear();
        let series = std::mem::take(&mut self.series);
        for s in series {
            let r = self.get_or_create(&s.labels);
            self.series[r as usize].samples = s.samples;
        }
    }
}

/// In-memory recent data of every tenant.
#[derive(Debug, Default)]
pub struct Head {
    tenants: HashMap<String, TenantHead>,
}

/// Counts describing the head.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadStats {
    /// Series in memory.
    pub series: usize,
    /// Samples in memory.
    pub samples: usize,
}

impl Head {
    /// An empty head.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the oldest time `tenant` still accepts (its flush watermark).
    pub fn set_min_valid_time(&mut self, tenant: &str, t: i64) {
        let h = self.tenants.entry(tenant.to_owned()).or_insert_with(|| TenantHead::new(t));
        h.min_valid_time = h.min_valid_time.max(t);
    }

    /// The oldest time `tenant` accepts.
    pub fn min_valid_time(&self, tenant: &str) -> i64 {
        self.tenants.get(tenant).map_or(i64::MIN, |h| h.min_valid_time)
    }

    /// Splits `batch` into the samples the head would accept and counts of the
    /// rest, without changing the head. Appending the accepted part with
    /// [`Head::apply`] then cannot fail.
    pub fn filter(&self, batch: WriteBatch) -> (WriteBatch, AppendSummary) {
        let mut summary = AppendSummary::default();
        let tenant = self.tenants.get(&batch.tenant);
        let min_valid = tenant.map_or(i64::MIN, |h| h.min_valid_time);
        let mut out = WriteBatch::new(batch.tenant.clone());
        // The same series may appear more than once in a batch: track the last
        // accepted sample per series inside the batch too.
        let mut last_in_batch: HashMap<&Labels, Sample> = HashMap::new();
        let mut kept: Vec<(usize, Vec<Sample>)> = Vec::with_capacity(batch.series.len());
        for (i, s) in batch.series.iter().enumerate() {
            let mut last =
                last_in_batch.get(&s.labels).copied().or_else(|| tenant.and_then(|h| h.last_sample(&s.labels)));
            let mut accepted = Vec::with_capacity(s.samples.len());
            for &p in &s.samples {
                if p.t < min_valid {
                    summary.out_of_bounds += 1;
                    continue;
                }
                match last {
                    Some(l) if p.t < l.t => {
                        summary.out_of_order += 1;
                        continue;
                    }
                    Some(l) if p.t == l.t => {
                        // The same sample again is fine and stored once; another value is refused.
                        if p.v.to_bits() != l.v.to_bits() {
                            summary.out_of_order += 1;
                        }
                        continue;
                    }
                    _ => {}
                }
                accepted.push(p);
                last = Some(p);
            }
            if let Some(l) = last {
                last_in_batch.insert(&s.labels, l);
            }
            summary.accepted += accepted.len();
            if !accepted.is_empty() {
                kept.push((i, accepted));
            }
        }
        let mut series = batch.series;
        for (i, samples) in kept {
            let labels = std::mem::take(&mut series[i].labels);
            out.series.push(TimeSeries { labels, samples });
        }
        (out, summary)
    }

    /// Appends samples already checked by [`Head::filter`].
    pub fn apply(&mut self, batch: WriteBatch) {
        let h = self.tenants.entry(batch.tenant).or_insert_with(|| TenantHead::new(i64::MIN));
        for s in batch.series {
            let r = h.get_or_create(&s.labels);
            h.num_samples += s.samples.len();
            h.series[r as usize].samples.extend(s.samples);
        }
    }

    /// Appends what the head accepts of `batch` (used when replaying the log).
    pub fn append(&mut self, batch: WriteBatch) -> AppendSummary {
        let (ok, summary) = self.filter(batch);
        self.apply(ok);
        summary
    }

    /// Series of `tenant` matching `matchers` with samples in `[mint, maxt]`, sorted by labels.
    pub fn select(&self, tenant: &str, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Series> {
        let Some(h) = self.tenants.get(tenant) else { return Vec::new() };
        let mut out: Vec<Series> = h
            .candidates(matchers)
            .into_iter()
            .filter_map(|r| h.series.get(r as usize))
            .filter(|s| strata_model::matcher::matches_all(matchers, &s.labels))
            .filter_map(|s| {
                let lo = s.samples.partition_point(|p| p.t < mint);
                let hi = s.samples.partition_point(|p| p.t <= maxt);
                (lo < hi).then(|| Series { labels: s.labels.clone(), samples: s.samples[lo..hi].to_vec() })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Tenants with data or a watermark in the head.
    pub fn tenants(&self) -> Vec<String> {
        self.tenants.keys().cloned().collect()
    }

    /// Oldest and newest sample time of `tenant`.
    pub fn time_range(&self, tenant: &str) -> Option<(i64, i64)> {
        let h = self.tenants.get(tenant)?;
        let min = h.series.iter().filter_map(|s| s.samples.first()).map(|s| s.t).min()?;
        let max = h.series.iter().filter_map(|s| s.samples.last()).map(|s| s.t).max()?;
        Some((min, max))
    }

    /// Copies the samples of `tenant` in `[mint, maxt)`.
    pub fn snapshot(&self, tenant: &str, mint: i64, maxt: i64) -> Vec<(Labels, Vec<Sample>)> {
        let Some(h) = self.tenants.get(tenant) else { return Vec::new() };
        h.series
            .iter()
            .filter_map(|s| {
                let lo = s.samples.partition_point(|p| p.t < mint);
                let hi = s.samples.partition_point(|p| p.t < maxt);
                (lo < hi).then(|| (s.labels.clone(), s.samples[lo..hi].to_vec()))
            })
            .collect()
    }

    /// Drops the samples of `tenant` older than `t`, and series left empty.
    pub fn truncate_before(&mut self, tenant: &str, t: i64) {
        let Some(h) = self.tenants.get_mut(tenant) else { return };
        let mut removed_series = false;
        let mut removed_samples = 0;
        for s in &mut h.series {
            let n = s.samples.partition_point(|p| p.t < t);
            removed_samples += n;
            s.samples.drain(..n);
            removed_series |= s.samples.is_empty();
        }
        h.num_samples -= removed_samples;
        if removed_series {
            h.series.retain(|s| !s.samples.is_empty());
            h.rebuild_index();
        }
    }

    /// Series and sample counts over all tenants.
    pub fn stats(&self) -> HeadStats {
        HeadStats {
            series: self.tenants.values().map(|h| h.series.len()).sum(),
            samples: self.tenants.values().map(|h| h.num_samples).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str, job: &str) -> Labels {
        Labels::from_pairs([("__name__", name), ("job", job)]).expect("labels")
    }

    fn batch(samples: &[(&str, &str, i64, f64)]) -> WriteBatch {
        let mut b = WriteBatch::new("t");
        for &(n, j, t, v) in samples {
            b.push(labels(n, j), Sample::new(t, v));
        }
        b
    }

    #[test]
    fn append_select_by_matchers() {
        let mut h = Head::new();
        let s = h.append(batch(&[("up", "a", 1, 1.0), ("up", "b", 1, 0.0), ("x", "a", 1, 5.0), ("up", "a", 2, 1.0)]));
        assert_eq!(s.accepted, 4);
        let m = [Matcher::equal("__name__", "up")];
        let got = h.select("t", &m, 0, 10);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].samples.len(), 2);
        let m = [Matcher::equal("job", "a"), Matcher::new(MatchOp::NotEqual, "__name__", "up").expect("m")];
        assert_eq!(h.select("t", &m, 0, 10)[0].labels, labels("x", "a"));
        assert!(h.select("t", &m, 2, 10).is_empty());
        assert!(h.select("other", &[], 0, 10).is_empty());
    }

    #[test]
    fn out_of_order_and_bounds_are_refused() {
        let mut h = Head::new();
        h.append(batch(&[("up", "a", 10, 1.0)]));
        let s =
            h.append(batch(&[("up", "a", 5, 1.0), ("up", "a", 10, 1.0), ("up", "a", 10, 2.0), ("up", "a", 11, 1.0)]));
        assert_eq!(s, AppendSummary { accepted: 1, out_of_order: 2, out_of_bounds: 0 });
        h.set_min_valid_time("t", 100);
        let s = h.append(batch(&[("up", "b", 50, 1.0)]));
        assert_eq!(s.out_of_bounds, 1);
    }

    #[test]
    fn truncate_drops_old_samples_and_empty_series() {
        let mut h = Head::new();
        h.append(batch(&[("up", "a", 1, 1.0), ("up", "b", 1, 1.0), ("up", "a", 5, 1.0)]));
        assert_eq!(h.snapshot("t", 0, 5).len(), 2);
        h.truncate_before("t", 5);
        assert_eq!(h.stats(), HeadStats { series: 1, samples: 1 });
        let got = h.select("t", &[Matcher::equal("job", "a")], 0, 10);
        assert_eq!(got[0].samples, vec![Sample::new(5, 1.0)]);
        assert!(h.select("t", &[Matcher::equal("job", "b")], 0, 10).is_empty());
    }
}
