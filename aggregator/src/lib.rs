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

use strata_common::{Readiness, Telemetry, admin_router, serve_http};

/// What the aggregator role needs from its host process.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The process' metric registry.
    pub telemetry: Telemetry,
    /// The clock.
    pub clock: std::sync::Arc<dyn strata_common::Clock>,
}

/// Runs `strata aggregator`: opens local storage, flushes blocks and serves
/// the admin endpoints on `listen` until `shutdown` resolves.
pub async fn serve(
    settings: StorageSettings,
    listen: SocketAddr,
    deps: Deps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AggregatorError> {
    let readiness = Readiness::new();
    let storage = LocalStorage::open(settings, deps.clone()).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| AggregatorError::Bind(listen, e))?;
    tracing::info!(%listen, "aggregator listening");
    readiness.set_ready();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let flusher = tokio::spawn(storage.clone().run_flusher(stop_rx));
    let router = remote_write::remote_write_router(
        std::sync::Arc::new(storage.clone()),
        remote_write::RemoteWriteLimits::default(),
        &deps.telemetry,
    )
    .merge(admin_router(deps.telemetry, readiness));
    serve_http(listener, router, shutdown).await.map_err(AggregatorError::Serve)?;
    let _ = stop_tx.send(true);
    let _ = flusher.await;
    Ok(())
}
