//! The head: recent samples of every series, in memory, with an inverted
//! index (label name → value → series) for matchers.
//!
//! Samples are kept in compressed chunks ([`crate::chunk`]): delta-of-delta
//! timestamps and decimal-mantissa or XOR'd values, about 1.2 bytes a sample
//! on scraped data; label strings are interned per tenant. Each tenant has
//! its own series, symbols and index.

use std::collections::HashMap;

use crate::chunk::SeriesChunks;

use strata_model::{
    AppendSummary, Label, Labels, MatchOp, Matcher, Sample, SampleBudget, SelectError, SelectHints, Series, TimeSeries,
    WriteBatch,
};

type SeriesRef = u32;

#[derive(Debug)]
struct MemSeries {
    /// `(name, value)` symbols of the tenant's [`Symbols`], sorted by name.
    labels: Box<[(u32, u32)]>,
    samples: SeriesChunks,
}

/// A tenant's label names and values, each stored once: a series holds 8
/// bytes a label instead of two strings.
#[derive(Debug, Default)]
struct Symbols {
    strings: Vec<std::sync::Arc<str>>,
    ids: HashMap<std::sync::Arc<str>, u32>,
}

impl Symbols {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        let a: std::sync::Arc<str> = std::sync::Arc::from(s);
        self.strings.push(std::sync::Arc::clone(&a));
        self.ids.insert(a, i);
        i
    }

    fn get(&self, i: u32) -> &str {
        self.strings.get(i as usize).map_or("", |s| s)
    }

    fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        // Each string once, behind an `Arc` (two counters), plus the table slots.
        self.strings.capacity() * size_of::<std::sync::Arc<str>>()
            + self.ids.capacity() * (size_of::<(std::sync::Arc<str>, u32)>() + 1)
            + self.strings.iter().map(|s| s.len() + 16).sum::<usize>()
    }
}

/// One tenant's part of the head.
#[derive(Debug, Default)]
struct TenantHead {
    series: Vec<MemSeries>,
    /// Series by the hash of their labels, so a label set is stored once (in
    /// `series`); a set whose hash another set already has goes to `collisions`.
    by_hash: HashMap<u64, SeriesRef>,
    collisions: HashMap<Labels, SeriesRef>,
    hasher: std::hash::RandomState,
    symbols: Symbols,
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

    /// The series with exactly `labels`.
    fn lookup(&self, labels: &Labels) -> Option<SeriesRef> {
        use std::hash::BuildHasher;
        match self.by_hash.get(&self.hasher.hash_one(labels)) {
            Some(&r) if self.series.get(r as usize).is_some_and(|s| self.same_labels(&s.labels, labels)) => Some(r),
            Some(_) => self.collisions.get(labels).copied(),
            None => None,
        }
    }

    fn same_labels(&self, pairs: &[(u32, u32)], labels: &Labels) -> bool {
        pairs.len() == labels.len()
            && pairs
                .iter()
                .zip(labels.iter())
                .all(|(&(n, v), l)| self.symbols.get(n) == l.name && self.symbols.get(v) == l.value)
    }

    /// The label set of a series.
    fn labels_of(&self, s: &MemSeries) -> Labels {
        Labels::from_sorted_unchecked(
            s.labels.iter().map(|&(n, v)| Label::new(self.symbols.get(n), self.symbols.get(v))).collect(),
        )
    }

    /// Whether a series passes every matcher (a missing label reads as "").
    fn matches(&self, matchers: &[Matcher], s: &MemSeries) -> bool {
        matchers.iter().all(|m| {
            let value = s.labels.iter().find(|&&(n, _)| self.symbols.get(n) == m.name).map(|&(_, v)| v);
            m.matches(value.map_or("", |v| self.symbols.get(v)))
        })
    }

    fn get_or_create(&mut self, labels: &Labels) -> SeriesRef {
        use std::hash::BuildHasher;
        if let Some(r) = self.lookup(labels) {
            return r;
        }
        let r = SeriesRef::try_from(self.series.len()).unwrap_or(SeriesRef::MAX);
        for l in labels {
            self.postings.entry(l.name.clone()).or_default().entry(l.value.clone()).or_default().push(r);
        }
        match self.by_hash.entry(self.hasher.hash_one(labels)) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(r);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.insert(labels.clone(), r);
            }
        }
        let pairs = labels.iter().map(|l| (self.symbols.intern(&l.name), self.symbols.intern(&l.value))).collect();
        self.series.push(MemSeries { labels: pairs, samples: SeriesChunks::default() });
        r
    }

    fn last_sample(&self, labels: &Labels) -> Option<Sample> {
        self.lookup(labels).and_then(|r| self.series.get(r as usize)).and_then(|s| s.samples.last())
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

    /// The series matching every matcher.
    fn matching<'a>(&'a self, matchers: &'a [Matcher]) -> impl Iterator<Item = &'a MemSeries> + 'a {
        self.candidates(matchers)
            .into_iter()
            .filter_map(|r| self.series.get(r as usize))
            .filter(|s| self.matches(matchers, s))
    }

    fn rebuild_index(&mut self) {
        self.by_hash.clear();
        self.collisions.clear();
        self.postings.clear();
        // A fresh symbol table drops the strings of removed series.
        let series = std::mem::take(&mut self.series);
        let old = std::mem::take(&mut self.symbols);
        for s in series {
            let labels = Labels::from_sorted_unchecked(
                s.labels.iter().map(|&(n, v)| Label::new(old.get(n), old.get(v))).collect(),
            );
            let r = self.get_or_create(&labels);
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
            let chunks = &mut h.series[r as usize].samples;
            for p in s.samples {
                chunks.push(p);
            }
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
        self.select_with(tenant, matchers, mint, maxt, SelectHints::default()).unwrap_or_default()
    }

    /// [`Head::select`] within `hints`' sample budget: stops copying and fails
    /// once more than `hints.max_samples` samples match.
    pub fn select_with(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> Result<Vec<Series>, SelectError> {
        let Some(h) = self.tenants.get(tenant) else { return Ok(Vec::new()) };
        let mut budget = SampleBudget::new(&hints);
        let mut out = Vec::new();
        for s in h.matching(matchers) {
            let samples: Vec<Sample> = s.samples.range(mint, maxt).collect();
            if !samples.is_empty() {
                budget.take(samples.len())?;
                out.push(Series { labels: h.labels_of(s), samples });
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Label sets of `tenant`'s series matching `matchers` with a sample in
    /// `[mint, maxt]`, sorted (the series and label APIs: no samples copied).
    pub fn series_labels(&self, tenant: &str, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        let Some(h) = self.tenants.get(tenant) else { return Vec::new() };
        let mut out: Vec<Labels> = h
            .matching(matchers)
            .filter(|s| s.samples.range(mint, maxt).next().is_some())
            .map(|s| h.labels_of(s))
            .collect();
        out.sort();
        out
    }

    /// Tenants with data or a watermark in the head.
    pub fn tenants(&self) -> Vec<String> {
        self.tenants.keys().cloned().collect()
    }

    /// Oldest and newest sample time of `tenant`.
    pub fn time_range(&self, tenant: &str) -> Option<(i64, i64)> {
        let h = self.tenants.get(tenant)?;
        let min = h.series.iter().filter_map(|s| s.samples.first_time()).min()?;
        let max = h.series.iter().filter_map(|s| s.samples.last_time()).max()?;
        Some((min, max))
    }

    /// Copies the samples of `tenant` in `[mint, maxt)`.
    pub fn snapshot(&self, tenant: &str, mint: i64, maxt: i64) -> Vec<(Labels, Vec<Sample>)> {
        let Some(h) = self.tenants.get(tenant) else { return Vec::new() };
        h.series
            .iter()
            .filter_map(|s| {
                let samples: Vec<Sample> = s.samples.range(mint, i64::MAX).take_while(|p| p.t < maxt).collect();
                (!samples.is_empty()).then(|| (h.labels_of(s), samples))
            })
            .collect()
    }

    /// Drops the samples of `tenant` older than `t`, and series left empty.
    pub fn truncate_before(&mut self, tenant: &str, t: i64) {
        let Some(h) = self.tenants.get_mut(tenant) else { return };
        let mut removed_series = false;
        let mut removed_samples = 0;
        for s in &mut h.series {
            removed_samples += s.samples.truncate_before(t);
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

    /// Bytes of memory the head holds: series, their labels and chunks, and
    /// the index (an estimate from capacities; allocator overhead not counted).
    pub fn memory_bytes(&self) -> usize {
        self.tenants.values().map(TenantHead::memory_bytes).sum()
    }
}

impl TenantHead {
    fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        // A hash map entry costs its key and value plus one control byte.
        let series: usize = self.series.capacity() * size_of::<MemSeries>()
            + self
                .series
                .iter()
                .map(|s| s.labels.len() * size_of::<(u32, u32)>() + s.samples.heap_bytes())
                .sum::<usize>()
            + self.symbols.memory_bytes();
        let by_labels = self.by_hash.capacity() * (size_of::<(u64, SeriesRef)>() + 1)
            + self.collisions.capacity() * (size_of::<(Labels, SeriesRef)>() + 1)
            + self.collisions.keys().map(Labels::heap_size).sum::<usize>();
        let postings: usize = self
            .postings
            .iter()
            .map(|(name, values)| {
                size_of::<(String, HashMap<String, Vec<SeriesRef>>)>()
                    + 1
                    + name.capacity()
                    + values.capacity() * (size_of::<(String, Vec<SeriesRef>)>() + 1)
                    + values
                        .iter()
                        .map(|(v, refs)| v.capacity() + refs.capacity() * size_of::<SeriesRef>())
                        .sum::<usize>()
            })
            .sum();
        series + by_labels + postings
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
    fn select_with_stops_over_budget_and_series_skip_samples() {
        let mut h = Head::new();
        h.append(batch(&[("up", "a", 1, 1.0), ("up", "b", 1, 0.0), ("up", "a", 2, 1.0), ("x", "a", 5, 1.0)]));
        let m = [Matcher::equal("__name__", "up")];
        assert_eq!(h.select_with("t", &m, 0, 10, SelectHints { max_samples: 3 }).expect("at the limit").len(), 2);
        let err = h.select_with("t", &m, 0, 10, SelectHints { max_samples: 2 }).expect_err("over");
        assert!(matches!(err, SelectError::Limit(_)));
        assert_eq!(h.series_labels("t", &[], 0, 10), vec![labels("up", "a"), labels("up", "b"), labels("x", "a")]);
        assert_eq!(h.series_labels("t", &[], 3, 10), vec![labels("x", "a")]);
    }

    /// Head memory per active series at a 15 s scrape interval with 2 h of
    /// data (480 samples a series), as `strata_head_memory_bytes` reports it.
    #[test]
    fn head_memory_per_series_at_15s_for_2h() {
        let spec = crate::synth::SynthSpec { nodes: 5, start_ms: 1_700_000_000_000, interval_ms: 15_000, scrapes: 480 };
        let data = spec.generate();
        let mut h = Head::new();
        for i in 0..480 {
            let mut b = WriteBatch::new("t");
            for (l, s) in &data {
                b.push(l.clone(), s[i]);
            }
            assert_eq!(h.append(b).accepted, data.len());
        }
        let stats = h.stats();
        assert_eq!(stats.samples, data.len() * 480);
        let per_series = h.memory_bytes() / stats.series;
        let t = &h.tenants["t"];
        let chunk_bytes: usize = t.series.iter().map(|s| s.samples.heap_bytes()).sum();
        let encoded: usize = t.series.iter().map(|s| s.samples.encoded_bytes()).sum();
        let label_bytes: usize = t.series.iter().map(|s| s.labels.len() * 8).sum::<usize>() + t.symbols.memory_bytes();
        eprintln!(
            "head: {} series, {} samples: {per_series} bytes/series = chunks {} ({:.2} bytes/sample encoded) \
             + labels {} + series struct {} + index and rest",
            stats.series,
            stats.samples,
            chunk_bytes / stats.series,
            encoded as f64 / stats.samples as f64,
            label_bytes / stats.series,
            std::mem::size_of::<MemSeries>(),
        );
        // The target: 1 KiB. This dataset's counters grow by random amounts,
        // more entropy than real exporters have.
        assert!(per_series <= 1024, "{per_series} bytes per series");
        // And every sample reads back bit for bit.
        let got = h.select("t", &[], i64::MIN, i64::MAX);
        let mut want = data.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got.len(), want.len());
        for (g, (l, s)) in got.iter().zip(&want) {
            assert_eq!(&g.labels, l);
            assert!(g.samples.iter().zip(s).all(|(a, b)| a.t == b.t && a.v.to_bits() == b.v.to_bits()));
        }
    }

    #[test]
    fn interned_labels_match_like_label_sets() {
        let mut h = Head::new();
        h.append(batch(&[("up", "a", 1, 1.0), ("up", "b", 1, 0.0), ("x", "a", 1, 5.0)]));
        let cases: [(Vec<Matcher>, usize); 4] = [
            (vec![Matcher::equal("absent", "")], 3),
            (vec![Matcher::new(MatchOp::NotEqual, "absent", "").expect("m")], 0),
            (vec![Matcher::new(MatchOp::Regex, "job", "a|c").expect("m")], 2),
            (vec![Matcher::new(MatchOp::NotRegex, "__name__", "u.").expect("m")], 1),
        ];
        for (m, n) in cases {
            let got = h.select("t", &m, 0, 10);
            assert_eq!(got.len(), n, "{m:?}");
            assert!(got.iter().all(|s| strata_model::matcher::matches_all(&m, &s.labels)));
        }
        h.truncate_before("t", 2);
        h.append(batch(&[("up", "b", 3, 1.0)]));
        assert_eq!(h.series_labels("t", &[], 0, 10), vec![labels("up", "b")]);
        assert_eq!(h.tenants["t"].symbols.strings.len(), 4, "strings of dropped series go at a rebuild");
    }

    #[test]
    fn out_of_order_and_bounds_are_refused() {
        let mut h = Head::new();
        h.append(batch(&[("up", "a", 10, 1.0)]));
        let s =
            h.append(batch(&[("up", "a", 5, 1.0), ("up", "a", 10, 1.0), ("up", "a", 10, 2.0), ("up", "a", 11, 1.0)]));
        assert_eq!(s, AppendSummary { accepted: 1, out_of_order: 2, ..AppendSummary::default() });
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
