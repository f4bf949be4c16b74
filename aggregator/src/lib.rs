//! Strata aggregator: the ingest log, the in-memory head and block flushing.
//!
//! - [`wal`]: the local ingest log (the write-ahead log of standalone mode).
//! - [`head`]: recent samples in memory with an inverted index.
//! - [`chunk`]: the head's compressed sample chunks.
//! - [`storage`]: [`LocalStorage`], which puts them together: an
//!   [`strata_model::Append`] that acknowledges after fsync, a
//!   [`strata_model::Select`] over head and blocks, and the flusher that cuts
//!   the head into Parquet blocks.
//! - [`config`]: the storage settings and their validation.
//! - [`import`] and [`export`]: OpenMetrics text with timestamps into blocks
//!   and out of storage; [`http`] serves both.
//! - [`synth`]: a deterministic node-exporter style dataset for measurements.
//!
//! - [`remote_write`]: the Prometheus remote write receiver (`/api/v1/write`).
//! - [`limits`]: per-tenant ingest limits (active series, rate, labels), HTTP 429.
//! - [`ha`]: HA-pair deduplication on `cluster`/`__replica__` (Mimir's HA tracker).
//! - [`grpc`]: the `strata.store.v1.Store` service queriers read from.
//!
//! [`serve`] runs the aggregator role on its own: remote write, the JetStream
//! shard consumers, flushing, the gRPC store API, health and metrics, all on
//! one port.

pub mod chunk;
pub mod config;
pub mod error;
pub mod export;
pub mod grpc;
pub mod ha;
pub mod head;
pub mod http;
pub mod import;
pub mod limits;
mod metrics;
pub mod remote_write;
pub mod storage;
pub mod synth;
pub mod wal;

pub use config::{StorageConfig, StorageSettings};
pub use error::AggregatorError;
pub use storage::LocalStorage;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use strata_model::Append;

use strata_common::{Readiness, Telemetry, admin_router, serve_http};

/// What the aggregator role needs from its host process.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The process' metric registry.
    pub telemetry: Telemetry,
    /// The clock.
    pub clock: std::sync::Arc<dyn strata_common::Clock>,
}

/// The distributed part of an aggregator's settings: where the ingest log
/// is and which shards this instance keeps a head for.
#[derive(Debug, Clone)]
pub struct Distributed {
    /// The JetStream ingest log.
    pub nats: strata_ingest::NatsSettings,
    /// This instance's ordinal (`0..aggregators`), as in a StatefulSet.
    pub ordinal: u32,
    /// Number of aggregators.
    pub aggregators: u32,
    /// Replication factor: heads kept per shard.
    pub replicas: u32,
}

/// The JetStream KV bucket holding HA-pair elections.
pub const HA_BUCKET: &str = "strata-ha";

/// The settings of `strata aggregator`.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Local storage (ingest log, head, blocks).
    pub storage: StorageSettings,
    /// Where HTTP (remote write, admin) and gRPC (the store API) listen.
    pub listen: SocketAddr,
    /// The JetStream ingest log and this instance's shards; `None` runs on
    /// the local ingest log alone.
    pub distributed: Option<Distributed>,
    /// Per-tenant ingest limits on remote write.
    pub limits: limits::Limits,
    /// HA-pair deduplication on remote write; elections are kept in a
    /// JetStream KV bucket when distributed, in memory otherwise.
    pub ha: Option<ha::HaConfig>,
}

/// Runs `strata aggregator`: opens local storage, flushes blocks and serves
/// remote write and the admin endpoints on `listen` until `shutdown`
/// resolves. With [`Distributed`] settings it consumes its shards of the
/// JetStream ingest log into local storage, and remote writes it receives go
/// to the log (so every replica of a shard sees them); without, remote
/// writes go straight to local storage.
pub async fn serve(
    config: AggregatorConfig,
    deps: Deps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AggregatorError> {
    let AggregatorConfig { storage: settings, listen, distributed, limits, ha } = config;
    let readiness = Readiness::new();
    let storage = LocalStorage::open(settings, deps.clone()).await?;
    storage.report_to(readiness.clone());
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| AggregatorError::Bind(listen, e))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(storage.clone().run_flusher(stop_rx.clone()));
    let sink: Arc<dyn Append> = Arc::new(storage.clone());
    let mut info = grpc::StoreInfo { instance: "aggregator".to_owned(), ..grpc::StoreInfo::default() };
    let mut ha_store: Arc<dyn ha::HaStore> = Arc::new(ha::MemoryHaStore::default());
    let write_path: Arc<dyn Append> = match distributed {
        None => Arc::clone(&sink),
        Some(d) => {
            let js = strata_ingest::stream::connect(&d.nats).await?;
            strata_ingest::stream::ensure_stream(&js, &d.nats).await?;
            let assignment = strata_ingest::Assignment::new(d.nats.shards, d.aggregators, d.replicas);
            let shards = assignment.shards_of(d.ordinal);
            tracing::info!(ordinal = d.ordinal, shards = ?shards, "aggregator owns shards");
            let instance = format!("aggregator-{}", d.ordinal);
            info = grpc::StoreInfo { instance: instance.clone(), shards: shards.clone(), shard_count: d.nats.shards };
            let consumers = {
                let (js, nats, sink, stop) = (js.clone(), d.nats.clone(), Arc::clone(&sink), stop_rx.clone());
                async move {
                    if let Err(e) =
                        strata_ingest::consumer::run_shards(&js, &nats, &instance, &shards, sink, stop).await
                    {
                        tracing::error!(error = %e, "consuming the ingest log failed");
                    }
                }
            };
            tasks.spawn(consumers);
            if ha.is_some() {
                ha_store = Arc::new(strata_ingest::kv::Bucket::open(&js, HA_BUCKET, d.nats.replicas).await?);
            }
            Arc::new(strata_ingest::JetStreamAppender::new(js, d.nats, &deps.telemetry))
        }
    };
    let chain = remote_write::ReceiverChain { ha: ha.map(|c| (c, ha_store)), limits };
    let write_path = chain.wrap(write_path, &deps.clock, &deps.telemetry);
    let router =
        remote_write::remote_write_router(write_path, remote_write::RemoteWriteLimits::default(), &deps.telemetry)
            .merge(admin_router(deps.telemetry, readiness.clone()))
            .merge(grpc::StoreService::new(Arc::new(storage.clone()), info).into_router());
    tracing::info!(%listen, "aggregator listening");
    readiness.set_ready();
    serve_http(listener, router, shutdown).await.map_err(AggregatorError::Serve)?;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}
