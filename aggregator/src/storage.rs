//! [`LocalStorage`]: ingest log + head + blocks, the storage engine of one
//! aggregator (and of `strata standalone`).
//!
//! Write path: filter the batch against the head (order, bounds) → append the
//! accepted samples to the ingest log and fsync → apply them to the head →
//! acknowledge. Writers are serialized by the log's lock, so the head cannot
//! change between the filter and the apply.
//!
//! Flush: when the head spans more than 1.5 block ranges (as Prometheus
//! compacts its head), the oldest whole range is cut: the tenant's minimum
//! valid time is raised to the range's end, the range is written as a block
//! and registered with the block store, then dropped from the head, and log
//! segments holding only flushed samples are deleted.
//!
//! Reads: the head first, then the blocks. A flush registers the block
//! before it truncates the head, so a read sees every sample in one or the
//! other (and deduplicates those it sees in both).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use strata_block::counting::{CountingStore, StoreCounters};
use strata_block::{BlockMeta, BlockStore};
use strata_model::{
    Append, AppendError, AppendSummary, BoxFuture, Labels, Matcher, MergedBatches, Select, SelectError, SelectHints,
    Series, SeriesBatches, WriteBatch, merge_label_sets, merge_series_sets,
};

use strata_common::Readiness;

use crate::head::Head;
use crate::metrics::StorageMetrics;
use crate::wal::IngestLog;
use crate::{AggregatorError, Deps, StorageSettings};

struct Inner {
    settings: StorageSettings,
    log: Mutex<IngestLog>,
    head: RwLock<Head>,
    blocks: Arc<BlockStore>,
    metrics: StorageMetrics,
    clock: Arc<dyn strata_common::Clock>,
    /// Where a failing object store is reported (see [`LocalStorage::report_to`]).
    readiness: std::sync::OnceLock<Readiness>,
}

/// The condition name under which failing block uploads mark the process
/// not ready.
pub const UPLOAD_CONDITION: &str = "block uploads";

/// Opens the block store the settings name: the local directory
/// `blocks_dir`, or the remote (S3) store.
pub async fn open_block_store(settings: &StorageSettings) -> Result<BlockStore, AggregatorError> {
    open_block_store_counted(settings, StoreCounters::default()).await
}

/// [`open_block_store`], counting requests and bytes into `counters`.
pub async fn open_block_store_counted(
    settings: &StorageSettings,
    counters: StoreCounters,
) -> Result<BlockStore, AggregatorError> {
    let store: Arc<dyn ObjectStore> = match settings.object_store.build_remote()? {
        Some(remote) => remote,
        None => {
            std::fs::create_dir_all(&settings.blocks_dir).map_err(|source| AggregatorError::IngestLog {
                path: settings.blocks_dir.display().to_string(),
                source,
            })?;
            Arc::new(LocalFileSystem::new_with_prefix(&settings.blocks_dir)?)
        }
    };
    tracing::info!(object_store = %settings.object_store.describe(), "opening blocks");
    Ok(BlockStore::open(Arc::new(CountingStore::new(store, counters))).await?)
}

/// The local storage engine; cheap to clone.
#[derive(Clone)]
pub struct LocalStorage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStorage").field("wal_dir", &self.inner.settings.wal_dir).finish_non_exhaustive()
    }
}

impl LocalStorage {
    /// Opens the blocks, replays the ingest log into the head, and is ready
    /// for writes.
    pub async fn open(settings: StorageSettings, deps: Deps) -> Result<Self, AggregatorError> {
        let metrics = StorageMetrics::new(&deps.telemetry);
        let blocks = Arc::new(open_block_store_counted(&settings, metrics.object_store.clone()).await?);
        Self::open_with(settings, deps, blocks, metrics).await
    }

    /// [`LocalStorage::open`] with blocks in `store` instead of the one the
    /// settings name (tests inject faults this way).
    pub async fn open_with_store(
        settings: StorageSettings,
        deps: Deps,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, AggregatorError> {
        let metrics = StorageMetrics::new(&deps.telemetry);
        let counted = Arc::new(CountingStore::new(store, metrics.object_store.clone()));
        let blocks = Arc::new(BlockStore::open(counted).await?);
        Self::open_with(settings, deps, blocks, metrics).await
    }

    async fn open_with(
        settings: StorageSettings,
        deps: Deps,
        blocks: Arc<BlockStore>,
        metrics: StorageMetrics,
    ) -> Result<Self, AggregatorError> {
        let started = Instant::now();
        let wal_dir = settings.wal_dir.clone();
        let segment_max_bytes = settings.segment_max_bytes;
        let watermarks: Vec<(String, i64)> =
            blocks.tenants().into_iter().filter_map(|t| blocks.flushed_until(&t).map(|w| (t, w))).collect();
        let (log, head, stats) = tokio::task::spawn_blocking(move || {
            let mut head = Head::new();
            for (tenant, w) in &watermarks {
                head.set_min_valid_time(tenant, *w);
            }
            let (log, stats) = IngestLog::open(&wal_dir, segment_max_bytes, |batch| {
                head.append(batch);
            })?;
            Ok::<_, std::io::Error>((log, head, stats))
        })
        .await
        .map_err(|e| AggregatorError::IngestLog {
            path: settings.wal_dir.display().to_string(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| AggregatorError::IngestLog { path: settings.wal_dir.display().to_string(), source })?;
        let hs = head.stats();
        tracing::info!(
            records = stats.records,
            segments = stats.segments,
            truncated_bytes = stats.truncated_bytes,
            series = hs.series,
            samples = hs.samples,
            blocks = blocks.tenants().iter().map(|t| blocks.metas(t).len()).sum::<usize>(),
            elapsed = ?started.elapsed(),
            "ingest log replayed"
        );
        metrics.log_replayed_records.inc_by(stats.records);
        metrics.log_segments.set(i64::try_from(log.segment_count()).unwrap_or(i64::MAX));
        let this = Self {
            inner: Arc::new(Inner {
                settings,
                log: Mutex::new(log),
                head: RwLock::new(head),
                blocks,
                metrics,
                clock: Arc::clone(&deps.clock),
                readiness: std::sync::OnceLock::new(),
            }),
        };
        this.update_head_gauges();
        Ok(this)
    }

    /// Reports failing block uploads to `readiness` (`/-/ready` answers 503
    /// while a flush cannot reach the object store). Only the first call counts.
    pub fn report_to(&self, readiness: Readiness) {
        let _ = self.inner.readiness.set(readiness);
    }

    fn set_upload_degraded(&self, reason: Option<String>) {
        self.inner.metrics.upload_degraded.set(i64::from(reason.is_some()));
        if let Some(r) = self.inner.readiness.get() {
            match reason {
                Some(reason) => r.set_degraded(UPLOAD_CONDITION, reason),
                None => r.clear_degraded(UPLOAD_CONDITION),
            }
        }
    }

    /// The settings this storage was opened with.
    pub fn settings(&self) -> &StorageSettings {
        &self.inner.settings
    }

    /// The block store this storage flushes into.
    pub fn blocks(&self) -> &Arc<BlockStore> {
        &self.inner.blocks
    }

    fn log(&self) -> MutexGuard<'_, IngestLog> {
        self.inner.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn head_read(&self) -> RwLockReadGuard<'_, Head> {
        self.inner.head.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn head_write(&self) -> RwLockWriteGuard<'_, Head> {
        self.inner.head.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn update_head_gauges(&self) {
        let (s, memory) = {
            let head = self.head_read();
            (head.stats(), head.memory_bytes())
        };
        self.inner.metrics.head_series.set(i64::try_from(s.series).unwrap_or(i64::MAX));
        self.inner.metrics.head_samples.set(i64::try_from(s.samples).unwrap_or(i64::MAX));
        self.inner.metrics.head_memory_bytes.set(i64::try_from(memory).unwrap_or(i64::MAX));
    }

    fn append_blocking(&self, batch: WriteBatch) -> Result<AppendSummary, AppendError> {
        for s in &batch.series {
            s.labels.validate().map_err(|e| AppendError::Invalid(e.to_string()))?;
            if s.labels.metric_name().is_none() {
                return Err(AppendError::Invalid(format!("series {} has no metric name", s.labels)));
            }
        }
        let m = &self.inner.metrics;
        let mut log = self.log();
        let (accepted, summary) = self.head_read().filter(batch);
        m.out_of_order.inc_by(summary.out_of_order as u64);
        m.out_of_bounds.inc_by(summary.out_of_bounds as u64);
        if accepted.is_empty() {
            return Ok(summary);
        }
        let started = Instant::now();
        if let Err(e) = log.append(&accepted) {
            m.append_failures.inc();
            tracing::error!(error = %e, "ingest log append failed");
            return Err(AppendError::Unavailable(e.to_string()));
        }
        m.log_sync_seconds.observe(started.elapsed().as_secs_f64());
        m.log_segments.set(i64::try_from(log.segment_count()).unwrap_or(i64::MAX));
        self.head_write().apply(accepted);
        drop(log);
        m.samples_appended.inc_by(summary.accepted as u64);
        Ok(summary)
    }

    /// Cuts every whole block range that is ready; returns the blocks written.
    pub async fn flush(&self) -> Result<Vec<BlockMeta>, AggregatorError> {
        let range = self.inner.settings.block_duration_ms;
        let mut written = Vec::new();
        let tenants = self.head_read().tenants();
        for tenant in tenants {
            loop {
                let Some((min, max)) = self.head_read().time_range(&tenant) else { break };
                let start = min.div_euclid(range) * range;
                let end = start + range;
                if max < end + range / 2 {
                    break;
                }
                {
                    // Hold the log lock so no writer is between filter and apply.
                    let _log = self.log();
                    self.head_write().set_min_valid_time(&tenant, end);
                }
                let data = self.head_read().snapshot(&tenant, start, end);
                if !data.is_empty() {
                    let meta = self.inner.blocks.write(&tenant, data, end).await?;
                    tracing::info!(
                        tenant = %tenant, ulid = %meta.ulid, min_time = meta.min_time, max_time = meta.max_time,
                        series = meta.num_series, samples = meta.num_samples,
                        bytes = meta.samples_bytes + meta.series_bytes, "block written"
                    );
                    self.inner.metrics.blocks_written.inc();
                    written.push(meta);
                }
                self.head_write().truncate_before(&tenant, end);
            }
        }
        if !written.is_empty() {
            let blocks = Arc::clone(&self.inner.blocks);
            let mut log = self.log();
            log.rotate().map_err(|source| self.log_error(source))?;
            log.truncate(|t| blocks.flushed_until(t).unwrap_or(i64::MIN)).map_err(|source| self.log_error(source))?;
            self.inner.metrics.log_segments.set(i64::try_from(log.segment_count()).unwrap_or(i64::MAX));
        }
        self.update_head_gauges();
        Ok(written)
    }

    /// Compacts every tenant's blocks in complete compaction ranges (ranges
    /// that end at or before the tenant's flush watermark, so no flush can add
    /// to them); see [`BlockStore::compact`]. Returns the blocks written.
    pub async fn compact(&self) -> Result<Vec<BlockMeta>, AggregatorError> {
        let blocks = &self.inner.blocks;
        let mut written = Vec::new();
        for tenant in blocks.tenants() {
            let Some(watermark) = blocks.flushed_until(&tenant) else { continue };
            let metas = blocks.compact(&tenant, self.inner.settings.compaction_range_ms, watermark).await?;
            self.inner.metrics.blocks_compacted.inc_by(metas.len() as u64);
            written.extend(metas);
        }
        Ok(written)
    }

    /// Deletes every tenant's blocks older than its retention (whole blocks:
    /// a block goes once its newest sample is past retention). Returns the
    /// blocks deleted.
    pub async fn apply_retention(&self) -> Result<Vec<BlockMeta>, AggregatorError> {
        let now = self.inner.clock.now_ms();
        let mut deleted = Vec::new();
        for tenant in self.inner.blocks.tenants() {
            let keep = self.inner.settings.retention_of(&tenant);
            if keep <= 0 {
                continue;
            }
            let metas = self.inner.blocks.apply_retention(&tenant, now.saturating_sub(keep)).await?;
            for m in &metas {
                tracing::info!(tenant = %tenant, ulid = %m.ulid, max_time = m.max_time, "block past retention deleted");
            }
            deleted.extend(metas);
        }
        Ok(deleted)
    }

    fn log_error(&self, source: std::io::Error) -> AggregatorError {
        AggregatorError::IngestLog { path: self.inner.settings.wal_dir.display().to_string(), source }
    }

    /// Flushes every `flush_interval` until `stop` turns true. A flush that
    /// fails (the object store is unreachable) is retried with exponential
    /// backoff from [`RETRY_MIN`] up to [`RETRY_MAX`], for as long as it
    /// takes: the head and the ingest log keep the range until a block
    /// holding it is stored. Meanwhile `/-/ready` reports the failure (see
    /// [`LocalStorage::report_to`]); it is ready again after a flush succeeds.
    pub async fn run_flusher(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let interval = self.inner.settings.flush_interval;
        let mut wait = interval;
        let mut backoff = RETRY_MIN;
        let mut last_cleanup: Option<Instant> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            if last_cleanup.is_none_or(|t| t.elapsed() >= UNFINISHED_CLEANUP_EVERY) {
                last_cleanup = Some(Instant::now());
                let before = self.inner.clock.now_ms().saturating_sub(UNFINISHED_MIN_AGE_MS);
                if let Err(e) = self.inner.blocks.remove_unfinished(before).await {
                    tracing::warn!(error = %e, "removing unfinished blocks failed; will retry");
                }
            }
            match self.maintain().await {
                Ok(()) => {
                    wait = interval;
                    backoff = RETRY_MIN;
                }
                Err(e) => {
                    wait = backoff.min(interval.max(RETRY_MIN));
                    backoff = (backoff * 2).min(RETRY_MAX);
                    tracing::warn!(error = %e, retry_in = ?wait, "block maintenance failed; will retry");
                }
            }
        }
    }

    /// One round of the flusher: flush, then compact, then retention. An
    /// error stops the round (the next one retries).
    async fn maintain(&self) -> Result<(), AggregatorError> {
        if let Err(e) = self.flush().await {
            self.inner.metrics.flush_failures.inc();
            self.inner.metrics.upload_failures.inc();
            tracing::error!(error = %e, "flushing the head failed; the head and ingest log keep the range");
            self.set_upload_degraded(Some(format!("flushing the head into a block failed: {e}")));
            return Err(e);
        }
        self.set_upload_degraded(None);
        if let Err(e) = self.compact().await {
            self.inner.metrics.upload_failures.inc();
            tracing::error!(error = %e, "compacting blocks failed; will retry");
            return Err(e);
        }
        if let Err(e) = self.apply_retention().await {
            tracing::error!(error = %e, "deleting blocks past retention failed; will retry");
            return Err(e);
        }
        Ok(())
    }
}

/// How often the flusher removes unfinished blocks (files without `meta.json`).
const UNFINISHED_CLEANUP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// How old (by ULID) an unfinished block must be before it is removed: no
/// block write, an import's included, takes this long.
const UNFINISHED_MIN_AGE_MS: i64 = 15 * 60 * 1000;

/// First retry delay after a failed flush.
pub const RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(500);
/// Longest delay between retries of a failed flush (when shorter than the flush interval).
pub const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

impl Append for LocalStorage {
    fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.append_blocking(batch))
                .await
                .map_err(|e| AppendError::Unavailable(format!("append task failed: {e}")))?
        })
    }
}

impl Select for LocalStorage {
    fn select_with<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> BoxFuture<'a, Result<Vec<Series>, SelectError>> {
        Box::pin(async move {
            // Head first, then blocks: see the module docs. The blocks get what
            // the head left of the budget (samples in both count twice, which
            // only happens briefly around a flush).
            let head = self.head_read().select_with(tenant, matchers, mint, maxt, hints)?;
            let loaded: usize = head.iter().map(|s| s.samples.len()).sum();
            let left = SelectHints { max_samples: hints.max_samples.saturating_sub(loaded) };
            let blocks = self.inner.blocks.select_with(tenant, matchers, mint, maxt, left).await.inspect_err(|e| {
                if matches!(e, SelectError::Storage(_)) {
                    self.inner.metrics.block_read_failures.inc();
                    tracing::warn!(error = %e, "block read failed");
                }
            })?;
            Ok(merge_series_sets(vec![head, blocks]))
        })
    }

    /// The head read at once (it is in memory), the blocks in batches.
    fn select_batches<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> BoxFuture<'a, Result<Box<dyn SeriesBatches + 'a>, SelectError>> {
        Box::pin(async move {
            let head = self.head_read().select_with(tenant, matchers, mint, maxt, hints)?;
            let loaded: usize = head.iter().map(|s| s.samples.len()).sum();
            let left = SelectHints { max_samples: hints.max_samples.saturating_sub(loaded) };
            let failures = self.inner.metrics.block_read_failures.clone();
            let count = move |e: &SelectError| {
                if matches!(e, SelectError::Storage(_)) {
                    failures.inc();
                }
            };
            let blocks =
                self.inner.blocks.select_batches(tenant, matchers, mint, maxt, left).await.inspect_err(&count)?;
            let blocks = Box::new(CountFailures { inner: blocks, count });
            Ok(Box::new(MergedBatches::new(head, blocks)) as Box<dyn SeriesBatches + 'a>)
        })
    }

    fn series<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<Labels>, SelectError>> {
        Box::pin(async move {
            let head = self.head_read().series_labels(tenant, matchers, mint, maxt);
            let blocks = self.inner.blocks.series(tenant, matchers, mint, maxt).await.inspect_err(|e| {
                if matches!(e, SelectError::Storage(_)) {
                    self.inner.metrics.block_read_failures.inc();
                }
            })?;
            Ok(merge_label_sets(vec![head, blocks]))
        })
    }
}

/// Batches of a block read that count their read failures.
struct CountFailures<'a, F> {
    inner: Box<dyn SeriesBatches + 'a>,
    count: F,
}

impl<F: Fn(&SelectError) + Send> SeriesBatches for CountFailures<'_, F> {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<Vec<Series>>, SelectError>> {
        Box::pin(async move { self.inner.next_batch().await.inspect_err(&self.count) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageConfig;
    use strata_common::{SystemClock, Telemetry};
    use strata_model::{Labels, Sample};

    fn deps() -> Deps {
        Deps { telemetry: Telemetry::empty(), clock: Arc::new(SystemClock) }
    }

    fn settings(dir: &std::path::Path) -> StorageSettings {
        let mut c = StorageConfig::with_path(dir);
        c.block_duration = strata_common::PromDuration(std::time::Duration::from_secs(10));
        c.validate().expect("valid")
    }

    fn batch(series: usize, t: i64) -> WriteBatch {
        let mut b = WriteBatch::new("anonymous");
        for i in 0..series {
            let l = Labels::from_pairs([("__name__", "m".to_owned()), ("i", i.to_string())]).expect("labels");
            b.push(l, Sample::new(t, (t + i as i64) as f64));
        }
        b
    }

    async fn all(s: &LocalStorage) -> Vec<Series> {
        s.select("anonymous", &[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX).await.expect("select")
    }

    #[tokio::test]
    async fn acknowledged_samples_survive_restart_through_log_and_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalStorage::open(settings(dir.path()), deps()).await.expect("open");
        // 40 s of data at 1 s resolution, 3 series: the first 10 s ranges flush.
        for t in 0..40 {
            let r = s.append(batch(3, t * 1000)).await.expect("append");
            assert_eq!(r.accepted, 3);
        }
        let before = all(&s).await;
        let written = s.flush().await.expect("flush");
        assert_eq!(written.len(), 3, "ranges ending at least half a range before the newest sample (39 s) flush");
        assert_eq!(all(&s).await, before, "a flush changes no query result");
        // Late samples for flushed ranges are refused, not silently lost.
        let r = s.append(batch(1, 5_000)).await.expect("append");
        assert_eq!(r.out_of_bounds, 1);
        drop(s);

        let s = LocalStorage::open(settings(dir.path()), deps()).await.expect("reopen");
        let after = all(&s).await;
        assert_eq!(after, before);
        assert_eq!(after.iter().map(|s| s.samples.len()).sum::<usize>(), 120);

        // Label queries see head and blocks alike; the sample budget spans both.
        let names = s.label_names("anonymous", &[], i64::MIN, i64::MAX).await.expect("names");
        assert_eq!(names, ["__name__", "i"]);
        let values = s.label_values("anonymous", "i", &[], 0, 5_000).await.expect("values");
        assert_eq!(values, ["0", "1", "2"], "series flushed to a block");
        assert_eq!(s.series("anonymous", &[Matcher::equal("i", "1")], 39_000, 39_000).await.expect("series").len(), 1);
        let all_m = [Matcher::equal("__name__", "m")];
        let over = s.select_with("anonymous", &all_m, i64::MIN, i64::MAX, SelectHints { max_samples: 119 }).await;
        assert!(matches!(over, Err(SelectError::Limit(_))), "120 samples over a budget of 119");
        let at = s.select_with("anonymous", &all_m, i64::MIN, i64::MAX, SelectHints { max_samples: 120 }).await;
        assert_eq!(at.expect("at the limit").len(), 3);
    }

    #[tokio::test]
    async fn complete_ranges_compact_and_survive_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = || {
            let mut c = StorageConfig::with_path(dir.path());
            c.block_duration = strata_common::PromDuration(std::time::Duration::from_secs(10));
            c.compaction_range = strata_common::PromDuration(std::time::Duration::from_secs(20));
            c.validate().expect("valid")
        };
        let s = LocalStorage::open(settings(), deps()).await.expect("open");
        for t in 0..40 {
            s.append(batch(2, t * 1000)).await.expect("append");
        }
        let before = all(&s).await;
        assert_eq!(s.flush().await.expect("flush").len(), 3);
        // [0, 20 s) is complete (the watermark is 30 s); [20 s, 40 s) is not.
        let compacted = s.compact().await.expect("compact");
        assert_eq!(compacted.len(), 1);
        assert_eq!((compacted[0].min_time, compacted[0].max_time, compacted[0].num_samples), (0, 19_000, 40));
        assert_eq!(s.blocks().metas("anonymous").len(), 2);
        assert_eq!(all(&s).await, before);
        assert!(s.compact().await.expect("again").is_empty());
        drop(s);
        let s = LocalStorage::open(settings(), deps()).await.expect("reopen");
        assert_eq!(all(&s).await, before);
        assert_eq!(s.blocks().metas("anonymous").len(), 2);
    }

    #[tokio::test]
    async fn retention_deletes_whole_blocks_per_tenant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = StorageConfig::with_path(dir.path());
        c.block_duration = strata_common::PromDuration(std::time::Duration::from_secs(10));
        c.retention = strata_common::PromDuration(std::time::Duration::from_secs(15));
        c.tenant_retention.insert("keep".into(), strata_common::PromDuration(std::time::Duration::ZERO));
        let clock = Arc::new(strata_common::ManualClock::new(40_000));
        let d = Deps { telemetry: Telemetry::empty(), clock: Arc::clone(&clock) as Arc<dyn strata_common::Clock> };
        let s = LocalStorage::open(c.validate().expect("valid"), d).await.expect("open");
        for t in 0..40 {
            s.append(batch(1, t * 1000)).await.expect("append");
            let mut b = batch(1, t * 1000);
            b.tenant = "keep".into();
            s.append(b).await.expect("append");
        }
        assert_eq!(s.flush().await.expect("flush").len(), 6);
        // Now 40 s, retention 15 s: blocks ending before 25 s go ([0, 10) and [10, 20)).
        let deleted = s.apply_retention().await.expect("retention");
        assert_eq!(
            deleted.iter().map(|m| (m.tenant.as_str(), m.max_time)).collect::<Vec<_>>(),
            [("anonymous", 9_000), ("anonymous", 19_000)]
        );
        assert_eq!(all(&s).await[0].samples.first().map(|p| p.t), Some(20_000));
        assert_eq!(s.blocks().metas("keep").len(), 3);
        clock.advance(1_000_000);
        assert_eq!(s.apply_retention().await.expect("retention").len(), 1);
    }

    /// A local store whose writes fail while `fail` is set.
    #[derive(Debug)]
    struct Flaky {
        inner: object_store::local::LocalFileSystem,
        fail: std::sync::atomic::AtomicBool,
    }

    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Flaky")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Flaky {
        async fn put_opts(
            &self,
            location: &object_store::path::Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(object_store::Error::Generic { store: "flaky", source: "unreachable".into() });
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn failed_uploads_are_retried_and_reported_until_they_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = StorageConfig::with_path(dir.path());
        c.block_duration = strata_common::PromDuration(std::time::Duration::from_secs(10));
        c.flush_interval = strata_common::PromDuration(std::time::Duration::from_millis(100));
        let flaky = Arc::new(Flaky {
            inner: LocalFileSystem::new_with_prefix(dir.path()).expect("fs"),
            fail: std::sync::atomic::AtomicBool::new(true),
        });
        let store: Arc<dyn ObjectStore> = Arc::clone(&flaky) as Arc<dyn ObjectStore>;
        let s = LocalStorage::open_with_store(c.validate().expect("valid"), deps(), store).await.expect("open");
        let readiness = Readiness::new();
        readiness.set_ready();
        s.report_to(readiness.clone());
        for t in 0..40 {
            s.append(batch(3, t * 1000)).await.expect("append");
        }
        let before = all(&s).await;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let flusher = tokio::spawn(s.clone().run_flusher(stop_rx));
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while readiness.is_ready() {
            assert!(Instant::now() < deadline, "never reported degraded");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(readiness.degraded()[0].starts_with(UPLOAD_CONDITION), "{:?}", readiness.degraded());
        // Nothing lost meanwhile: the head keeps the range.
        assert_eq!(all(&s).await, before);
        assert!(s.blocks().metas("anonymous").is_empty());
        flaky.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        while !readiness.is_ready() {
            assert!(Instant::now() < deadline, "never ready again");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(s.blocks().metas("anonymous").len(), 3);
        assert_eq!(all(&s).await, before);
        let _ = stop_tx.send(true);
        flusher.await.expect("flusher");
    }

    #[tokio::test]
    async fn invalid_label_names_are_refused_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalStorage::open(settings(dir.path()), deps()).await.expect("open");
        let mut b = batch(1, 0);
        b.push(Labels::from_pairs([("__name__", "x"), ("bad-name", "1")]).expect("labels"), Sample::new(0, 1.0));
        assert!(matches!(s.append(b).await, Err(AppendError::Invalid(_))));
        assert!(all(&s).await.is_empty());
    }
}
