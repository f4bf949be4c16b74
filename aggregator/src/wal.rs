//! The local ingest log: an append-only, checksummed segment log.
//!
//! A write counts once its record is on disk (`fdatasync`). Records are
//! `[len: u32 LE][crc32: u32 LE][strata.ingest.v1.WriteBatch]`. Segments are
//! numbered files in one directory; a segment is deleted once every sample in
//! it is older than its tenant's flush watermark (so it is in a block). A torn
//! record at the end of a segment (a crash mid-write, never acknowledged) is
//! cut off when the log is opened.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use strata_model::WriteBatch;

const HEADER_LEN: usize = 8;
/// Records larger than this are refused on write and treated as corruption on read.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// What is known of a segment: the newest sample time per tenant in it.
#[derive(Debug, Default, Clone)]
struct SegmentInfo {
    max_t: HashMap<String, i64>,
    bytes: u64,
}

impl SegmentInfo {
    fn note(&mut self, batch: &WriteBatch, bytes: u64) {
        self.bytes += bytes;
        let max = batch.series.iter().filter_map(|s| s.samples.last()).map(|s| s.t).max();
        if let Some(max) = max {
            let e = self.max_t.entry(batch.tenant.clone()).or_insert(i64::MIN);
            *e = (*e).max(max);
        }
    }
}

/// What opening the log found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records replayed.
    pub records: u64,
    /// Segments read.
    pub segments: u64,
    /// Bytes cut off torn or corrupt segment tails.
    pub truncated_bytes: u64,
}

/// The ingest log of one aggregator (or of `strata standalone`).
#[derive(Debug)]
pub struct IngestLog {
    dir: PathBuf,
    active: File,
    active_seq: u64,
    segments: BTreeMap<u64, SegmentInfo>,
    segment_max_bytes: u64,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:08}"))
}

impl IngestLog {
    /// Opens (or creates) the log in `dir`, calling `replay` with every
    /// intact record in order, then starts a fresh segment for new writes.
    pub fn open(
        dir: &Path,
        segment_max_bytes: u64,
        mut replay: impl FnMut(WriteBatch),
    ) -> io::Result<(Self, ReplayStats)> {
        fs::create_dir_all(dir)?;
        let mut seqs: Vec<u64> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
            .collect();
        seqs.sort_unstable();
        let mut stats = ReplayStats::default();
        let mut segments = BTreeMap::new();
        for &seq in &seqs {
            let path = segment_path(dir, seq);
            let mut info = SegmentInfo::default();
            let (good_len, file_len) = read_segment(&path, |batch, len| {
                info.note(&batch, len);
                stats.records += 1;
                replay(batch);
            })?;
            if good_len < file_len {
                tracing::warn!(segment = %path.display(), good_len, file_len, "cutting torn or corrupt ingest log tail");
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(good_len)?;
                f.sync_all()?;
                stats.truncated_bytes += file_len - good_len;
            }
            stats.segments += 1;
            segments.insert(seq, info);
        }
        let active_seq = seqs.last().map_or(1, |s| s + 1);
        let active = create_segment(dir, active_seq)?;
        segments.insert(active_seq, SegmentInfo::default());
        Ok((Self { dir: dir.to_owned(), active, active_seq, segments, segment_max_bytes }, stats))
    }

    /// Appends one record and makes it durable.
    pub fn append(&mut self, batch: &WriteBatch) -> io::Result<()> {
        let payload = strata_proto::encode_batch(batch);
        if payload.len() > MAX_RECORD_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "record larger than the ingest log allows"));
        }
        let mut rec = Vec::with_capacity(HEADER_LEN + payload.len());
        rec.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        rec.extend_from_slice(&payload);
        if let Err(e) = self.active.write_all(&rec).and_then(|()| self.active.sync_data()) {
            // The file may now end in a partial record: start a new segment so
            // later records are not written behind it.
            let _ = self.rotate();
            return Err(e);
        }
        let info = self.segments.entry(self.active_seq).or_default();
        info.note(batch, rec.len() as u64);
        if info.bytes >= self.segment_max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// Closes the active segment and starts a new one.
    pub fn rotate(&mut self) -> io::Result<()> {
        let seq = self.active_seq + 1;
        self.active = create_segment(&self.dir, seq)?;
        self.active_seq = seq;
        self.segments.insert(seq, SegmentInfo::default());
        Ok(())
    }

    /// Deletes closed segments whose samples are all older than their
    /// tenant's watermark (`watermark(tenant)`). Returns how many were deleted.
    pub fn truncate(&mut self, watermark: impl Fn(&str) -> i64) -> io::Result<usize> {
        let mut deleted = 0;
        let closed: Vec<u64> = self.segments.keys().copied().filter(|&s| s != self.active_seq).collect();
        for seq in closed {
            let Some(info) = self.segments.get(&seq) else { continue };
            if info.max_t.iter().all(|(tenant, &max)| max < watermark(tenant)) {
                fs::remove_file(segment_path(&self.dir, seq))?;
                self.segments.remove(&seq);
                deleted += 1;
            } else {
                // Segments are deleted oldest first, never with a gap.
                break;
            }
        }
        Ok(deleted)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Total bytes in the log.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }
}

fn create_segment(dir: &Path, seq: u64) -> io::Result<File> {
    let f = OpenOptions::new().create(true).append(true).open(segment_path(dir, seq))?;
    // Make the new directory entry durable too.
    File::open(dir)?.sync_all()?;
    Ok(f)
}

/// Reads intact records; returns (bytes of intact records, file length).
fn read_segment(path: &Path, mut f: impl FnMut(WriteBatch, u64)) -> io::Result<(u64, u64)> {
    let mut file = File::open(path)?;
    let file_len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let mut r = BufReader::new(file);
    let mut pos: u64 = 0;
    let mut header = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    loop {
        if file_len - pos < HEADER_LEN as u64 {
            break;
        }
        r.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD_BYTES || (file_len - pos - HEADER_LEN as u64) < len as u64 {
            break;
        }
        payload.resize(len, 0);
        r.read_exact(&mut payload)?;
        if crc32fast::hash(&payload) != crc {
            break;
        }
        let Ok(batch) = strata_proto::decode_batch(&payload) else { break };
        let rec_len = (HEADER_LEN + len) as u64;
        pos += rec_len;
        f(batch, rec_len);
    }
    Ok((pos, file_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_model::{Labels, Sample};

    fn batch(tenant: &str, t: i64) -> WriteBatch {
        let mut b = WriteBatch::new(tenant);
        b.push(Labels::from_pairs([("__name__", "m")]).expect("labels"), Sample::new(t, t as f64));
        b
    }

    fn replay_all(dir: &Path) -> (Vec<WriteBatch>, ReplayStats, IngestLog) {
        let mut got = Vec::new();
        let (log, stats) = IngestLog::open(dir, 1 << 20, |b| got.push(b)).expect("open");
        (got, stats, log)
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, _, mut log) = replay_all(dir.path());
        for t in 0..10 {
            log.append(&batch("a", t)).expect("append");
        }
        drop(log);
        let (got, stats, _) = replay_all(dir.path());
        assert_eq!(got.len(), 10);
        assert_eq!(got[9], batch("a", 9));
        assert_eq!(stats.truncated_bytes, 0);
    }

    #[test]
    fn torn_tail_is_cut_and_later_writes_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, _, mut log) = replay_all(dir.path());
        log.append(&batch("a", 1)).expect("append");
        log.append(&batch("a", 2)).expect("append");
        let seg = segment_path(dir.path(), log.active_seq);
        drop(log);
        // Simulate a crash halfway through writing a third record.
        let len = fs::metadata(&seg).expect("meta").len();
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).expect("write");
        drop(f);
        let (got, stats, mut log) = replay_all(dir.path());
        assert_eq!(got.len(), 2);
        assert_eq!(stats.truncated_bytes, 10);
        assert_eq!(fs::metadata(&seg).expect("meta").len(), len);
        log.append(&batch("a", 3)).expect("append");
        drop(log);
        let (got, _, _) = replay_all(dir.path());
        assert_eq!(got.iter().map(|b| b.series[0].samples[0].t).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn corrupt_record_stops_replay_of_that_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, _, mut log) = replay_all(dir.path());
        log.append(&batch("a", 1)).expect("append");
        log.append(&batch("a", 2)).expect("append");
        let seg = segment_path(dir.path(), log.active_seq);
        drop(log);
        let mut bytes = fs::read(&seg).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&seg, bytes).expect("write");
        let (got, stats, _) = replay_all(dir.path());
        assert_eq!(got.len(), 1);
        assert!(stats.truncated_bytes > 0);
    }

    #[test]
    fn truncate_keeps_segments_with_unflushed_samples() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, _, mut log) = replay_all(dir.path());
        log.append(&batch("a", 100)).expect("append");
        log.rotate().expect("rotate");
        log.append(&batch("a", 200)).expect("append");
        log.rotate().expect("rotate");
        assert_eq!(log.segment_count(), 3);
        assert_eq!(log.truncate(|_| 150).expect("truncate"), 1);
        assert_eq!(log.truncate(|_| 150).expect("truncate"), 0);
        assert_eq!(log.truncate(|_| 201).expect("truncate"), 1);
        drop(log);
        let (got, _, _) = replay_all(dir.path());
        assert!(got.is_empty());
    }
}
