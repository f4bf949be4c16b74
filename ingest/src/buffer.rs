//! [`DiskBuffer`]: a collector's on-disk queue in front of the ingest log.
//!
//! Scrapes must not stop or lose data while NATS restarts. A collector
//! appends every batch to a local segment log (acknowledged once written)
//! and a forwarder ships the log, in order, to the real write path (the
//! [`crate::JetStreamAppender`]), retrying with backoff until it is
//! acknowledged, then moves on. When NATS comes back the backlog drains and
//! the series have no gap. Segments are deleted once forwarded; past
//! `max_bytes` the oldest segments are dropped (counted), so an outage
//! cannot fill the disk.
//!
//! On disk: `<dir>/<segment:08>` files of records `[len u32 LE][crc32 u32
//! LE][strata.ingest.v1.WriteBatch]`, and `<dir>/cursor` ("segment offset"),
//! the first record not yet forwarded. A restarted collector resumes from
//! the cursor; a record may then be sent twice, which the head ignores
//! (same series, timestamp and value).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use strata_common::Telemetry;
use strata_model::{Append, AppendError, AppendSummary, BoxFuture, WriteBatch};
use tokio::sync::Notify;

/// A segment is closed once it holds this many bytes.
const SEGMENT_BYTES: u64 = 16 << 20;
/// Largest record accepted when reading back (a corrupt length stops there).
const MAX_RECORD_BYTES: u32 = 256 << 20;

#[derive(Debug, Clone)]
struct Metrics {
    bytes: Gauge,
    forwarded: Counter,
    failures: Counter,
    dropped_segments: Counter,
    corrupt: Counter,
}

impl Metrics {
    fn new(telemetry: &Telemetry) -> Self {
        let m = Self {
            bytes: Gauge::default(),
            forwarded: Counter::default(),
            failures: Counter::default(),
            dropped_segments: Counter::default(),
            corrupt: Counter::default(),
        };
        telemetry.register("strata_collector_buffer_bytes", "Bytes waiting in the on-disk buffer", m.bytes.clone());
        telemetry.register(
            "strata_collector_buffer_forwarded_batches",
            "Batches forwarded from the on-disk buffer and acknowledged",
            m.forwarded.clone(),
        );
        telemetry.register(
            "strata_collector_buffer_forward_failures",
            "Failed attempts to forward a buffered batch (retried)",
            m.failures.clone(),
        );
        telemetry.register(
            "strata_collector_buffer_dropped_segments",
            "Buffer segments dropped unforwarded because the buffer was full",
            m.dropped_segments.clone(),
        );
        telemetry.register(
            "strata_collector_buffer_corrupt_records",
            "Unreadable buffer records skipped (torn writes after a crash)",
            m.corrupt.clone(),
        );
        m
    }
}

struct Writer {
    segment: u64,
    file: File,
    size: u64,
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    writer: Mutex<Writer>,
    notify: Notify,
    metrics: Metrics,
}

/// The append side of the buffer; see the module docs.
#[derive(Clone)]
pub struct DiskBuffer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DiskBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBuffer").field("dir", &self.shared.dir).finish_non_exhaustive()
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:08}"))
}

/// The segment numbers in `dir`, ascending.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out: Vec<u64> = fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    out.sort_unstable();
    Ok(out)
}

fn dir_bytes(dir: &Path) -> u64 {
    segments(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| fs::metadata(segment_path(dir, s)).ok())
        .map(|m| m.len())
        .sum()
}

impl DiskBuffer {
    /// Opens (or creates) the buffer in `dir`, holding at most `max_bytes`.
    /// Appends go to a new segment; what earlier runs left is forwarded first.
    pub fn open(dir: &Path, max_bytes: u64, telemetry: &Telemetry) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let segment = segments(dir)?.last().map_or(1, |s| s + 1);
        let file = OpenOptions::new().create(true).append(true).open(segment_path(dir, segment))?;
        let metrics = Metrics::new(telemetry);
        metrics.bytes.set(i64::try_from(dir_bytes(dir)).unwrap_or(i64::MAX));
        Ok(Self {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                max_bytes,
                writer: Mutex::new(Writer { segment, file, size: 0 }),
                notify: Notify::new(),
                metrics,
            }),
        })
    }

    fn write(&self, batch: &WriteBatch) -> io::Result<()> {
        let payload = strata_proto::encode_batch(batch);
        let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("batch too large to buffer"))?;
        let mut record = Vec::with_capacity(8 + payload.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let s = &self.shared;
        let mut w = s.writer.lock().map_err(|_| io::Error::other("buffer lock poisoned"))?;
        w.file.write_all(&record)?;
        w.size += record.len() as u64;
        s.metrics.bytes.inc_by(record.len() as i64);
        if w.size >= SEGMENT_BYTES {
            let next = w.segment + 1;
            w.file = OpenOptions::new().create(true).append(true).open(segment_path(&s.dir, next))?;
            w.segment = next;
            w.size = 0;
            drop(w);
            self.enforce_cap(next)?;
        }
        Ok(())
    }

    /// Drops the oldest closed segments while the buffer is over its size.
    fn enforce_cap(&self, current: u64) -> io::Result<()> {
        let s = &self.shared;
        let mut total = dir_bytes(&s.dir);
        for seg in segments(&s.dir)? {
            if total <= s.max_bytes || seg >= current {
                break;
            }
            let len = fs::metadata(segment_path(&s.dir, seg)).map_or(0, |m| m.len());
            fs::remove_file(segment_path(&s.dir, seg))?;
            total = total.saturating_sub(len);
            s.metrics.bytes.dec_by(len as i64);
            s.metrics.dropped_segments.inc();
            tracing::warn!(segment = seg, bytes = len, "collector buffer full: oldest segment dropped unforwarded");
        }
        Ok(())
    }

    /// Ships the buffer to `sink`, in order, until `stop` turns true; then
    /// keeps forwarding for at most `drain` before leaving the rest on disk.
    pub async fn run_forwarder(
        self,
        sink: Arc<dyn Append>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        drain: Duration,
    ) {
        let s = Arc::clone(&self.shared);
        let mut cursor = read_cursor(&s.dir);
        let mut backoff = Duration::from_millis(100);
        let mut stopping: Option<tokio::time::Instant> = None;
        loop {
            if stopping.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
                return;
            }
            let current = s.writer.lock().map(|w| w.segment).unwrap_or(cursor.0);
            match next_record(&s.dir, &mut cursor, current, &s.metrics) {
                Next::Record(payload, next_offset) => {
                    let batch = match strata_proto::decode_batch(&payload) {
                        Ok(b) => b,
                        Err(e) => {
                            s.metrics.corrupt.inc();
                            tracing::error!(error = %e, "undecodable buffered batch skipped");
                            cursor.1 = next_offset;
                            continue;
                        }
                    };
                    match sink.append(batch).await {
                        Ok(_) => {
                            backoff = Duration::from_millis(100);
                            cursor.1 = next_offset;
                            s.metrics.forwarded.inc();
                            s.metrics.bytes.dec_by(8 + payload.len() as i64);
                            write_cursor(&s.dir, cursor);
                        }
                        Err(AppendError::Invalid(e)) => {
                            tracing::error!(error = %e, "the ingest log refused a buffered batch as invalid; skipped");
                            cursor.1 = next_offset;
                        }
                        Err(e) => {
                            s.metrics.failures.inc();
                            tracing::warn!(error = %e, retry_in = ?backoff, "forwarding buffered samples failed");
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = stop.changed(), if stopping.is_none() => {
                                    stopping = Some(tokio::time::Instant::now() + drain);
                                }
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                Next::Wait => {
                    if stopping.is_some() {
                        return;
                    }
                    tokio::select! {
                        _ = s.notify.notified() => {}
                        // A tail written between the read and the wait is picked up here.
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.changed() => stopping = Some(tokio::time::Instant::now() + drain),
                    }
                }
            }
        }
    }
}

enum Next {
    Record(Vec<u8>, u64),
    Wait,
}

/// The record at `cursor`, moving the cursor over finished, missing or
/// corrupt segments (deleting finished ones).
fn next_record(dir: &Path, cursor: &mut (u64, u64), current: u64, metrics: &Metrics) -> Next {
    loop {
        let (seg, off) = *cursor;
        if seg > current {
            return Next::Wait;
        }
        match read_at(&segment_path(dir, seg), off) {
            Ok(Some((payload, next))) => return Next::Record(payload, next),
            Ok(None) if seg == current => return Next::Wait,
            Ok(None) => {
                // A closed segment fully forwarded: delete it and go on.
                let _ = fs::remove_file(segment_path(dir, seg));
                *cursor = (next_segment(dir, seg).unwrap_or(current), 0);
                write_cursor(dir, *cursor);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                *cursor = (next_segment(dir, seg).unwrap_or(current), 0);
                if cursor.0 == seg {
                    return Next::Wait;
                }
            }
            Err(e) => {
                if seg == current {
                    // Possibly a record being written right now.
                    return Next::Wait;
                }
                metrics.corrupt.inc();
                tracing::error!(segment = seg, offset = off, error = %e, "corrupt buffer segment: rest of it skipped");
                let _ = fs::remove_file(segment_path(dir, seg));
                *cursor = (next_segment(dir, seg).unwrap_or(current), 0);
            }
        }
    }
}

fn next_segment(dir: &Path, after: u64) -> Option<u64> {
    segments(dir).ok()?.into_iter().find(|s| *s > after)
}

/// Reads the record at `offset`: `Ok(None)` at the end of the file (or a
/// record not completely written yet), `Err` when it is corrupt.
fn read_at(path: &Path, offset: u64) -> io::Result<Option<(Vec<u8>, u64)>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if offset + 8 > len {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut header = [0u8; 8];
    f.read_exact(&mut header)?;
    let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if size > MAX_RECORD_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("record length {size} is implausible")));
    }
    if offset + 8 + u64::from(size) > len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "torn record"));
    }
    let mut payload = vec![0u8; size as usize];
    f.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "checksum mismatch"));
    }
    Ok(Some((payload, offset + 8 + u64::from(size))))
}

fn read_cursor(dir: &Path) -> (u64, u64) {
    let first = segments(dir).ok().and_then(|s| s.first().copied()).unwrap_or(1);
    let saved = fs::read_to_string(dir.join("cursor")).ok().and_then(|s| {
        let mut it = s.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    });
    match saved {
        Some((seg, off)) if seg >= first => (seg, off),
        _ => (first, 0),
    }
}

fn write_cursor(dir: &Path, cursor: (u64, u64)) {
    let tmp = dir.join("cursor.tmp");
    let ok =
        fs::write(&tmp, format!("{} {}\n", cursor.0, cursor.1)).and_then(|()| fs::rename(&tmp, dir.join("cursor")));
    if let Err(e) = ok {
        tracing::warn!(error = %e, "saving the buffer cursor failed");
    }
}

impl Append for DiskBuffer {
    fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
        Box::pin(async move {
            let samples = batch.sample_count();
            self.write(&batch).map_err(|e| AppendError::Unavailable(format!("collector buffer: {e}")))?;
            self.shared.notify.notify_one();
            Ok(AppendSummary { accepted: samples, ..AppendSummary::default() })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use strata_model::{Labels, Sample, TimeSeries};

    /// A sink that fails while `down` and records what it got.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        got: Mutex<Vec<i64>>,
    }

    impl Append for Flaky {
        fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(AppendError::Unavailable("down".into()));
                }
                let mut got = self.got.lock().expect("lock");
                got.extend(batch.series.iter().flat_map(|s| s.samples.iter().map(|p| p.t)));
                Ok(AppendSummary::default())
            })
        }
    }

    fn batch(t: i64) -> WriteBatch {
        let mut b = WriteBatch::new("t");
        b.series.push(TimeSeries {
            labels: Labels::from_pairs([("__name__", "up")]).expect("labels"),
            samples: vec![Sample::new(t, 1.0)],
        });
        b
    }

    async fn wait_for(sink: &Flaky, n: usize) -> Vec<i64> {
        for _ in 0..200 {
            let got = sink.got.lock().expect("lock").clone();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sink.got.lock().expect("lock").clone()
    }

    #[tokio::test]
    async fn outage_is_buffered_and_drained_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let buf = DiskBuffer::open(dir.path(), 1 << 30, &Telemetry::empty()).expect("open");
        let sink = Arc::new(Flaky::default());
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(buf.clone().run_forwarder(sink.clone(), stop, Duration::from_secs(1)));
        buf.append(batch(1)).await.expect("buffered");
        assert_eq!(wait_for(&sink, 1).await, [1]);
        sink.down.store(true, Ordering::SeqCst);
        for t in 2..=50 {
            buf.append(batch(t)).await.expect("buffered while the sink is down");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        sink.down.store(false, Ordering::SeqCst);
        let got = wait_for(&sink, 50).await;
        assert_eq!(got, (1..=50).collect::<Vec<_>>(), "no gap, no reordering");
        let _ = stop_tx.send(true);
        task.await.expect("forwarder stops");
    }

    #[tokio::test]
    async fn a_restart_resumes_from_the_cursor() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let buf = DiskBuffer::open(dir.path(), 1 << 30, &Telemetry::empty()).expect("open");
            for t in 1..=5 {
                buf.append(batch(t)).await.expect("buffered");
            }
        }
        // A torn record at the end of the old segment, as after a crash mid-write.
        let seg = segments(dir.path()).expect("segments")[0];
        let mut f = OpenOptions::new().append(true).open(segment_path(dir.path(), seg)).expect("open");
        f.write_all(&[200, 0, 0, 0, 1, 2]).expect("write");
        let buf = DiskBuffer::open(dir.path(), 1 << 30, &Telemetry::empty()).expect("reopen");
        buf.append(batch(6)).await.expect("buffered");
        let sink = Arc::new(Flaky::default());
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(buf.run_forwarder(sink.clone(), stop, Duration::from_secs(1)));
        assert_eq!(wait_for(&sink, 6).await, (1..=6).collect::<Vec<_>>());
        let _ = stop_tx.send(true);
        task.await.expect("forwarder stops");
        assert_eq!(segments(dir.path()).expect("segments").len(), 1, "forwarded segments are deleted");
    }
}
