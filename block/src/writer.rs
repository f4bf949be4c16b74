//! Writing a block: sorted series in, two Parquet files and `meta.json` out.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, MapBuilder, RecordBatch, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use strata_model::{Labels, METRIC_NAME, Sample};

use crate::BlockError;
use crate::meta::{BlockMeta, FORMAT_VERSION, META_FILE, SAMPLES_FILE, SERIES_FILE};

/// Rows per data page of the samples file: small enough that a series' row
/// range maps to few pages, large enough to compress well.
const SAMPLES_PAGE_ROWS: usize = 8192;

/// The Arrow schema of `samples.parquet`.
pub fn samples_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("timestamp_ms", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

fn labels_field() -> Field {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Utf8, true)].into(),
        ),
        false,
    );
    Field::new("labels", DataType::Map(Arc::new(entries), false), false)
}

/// The Arrow schema of `series.parquet`.
pub fn series_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("metric_name", DataType::Utf8, false),
        labels_field(),
        Field::new("first_row", DataType::UInt64, false),
        Field::new("num_rows", DataType::UInt32, false),
        Field::new("min_time", DataType::Int64, false),
        Field::new("max_time", DataType::Int64, false),
    ]))
}

/// Writes one block of `tenant` holding `series` (any order; empty series are
/// skipped) and returns its meta. The files are put first and `meta.json`
/// last, so readers never see a partial block.
pub async fn write_block(
    store: &Arc<dyn ObjectStore>,
    tenant: &str,
    mut series: Vec<(Labels, Vec<Sample>)>,
    flushed_until: i64,
) -> Result<BlockMeta, BlockError> {
    series.retain(|(_, s)| !s.is_empty());
    series.sort_by(|a, b| a.0.metric_name().cmp(&b.0.metric_name()).then_with(|| a.0.cmp(&b.0)));
    let ulid = ulid::Ulid::new().to_string();
    let (samples_bytes, series_bytes, stats) = tokio::task::spawn_blocking(move || encode(&series))
        .await
        .map_err(|e| BlockError::Corrupt { block: ulid.clone(), reason: format!("encoder task failed: {e}") })??;
    let meta = BlockMeta {
        version: FORMAT_VERSION,
        ulid,
        tenant: tenant.to_owned(),
        min_time: stats.min_time,
        max_time: stats.max_time,
        num_series: stats.num_series,
        num_samples: stats.num_samples,
        samples_bytes: samples_bytes.len() as u64,
        series_bytes: series_bytes.len() as u64,
        flushed_until,
    };
    let dir = meta.dir();
    store.put(&Path::from(format!("{dir}/{SAMPLES_FILE}")), samples_bytes.into()).await?;
    store.put(&Path::from(format!("{dir}/{SERIES_FILE}")), series_bytes.into()).await?;
    let json =
        serde_json::to_vec_pretty(&meta).map_err(|e| BlockError::Meta { path: dir.clone(), reason: e.to_string() })?;
    store.put(&Path::from(format!("{dir}/{META_FILE}")), Bytes::from(json).into()).await?;
    Ok(meta)
}

struct Stats {
    min_time: i64,
    max_time: i64,
    num_series: u64,
    num_samples: u64,
}

fn encode(series: &[(Labels, Vec<Sample>)]) -> Result<(Bytes, Bytes, Stats), BlockError> {
    let num_samples: usize = series.iter().map(|(_, s)| s.len()).sum();
    let mut sid = UInt32Builder::with_capacity(num_samples);
    let mut ts = Int64Builder::with_capacity(num_samples);
    let mut vals = Float64Builder::with_capacity(num_samples);

    let mut s_id = UInt32Builder::with_capacity(series.len());
    let mut s_name = StringBuilder::new();
    let mut s_labels = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut s_first = UInt64Builder::with_capacity(series.len());
    let mut s_rows = UInt32Builder::with_capacity(series.len());
    let mut s_min = Int64Builder::with_capacity(series.len());
    let mut s_max = Int64Builder::with_capacity(series.len());

    let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
    let mut row: u64 = 0;
    for (id, (labels, samples)) in series.iter().enumerate() {
        let id = u32::try_from(id).map_err(|_| BlockError::Corrupt {
            block: String::new(),
            reason: "more than 2^32 series in one block".into(),
        })?;
        let n = u32::try_from(samples.len()).map_err(|_| BlockError::Corrupt {
            block: String::new(),
            reason: "more than 2^32 samples in one series".into(),
        })?;
        for s in samples {
            sid.append_value(id);
            ts.append_value(s.t);
            vals.append_value(s.v);
        }
        let (first_t, last_t) = (samples[0].t, samples[samples.len() - 1].t);
        min_time = min_time.min(first_t);
        max_time = max_time.max(last_t);
        s_id.append_value(id);
        s_name.append_value(labels.metric_name().unwrap_or(""));
        for l in labels.iter().filter(|l| l.name != METRIC_NAME) {
            s_labels.keys().append_value(&l.name);
            s_labels.values().append_value(&l.value);
        }
        s_labels.append(true)?;
        s_first.append_value(row);
        s_rows.append_value(n);
        s_min.append_value(first_t);
        s_max.append_value(last_t);
        row += u64::from(n);
    }

    let samples = RecordBatch::try_new(
        samples_schema(),
        vec![Arc::new(sid.finish()) as ArrayRef, Arc::new(ts.finish()), Arc::new(vals.finish())],
    )?;
    let series_batch = RecordBatch::try_new(
        series_schema(),
        vec![
            Arc::new(s_id.finish()) as ArrayRef,
            Arc::new(s_name.finish()),
            Arc::new(s_labels.finish()),
            Arc::new(s_first.finish()),
            Arc::new(s_rows.finish()),
            Arc::new(s_min.finish()),
            Arc::new(s_max.finish()),
        ],
    )?;

    let zstd = Compression::ZSTD(ZstdLevel::try_new(3)?);
    let samples_props = WriterProperties::builder()
        .set_compression(zstd)
        .set_data_page_row_count_limit(SAMPLES_PAGE_ROWS)
        .set_write_batch_size(SAMPLES_PAGE_ROWS)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_dictionary_enabled(ColumnPath::from("timestamp_ms"), false)
        .set_column_encoding(ColumnPath::from("timestamp_ms"), Encoding::DELTA_BINARY_PACKED)
        .build();
    let series_props =
        WriterProperties::builder().set_compression(zstd).set_statistics_enabled(EnabledStatistics::Page).build();

    let stats = Stats { min_time, max_time, num_series: series.len() as u64, num_samples: row };
    Ok((write_parquet(&samples, samples_props)?, write_parquet(&series_batch, series_props)?, stats))
}

fn write_parquet(batch: &RecordBatch, props: WriterProperties) -> Result<Bytes, BlockError> {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(Bytes::from(buf))
}
