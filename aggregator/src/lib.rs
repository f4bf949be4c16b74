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
//!
//! [`serve`] runs the aggregator role on its own: remote write into local
//! storage, flushing, health and metrics (the distributed ingest paths come
//! with the distributed-mode work).

pub mod chunk;
pub mod config;
pub mod error;
pub mod export;
pub mod head;
pub mod http;
pub mod import;
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

/// Runs `strata aggregator`: opens local storage, flushes blocks and serves
/// remote write and the admin endpoints on `listen` until `shutdown`
/// resolves. With [`Distributed`] settings it consumes its shards of the
/// JetStream ingest log into local storage, and remote writes it receives go
/// to the log (so every replica of a shard sees them); without, remote
/// writes go straight to local storage.
pub async fn serve(
    settings: StorageSettings,
    listen: SocketAddr,
    deps: Deps,
    distributed: Option<Distributed>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AggregatorError> {
    let readiness = Readiness::new();
    let storage = LocalStorage::open(settings, deps.clone()).await?;
    storage.report_to(readiness.clone());
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| AggregatorError::Bind(listen, e))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(storage.clone().run_flusher(stop_rx.clone()));
    let sink: Arc<dyn Append> = Arc::new(storage.clone());
    let write_path: Arc<dyn Append> = match distributed {
        None => Arc::clone(&sink),
        Some(d) => {
            let js = strata_ingest::stream::connect(&d.nats).await?;
            strata_ingest::stream::ensure_stream(&js, &d.nats).await?;
            let assignment = strata_ingest::Assignment::new(d.nats.shards, d.aggregators, d.replicas);
            let shards = assignment.shards_of(d.ordinal);
            tracing::info!(ordinal = d.ordinal, shards = ?shards, "aggregator owns shards");
            let instance = format!("aggregator-{}", d.ordinal);
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
            Arc::new(strata_ingest::JetStreamAppender::new(js, d.nats, &deps.telemetry))
        }
    };
    let router =
        remote_write::remote_write_router(write_path, remote_write::RemoteWriteLimits::default(), &deps.telemetry)
            .merge(admin_router(deps.telemetry, readiness.clone()));
    tracing::info!(%listen, "aggregator listening");
    readiness.set_ready();
    serve_http(listener, router, shutdown).await.map_err(AggregatorError::Serve)?;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}
