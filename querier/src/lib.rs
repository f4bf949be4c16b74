//! Strata querier: the Prometheus HTTP API over any [`strata_model::Select`].
//!
//! - [`api`]: the `/api/v1` router; `query`, `query_range`, `format_query`, `parse_query`.
//! - [`metadata`]: `series`, `labels`, `label/<name>/values`.
//! - [`status`]: `status/buildinfo`, `status/flags`.
//! - [`ast`]: the syntax-tree JSON of `parse_query`.
//! - [`json`]: Prometheus' exact JSON encoding of results and errors.
//! - [`params`]: times and durations as Prometheus accepts them.
//! - [`remote`]: reads from aggregators over gRPC, fanned out and merged.
//! - [`error`]: [`ApiError`], classified once into Prometheus' `errorType` and HTTP status.

pub mod api;
pub mod ast;
pub mod error;
pub mod json;
pub mod metadata;
pub mod params;
pub mod remote;
pub mod status;
#[cfg(test)]
mod tests;

pub use api::{QuerierDeps, QuerierSettings, api_router};
pub use error::ApiError;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strata_common::{Clock, Readiness, Telemetry, admin_router, serve_http};

/// The settings of `strata querier`.
#[derive(Debug, Clone)]
pub struct QuerierConfig {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The aggregators' addresses (`host:port`, their gRPC store API).
    pub aggregators: Vec<String>,
    /// Query limits.
    pub settings: QuerierSettings,
    /// The flags the process was started with (`/api/v1/status/flags`).
    pub flags: std::collections::BTreeMap<String, String>,
}

/// How often the querier asks aggregators which shards they hold.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Runs `strata querier`: the Prometheus HTTP API over every aggregator's
/// heads and blocks (fanned out over gRPC, replicas deduplicated), plus the
/// admin endpoints, until `shutdown` resolves.
pub async fn serve(
    config: QuerierConfig,
    telemetry: Telemetry,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let stores = config
        .aggregators
        .iter()
        .map(|a| remote::RemoteStore::new(a, config.settings.timeout))
        .collect::<Result<Vec<_>, String>>()
        .map_err(ApiError::BadData)?;
    let fanout = remote::FanoutStore::new(stores);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let refresher = tokio::spawn(Arc::clone(&fanout).run_refresher(REFRESH_EVERY, stop_rx));
    let deps = QuerierDeps {
        storage: Arc::clone(&fanout) as Arc<dyn strata_model::Select>,
        telemetry: telemetry.clone(),
        clock,
        settings: config.settings,
        flags: config.flags,
        completeness: Some(fanout as Arc<dyn remote::Completeness>),
    };
    let readiness = Readiness::new();
    let router = api_router(deps).merge(admin_router(telemetry, readiness.clone()));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ApiError::Internal(format!("listening on {}: {e}", config.listen)))?;
    tracing::info!(listen = %config.listen, aggregators = ?config.aggregators, "querier listening");
    readiness.set_ready();
    let served = serve_http(listener, router, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = refresher.await;
    served.map_err(|e| ApiError::Internal(format!("HTTP server: {e}")))
}
