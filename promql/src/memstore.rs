//! An in-memory [`Select`] implementation, for tests of this crate and of
//! crates built on it.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use strata_model::{
    BoxFuture, Labels, Matcher, Sample, SampleBudget, Select, SelectError, SelectHints, Series, SeriesBatches,
};

/// Series per tenant, kept in memory, sorted by labels.
#[derive(Debug, Default)]
pub struct MemStore {
    tenants: RwLock<HashMap<String, BTreeMap<Labels, Vec<Sample>>>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds samples to a series; a sample at an existing timestamp replaces it.
    pub fn add(&self, tenant: &str, labels: Labels, samples: impl IntoIterator<Item = Sample>) {
        let mut map = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        let series = map.entry(tenant.to_owned()).or_default().entry(labels).or_default();
        for s in samples {
            match series.binary_search_by(|x| x.t.cmp(&s.t)) {
                Ok(i) => series[i] = s,
                Err(i) => series.insert(i, s),
            }
        }
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.tenants.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Number of series of `tenant`.
    pub fn series_count(&self, tenant: &str) -> usize {
        self.tenants.read().unwrap_or_else(|e| e.into_inner()).get(tenant).map_or(0, BTreeMap::len)
    }

    fn select_sync(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> Result<Vec<Series>, SelectError> {
        let map = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        let Some(series) = map.get(tenant) else {
            return Ok(Vec::new());
        };
        let mut budget = SampleBudget::new(&hints);
        let mut out = Vec::new();
        for (labels, samples) in series.iter().filter(|(labels, _)| matchers.iter().all(|m| m.matches_labels(labels))) {
            let lo = samples.partition_point(|s| s.t < mint);
            let hi = samples.partition_point(|s| s.t <= maxt);
            if lo < hi {
                budget.take(hi - lo)?;
                out.push(Series { labels: labels.clone(), samples: samples[lo..hi].to_vec() });
            }
        }
        Ok(out)
    }

    fn series_sync(&self, tenant: &str, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        let map = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        let Some(series) = map.get(tenant) else {
            return Vec::new();
        };
        series
            .iter()
            .filter(|(labels, samples)| {
                matchers.iter().all(|m| m.matches_labels(labels))
                    && samples.partition_point(|s| s.t < mint) < samples.partition_point(|s| s.t <= maxt)
            })
            .map(|(labels, _)| labels.clone())
            .collect()
    }
}

impl Select for MemStore {
    fn select_with<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> BoxFuture<'a, Result<Vec<Series>, SelectError>> {
        let out = self.select_sync(tenant, matchers, mint, maxt, hints);
        Box::pin(async move { out })
    }

    /// Batches of [`BATCH_SERIES`] series, so the engine's streamed path
    /// meets batch boundaries in every test.
    fn select_batches<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> BoxFuture<'a, Result<Box<dyn SeriesBatches + 'a>, SelectError>> {
        let out = self.select_sync(tenant, matchers, mint, maxt, hints).map(|all| {
            let mut batches: Vec<Vec<Series>> = Vec::new();
            for s in all {
                match batches.last_mut() {
                    Some(b) if b.len() < BATCH_SERIES => b.push(s),
                    _ => batches.push(vec![s]),
                }
            }
            batches.reverse();
            Box::new(Batches(batches)) as Box<dyn SeriesBatches + 'a>
        });
        Box::pin(async move { out })
    }

    fn series<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<Labels>, SelectError>> {
        let out = self.series_sync(tenant, matchers, mint, maxt);
        Box::pin(async move { Ok(out) })
    }
}

/// Series per batch of [`MemStore`]'s [`Select::select_batches`].
const BATCH_SERIES: usize = 2;

/// Batches read at once, handed out last first.
struct Batches(Vec<Vec<Series>>);

impl SeriesBatches for Batches {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<Vec<Series>>, SelectError>> {
        let next = self.0.pop();
        Box::pin(async move { Ok(next) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_by_matchers_and_time() {
        let st = MemStore::new();
        let a = Labels::from_pairs([("__name__", "up"), ("job", "a")]).expect("labels");
        let b = Labels::from_pairs([("__name__", "up"), ("job", "b")]).expect("labels");
        st.add("t", a.clone(), [Sample::new(0, 1.0), Sample::new(10, 2.0), Sample::new(20, 3.0)]);
        st.add("t", b.clone(), [Sample::new(30, 1.0)]);
        let sel = |m: &[Matcher], mint, maxt| st.select_sync("t", m, mint, maxt, SelectHints::default()).expect("ok");
        let got = sel(&[Matcher::equal("job", "a")], 5, 20);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels, a);
        assert_eq!(got[0].samples, vec![Sample::new(10, 2.0), Sample::new(20, 3.0)]);
        assert!(sel(&[Matcher::equal("job", "b")], 0, 20).is_empty());
        assert!(st.select_sync("other", &[], 0, 100, SelectHints::default()).expect("ok").is_empty());
        assert_eq!(st.series_sync("t", &[], 25, 30), vec![b]);
    }

    #[test]
    fn select_stops_over_the_sample_budget() {
        let st = MemStore::new();
        for i in 0..10 {
            let l = Labels::from_pairs([("__name__", "m".to_owned()), ("i", i.to_string())]).expect("labels");
            st.add("t", l, (0..10).map(|t| Sample::new(t, 1.0)));
        }
        let ok = st.select_sync("t", &[], 0, 9, SelectHints { max_samples: 100 }).expect("exactly at the limit");
        assert_eq!(ok.len(), 10);
        let err = st.select_sync("t", &[], 0, 9, SelectHints { max_samples: 99 }).expect_err("over the limit");
        assert!(matches!(err, SelectError::Limit(_)));
    }
}
