//! Writing a block: sorted series in, two Parquet files and `meta.json` out.
//!
//! Format version 2 codes values as decimal mantissas with a per-series
//! exponent ([`crate::decimal`]), raw doubles only where that is not exact.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int8Builder, Int64Builder, MapBuilder, RecordBatch, StringBuilder, UInt32Builder,
    UInt64Builder,
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

use crate::meta::{BlockMeta, FORMAT_VERSION, META_FILE, SAMPLES_FILE, SERIES_FILE};
use crate::{BlockError, decimal};

/// Rows per data page of the samples file: small enough that a series' row
/// range maps to few pages, large enough to compress well.
const SAMPLES_PAGE_ROWS: usize = 8192;

/// The Arrow schema of `samples.parquet`.
pub fn samples_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("timestamp_ms", DataType::Int64, false),
        Field::new("mantissa", DataType::Int64, true),
        Field::new("value", DataType::Float64, true),
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
        Field::new("exponent", DataType::Int8, false),
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
    let mut mantissas = Int64Builder::with_capacity(num_samples);
    let mut vals = Float64Builder::with_capacity(num_samples);

    let mut s_id = UInt32Builder::with_capacity(series.len());
    let mut s_name = StringBuilder::new();
    let mut s_labels = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut s_first = UInt64Builder::with_capacity(series.len());
    let mut s_rows = UInt32Builder::with_capacity(series.len());
    let mut s_min = Int64Builder::with_capacity(series.len());
    let mut s_max = Int64Builder::with_capacity(series.len());
    let mut s_exp = Int8Builder::with_capacity(series.len());

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
        let decimals = decimal::series_decimals(samples.iter().map(|s| s.v));
        for s in samples {
            sid.append_value(id);
            ts.append_value(s.t);
            match decimal::encode(s.v, decimals) {
                Some(m) => {
                    mantissas.append_value(m);
                    vals.append_null();
                }
                None => {
                    mantissas.append_null();
                    vals.append_value(s.v);
                }
            }
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
        s_exp.append_value(-(decimals.min(decimal::MAX_DECIMALS) as i8));
        row += u64::from(n);
    }

    let samples = RecordBatch::try_new(
        samples_schema(),
        vec![
            Arc::new(sid.finish()) as ArrayRef,
            Arc::new(ts.finish()),
            Arc::new(mantissas.finish()),
            Arc::new(vals.finish()),
        ],
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
            Arc::new(s_exp.finish()),
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
        .set_column_dictionary_enabled(ColumnPath::from("series_id"), false)
        .set_column_encoding(ColumnPath::from("series_id"), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from("mantissa"), false)
        .set_column_encoding(ColumnPath::from("mantissa"), Encoding::DELTA_BINARY_PACKED)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockReader, BlockStore};
    use proptest::prelude::*;
    use std::sync::atomic::AtomicUsize;
    use strata_model::{STALE_NAN_BITS, Select};

    fn fs(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).expect("fs"))
    }

    fn bits(s: &[Sample]) -> Vec<(i64, u64)> {
        s.iter().map(|s| (s.t, s.v.to_bits())).collect()
    }

    #[tokio::test]
    async fn version_1_blocks_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = fs(dir.path());
        let schema = Arc::new(Schema::new(vec![
            Field::new("series_id", DataType::UInt32, false),
            Field::new("timestamp_ms", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]));
        let samples = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow::array::UInt32Array::from(vec![0, 0])) as ArrayRef,
                Arc::new(arrow::array::Int64Array::from(vec![1_000, 2_000])),
                Arc::new(arrow::array::Float64Array::from(vec![0.5, f64::from_bits(STALE_NAN_BITS)])),
            ],
        )
        .expect("batch");
        let v1_series = Arc::new(Schema::new(series_schema().fields()[..7].to_vec()));
        let mut labels = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        labels.keys().append_value("job");
        labels.values().append_value("a");
        labels.append(true).expect("map");
        let series = RecordBatch::try_new(
            v1_series,
            vec![
                Arc::new(arrow::array::UInt32Array::from(vec![0])) as ArrayRef,
                Arc::new(arrow::array::StringArray::from(vec!["up"])),
                Arc::new(labels.finish()),
                Arc::new(arrow::array::UInt64Array::from(vec![0])),
                Arc::new(arrow::array::UInt32Array::from(vec![2])),
                Arc::new(arrow::array::Int64Array::from(vec![1_000])),
                Arc::new(arrow::array::Int64Array::from(vec![2_000])),
            ],
        )
        .expect("batch");
        let props = || WriterProperties::builder().build();
        let (sb, rb) = (write_parquet(&samples, props()).expect("w"), write_parquet(&series, props()).expect("w"));
        let meta = BlockMeta {
            version: 1,
            ulid: "01V1".into(),
            tenant: "t".into(),
            min_time: 1_000,
            max_time: 2_000,
            num_series: 1,
            num_samples: 2,
            samples_bytes: sb.len() as u64,
            series_bytes: rb.len() as u64,
            flushed_until: 0,
        };
        store.put(&Path::from(format!("t/01V1/{SAMPLES_FILE}")), sb.into()).await.expect("put");
        store.put(&Path::from(format!("t/01V1/{SERIES_FILE}")), rb.into()).await.expect("put");
        let r = BlockReader::open(Arc::clone(&store), meta).await.expect("open");
        let got = r.select(&[], 0, 10_000, &AtomicUsize::new(usize::MAX)).await.expect("select");
        assert_eq!(got[0].labels.get("job"), Some("a"));
        assert_eq!(bits(&got[0].samples), vec![(1_000, 0.5f64.to_bits()), (2_000, STALE_NAN_BITS)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_values_round_trip_through_a_block(
            vals in proptest::collection::vec(
                prop_oneof![
                    any::<u64>().prop_map(f64::from_bits),
                    (-1_000_000i64..1_000_000, 0u32..4).prop_map(|(m, d)| crate::decimal::decode(m, d)),
                    Just(f64::from_bits(STALE_NAN_BITS)),
                ],
                1..300,
            ),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let dir = tempfile::tempdir().expect("tempdir");
            let store = rt.block_on(BlockStore::open(fs(dir.path()))).expect("open");
            let samples: Vec<Sample> =
                vals.iter().enumerate().map(|(i, &v)| Sample::new(i as i64 * 15_000, v)).collect();
            let l = Labels::from_pairs([("__name__", "m")]).expect("labels");
            rt.block_on(store.write("t", vec![(l, samples.clone())], 0)).expect("write");
            let got = rt.block_on(store.select("t", &[], i64::MIN, i64::MAX)).expect("select");
            prop_assert_eq!(bits(&got[0].samples), bits(&samples));
        }
    }
}
