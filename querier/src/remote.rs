//! Reading from aggregators over gRPC (`strata.store.v1.Store`).
//!
//! - [`RemoteStore`]: one aggregator as a [`Select`].
//! - [`FanoutStore`]: every aggregator at once, answers merged and replicas
//!   deduplicated (equal timestamps of a series count once). A query keeps
//!   working while an aggregator is down; when some shard then has no live
//!   replica the store says so through [`Completeness`], and the API turns
//!   that into a warning.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use strata_model::{BoxFuture, Labels, Matcher, Select, SelectError, SelectHints, Series, merge_label_sets};
use strata_proto::store::v1 as pb;
use strata_proto::store::v1::store_client::StoreClient;
use strata_proto::store_api::{labels_from_pb, matchers_to_pb, series_from_pb};
use tonic::transport::{Channel, Endpoint};

/// Largest gRPC message a querier decodes.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Whether the answers of a store may be missing data right now.
pub trait Completeness: Send + Sync {
    /// A warning for query responses while some data may be missing.
    fn partial_warning(&self) -> Option<String>;
}

/// One aggregator's `Store` API.
#[derive(Clone)]
pub struct RemoteStore {
    address: String,
    client: StoreClient<Channel>,
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore").field("address", &self.address).finish()
    }
}

/// The read error of a failed call: limits stay limits, anything else is a
/// storage failure naming the aggregator.
fn select_error(address: &str, status: &tonic::Status) -> SelectError {
    match status.code() {
        tonic::Code::ResourceExhausted => SelectError::Limit(status.message().to_owned()),
        _ => SelectError::Storage(format!("aggregator {address}: {}", status.message())),
    }
}

impl RemoteStore {
    /// A client for the aggregator at `address` (`host:port` or a URL); it
    /// connects on first use and reconnects after failures. `timeout` bounds
    /// every call.
    pub fn new(address: &str, timeout: Duration) -> Result<Self, String> {
        let url = if address.contains("://") { address.to_owned() } else { format!("http://{address}") };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| format!("invalid aggregator address {address:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .tcp_nodelay(true);
        let client = StoreClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { address: address.to_owned(), client })
    }

    /// The address this client talks to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Which shards the aggregator holds.
    pub async fn info(&self) -> Result<pb::InfoResponse, tonic::Status> {
        Ok(self.client.clone().info(pb::InfoRequest {}).await?.into_inner())
    }

    fn series_request(tenant: &str, matchers: &[Matcher], mint: i64, maxt: i64) -> pb::SeriesRequest {
        pb::SeriesRequest {
            tenant: tenant.to_owned(),
            matchers: matchers_to_pb(matchers),
            min_time_ms: mint,
            max_time_ms: maxt,
        }
    }

    async fn select_inner(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> Result<Vec<Series>, tonic::Status> {
        let req = pb::SelectRequest {
            tenant: tenant.to_owned(),
            matchers: matchers_to_pb(matchers),
            min_time_ms: mint,
            max_time_ms: maxt,
            max_samples: if hints.max_samples == usize::MAX { 0 } else { hints.max_samples as u64 },
        };
        let mut stream = self.client.clone().select(req).await?.into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            for s in chunk?.series {
                out.push(series_from_pb(s).map_err(|e| tonic::Status::internal(e.to_string()))?);
            }
        }
        Ok(out)
    }

    async fn series_inner(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, tonic::Status> {
        let mut stream =
            self.client.clone().series(Self::series_request(tenant, matchers, mint, maxt)).await?.into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            for l in chunk?.series {
                out.push(labels_from_pb(l.labels).map_err(|e| tonic::Status::internal(e.to_string()))?);
            }
        }
        Ok(out)
    }

    async fn label_names_inner(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, tonic::Status> {
        let req = Self::series_request(tenant, matchers, mint, maxt);
        Ok(self.client.clone().label_names(req).await?.into_inner().values)
    }

    async fn label_values_inner(
        &self,
        tenant: &str,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, tonic::Status> {
        let req = pb::LabelValuesRequest {
            series: Some(Self::series_request(tenant, matchers, mint, maxt)),
            name: name.to_owned(),
        };
        Ok(self.client.clone().label_values(req).await?.into_inner().values)
    }
}

impl Select for RemoteStore {
    fn select_with<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> BoxFuture<'a, Result<Vec<Series>, SelectError>> {
        Box::pin(async move {
            self.select_inner(tenant, matchers, mint, maxt, hints).await.map_err(|s| select_error(&self.address, &s))
        })
    }

    fn series<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<Labels>, SelectError>> {
        Box::pin(async move {
            self.series_inner(tenant, matchers, mint, maxt).await.map_err(|s| select_error(&self.address, &s))
        })
    }

    fn label_names<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, SelectError>> {
        Box::pin(async move {
            self.label_names_inner(tenant, matchers, mint, maxt).await.map_err(|s| select_error(&self.address, &s))
        })
    }

    fn label_values<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, SelectError>> {
        Box::pin(async move {
            self.label_values_inner(tenant, name, matchers, mint, maxt)
                .await
                .map_err(|s| select_error(&self.address, &s))
        })
    }
}

/// What the fan-out knows about one aggregator.
#[derive(Debug, Clone, Default)]
struct Health {
    /// Whether its last call succeeded.
    up: bool,
    /// Its shards, once it answered `Info`.
    info: Option<pb::InfoResponse>,
}

/// Every aggregator as one [`Select`]: each read goes to all of them at once
/// and the answers are merged, so replicas of a shard and the overlap of a
/// head with its flushed blocks count once. Reads fail only when no
/// aggregator answers; otherwise the answer holds what the live ones have.
pub struct FanoutStore {
    stores: Vec<RemoteStore>,
    health: Mutex<Vec<Health>>,
}

impl std::fmt::Debug for FanoutStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutStore").field("stores", &self.stores).finish()
    }
}

impl FanoutStore {
    /// A fan-out over `stores`.
    pub fn new(stores: Vec<RemoteStore>) -> Arc<Self> {
        let health = Mutex::new(vec![Health { up: true, info: None }; stores.len()]);
        Arc::new(Self { stores, health })
    }

    fn mark(&self, i: usize, up: bool) {
        if let Ok(mut h) = self.health.lock()
            && let Some(h) = h.get_mut(i)
        {
            h.up = up;
        }
    }

    /// Asks every aggregator for its shards and liveness; run periodically.
    pub async fn refresh(&self) {
        let infos = futures::future::join_all(self.stores.iter().map(RemoteStore::info)).await;
        if let Ok(mut health) = self.health.lock() {
            for (h, info) in health.iter_mut().zip(infos) {
                match info {
                    Ok(info) => {
                        h.up = true;
                        h.info = Some(info);
                    }
                    Err(_) => h.up = false,
                }
            }
        }
    }

    /// Refreshes liveness every `every` until `stop` turns true.
    pub async fn run_refresher(self: Arc<Self>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.refresh().await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Asks the stores that just answered but whose shards are not known yet
    /// which shards they hold (once each), so that their later absence can
    /// be judged.
    async fn learn_shards<T>(&self, results: &[Result<T, SelectError>]) {
        let unknown: Vec<usize> = match self.health.lock() {
            Ok(h) => (0..self.stores.len()).filter(|&i| results[i].is_ok() && h[i].info.is_none()).collect(),
            Err(_) => return,
        };
        for i in unknown {
            if let Ok(info) = self.stores[i].info().await
                && let Ok(mut h) = self.health.lock()
            {
                h[i].info = Some(info);
            }
        }
    }

    /// Runs `call` on every store at once; the answers of the stores that
    /// answered, or the error when none did (or when one hit a limit).
    async fn fan_out<'a, T, F>(&'a self, call: F) -> Result<Vec<T>, SelectError>
    where
        F: Fn(&'a RemoteStore) -> BoxFuture<'a, Result<T, SelectError>>,
    {
        let results = futures::future::join_all(self.stores.iter().map(call)).await;
        self.learn_shards(&results).await;
        let mut ok = Vec::with_capacity(results.len());
        let mut last_err = None;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(v) => {
                    self.mark(i, true);
                    ok.push(v);
                }
                Err(SelectError::Limit(m)) => return Err(SelectError::Limit(m)),
                Err(e) => {
                    tracing::warn!(aggregator = self.stores[i].address(), error = %e, "aggregator read failed");
                    self.mark(i, false);
                    last_err = Some(e);
                }
            }
        }
        match (ok.is_empty(), last_err) {
            (true, Some(e)) => Err(e),
            _ => Ok(ok),
        }
    }
}

impl Completeness for FanoutStore {
    fn partial_warning(&self) -> Option<String> {
        let health = self.health.lock().ok()?;
        let down: Vec<&str> =
            health.iter().zip(&self.stores).filter(|(h, _)| !h.up).map(|(_, s)| s.address()).collect();
        if down.is_empty() {
            return None;
        }
        let shard_count = health.iter().filter_map(|h| h.info.as_ref()).map(|i| i.shard_count).max().unwrap_or(0);
        let down_unknown = health.iter().any(|h| !h.up && h.info.is_none());
        if shard_count > 0 && !down_unknown {
            // Sharded: data is complete while every shard has a live replica.
            let mut covered = vec![false; shard_count as usize];
            for h in health.iter().filter(|h| h.up) {
                for &s in h.info.as_ref().map(|i| i.shards.as_slice()).unwrap_or_default() {
                    if let Some(c) = covered.get_mut(s as usize) {
                        *c = true;
                    }
                }
            }
            let missing = covered.iter().filter(|c| !**c).count();
            if missing == 0 {
                return None;
            }
            return Some(format!(
                "data may be partial: {missing} of {shard_count} shards have no live aggregator (down: {})",
                down.join(", ")
            ));
        }
        Some(format!("data may be partial: aggregators not answering: {}", down.join(", ")))
    }
}

/// The sorted, duplicate-free union of the stores' name or value lists.
fn union_sorted(sets: Vec<Vec<String>>) -> Vec<String> {
    sets.into_iter().flatten().collect::<std::collections::BTreeSet<_>>().into_iter().collect()
}

impl Select for FanoutStore {
    fn select_with<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
    ) -> BoxFuture<'a, Result<Vec<Series>, SelectError>> {
        Box::pin(async move {
            let sets = self.fan_out(|s| s.select_with(tenant, matchers, mint, maxt, hints)).await?;
            let merged = strata_model::merge_series_sets(sets);
            let total: usize = merged.iter().map(|s| s.samples.len()).sum();
            if total > hints.max_samples {
                return Err(SelectError::too_many_samples());
            }
            Ok(merged)
        })
    }

    fn series<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<Labels>, SelectError>> {
        Box::pin(async move {
            let sets = self.fan_out(|s| s.series(tenant, matchers, mint, maxt)).await?;
            Ok(merge_label_sets(sets))
        })
    }

    fn label_names<'a>(
        &'a self,
        tenant: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, SelectError>> {
        Box::pin(async move {
            let sets = self.fan_out(|s| s.label_names(tenant, matchers, mint, maxt)).await?;
            Ok(union_sorted(sets))
        })
    }

    fn label_values<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
        matchers: &'a [Matcher],
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, SelectError>> {
        Box::pin(async move {
            let sets = self.fan_out(|s| s.label_values(tenant, name, matchers, mint, maxt)).await?;
            Ok(union_sorted(sets))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(shards: &[u32], count: u32) -> Option<pb::InfoResponse> {
        Some(pb::InfoResponse { instance: String::new(), shards: shards.to_vec(), shard_count: count })
    }

    fn fanout(health: Vec<Health>) -> Arc<FanoutStore> {
        let stores = (0..health.len())
            .map(|i| RemoteStore::new(&format!("127.0.0.1:{}", 1 + i), Duration::from_secs(1)).expect("address"))
            .collect();
        let f = FanoutStore::new(stores);
        *f.health.lock().expect("lock") = health;
        f
    }

    #[tokio::test]
    async fn partial_only_when_a_shard_has_no_live_replica() {
        // Three aggregators, four shards, R = 2.
        let h = |up, shards: &[u32]| Health { up, info: info(shards, 4) };
        let all_up = fanout(vec![h(true, &[0, 1, 2]), h(true, &[0, 2, 3]), h(true, &[1, 3])]);
        assert_eq!(all_up.partial_warning(), None);
        let one_down = fanout(vec![h(false, &[0, 1, 2]), h(true, &[0, 2, 3]), h(true, &[1, 3])]);
        assert_eq!(one_down.partial_warning(), None, "every shard still has a replica");
        let two_down = fanout(vec![h(false, &[0, 1, 2]), h(true, &[0, 2, 3]), h(false, &[1, 3])]);
        let w = two_down.partial_warning().expect("shard 1 has no replica");
        assert!(w.starts_with("data may be partial: 1 of 4 shards"), "{w}");
    }

    #[tokio::test]
    async fn unsharded_or_unknown_stores_that_are_down_make_data_partial() {
        let f = fanout(vec![Health { up: true, info: info(&[], 0) }, Health { up: false, info: info(&[], 0) }]);
        assert!(f.partial_warning().is_some());
        let f = fanout(vec![Health { up: true, info: info(&[0, 1], 2) }, Health { up: false, info: None }]);
        assert!(f.partial_warning().is_some(), "a store never reached may hold anything");
    }

    #[tokio::test]
    async fn reads_fail_when_no_aggregator_answers() {
        let f = FanoutStore::new(vec![RemoteStore::new("127.0.0.1:1", Duration::from_secs(1)).expect("address")]);
        let err = f.select("t", &[Matcher::equal("__name__", "up")], 0, 1).await.expect_err("nothing listens");
        assert!(matches!(err, SelectError::Storage(ref m) if m.contains("127.0.0.1:1")), "{err}");
        assert!(f.partial_warning().is_some());
    }
}
