//! HA-pair deduplication, as Mimir's HA tracker does it.
//!
//! Two Prometheus replicas scraping the same targets send the same series,
//! told apart only by their `__replica__` external label and sharing a
//! `cluster` label. Per tenant and cluster one replica is elected; samples
//! of the others are dropped (counted, answered 202 as Mimir does), and the
//! `__replica__` label is removed from what is stored, so results hold one
//! copy. The elected replica keeps its seat by sending: its last sample time
//! is written to the store at most every `update_timeout`; when nothing came
//! from it for `failover_timeout`, the next replica to send takes over.
//!
//! The election lives in an [`HaStore`]: in memory for one process
//! (standalone), in a JetStream key-value bucket for a cluster, so every
//! aggregator taking remote write agrees on the leader. As in Mimir, a
//! request's HA labels are read from its first series.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use strata_common::{Clock, Telemetry};
use strata_model::{Append, AppendError, AppendSummary, BoxFuture, Labels, WriteBatch};

/// Settings, with Mimir's defaults.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// The label naming an HA group (`cluster`).
    pub cluster_label: String,
    /// The label naming the replica within it (`__replica__`).
    pub replica_label: String,
    /// How often the elected replica's last sample time is written, ms (15 s).
    pub update_timeout_ms: i64,
    /// How long the elected replica may be silent before another takes over, ms (30 s).
    pub failover_timeout_ms: i64,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            cluster_label: "cluster".to_owned(),
            replica_label: "__replica__".to_owned(),
            update_timeout_ms: 15_000,
            failover_timeout_ms: 30_000,
        }
    }
}

/// The elected replica of one HA group, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elected {
    /// The replica's name.
    pub replica: String,
    /// When a sample from it was last recorded, ms.
    pub received_at: i64,
}

/// Where elections live; writes are compare-and-set on a revision.
pub trait HaStore: Send + Sync {
    /// The value of `key` and its revision.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(Bytes, u64)>, String>>;
    /// Writes `value` if `key` is still at `revision` (`None`: absent);
    /// `Ok(None)` when another writer won.
    fn compare_and_set<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: Option<u64>,
    ) -> BoxFuture<'a, Result<Option<u64>, String>>;
}

/// Elections held in this process only.
#[derive(Debug, Default)]
pub struct MemoryHaStore {
    entries: Mutex<HashMap<String, (Bytes, u64)>>,
}

impl HaStore for MemoryHaStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(Bytes, u64)>, String>> {
        let got = self.entries.lock().map_err(|_| "poisoned".to_owned()).map(|e| e.get(key).cloned());
        Box::pin(async move { got })
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: Option<u64>,
    ) -> BoxFuture<'a, Result<Option<u64>, String>> {
        let result = self.entries.lock().map_err(|_| "poisoned".to_owned()).map(|mut entries| {
            let current = entries.get(key).map(|(_, r)| *r);
            if current != revision {
                return None;
            }
            let next = current.unwrap_or(0) + 1;
            entries.insert(key.to_owned(), (value, next));
            Some(next)
        });
        Box::pin(async move { result })
    }
}

impl HaStore for strata_ingest::kv::Bucket {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<(Bytes, u64)>, String>> {
        Box::pin(async move {
            strata_ingest::kv::Bucket::get(self, key)
                .await
                .map(|v| v.map(|v| (v.value, v.revision)))
                .map_err(|e| e.to_string())
        })
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: Option<u64>,
    ) -> BoxFuture<'a, Result<Option<u64>, String>> {
        Box::pin(async move {
            strata_ingest::kv::Bucket::compare_and_set(self, key, value, revision).await.map_err(|e| e.to_string())
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DedupLabels {
    tenant: String,
    cluster: String,
}

/// The local view of one election.
#[derive(Debug, Clone)]
struct Seat {
    elected: Elected,
    revision: u64,
}

/// An [`Append`] that keeps only the elected replica's samples of each HA
/// group and strips the replica label from them.
pub struct HaDedup {
    inner: Arc<dyn Append>,
    store: Arc<dyn HaStore>,
    config: HaConfig,
    clock: Arc<dyn Clock>,
    seats: Mutex<HashMap<String, Seat>>,
    dropped: Family<DedupLabels, Counter>,
    failovers: Counter,
}

/// A KV key for a tenant's HA group: hex, so any tenant or cluster name is
/// a valid subject token.
fn key(tenant: &str, cluster: &str) -> String {
    let mut k = String::with_capacity(2 * (tenant.len() + cluster.len() + 1));
    for b in tenant.bytes().chain([0]).chain(cluster.bytes()) {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

impl HaDedup {
    /// Wraps `inner`, electing replicas in `store`.
    pub fn new(
        inner: Arc<dyn Append>,
        store: Arc<dyn HaStore>,
        config: HaConfig,
        clock: Arc<dyn Clock>,
        telemetry: &Telemetry,
    ) -> Self {
        let dropped = Family::<DedupLabels, Counter>::default();
        telemetry.register(
            "strata_ha_deduplicated_samples",
            "Samples dropped because they came from an HA replica that is not the elected one",
            dropped.clone(),
        );
        let failovers = Counter::default();
        telemetry.register("strata_ha_failovers", "Elections of a new replica for an HA group", failovers.clone());
        Self { inner, store, config, clock, seats: Mutex::new(HashMap::new()), dropped, failovers }
    }

    fn cached(&self, key: &str) -> Option<Seat> {
        self.seats.lock().ok().and_then(|s| s.get(key).cloned())
    }

    fn remember(&self, key: &str, seat: Seat) {
        if let Ok(mut s) = self.seats.lock() {
            s.insert(key.to_owned(), seat);
        }
    }

    async fn load(&self, key: &str) -> Result<Option<Seat>, AppendError> {
        let got = self.store.get(key).await.map_err(AppendError::Unavailable)?;
        let seat = got.and_then(|(value, revision)| {
            serde_json::from_slice::<Elected>(&value).ok().map(|elected| Seat { elected, revision })
        });
        if let Some(s) = &seat {
            self.remember(key, s.clone());
        }
        Ok(seat)
    }

    /// Writes `replica` as elected at `now` over `revision`; whether it won.
    async fn claim(&self, key: &str, replica: &str, now: i64, revision: Option<u64>) -> Result<bool, AppendError> {
        let elected = Elected { replica: replica.to_owned(), received_at: now };
        let value = Bytes::from(serde_json::to_vec(&elected).map_err(|e| AppendError::Unavailable(e.to_string()))?);
        match self.store.compare_and_set(key, value, revision).await.map_err(AppendError::Unavailable)? {
            Some(revision) => {
                self.remember(key, Seat { elected, revision });
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether samples of `replica` in `cluster` are kept; `Err` with the
    /// elected replica's name when they are not.
    async fn admit(&self, tenant: &str, cluster: &str, replica: &str) -> Result<Result<(), String>, AppendError> {
        let key = key(tenant, cluster);
        let now = self.clock.now_ms();
        // Two rounds at most: a lost compare-and-set re-reads once.
        for _ in 0..2 {
            let seat = match self.cached(&key) {
                Some(s) => Some(s),
                None => self.load(&key).await?,
            };
            let Some(seat) = seat else {
                if self.claim(&key, replica, now, None).await? {
                    return Ok(Ok(()));
                }
                self.load(&key).await?;
                continue;
            };
            let age = now - seat.elected.received_at;
            if seat.elected.replica == replica {
                if age < self.config.update_timeout_ms || self.claim(&key, replica, now, Some(seat.revision)).await? {
                    return Ok(Ok(()));
                }
                self.load(&key).await?;
                continue;
            }
            if age < self.config.failover_timeout_ms {
                return Ok(Err(seat.elected.replica));
            }
            // The cached leader looks silent: check the store before taking over.
            let fresh = self.load(&key).await?;
            match fresh {
                Some(f)
                    if f.elected.replica != replica
                        && now - f.elected.received_at < self.config.failover_timeout_ms =>
                {
                    return Ok(Err(f.elected.replica));
                }
                Some(f) if f.elected.replica == replica => continue,
                f => {
                    if self.claim(&key, replica, now, f.map(|f| f.revision)).await? {
                        self.failovers.inc();
                        tracing::info!(tenant, cluster, replica, "HA failover: new replica elected");
                        return Ok(Ok(()));
                    }
                    self.load(&key).await?;
                }
            }
        }
        match self.cached(&key) {
            Some(s) if s.elected.replica == replica => Ok(Ok(())),
            Some(s) => Ok(Err(s.elected.replica)),
            None => Err(AppendError::Unavailable("HA election did not settle".to_owned())),
        }
    }

    fn ha_labels(&self, labels: &Labels) -> Option<(String, String)> {
        Some((labels.get(&self.config.cluster_label)?.to_owned(), labels.get(&self.config.replica_label)?.to_owned()))
    }
}

impl Append for HaDedup {
    fn append(&self, mut batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
        Box::pin(async move {
            let Some((cluster, replica)) = batch.series.first().and_then(|s| self.ha_labels(&s.labels)) else {
                return self.inner.append(batch).await;
            };
            if let Err(elected) = self.admit(&batch.tenant, &cluster, &replica).await? {
                let n = batch.sample_count();
                self.dropped.get_or_create(&DedupLabels { tenant: batch.tenant.clone(), cluster }).inc_by(n as u64);
                tracing::debug!(replica, elected, "samples of a non-elected HA replica dropped");
                return Ok(AppendSummary { deduplicated: n, ..AppendSummary::default() });
            }
            let replica_label = self.config.replica_label.as_str();
            for s in &mut batch.series {
                if s.labels.get(replica_label).is_some() {
                    let mut b = s.labels.builder();
                    b.del(replica_label);
                    s.labels = b.build();
                }
            }
            self.inner.append(batch).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_common::ManualClock;
    use strata_model::{Sample, TimeSeries};

    #[derive(Default)]
    struct Sink(Mutex<Vec<WriteBatch>>);

    impl Append for Sink {
        fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
            let n = batch.sample_count();
            if let Ok(mut v) = self.0.lock() {
                v.push(batch);
            }
            Box::pin(async move { Ok(AppendSummary { accepted: n, ..AppendSummary::default() }) })
        }
    }

    fn batch(cluster: &str, replica: &str) -> WriteBatch {
        let mut b = WriteBatch::new("t");
        let labels =
            Labels::from_pairs([("__name__", "up"), ("__replica__", replica), ("cluster", cluster)]).expect("labels");
        b.series.push(TimeSeries { labels, samples: vec![Sample::new(1, 1.0)] });
        b
    }

    fn dedup(store: Arc<dyn HaStore>, clock: Arc<ManualClock>) -> (HaDedup, Arc<Sink>) {
        let sink = Arc::new(Sink::default());
        let d = HaDedup::new(sink.clone(), store, HaConfig::default(), clock, &Telemetry::empty());
        (d, sink)
    }

    #[tokio::test]
    async fn one_replica_is_kept_and_the_other_takes_over_after_the_timeout() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let (d, sink) = dedup(Arc::new(MemoryHaStore::default()), clock.clone());
        assert_eq!(d.append(batch("c1", "a")).await.expect("ok").accepted, 1);
        assert_eq!(d.append(batch("c1", "b")).await.expect("ok").deduplicated, 1);
        // Another cluster elects on its own.
        assert_eq!(d.append(batch("c2", "b")).await.expect("ok").accepted, 1);
        // a keeps its seat while it sends.
        for _ in 0..10 {
            clock.advance(10_000);
            assert_eq!(d.append(batch("c1", "a")).await.expect("ok").accepted, 1);
            assert_eq!(d.append(batch("c1", "b")).await.expect("ok").deduplicated, 1);
        }
        // a goes silent: b takes over after the failover timeout, not before.
        clock.advance(20_000);
        assert_eq!(d.append(batch("c1", "b")).await.expect("ok").deduplicated, 1);
        clock.advance(15_000);
        assert_eq!(d.append(batch("c1", "b")).await.expect("ok").accepted, 1);
        assert_eq!(d.append(batch("c1", "a")).await.expect("ok").deduplicated, 1, "a is now the follower");
        // What is stored has no replica label.
        let stored = sink.0.lock().expect("lock");
        assert!(stored.iter().all(|b| b.series.iter().all(|s| s.labels.get("__replica__").is_none())));
        assert!(stored.iter().all(|b| b.series.iter().all(|s| s.labels.get("cluster").is_some())));
    }

    #[tokio::test]
    async fn two_receivers_sharing_a_store_agree() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store: Arc<dyn HaStore> = Arc::new(MemoryHaStore::default());
        let (d1, _) = dedup(store.clone(), clock.clone());
        let (d2, _) = dedup(store, clock.clone());
        assert_eq!(d1.append(batch("c", "a")).await.expect("ok").accepted, 1);
        assert_eq!(d2.append(batch("c", "b")).await.expect("ok").deduplicated, 1, "d2 sees a's election");
        // a keeps sending through d1 only; d2's cached view ages, yet it does
        // not fail over while the store says a is alive.
        for _ in 0..6 {
            clock.advance(10_000);
            assert_eq!(d1.append(batch("c", "a")).await.expect("ok").accepted, 1);
        }
        assert_eq!(d2.append(batch("c", "b")).await.expect("ok").deduplicated, 1);
    }

    #[tokio::test]
    async fn series_without_ha_labels_pass() {
        let clock = Arc::new(ManualClock::new(0));
        let (d, _) = dedup(Arc::new(MemoryHaStore::default()), clock);
        let mut b = WriteBatch::new("t");
        b.series.push(TimeSeries {
            labels: Labels::from_pairs([("__name__", "up"), ("cluster", "c")]).expect("labels"),
            samples: vec![Sample::new(1, 1.0)],
        });
        assert_eq!(d.append(b).await.expect("ok").accepted, 1);
    }

    #[test]
    fn keys_are_subject_tokens() {
        let k = key("te.nant", "clu ster/*");
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()), "{k}");
        assert_ne!(key("a", "bc"), key("ab", "c"));
    }
}
