//! Bulk import: OpenMetrics text with a timestamp on every sample (what
//! `promtool tsdb create-blocks-from openmetrics` reads) straight into
//! blocks, one per block range the samples fall in. Samples of any age are
//! accepted: they never pass through the head or the ingest log.
//!
//! The whole file is parsed and checked before the first block is written, so
//! a malformed file writes nothing; the error names its line. The text is
//! read in pieces ([`parse_reader`]); the samples are held in memory until
//! the blocks are written. If writing a
//! block fails, the blocks this import already wrote are deleted again.
//! Within a series, samples are sorted by time; a repeated timestamp keeps the
//! first sample and is counted as a duplicate. Imported blocks carry no flush
//! watermark (`flushed_until` is the minimum), so they never change what the
//! head accepts; where they overlap other blocks or the head, reads merge them.

use std::collections::HashMap;
use std::time::Instant;

use strata_block::{BlockMeta, BlockStore};
use strata_collector::exposition::{Entry, Format, Parser};
use strata_model::{Labels, Sample};

use crate::AggregatorError;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Samples written.
    pub samples: u64,
    /// Distinct series.
    pub series: u64,
    /// Blocks written.
    pub blocks: u64,
    /// Bytes of the blocks written.
    pub bytes: u64,
    /// Samples dropped because their series already had a sample at that time.
    pub duplicates: u64,
    /// Oldest and newest sample time, milliseconds.
    pub min_time: i64,
    /// See `min_time`.
    pub max_time: i64,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {} samples of {} series into {} blocks ({} bytes, {:.2} bytes/sample), {} duplicates dropped",
            self.samples,
            self.series,
            self.blocks,
            self.bytes,
            if self.samples == 0 { 0.0 } else { self.bytes as f64 / self.samples as f64 },
            self.duplicates
        )
    }
}

/// Progress reports while importing.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Parsing: samples read so far.
    Parsed {
        /// Samples read.
        samples: u64,
    },
    /// A block was written.
    Block {
        /// Blocks written so far.
        done: usize,
        /// Blocks to write.
        total: usize,
        /// The block.
        meta: BlockMeta,
    },
}

/// A parsed, checked import: series with samples sorted and deduplicated.
#[derive(Debug, Default)]
pub struct Parsed {
    series: Vec<(Labels, Vec<Sample>)>,
    duplicates: u64,
}

impl Parsed {
    /// Number of samples.
    pub fn samples(&self) -> u64 {
        self.series.iter().map(|(_, s)| s.len() as u64).sum()
    }
}

fn bad(line: usize, message: impl Into<String>) -> AggregatorError {
    AggregatorError::Import { line, message: message.into() }
}

/// Bytes of input parsed at a time by [`parse_reader`].
const PIECE_BYTES: usize = 16 << 20;

/// Parses an OpenMetrics document; every sample needs a timestamp.
pub fn parse(input: &[u8], progress: &mut (dyn FnMut(Progress) + Send)) -> Result<Parsed, AggregatorError> {
    parse_pieces(input, PIECE_BYTES, progress)
}

/// [`parse`] over a reader (a file, stdin), holding at most about 16 MiB of
/// text at a time: the text is cut at line ends into pieces, each parsed as a
/// document of its own (a `# EOF` added, the last `# TYPE` line of the
/// previous piece repeated), so memory holds the samples, not the text.
pub fn parse_reader(
    r: impl std::io::BufRead,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Parsed, AggregatorError> {
    parse_pieces(r, PIECE_BYTES, progress)
}

fn parse_pieces(
    mut r: impl std::io::BufRead,
    piece_bytes: usize,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Parsed, AggregatorError> {
    let mut c = Collector::default();
    let mut piece: Vec<u8> = Vec::new();
    let mut line_buf: Vec<u8> = Vec::new();
    let mut last_type: Option<Vec<u8>> = None;
    // Line number of the piece's first entry (a repeated `# TYPE` line
    // counts as the line before the piece's first real one).
    let mut base = 1usize;
    let mut line = 0usize;
    loop {
        line_buf.clear();
        let n = r.read_until(b'\n', &mut line_buf).map_err(|e| bad(line + 1, format!("reading the input: {e}")))?;
        if n == 0 {
            break;
        }
        line += 1;
        if line_buf.starts_with(b"# TYPE ") {
            last_type = Some(line_buf.clone());
        }
        piece.extend_from_slice(&line_buf);
        if piece.len() >= piece_bytes && line_buf.ends_with(b"\n") && !line_buf.starts_with(b"# EOF") {
            piece.extend_from_slice(b"# EOF\n");
            c.feed(&piece, base, progress)?;
            piece.clear();
            base = line + 1;
            if let Some(t) = &last_type {
                piece.extend_from_slice(t);
                base -= 1;
            }
        }
    }
    c.feed(&piece, base, progress)?;
    Ok(c.finish(progress))
}

/// Series collected from the pieces of one import.
#[derive(Debug, Default)]
struct Collector {
    series: Vec<(Labels, Vec<Sample>)>,
    /// Page-order key (`name\0k\0v\0…`) and label set → index into `series`.
    by_key: HashMap<String, usize>,
    by_labels: HashMap<Labels, usize>,
    samples: u64,
}

impl Collector {
    /// Parses one document whose first entry is on line `base` of the input.
    fn feed(
        &mut self,
        doc: &[u8],
        base: usize,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), AggregatorError> {
        let mut key = String::new();
        let (mut last_key, mut last_idx) = (String::new(), usize::MAX);
        // OpenMetrics has one entry per line (`_created` lines, which the
        // parser drops, aside), so the entry count gives the line number.
        for (i, entry) in Parser::new(doc, Format::OpenMetrics).enumerate() {
            let line = base + i;
            let s = match entry.map_err(|e| bad(base + e.line - 1, e.message))? {
                Entry::Sample(s) => s,
                _ => continue,
            };
            let t = s.timestamp_ms.ok_or_else(|| {
                bad(line, format!("sample of {} has no timestamp; an import needs one on every sample", s.name))
            })?;
            key.clear();
            key.push_str(s.name);
            for (k, v) in &s.labels {
                key.push('\0');
                key.push_str(k);
                key.push('\0');
                key.push_str(v);
            }
            let idx = if key == last_key {
                last_idx
            } else {
                let idx = match self.by_key.get(&key) {
                    Some(&i) => i,
                    None => {
                        let labels = Labels::from_pairs(
                            std::iter::once(("__name__", s.name)).chain(s.labels.iter().map(|(k, v)| (*k, v.as_ref()))),
                        )
                        .map_err(|e| bad(line, e.to_string()))?;
                        let next = self.series.len();
                        let i = *self.by_labels.entry(labels.clone()).or_insert(next);
                        if i == next {
                            self.series.push((labels, Vec::new()));
                        }
                        self.by_key.insert(key.clone(), i);
                        i
                    }
                };
                last_key.clone_from(&key);
                last_idx = idx;
                idx
            };
            if let Some((_, v)) = self.series.get_mut(idx) {
                v.push(Sample::new(t, s.value));
            }
            self.samples += 1;
            if self.samples.is_multiple_of(1_000_000) {
                progress(Progress::Parsed { samples: self.samples });
            }
        }
        Ok(())
    }

    /// Sorts each series by time and drops repeated timestamps.
    fn finish(mut self, progress: &mut (dyn FnMut(Progress) + Send)) -> Parsed {
        progress(Progress::Parsed { samples: self.samples });
        let mut duplicates = 0u64;
        for (_, v) in &mut self.series {
            v.sort_by_key(|s| s.t);
            let before = v.len();
            v.dedup_by_key(|s| s.t);
            duplicates += (before - v.len()) as u64;
        }
        Parsed { series: self.series, duplicates }
    }
}

/// Writes `parsed` as blocks of `tenant`, one per `block_range_ms`-aligned
/// range; deletes what it wrote if a write fails.
pub async fn write(
    store: &BlockStore,
    tenant: &str,
    parsed: Parsed,
    block_range_ms: i64,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<ImportSummary, AggregatorError> {
    let range = block_range_ms.max(1);
    let mut starts: Vec<i64> =
        parsed.series.iter().flat_map(|(_, s)| s.iter().map(|p| p.t.div_euclid(range) * range)).collect();
    starts.sort_unstable();
    starts.dedup();
    let mut summary = ImportSummary {
        series: parsed.series.len() as u64,
        duplicates: parsed.duplicates,
        min_time: i64::MAX,
        max_time: i64::MIN,
        ..ImportSummary::default()
    };
    let mut written: Vec<BlockMeta> = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = start.saturating_add(range);
        let part: Vec<(Labels, Vec<Sample>)> = parsed
            .series
            .iter()
            .filter_map(|(l, s)| {
                let lo = s.partition_point(|p| p.t < start);
                let hi = s.partition_point(|p| p.t < end);
                (lo < hi).then(|| (l.clone(), s[lo..hi].to_vec()))
            })
            .collect();
        match store.write(tenant, part, i64::MIN).await {
            Ok(meta) => {
                summary.samples += meta.num_samples;
                summary.bytes += meta.samples_bytes + meta.series_bytes;
                summary.min_time = summary.min_time.min(meta.min_time);
                summary.max_time = summary.max_time.max(meta.max_time);
                written.push(meta.clone());
                progress(Progress::Block { done: i + 1, total: starts.len(), meta });
            }
            Err(e) => {
                for meta in &written {
                    if let Err(del) = store.delete(meta).await {
                        tracing::error!(ulid = %meta.ulid, error = %del, "removing a block of a failed import");
                    }
                }
                return Err(e.into());
            }
        }
    }
    summary.blocks = written.len() as u64;
    Ok(summary)
}

/// Opens (creating it if needed) a local directory of blocks, as
/// `<storage.path>/blocks` of a stopped server.
pub async fn open_block_dir(dir: &std::path::Path) -> Result<BlockStore, AggregatorError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| AggregatorError::IngestLog { path: dir.display().to_string(), source })?;
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
    Ok(BlockStore::open(std::sync::Arc::new(fs)).await?)
}

/// Parses `input` and writes it as blocks of `tenant`: [`parse`] then [`write`].
pub async fn import_openmetrics(
    store: &BlockStore,
    tenant: &str,
    input: &[u8],
    block_range_ms: i64,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<ImportSummary, AggregatorError> {
    let started = Instant::now();
    let parsed = parse(input, progress)?;
    let summary = write(store, tenant, parsed, block_range_ms, progress).await?;
    tracing::info!(tenant, elapsed = ?started.elapsed(), "{summary}");
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use object_store::ObjectStore;
    use strata_model::{Matcher, Select};

    async fn store(dir: &std::path::Path) -> BlockStore {
        let fs: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).expect("local fs"));
        BlockStore::open(fs).await.expect("open")
    }

    const DOC: &str = "# TYPE up unknown\nup{job=\"a\"} 1 7200\nup{job=\"a\"} 0 10\nup{job=\"a\"} 5 10\n\
                       # TYPE x gauge\nx 2.5 -3600.5\n# EOF\n";

    #[tokio::test]
    async fn imports_into_aligned_blocks_of_any_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path()).await;
        let mut events = 0;
        let sum = import_openmetrics(&s, "t", DOC.as_bytes(), 7_200_000, &mut |_| events += 1).await.expect("import");
        assert_eq!((sum.samples, sum.series, sum.blocks, sum.duplicates), (3, 2, 3, 1));
        assert_eq!((sum.min_time, sum.max_time), (-3_600_500, 7_200_000));
        assert!(events >= 4);
        assert!(s.metas("t").iter().all(|m| m.flushed_until == i64::MIN));
        let got = s.select("t", &[Matcher::equal("__name__", "up")], i64::MIN, i64::MAX).await.expect("select");
        assert_eq!(got[0].samples, vec![Sample::new(10_000, 0.0), Sample::new(7_200_000, 1.0)]);
    }

    #[test]
    fn pieces_parse_like_the_whole_document() {
        let mut doc = Vec::new();
        crate::synth::SynthSpec { nodes: 1, start_ms: 0, interval_ms: 15_000, scrapes: 3 }
            .write_openmetrics(&mut doc)
            .expect("write");
        let whole = parse_pieces(&doc[..], usize::MAX, &mut |_| {}).expect("whole");
        for piece in [1, 40, 1000] {
            let cut = parse_pieces(&doc[..], piece, &mut |_| {}).expect("pieces");
            assert_eq!(cut.series, whole.series, "piece size {piece}");
        }
        // Line numbers survive the cuts, repeated `# TYPE` lines and all.
        let bad_doc = b"# TYPE a gauge\na 1 1\na 2 2\na{ 3 3\n# EOF\n";
        for piece in [1, 10, 1000] {
            let err = parse_pieces(&bad_doc[..], piece, &mut |_| {}).expect_err("malformed");
            assert!(matches!(err, AggregatorError::Import { line: 4, .. }), "piece size {piece}: {err}");
        }
        let untimed = b"# TYPE a gauge\na 1 1\na 2\n# EOF\n";
        let err = parse_pieces(&untimed[..], 1, &mut |_| {}).expect_err("untimed");
        assert!(matches!(err, AggregatorError::Import { line: 3, .. }), "{err}");
    }

    #[tokio::test]
    async fn malformed_or_untimed_input_names_the_line_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path()).await;
        for (doc, want) in
            [("up 1 1\nup{ 2 2\n# EOF\n", 2), ("up 1 1\nup 2\n# EOF\n", 2), ("# TYPE up gauge\nup 1 1\nup 2 2\n", 4)]
        {
            let err = import_openmetrics(&s, "t", doc.as_bytes(), 7_200_000, &mut |_| {}).await.expect_err(doc);
            assert!(matches!(err, AggregatorError::Import { line, .. } if line == want), "{doc:?}: {err}");
        }
        s.sync().await.expect("sync");
        assert!(s.metas("t").is_empty());
    }
}
