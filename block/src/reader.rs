//! Reading a block: the series table is loaded once; a select turns matchers
//! into exact row ranges of `samples.parquet` and reads only those pages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::io::ObjectReader;
use arrow::array::{Array, AsArray, MapArray};
use arrow::datatypes::{Float64Type, Int8Type, Int64Type, UInt32Type, UInt64Type};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use strata_model::matcher::matches_all;
use strata_model::{Label, Labels, METRIC_NAME, Matcher, Sample, Series};

use crate::meta::{BlockMeta, SAMPLES_FILE, SERIES_FILE};
use crate::{BlockError, decimal};

/// One row of the series table.
#[derive(Debug, Clone)]
struct SeriesEntry {
    labels: Labels,
    first_row: u64,
    num_rows: u32,
    min_time: i64,
    max_time: i64,
    /// Decimals of the series' mantissas (format version 2; 0 before).
    decimals: u32,
}

/// An opened block: its meta and series table in memory.
#[derive(Debug)]
pub struct BlockReader {
    meta: BlockMeta,
    store: Arc<dyn ObjectStore>,
    series: Vec<SeriesEntry>,
    /// The footer of `samples.parquet`, read by the first select and kept.
    samples_footer: OnceLock<ArrowReaderMetadata>,
}

/// Rows decoded per Arrow batch when reading samples.
const READ_BATCH_ROWS: usize = 8192;

impl BlockReader {
    /// Opens the block described by `meta`, reading its series table.
    pub async fn open(store: Arc<dyn ObjectStore>, meta: BlockMeta) -> Result<Self, BlockError> {
        let path = Path::from(format!("{}/{SERIES_FILE}", meta.dir()));
        let reader = ObjectReader::new(Arc::clone(&store), path, meta.series_bytes);
        let batches: Vec<_> = ParquetRecordBatchStreamBuilder::new(reader).await?.build()?.try_collect().await?;
        let corrupt = |reason: &str| BlockError::Corrupt { block: meta.ulid.clone(), reason: reason.to_owned() };
        let mut series = Vec::with_capacity(usize::try_from(meta.num_series).unwrap_or(0));
        for b in &batches {
            let col = |name: &str| b.column_by_name(name).ok_or_else(|| corrupt(&format!("series file lacks {name}")));
            let names = col("metric_name")?.as_string_opt::<i32>().ok_or_else(|| corrupt("metric_name type"))?;
            let labels = col("labels")?.as_any().downcast_ref::<MapArray>().ok_or_else(|| corrupt("labels type"))?;
            let first = col("first_row")?.as_primitive_opt::<UInt64Type>().ok_or_else(|| corrupt("first_row"))?;
            let rows = col("num_rows")?.as_primitive_opt::<UInt32Type>().ok_or_else(|| corrupt("num_rows"))?;
            let mins = col("min_time")?.as_primitive_opt::<Int64Type>().ok_or_else(|| corrupt("min_time"))?;
            let maxs = col("max_time")?.as_primitive_opt::<Int64Type>().ok_or_else(|| corrupt("max_time"))?;
            let exps = match meta.version {
                1 => None,
                _ => Some(col("exponent")?.as_primitive_opt::<Int8Type>().ok_or_else(|| corrupt("exponent"))?),
            };
            let keys = labels.keys().as_string_opt::<i32>().ok_or_else(|| corrupt("label keys"))?;
            let values = labels.values().as_string_opt::<i32>().ok_or_else(|| corrupt("label values"))?;
            let offsets = labels.value_offsets();
            for i in 0..b.num_rows() {
                let mut ls = Vec::with_capacity(1 + (offsets[i + 1] - offsets[i]) as usize);
                let name = names.value(i);
                if !name.is_empty() {
                    ls.push(Label::new(METRIC_NAME, name));
                }
                for j in offsets[i] as usize..offsets[i + 1] as usize {
                    ls.push(Label::new(keys.value(j), values.value(j)));
                }
                let labels = Labels::from_pairs(ls.into_iter().map(|l| (l.name, l.value)))
                    .map_err(|e| corrupt(&format!("bad labels: {e}")))?;
                series.push(SeriesEntry {
                    labels,
                    first_row: first.value(i),
                    num_rows: rows.value(i),
                    min_time: mins.value(i),
                    max_time: maxs.value(i),
                    decimals: exps.map_or(0, |e| u32::from(e.value(i).unsigned_abs())),
                });
            }
        }
        Ok(Self { meta, store, series, samples_footer: OnceLock::new() })
    }

    /// The block's meta.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// Label sets of the series matching `matchers` with a sample in
    /// `[mint, maxt]`, sorted. Answered from the series table in memory: no
    /// sample is read.
    pub fn series_labels(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        if !self.meta.overlaps(mint, maxt) {
            return Vec::new();
        }
        let mut out: Vec<Labels> = self
            .series
            .iter()
            .filter(|s| s.min_time <= maxt && s.max_time >= mint && matches_all(matchers, &s.labels))
            .map(|s| s.labels.clone())
            .collect();
        out.sort();
        out
    }

    /// Series matching `matchers` with samples in `[mint, maxt]`, sorted by
    /// labels. Every sample kept is taken from `budget` (shared by the blocks
    /// of one select); once it runs out the read stops with
    /// [`BlockError::TooManySamples`], before the remaining pages are read.
    pub async fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        budget: &AtomicUsize,
    ) -> Result<Vec<Series>, BlockError> {
        let hits = self.matching(matchers, mint, maxt);
        self.read(&hits, mint, maxt, budget).await
    }

    /// Positions in the series table of the series matching `matchers` with
    /// samples in `[mint, maxt]`, ordered by labels (for [`BlockReader::read`]
    /// and [`BlockReader::labels_at`]).
    pub fn matching(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<usize> {
        if !self.meta.overlaps(mint, maxt) {
            return Vec::new();
        }
        let mut hits: Vec<usize> = (0..self.series.len())
            .filter(|&i| {
                let s = &self.series[i];
                s.min_time <= maxt && s.max_time >= mint && matches_all(matchers, &s.labels)
            })
            .collect();
        hits.sort_by(|&a, &b| self.series[a].labels.cmp(&self.series[b].labels));
        hits
    }

    /// The labels of the series at position `i` of the series table.
    pub fn labels_at(&self, i: usize) -> Option<&Labels> {
        self.series.get(i).map(|s| &s.labels)
    }

    /// Rows the series at position `i` has in this block (its samples in the
    /// whole block, an upper bound for any time range).
    pub fn rows_at(&self, i: usize) -> usize {
        self.series.get(i).map_or(0, |s| s.num_rows as usize)
    }

    /// The footer of `samples.parquet`: read once, then kept.
    async fn samples_footer(&self, reader: &mut ObjectReader) -> Result<ArrowReaderMetadata, BlockError> {
        if let Some(m) = self.samples_footer.get() {
            return Ok(m.clone());
        }
        let m = ArrowReaderMetadata::load_async(reader, ArrowReaderOptions::new()).await?;
        // Two first reads racing both load it; either copy will do.
        Ok(self.samples_footer.get_or_init(|| m).clone())
    }

    /// Reads the samples in `[mint, maxt]` of the series at positions `hits`
    /// of the series table (from [`BlockReader::matching`]), returned sorted
    /// by labels, without series that have no sample in range. Samples are
    /// taken from `budget` as in [`BlockReader::select`].
    pub async fn read(
        &self,
        hits: &[usize],
        mint: i64,
        maxt: i64,
        budget: &AtomicUsize,
    ) -> Result<Vec<Series>, BlockError> {
        let parts = self.read_parts(hits, mint, maxt, budget).await?;
        let mut out: Vec<Series> = hits
            .iter()
            .zip(parts)
            .filter(|(_, samples)| !samples.is_empty())
            .filter_map(|(&i, samples)| Some(Series { labels: self.labels_at(i)?.clone(), samples }))
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Like [`BlockReader::read`], but returns the samples alone, one list
    /// per entry of `hits` in the same order (empty where the series has no
    /// sample in range).
    pub async fn read_parts(
        &self,
        hits: &[usize],
        mint: i64,
        maxt: i64,
        budget: &AtomicUsize,
    ) -> Result<Vec<Vec<Sample>>, BlockError> {
        let corrupt = |reason: &str| BlockError::Corrupt { block: self.meta.ulid.clone(), reason: reason.to_owned() };
        let mut parts: Vec<Vec<Sample>> = vec![Vec::new(); hits.len()];
        // Positions in `hits`, in file order.
        let mut order: Vec<(usize, &SeriesEntry)> = Vec::with_capacity(hits.len());
        for (k, &i) in hits.iter().enumerate() {
            order.push((k, self.series.get(i).ok_or_else(|| corrupt("no such series"))?));
        }
        if order.is_empty() {
            return Ok(parts);
        }
        order.sort_by_key(|(_, s)| s.first_row);

        // Row ranges → a selection of alternating skips and selects.
        let mut selectors = Vec::with_capacity(order.len() * 2);
        let mut pos = 0u64;
        for (_, s) in &order {
            if s.first_row > pos {
                selectors.push(RowSelector::skip(usize::try_from(s.first_row - pos).unwrap_or(usize::MAX)));
            }
            selectors.push(RowSelector::select(s.num_rows as usize));
            pos = s.first_row + u64::from(s.num_rows);
        }
        let path = Path::from(format!("{}/{SAMPLES_FILE}", self.meta.dir()));
        let mut reader = ObjectReader::new(Arc::clone(&self.store), path, self.meta.samples_bytes);
        let footer = self.samples_footer(&mut reader).await?;
        // `series_id` is not needed: the series table gives each series' rows.
        let projection = ProjectionMask::columns(footer.parquet_schema(), ["timestamp_ms", "mantissa", "value"]);
        let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer)
            .with_projection(projection)
            .with_batch_size(READ_BATCH_ROWS)
            .with_row_selection(RowSelection::from(selectors))
            .build()?;

        let mut hit_iter = order.iter();
        // The series being read: its position in `hits`, entry, samples, rows seen.
        let mut current: Option<(usize, &SeriesEntry, Vec<Sample>, u32)> = None;
        // Batches are decoded one at a time, so at most one batch beyond the
        // budget is ever in memory.
        while let Some(b) = stream.try_next().await? {
            let ts = b
                .column_by_name("timestamp_ms")
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| corrupt("timestamp_ms"))?;
            let vs = b
                .column_by_name("value")
                .and_then(|c| c.as_primitive_opt::<Float64Type>())
                .ok_or_else(|| corrupt("value"))?;
            // Version 2: a decimal mantissa where present, else the raw value.
            let ms = b.column_by_name("mantissa").and_then(|c| c.as_primitive_opt::<Int64Type>());
            if self.meta.version >= 2 && ms.is_none() {
                return Err(corrupt("mantissa"));
            }
            let mut kept = 0usize;
            let rows = b.num_rows();
            let mut i = 0usize;
            while i < rows {
                if current.as_ref().is_none_or(|(_, e, _, seen)| *seen == e.num_rows) {
                    if let Some((k, _, samples, _)) = current.take() {
                        parts[k] = samples;
                    }
                    let &(k, e) =
                        hit_iter.next().ok_or_else(|| corrupt("more sample rows than the series table says"))?;
                    current = Some((k, e, Vec::with_capacity(e.num_rows as usize), 0));
                }
                let Some((_, e, samples, seen)) = current.as_mut() else { break };
                // The rest of this series' rows in this batch, decoded in one run.
                let n = ((e.num_rows - *seen) as usize).min(rows - i);
                *seen += n as u32;
                let before = samples.len();
                decode_rows(ts, vs, ms, e.decimals, i..i + n, mint, maxt, samples).map_err(corrupt)?;
                kept += samples.len() - before;
                i += n;
            }
            take_budget(budget, kept)?;
        }
        if let Some((k, _, samples, _)) = current.take() {
            parts[k] = samples;
        }
        Ok(parts)
    }
}

/// Appends the samples of rows `rows` with a time in `[mint, maxt]`.
#[allow(clippy::too_many_arguments)]
fn decode_rows(
    ts: &arrow::array::PrimitiveArray<Int64Type>,
    vs: &arrow::array::PrimitiveArray<Float64Type>,
    ms: Option<&arrow::array::PrimitiveArray<Int64Type>>,
    decimals: u32,
    rows: std::ops::Range<usize>,
    mint: i64,
    maxt: i64,
    samples: &mut Vec<Sample>,
) -> Result<(), &'static str> {
    let times = &ts.values()[rows.clone()];
    let no_nulls = ts.null_count() == 0;
    match ms {
        // The common case: every value a mantissa.
        Some(m) if m.null_count() == 0 && no_nulls => {
            let mant = &m.values()[rows];
            let scale = decimal::scale(decimals);
            for (&t, &m) in times.iter().zip(mant) {
                if t >= mint && t <= maxt {
                    samples.push(Sample::new(t, m as f64 / scale));
                }
            }
        }
        _ => {
            for (k, &t) in rows.zip(times) {
                if t < mint || t > maxt || ts.is_null(k) {
                    continue;
                }
                let v = match ms {
                    Some(m) if m.is_valid(k) => decimal::decode(m.value(k), decimals),
                    _ if vs.is_valid(k) => vs.value(k),
                    _ => return Err("a sample with neither mantissa nor value"),
                };
                samples.push(Sample::new(t, v));
            }
        }
    }
    Ok(())
}

/// Takes `n` samples from a budget shared by concurrent reads.
fn take_budget(budget: &AtomicUsize, n: usize) -> Result<(), BlockError> {
    if n == 0 {
        return Ok(());
    }
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(n))
        .map(|_| ())
        .map_err(|_| BlockError::TooManySamples)
}
