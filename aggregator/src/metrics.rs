//! The aggregator's own metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use strata_common::Telemetry;

#[derive(Debug, Clone)]
pub(crate) struct StorageMetrics {
    pub samples_appended: Counter,
    pub out_of_order: Counter,
    pub out_of_bounds: Counter,
    pub append_failures: Counter,
    pub log_sync_seconds: Histogram,
    pub log_replayed_records: Counter,
    pub log_segments: Gauge,
    pub head_series: Gauge,
    pub head_samples: Gauge,
    pub head_memory_bytes: Gauge,
    pub blocks_written: Counter,
    pub blocks_compacted: Counter,
    pub flush_failures: Counter,
    pub upload_failures: Counter,
    pub upload_degraded: Gauge,
    pub block_read_failures: Counter,
    pub object_store: strata_block::counting::StoreCounters,
}

impl StorageMetrics {
    pub fn new(t: &Telemetry) -> Self {
        let m = Self {
            samples_appended: Counter::default(),
            out_of_order: Counter::default(),
            out_of_bounds: Counter::default(),
            append_failures: Counter::default(),
            log_sync_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            log_replayed_records: Counter::default(),
            log_segments: Gauge::default(),
            head_series: Gauge::default(),
            head_samples: Gauge::default(),
            head_memory_bytes: Gauge::default(),
            blocks_written: Counter::default(),
            blocks_compacted: Counter::default(),
            flush_failures: Counter::default(),
            upload_failures: Counter::default(),
            upload_degraded: Gauge::default(),
            block_read_failures: Counter::default(),
            object_store: Default::default(),
        };
        t.register("strata_head_samples_appended", "Samples appended to the head", m.samples_appended.clone());
        t.register("strata_head_out_of_order_samples", "Samples refused as out of order", m.out_of_order.clone());
        t.register(
            "strata_head_out_of_bounds_samples",
            "Samples refused as older than the head accepts",
            m.out_of_bounds.clone(),
        );
        t.register(
            "strata_append_failures",
            "Batches not acknowledged because the ingest log failed",
            m.append_failures.clone(),
        );
        t.register(
            "strata_ingest_log_sync_duration_seconds",
            "Time to write and fsync one ingest log record",
            m.log_sync_seconds.clone(),
        );
        t.register(
            "strata_ingest_log_replayed_records",
            "Ingest log records replayed at startup",
            m.log_replayed_records.clone(),
        );
        t.register("strata_ingest_log_segments", "Ingest log segment files", m.log_segments.clone());
        t.register("strata_head_series", "Series in the head", m.head_series.clone());
        t.register("strata_head_samples", "Samples in the head", m.head_samples.clone());
        t.register(
            "strata_head_memory_bytes",
            "Bytes the head holds for series, labels, compressed chunks and the index",
            m.head_memory_bytes.clone(),
        );
        t.register("strata_blocks_written", "Blocks written to object storage", m.blocks_written.clone());
        t.register(
            "strata_blocks_compacted",
            "Blocks written by compaction (each replacing several)",
            m.blocks_compacted.clone(),
        );
        t.register(
            "strata_block_flush_failures",
            "Failed attempts to flush the head into a block",
            m.flush_failures.clone(),
        );
        t.register(
            "strata_block_upload_failures",
            "Flushes or compactions that could not store their block in the object store (retried with backoff)",
            m.upload_failures.clone(),
        );
        t.register(
            "strata_block_upload_degraded",
            "1 while the last flush failed to store its block (the head and ingest log keep the data)",
            m.upload_degraded.clone(),
        );
        t.register(
            "strata_block_read_failures",
            "Reads that failed on an unreadable (corrupt, truncated or missing) block",
            m.block_read_failures.clone(),
        );
        let os = &m.object_store;
        t.register("strata_object_store_get_requests", "GET requests to the block object store", os.gets.clone());
        t.register("strata_object_store_get_bytes", "Bytes fetched from the block object store", os.get_bytes.clone());
        t.register("strata_object_store_put_requests", "PUT requests to the block object store", os.puts.clone());
        t.register("strata_object_store_put_bytes", "Bytes stored in the block object store", os.put_bytes.clone());
        t.register("strata_object_store_list_requests", "LIST requests to the block object store", os.lists.clone());
        t.register("strata_object_store_deletes", "Objects deleted from the block object store", os.deletes.clone());
        t.register(
            "strata_object_store_request_failures",
            "Block object store requests that failed",
            os.failures.clone(),
        );
        m
    }
}
