//! The set of blocks of every tenant, kept in memory and readable as one
//! [`Select`]. The writer registers a block only after its `meta.json` is
//! stored, so no reader ever sees a partial block.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use strata_model::{BoxFuture, Labels, Matcher, Sample, Select, SelectError, Series, merge_series_sets};

use crate::meta::{BlockMeta, META_FILE};
use crate::{BlockError, BlockReader, write_block};

/// All blocks in one object store.
#[derive(Debug)]
pub struct BlockStore {
    store: Arc<dyn ObjectStore>,
    /// Per tenant, blocks ordered by min time.
    blocks: RwLock<BTreeMap<String, Vec<Arc<BlockReader>>>>,
}

impl BlockStore {
    /// Opens every complete block in `store`.
    pub async fn open(store: Arc<dyn ObjectStore>) -> Result<Self, BlockError> {
        let this = Self { store, blocks: RwLock::new(BTreeMap::new()) };
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
                blocks.values().flatten().any(|b| format!("{}/{META_FILE}", b.meta().dir()) == obj.location.as_ref())
            };
            if known {
                continue;
            }
            let bytes = self.store.get(&obj.location).await?.bytes().await?;
            let meta: BlockMeta = serde_json::from_slice(&bytes)
                .map_err(|e| BlockError::Meta { path: obj.location.to_string(), reason: e.to_string() })?;
            let reader = BlockReader::open(Arc::clone(&self.store), meta).await?;
            self.add(Arc::new(reader));
        }
        Ok(())
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
        self.readers(tenant).iter().map(|b| b.meta().flushed_until).max()
    }

    fn readers(&self, tenant: &str) -> Vec<Arc<BlockReader>> {
        self.blocks.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(tenant).cloned().unwrap_or_default()
    }
}

impl Select for BlockStore {
    fn select<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<Series>, SelectError>> {
        Box::pin(async move {
            let readers: Vec<_> = self.readers(tenant).into_iter().filter(|b| b.meta().overlaps(mint, maxt)).collect();
            let sets = futures::future::try_join_all(readers.iter().map(|b| b.select(matchers, mint, maxt))).await?;
            Ok(merge_series_sets(sets))
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
        let store = BlockStore::open(fs).await.expect("open");
        assert!(store.metas("t1").is_empty());
    }
}
