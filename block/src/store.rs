//! The set of blocks of every tenant, kept in memory and readable as one
//! [`Select`]. The writer registers a block only after its `meta.json` is
//! stored, so no reader ever sees a partial block.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use strata_model::{
    BoxFuture, Labels, Matcher, Sample, Select, SelectError, SelectHints, Series, SeriesBatches, merge_label_sets,
    merge_parts, merge_series_sets,
};

use crate::meta::{BlockMeta, META_FILE};
use crate::{BlockError, BlockReader, write_block};

/// All blocks in one object store.
#[derive(Debug)]
pub struct BlockStore {
    store: Arc<dyn ObjectStore>,
    /// Per tenant, blocks ordered by min time.
    blocks: RwLock<BTreeMap<String, Vec<Arc<BlockReader>>>>,
    /// Blocks no longer listed for reads (compacted or deleted) whose files
    /// go once no read holds them any more.
    retired: std::sync::Mutex<Vec<Arc<BlockReader>>>,
    /// Blocks found but not readable, with the reason.
    unreadable: std::sync::Mutex<Vec<String>>,
    /// Blocks whose `meta.json` is readable but whose files are not: a read
    /// overlapping one (same tenant, overlapping time) fails naming it,
    /// rather than silently missing its samples.
    broken: std::sync::Mutex<Vec<(BlockMeta, String)>>,
}

impl BlockStore {
    /// Opens every complete block in `store`.
    pub async fn open(store: Arc<dyn ObjectStore>) -> Result<Self, BlockError> {
        let this = Self {
            store,
            blocks: RwLock::new(BTreeMap::new()),
            retired: Default::default(),
            unreadable: Default::default(),
            broken: Default::default(),
        };
        this.sync().await?;
        Ok(this)
    }

    /// The object store blocks live in.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Re-lists the object store and opens blocks not yet known.
    pub async fn sync(&self) -> Result<(), BlockError> {
        let metas: Vec<_> = self
            .store
            .list(None)
            .try_filter(|o| futures::future::ready(o.location.filename() == Some(META_FILE)))
            .try_collect()
            .await?;
        for obj in metas {
            let known = {
                let blocks = self.blocks.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                let retired = self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let broken = self.broken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                blocks
                    .values()
                    .flatten()
                    .chain(retired.iter())
                    .map(|b| b.meta())
                    .chain(broken.iter().map(|(m, _)| m))
                    .any(|m| format!("{}/{META_FILE}", m.dir()) == obj.location.as_ref())
            };
            if known {
                continue;
            }
            // One unreadable block (truncated, corrupt) is reported and left
            // out; it does not keep the others, or the process, from starting.
            match self.open_block(&obj.location).await {
                Ok(Ok(reader)) => self.add(Arc::new(reader)),
                Ok(Err((meta, e))) => {
                    tracing::error!(
                        block = %obj.location, min_time = meta.min_time, max_time = meta.max_time, error = %e,
                        "unreadable block: queries over its time range fail until it is repaired or removed"
                    );
                    self.unreadable
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(format!("{}: {e}", obj.location));
                    self.broken.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((meta, e.to_string()));
                }
                Err(e) => {
                    tracing::error!(block = %obj.location, error = %e, "unreadable block left out");
                    self.unreadable
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(format!("{}: {e}", obj.location));
                }
            }
        }
        Ok(())
    }

    /// Opens one block: the outer error when even `meta.json` is unreadable,
    /// the inner one (with the meta) when the block's files are.
    #[allow(clippy::type_complexity)]
    async fn open_block(
        &self,
        meta_path: &object_store::path::Path,
    ) -> Result<Result<BlockReader, (BlockMeta, BlockError)>, BlockError> {
        let bytes = self.store.get(meta_path).await?.bytes().await?;
        let meta: BlockMeta = serde_json::from_slice(&bytes)
            .map_err(|e| BlockError::Meta { path: meta_path.to_string(), reason: e.to_string() })?;
        Ok(BlockReader::open(Arc::clone(&self.store), meta.clone()).await.map_err(|e| (meta, e)))
    }

    /// The error for a read of `tenant` over `[mint, maxt]` that overlaps a
    /// block found unreadable at open, if any.
    fn broken_overlap(&self, tenant: &str, mint: i64, maxt: i64) -> Option<SelectError> {
        let broken = self.broken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (m, reason) = broken.iter().find(|(m, _)| m.tenant == tenant && m.overlaps(mint, maxt))?;
        Some(SelectError::Storage(format!(
            "block {} (samples {} to {}) is unreadable: {reason}",
            m.dir(),
            m.min_time,
            m.max_time
        )))
    }

    /// Blocks [`BlockStore::sync`] could not open, with the reason.
    pub fn unreadable_blocks(&self) -> Vec<String> {
        self.unreadable.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn add(&self, reader: Arc<BlockReader>) {
        let mut blocks = self.blocks.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = blocks.entry(reader.meta().tenant.clone()).or_default();
        list.push(reader);
        list.sort_by_key(|b| (b.meta().min_time, b.meta().ulid.clone()));
    }

    /// Writes a block for `tenant` and makes it visible to readers.
    pub async fn write(
        &self,
        tenant: &str,
        series: Vec<(Labels, Vec<Sample>)>,
        flushed_until: i64,
    ) -> Result<BlockMeta, BlockError> {
        let meta = write_block(&self.store, tenant, series, flushed_until).await?;
        let reader = BlockReader::open(Arc::clone(&self.store), meta.clone()).await?;
        self.add(Arc::new(reader));
        Ok(meta)
    }

    /// Removes a block: unregisters it at once (new reads no longer see it)
    /// and deletes its files once no running read holds it
    /// ([`BlockStore::collect_garbage`]).
    pub async fn delete(&self, meta: &BlockMeta) -> Result<(), BlockError> {
        self.retire(meta);
        self.collect_garbage().await.map(|_| ())
    }

    /// Unregisters a block; its files stay until [`BlockStore::collect_garbage`]
    /// finds no read using it.
    pub fn retire(&self, meta: &BlockMeta) {
        let mut removed = Vec::new();
        {
            let mut blocks = self.blocks.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(list) = blocks.get_mut(&meta.tenant) {
                list.retain(|b| {
                    let keep = b.meta().ulid != meta.ulid;
                    if !keep {
                        removed.push(Arc::clone(b));
                    }
                    keep
                });
            }
        }
        self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(removed);
    }

    /// Deletes the files of retired blocks no read holds any more:
    /// `meta.json` first, so a half-deleted block is an unfinished one that
    /// listing ignores. Returns how many blocks went.
    pub async fn collect_garbage(&self) -> Result<usize, BlockError> {
        let ready: Vec<Arc<BlockReader>> = {
            let mut retired = self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (ready, busy) = std::mem::take(&mut *retired).into_iter().partition(|b| Arc::strong_count(b) == 1);
            *retired = busy;
            ready
        };
        let n = ready.len();
        for (i, b) in ready.iter().enumerate() {
            let dir = b.meta().dir();
            for file in [crate::meta::META_FILE, crate::meta::SAMPLES_FILE, crate::meta::SERIES_FILE] {
                match self.store.delete(&object_store::path::Path::from(format!("{dir}/{file}"))).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        // Keep what is left for the next round.
                        self.retired
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .extend(ready[i..].iter().cloned());
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(n)
    }

    /// Retires `tenant`'s blocks whose newest sample is older than `before`
    /// (whole blocks only) and deletes the files no read holds; returns the
    /// blocks retired.
    pub async fn apply_retention(&self, tenant: &str, before: i64) -> Result<Vec<BlockMeta>, BlockError> {
        let expired: Vec<BlockMeta> =
            self.readers(tenant).iter().map(|b| b.meta().clone()).filter(|m| m.max_time < before).collect();
        for m in &expired {
            self.retire(m);
        }
        if !expired.is_empty() {
            self.collect_garbage().await?;
        }
        Ok(expired)
    }

    /// Merges `tenant`'s blocks that lie in the same `range_ms`-aligned range
    /// ending at or before `complete_before` into one block per range,
    /// dropping samples repeated at the same timestamp (the older block's
    /// wins). The new block is registered before the sources are retired, so
    /// a read sees the range in one or the other at every moment, and a
    /// crash in between leaves duplicates the next compaction removes.
    /// Returns the blocks written.
    pub async fn compact(
        &self,
        tenant: &str,
        range_ms: i64,
        complete_before: i64,
    ) -> Result<Vec<BlockMeta>, BlockError> {
        let range = range_ms.max(1);
        let mut groups: BTreeMap<i64, Vec<Arc<BlockReader>>> = BTreeMap::new();
        for b in self.readers(tenant) {
            let start = b.meta().min_time.div_euclid(range) * range;
            if b.meta().max_time < start.saturating_add(range) && start.saturating_add(range) <= complete_before {
                groups.entry(start).or_default().push(b);
            }
        }
        let mut written = Vec::new();
        for (_, mut sources) in groups.into_iter().filter(|(_, g)| g.len() > 1) {
            sources.sort_by(|a, b| a.meta().ulid.cmp(&b.meta().ulid));
            let unlimited = AtomicUsize::new(usize::MAX);
            let sets =
                futures::future::try_join_all(sources.iter().map(|b| b.select(&[], i64::MIN, i64::MAX, &unlimited)))
                    .await?;
            let series: Vec<(Labels, Vec<Sample>)> =
                merge_series_sets(sets).into_iter().map(|s| (s.labels, s.samples)).collect();
            let flushed_until = sources.iter().map(|b| b.meta().flushed_until).max().unwrap_or(i64::MIN);
            let meta = self.write(tenant, series, flushed_until).await?;
            for b in &sources {
                self.retire(b.meta());
            }
            tracing::info!(
                tenant, ulid = %meta.ulid, sources = sources.len(), min_time = meta.min_time, max_time = meta.max_time,
                samples = meta.num_samples, "blocks compacted"
            );
            written.push(meta);
        }
        drop(self.collect_garbage().await);
        Ok(written)
    }

    /// Deletes the files of blocks that were never finished (no `meta.json`:
    /// a write interrupted by a crash or an object store failure) and were
    /// started before `before_ms` (their ULID's time), so a write still in
    /// progress is never touched. Returns how many such blocks went.
    pub async fn remove_unfinished(&self, before_ms: i64) -> Result<usize, BlockError> {
        let objects: Vec<_> = self.store.list(None).try_collect().await?;
        let mut dirs: BTreeMap<String, (bool, Vec<object_store::path::Path>)> = BTreeMap::new();
        for o in objects {
            let loc = o.location.as_ref().to_owned();
            let Some((dir, file)) = loc.rsplit_once('/') else { continue };
            let entry = dirs.entry(dir.to_owned()).or_default();
            entry.0 |= file == META_FILE;
            entry.1.push(o.location);
        }
        let mut removed = 0;
        for (dir, (committed, files)) in dirs {
            let Some(id) = dir.rsplit('/').next().and_then(|u| ulid::Ulid::from_string(u).ok()) else { continue };
            let started = i64::try_from(id.timestamp_ms()).unwrap_or(i64::MAX);
            if committed || started >= before_ms {
                continue;
            }
            for f in &files {
                match self.store.delete(f).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            tracing::info!(block = %dir, files = files.len(), "unfinished block removed");
            removed += 1;
        }
        Ok(removed)
    }

    /// The metas of `tenant`'s blocks, ordered by min time.
    pub fn metas(&self, tenant: &str) -> Vec<BlockMeta> {
        self.readers(tenant).iter().map(|b| b.meta().clone()).collect()
    }

    /// Every tenant that has blocks.
    pub fn tenants(&self) -> Vec<String> {
        self.blocks.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
    }

    /// The highest `flushed_until` of `tenant`'s blocks: everything older is in blocks.
    pub fn flushed_until(&self, tenant: &str) -> Option<i64> {
        let broken = self.broken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let broken = broken.iter().filter(|(m, _)| m.tenant == tenant).map(|(m, _)| m.flushed_until);
        self.readers(tenant).iter().map(|b| b.meta().flushed_until).chain(broken).max()
    }

    /// [`Select::select_batches`] with batches of about `batch_rows` block rows.
    fn batches(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
        batch_rows: usize,
    ) -> BlockBatches {
        let readers: Vec<_> = self.readers(tenant).into_iter().filter(|b| b.meta().overlaps(mint, maxt)).collect();
        let hits: Vec<Vec<usize>> = readers.iter().map(|b| b.matching(matchers, mint, maxt)).collect();
        let pos = vec![0; readers.len()];
        let budget = AtomicUsize::new(hints.max_samples);
        BlockBatches { readers, hits, pos, mint, maxt, budget, batch_rows }
    }

    fn readers(&self, tenant: &str) -> Vec<Arc<BlockReader>> {
        self.blocks.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(tenant).cloned().unwrap_or_default()
    }
}

impl Select for BlockStore {
    fn select_with<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> BoxFuture<'a, Result<Vec<Series>, SelectError>> {
        Box::pin(async move {
            if let Some(e) = self.broken_overlap(tenant, mint, maxt) {
                return Err(e);
            }
            let readers: Vec<_> = self.readers(tenant).into_iter().filter(|b| b.meta().overlaps(mint, maxt)).collect();
            let budget = AtomicUsize::new(hints.max_samples);
            let sets =
                futures::future::try_join_all(readers.iter().map(|b| async {
                    b.select(matchers, mint, maxt, &budget).await.map_err(|e| e.in_block(b.meta()))
                }))
                .await?;
            Ok(merge_series_sets(sets))
        })
    }

    fn select_batches<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> BoxFuture<'a, Result<Box<dyn SeriesBatches + 'a>, SelectError>> {
        if let Some(e) = self.broken_overlap(tenant, mint, maxt) {
            return Box::pin(async move { Err(e) });
        }
        let batches = self.batches(tenant, matchers, mint, maxt, hints, BATCH_ROWS);
        Box::pin(async move { Ok(Box::new(batches) as Box<dyn SeriesBatches + 'a>) })
    }

    fn series<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<Labels>, SelectError>> {
        if let Some(e) = self.broken_overlap(tenant, mint, maxt) {
            return Box::pin(async move { Err(e) });
        }
        let sets = self.readers(tenant).iter().map(|b| b.series_labels(matchers, mint, maxt)).collect();
        Box::pin(async move { Ok(merge_label_sets(sets)) })
    }
}

/// Block rows (an upper bound of the samples) a batch of
/// [`BlockStore::select_batches`] aims at: about 16 MiB of samples.
const BATCH_ROWS: usize = 1 << 20;

/// A series of a batch: its labels, and the blocks holding it, each with the
/// series' position in that block's part of the batch.
type PlannedSeries = (Labels, Vec<(usize, usize)>);

/// The batches of one [`BlockStore::select_batches`]: the matching series of
/// every block, walked in label order a few series at a time; each batch
/// reads its series from every block and merges them.
struct BlockBatches {
    readers: Vec<Arc<BlockReader>>,
    /// Per block, the matching positions in its series table, label order.
    hits: Vec<Vec<usize>>,
    /// Per block, how many of `hits` earlier batches took.
    pos: Vec<usize>,
    mint: i64,
    maxt: i64,
    budget: AtomicUsize,
    /// Block rows a batch aims at.
    batch_rows: usize,
}

impl BlockBatches {
    /// The label set that comes next over all blocks, if any.
    fn next_labels(&self) -> Option<&Labels> {
        let mut min: Option<&Labels> = None;
        for (b, (hits, &p)) in self.readers.iter().zip(self.hits.iter().zip(&self.pos)) {
            if let Some(l) = hits.get(p).and_then(|&i| b.labels_at(i))
                && min.is_none_or(|m| l < m)
            {
                min = Some(l);
            }
        }
        min
    }

    /// Advances `pos` over the next series of about `batch_rows` rows;
    /// returns where each block's part of the batch starts and the batch's
    /// series: labels, and which blocks hold it at which offset of their part.
    fn plan_batch(&mut self) -> Option<(Vec<usize>, Vec<PlannedSeries>)> {
        let start = self.pos.clone();
        let mut rows = 0usize;
        let mut plan = Vec::new();
        while rows < self.batch_rows {
            let Some(next) = self.next_labels().cloned() else { break };
            let mut holders = Vec::new();
            for (k, (b, (hits, p))) in self.readers.iter().zip(self.hits.iter().zip(self.pos.iter_mut())).enumerate() {
                if let Some(&i) = hits.get(*p)
                    && b.labels_at(i) == Some(&next)
                {
                    rows += b.rows_at(i);
                    holders.push((k, *p - start[k]));
                    *p += 1;
                }
            }
            plan.push((next, holders));
        }
        (start != self.pos).then_some((start, plan))
    }
}

impl SeriesBatches for BlockBatches {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<Vec<Series>>, SelectError>> {
        Box::pin(async move {
            while let Some((start, plan)) = self.plan_batch() {
                let this = &*self;
                let reads = this.readers.iter().enumerate().map(|(k, b)| {
                    let part = &this.hits[k][start[k]..this.pos[k]];
                    async move {
                        b.read_parts(part, this.mint, this.maxt, &this.budget).await.map_err(|e| e.in_block(b.meta()))
                    }
                });
                let mut parts = futures::future::try_join_all(reads).await?;
                // Each series from its blocks, in block order (the earlier
                // block's sample wins a repeated timestamp, as in a select).
                let mut batch = Vec::with_capacity(plan.len());
                for (labels, holders) in plan {
                    let series_parts =
                        holders.iter().filter_map(|&(k, j)| parts.get_mut(k)?.get_mut(j).map(std::mem::take)).collect();
                    let samples = merge_parts(series_parts);
                    if !samples.is_empty() {
                        batch.push(Series { labels, samples });
                    }
                }
                if !batch.is_empty() {
                    return Ok(Some(batch));
                }
            }
            Ok(None)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_model::MatchOp;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).expect("valid labels")
    }

    #[tokio::test]
    async fn written_block_reads_back_by_matchers_and_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        let store = BlockStore::open(Arc::clone(&fs)).await.expect("open");
        let mut series = Vec::new();
        for i in 0..50 {
            let l = labels(&[("__name__", if i % 2 == 0 { "up" } else { "x" }), ("i", &i.to_string())]);
            series.push((l, (0..100).map(|t| Sample::new(t * 1000, (i * 1000 + t) as f64)).collect()));
        }
        let meta = store.write("t1", series, 100_000).await.expect("write");
        assert_eq!(meta.num_series, 50);
        assert_eq!(meta.num_samples, 5000);

        let m = vec![
            Matcher::new(MatchOp::Equal, "__name__", "x").expect("m"),
            Matcher::new(MatchOp::Regex, "i", "1|7|33").expect("m"),
        ];
        let got = store.select("t1", &m, 10_000, 20_000).await.expect("select");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].labels.get("i"), Some("1"));
        assert_eq!(got[0].samples.len(), 11);
        assert_eq!(got[0].samples[0], Sample::new(10_000, 1010.0));
        assert_eq!(got[2].labels.get("i"), Some("7"));
        assert_eq!(got[2].samples[10], Sample::new(20_000, 7020.0));
        assert!(store.select("other", &m, 0, i64::MAX).await.expect("select").is_empty());

        // A fresh store finds the block by listing.
        let reopened = BlockStore::open(fs).await.expect("reopen");
        assert_eq!(reopened.metas("t1"), vec![meta]);
        assert_eq!(reopened.flushed_until("t1"), Some(100_000));
        let all = reopened.select("t1", &[], i64::MIN, i64::MAX).await.expect("select");
        assert_eq!(all.len(), 50);
        assert_eq!(all.iter().map(|s| s.samples.len()).sum::<usize>(), 5000);

        // The budget stops the read; label queries need no sample.
        let over = reopened.select_with("t1", &[], i64::MIN, i64::MAX, SelectHints { max_samples: 4999 }).await;
        assert!(matches!(over, Err(SelectError::Limit(_))));
        let at = reopened.select_with("t1", &[], i64::MIN, i64::MAX, SelectHints { max_samples: 5000 }).await;
        assert_eq!(at.expect("at the limit").len(), 50);
        let names = reopened.label_names("t1", &[], 0, 1000).await.expect("names");
        assert_eq!(names, ["__name__", "i"]);
        let values = reopened.label_values("t1", "__name__", &m, 0, 1000).await.expect("values");
        assert_eq!(values, ["x"]);
        assert!(reopened.series("t1", &[], 200_000, 300_000).await.expect("series").is_empty());
    }

    #[tokio::test]
    async fn compaction_merges_dedups_and_waits_for_readers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        let store = BlockStore::open(Arc::clone(&fs)).await.expect("open");
        let l = |i: &str| labels(&[("__name__", "m"), ("i", i)]);
        let s = |ts: &[i64]| ts.iter().map(|&t| Sample::new(t, t as f64 / 10.0)).collect::<Vec<_>>();
        store.write("t", vec![(l("a"), s(&[0, 1_000])), (l("b"), s(&[500]))], 2_000).await.expect("w");
        // Overlaps the first block at t=1000 (a replica, or a crash mid-compaction).
        store.write("t", vec![(l("a"), s(&[1_000, 2_000]))], 4_000).await.expect("w");
        store.write("t", vec![(l("a"), s(&[12_000]))], 14_000).await.expect("w");
        let before = store.select("t", &[], i64::MIN, i64::MAX).await.expect("select");
        let held = store.readers("t");

        // Only the range [0, 10 s) is complete and has more than one block.
        assert!(store.compact("t", 10_000, 9_999).await.expect("compact").is_empty());
        let written = store.compact("t", 10_000, 20_000).await.expect("compact");
        assert_eq!(written.len(), 1);
        assert_eq!((written[0].num_samples, written[0].flushed_until), (4, 4_000));
        assert_eq!(store.metas("t").len(), 2);
        assert_eq!(store.select("t", &[], i64::MIN, i64::MAX).await.expect("select"), before);

        // A read that started before still finds its files.
        let old = held[0].select(&[], i64::MIN, i64::MAX, &AtomicUsize::new(usize::MAX)).await.expect("old read");
        assert_eq!(old.len(), 2);
        drop(held);
        assert_eq!(store.collect_garbage().await.expect("gc"), 2);
        let reopened = BlockStore::open(fs).await.expect("reopen");
        assert_eq!(reopened.metas("t").len(), 2);
        assert_eq!(reopened.select("t", &[], i64::MIN, i64::MAX).await.expect("select"), before);
    }

    #[tokio::test]
    async fn batches_cover_the_select_once_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        let store = BlockStore::open(fs).await.expect("open");
        let l = |i: &str| labels(&[("__name__", "m"), ("i", i)]);
        let s = |ts: &[i64]| ts.iter().map(|&t| Sample::new(t, t as f64 / 10.0)).collect::<Vec<_>>();
        // Series spread over blocks in different subsets, one sample repeated.
        store.write("t", vec![(l("a"), s(&[0, 1_000])), (l("c"), s(&[500]))], 2_000).await.expect("w");
        store.write("t", vec![(l("a"), s(&[1_000, 2_000])), (l("b"), s(&[2_500]))], 4_000).await.expect("w");
        store
            .write("t", vec![(l("d"), s(&[5_000])), (l("b"), s(&[6_000])), (l("e"), s(&[9_000]))], 9_000)
            .await
            .expect("w");
        let all = store.select("t", &[], 0, 8_000).await.expect("select");
        assert_eq!(all.len(), 4, "e is out of range");
        for batch_rows in [1, 3, 1 << 20] {
            let mut b = store.batches("t", &[], 0, 8_000, SelectHints::default(), batch_rows);
            let mut got = Vec::new();
            let mut n = 0;
            while let Some(batch) = b.next_batch().await.expect("batch") {
                assert!(!batch.is_empty());
                got.extend(batch);
                n += 1;
            }
            assert_eq!(got, all, "batch_rows {batch_rows}");
            // Rows: a 4, b 2, c 1, d 1.
            let want = match batch_rows {
                1 => 4,
                3 => 3,
                _ => 1,
            };
            assert_eq!(n, want, "batch_rows {batch_rows}");
        }
        // The budget spans batches: 8 samples are read (the repeat twice).
        let mut b = store.batches("t", &[], 0, 8_000, SelectHints { max_samples: 7 }, 1);
        let mut res = Ok(None);
        for _ in 0..10 {
            res = b.next_batch().await;
            if !matches!(res, Ok(Some(_))) {
                break;
            }
        }
        assert!(matches!(res, Err(SelectError::Limit(_))), "{res:?}");
        let m = [Matcher::new(MatchOp::Regex, "i", "b|d").expect("m")];
        let mut b = store.batches("t", &m, 0, i64::MAX, SelectHints::default(), 1);
        let first = b.next_batch().await.expect("ok").expect("b");
        assert_eq!(first[0].samples, s(&[2_500, 6_000]));
    }

    #[tokio::test]
    async fn truncated_block_is_reported_and_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        let store = BlockStore::open(Arc::clone(&fs)).await.expect("open");
        let l = labels(&[("__name__", "m")]);
        let bad = store.write("t", vec![(l.clone(), vec![Sample::new(0, 1.0)])], 0).await.expect("w");
        store.write("t", vec![(l, vec![Sample::new(5_000, 2.0)])], 0).await.expect("w");
        let path = object_store::path::Path::from(format!("{}/{}", bad.dir(), crate::meta::SERIES_FILE));
        fs.put(&path, bytes::Bytes::from_static(b"PAR1 truncated").into()).await.expect("put");
        let reopened = BlockStore::open(Arc::clone(&fs)).await.expect("a bad block does not stop the store");
        assert_eq!(reopened.metas("t").len(), 1);
        assert_eq!(reopened.unreadable_blocks().len(), 1, "{:?}", reopened.unreadable_blocks());
        // Other ranges keep working.
        let got = reopened.select("t", &[], 1_000, i64::MAX).await.expect("select");
        assert_eq!(got[0].samples, vec![Sample::new(5_000, 2.0)]);
        // A read over the broken block's range fails naming it, instead of missing its samples.
        let err = reopened.select("t", &[], i64::MIN, i64::MAX).await.expect_err("overlaps the broken block");
        assert!(err.to_string().contains(&bad.dir()), "{err}");
        assert!(reopened.series("t", &[], 0, 0).await.is_err());
        assert!(reopened.select("other", &[], i64::MIN, i64::MAX).await.expect("other tenant").is_empty());
        assert_eq!(reopened.flushed_until("t"), Some(0));
    }

    #[tokio::test]
    async fn samples_file_corrupted_after_open_fails_the_read_naming_the_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        let store = BlockStore::open(Arc::clone(&fs)).await.expect("open");
        let l = labels(&[("__name__", "m")]);
        let bad = store.write("t", vec![(l.clone(), (0..100).map(|t| Sample::new(t, 1.0)).collect())], 0).await;
        let bad = bad.expect("w");
        store.write("t", vec![(l, vec![Sample::new(5_000, 2.0)])], 0).await.expect("w");
        let path = object_store::path::Path::from(format!("{}/{}", bad.dir(), crate::meta::SAMPLES_FILE));
        let whole = fs.get(&path).await.expect("get").bytes().await.expect("bytes");
        fs.put(&path, whole.slice(..whole.len() / 2).into()).await.expect("truncate");
        let err = store.select("t", &[], 0, 99).await.expect_err("truncated samples file");
        let msg = err.to_string();
        assert!(msg.contains(&bad.dir()) && msg.contains("samples 0 to 99"), "{msg}");
        let got = store.select("t", &[], 1_000, i64::MAX).await.expect("other range");
        assert_eq!(got[0].samples, vec![Sample::new(5_000, 2.0)]);
    }

    #[tokio::test]
    async fn a_select_costs_one_footer_get_and_one_data_get_per_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        let counters = crate::counting::StoreCounters::default();
        let counted: Arc<dyn ObjectStore> = Arc::new(crate::counting::CountingStore::new(fs, counters));
        let store = BlockStore::open(counted).await.expect("open");
        let series = (0..200)
            .map(|i| {
                let l = labels(&[("__name__", "m"), ("i", &i.to_string())]);
                (l, (0..500).map(|t| Sample::new(t * 15_000, (i * t) as f64)).collect())
            })
            .collect();
        store.write("t", series, 0).await.expect("write");
        let m = [Matcher::new(MatchOp::Equal, "i", "7").expect("m")];
        let (got, io) = crate::counting::measure(store.select("t", &m, i64::MIN, i64::MAX)).await;
        assert_eq!(got.expect("select")[0].samples.len(), 500);
        assert_eq!(io.gets, 2, "footer with page index, then the pages of one series: {io:?}");
    }

    #[tokio::test]
    async fn block_without_meta_is_invisible() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        fs.put(
            &object_store::path::Path::from("t1/01ABC/samples.parquet"),
            bytes::Bytes::from_static(b"partial").into(),
        )
        .await
        .expect("put");
        let store = BlockStore::open(Arc::clone(&fs)).await.expect("open");
        assert!(store.metas("t1").is_empty());
        // Not a ULID: left alone. An old unfinished block goes; a recent one stays.
        let old = ulid::Ulid::from_parts(1_000, 1).to_string();
        let recent = ulid::Ulid::from_parts(9_000, 1).to_string();
        for u in [&old, &recent] {
            let p = object_store::path::Path::from(format!("t1/{u}/samples.parquet"));
            fs.put(&p, bytes::Bytes::from_static(b"partial").into()).await.expect("put");
        }
        let done = store.write("t1", vec![(labels(&[("__name__", "m")]), vec![Sample::new(0, 1.0)])], 0).await;
        done.expect("write");
        assert_eq!(store.remove_unfinished(5_000).await.expect("remove"), 1);
        let left: Vec<_> = fs.list(None).try_collect::<Vec<_>>().await.expect("list");
        assert_eq!(left.len(), 5, "01ABC, the recent one and the finished block's 3 files: {left:?}");
        assert!(left.iter().all(|o| !o.location.as_ref().contains(&old)));
        assert_eq!(store.metas("t1").len(), 1);
    }
}
