//! [`CountingStore`]: an [`ObjectStore`] wrapper that counts requests and
//! bytes, in total (Prometheus counters) and per query: a query run inside
//! [`measure`] gets the GETs and bytes its own reads caused.
//!
//! Counted as the object store sees them: a GET is one `get_opts` call of
//! the inner store (one HTTP request on S3; ranged reads that `get_ranges`
//! coalesces count once per coalesced request); its bytes are the length of
//! the range it returned.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use prometheus_client::metrics::counter::Counter;

/// Object store reads of one query.
#[derive(Debug, Default)]
pub struct IoStats {
    gets: AtomicU64,
    bytes: AtomicU64,
}

/// A snapshot of [`IoStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoFigures {
    /// GET requests.
    pub gets: u64,
    /// Bytes those requests returned.
    pub bytes: u64,
}

impl IoStats {
    /// The figures so far.
    pub fn figures(&self) -> IoFigures {
        IoFigures { gets: self.gets.load(Ordering::Relaxed), bytes: self.bytes.load(Ordering::Relaxed) }
    }
}

tokio::task_local! {
    static QUERY_IO: Arc<IoStats>;
}

/// Runs `fut`, returning its output and the object store reads it caused
/// (reads polled inside `fut`'s task; nested calls count in the innermost).
pub async fn measure<F: Future>(fut: F) -> (F::Output, IoFigures) {
    let stats = Arc::new(IoStats::default());
    let out = QUERY_IO.scope(Arc::clone(&stats), fut).await;
    (out, stats.figures())
}

/// Request and byte counters of a [`CountingStore`].
#[derive(Debug, Clone, Default)]
pub struct StoreCounters {
    /// GET requests (whole or ranged).
    pub gets: Counter,
    /// Bytes returned by GETs.
    pub get_bytes: Counter,
    /// PUT requests (single or multipart uploads).
    pub puts: Counter,
    /// Bytes put.
    pub put_bytes: Counter,
    /// LIST requests.
    pub lists: Counter,
    /// Objects deleted.
    pub deletes: Counter,
    /// Requests that failed.
    pub failures: Counter,
}

/// An [`ObjectStore`] that counts what goes through it.
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counters: StoreCounters,
}

impl CountingStore {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: Arc<dyn ObjectStore>, counters: StoreCounters) -> Self {
        Self { inner, counters }
    }

    fn failed<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.counters.failures.inc();
        }
        r
    }
}

impl fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountingStore({})", self.inner)
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountingStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.counters.puts.inc();
        self.counters.put_bytes.inc_by(payload.content_length() as u64);
        let r = self.inner.put_opts(location, payload, opts).await;
        self.failed(r)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.counters.puts.inc();
        let r = self.inner.put_multipart_opts(location, opts).await;
        self.failed(r)
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let r = self.inner.get_opts(location, options).await;
        let r = self.failed(r)?;
        let bytes = r.range.end.saturating_sub(r.range.start);
        self.counters.gets.inc();
        self.counters.get_bytes.inc_by(bytes);
        let _ = QUERY_IO.try_with(|s| {
            s.gets.fetch_add(1, Ordering::Relaxed);
            s.bytes.fetch_add(bytes, Ordering::Relaxed);
        });
        Ok(r)
    }

    // `get_ranges` keeps the trait's default: it coalesces nearby ranges and
    // issues one `get_opts` per coalesced range, as the S3 store does, so
    // the counts are the requests S3 would see whatever the inner store.
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        object_store::coalesce_ranges(
            ranges,
            |range| async move {
                let opts = GetOptions { range: Some(range.into()), ..Default::default() };
                self.get_opts(location, opts).await?.bytes().await
            },
            object_store::OBJECT_STORE_COALESCE_DEFAULT,
        )
        .await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let deletes = self.counters.deletes.clone();
        let failures = self.counters.failures.clone();
        let s = self.inner.delete_stream(locations);
        Box::pin(futures::StreamExt::inspect(s, move |r| match r {
            Ok(_) => {
                deletes.inc();
            }
            Err(_) => {
                failures.inc();
            }
        }))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counters.lists.inc();
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counters.lists.inc();
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.counters.lists.inc();
        let r = self.inner.list_with_delimiter(prefix).await;
        self.failed(r)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let r = self.inner.copy_opts(from, to, options).await;
        self.failed(r)
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let r = self.inner.rename_opts(from, to, options).await;
        self.failed(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn counts_requests_and_bytes_per_scope() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        let counters = StoreCounters::default();
        let store = CountingStore::new(fs, counters.clone());
        let p = Path::from("a/b");
        store.put(&p, Bytes::from(vec![7u8; 10_000]).into()).await.expect("put");
        assert_eq!((counters.puts.get(), counters.put_bytes.get()), (1, 10_000));

        let (got, io) = measure(async {
            let one = store.get_range(&p, 0..100).await.expect("range");
            // Far apart (over 1 MiB would be needed to split; these coalesce into one GET).
            let two = store.get_ranges(&p, &[0..10, 5_000..5_010]).await.expect("ranges");
            (one.len(), two.iter().map(Bytes::len).sum::<usize>())
        })
        .await;
        assert_eq!(got, (100, 20));
        assert_eq!(io, IoFigures { gets: 2, bytes: 100 + 5_010 });
        assert_eq!((counters.gets.get(), counters.get_bytes.get()), (2, 5_110));
        // Outside a scope only the totals move.
        store.get(&p).await.expect("get").bytes().await.expect("bytes");
        assert_eq!(counters.gets.get(), 3);
        assert!(store.get(&Path::from("missing")).await.is_err());
        assert_eq!(counters.failures.get(), 1);
    }
}
