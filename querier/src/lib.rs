//! Strata querier: the Prometheus HTTP API over any [`strata_model::Select`].
//!
//! - [`api`]: the `/api/v1` router; `query`, `query_range`, `format_query`, `parse_query`.
//! - [`metadata`]: `series`, `labels`, `label/<name>/values`.
//! - [`status`]: `status/buildinfo`, `status/flags`.
//! - [`ast`]: the syntax-tree JSON of `parse_query`.
//! - [`json`]: Prometheus' exact JSON encoding of results and errors.
//! - [`params`]: times and durations as Prometheus accepts them.
//! - [`error`]: [`ApiError`], classified once into Prometheus' `errorType` and HTTP status.

pub mod api;
pub mod ast;
pub mod error;
pub mod json;
pub mod metadata;
pub mod params;
pub mod status;
#[cfg(test)]
mod tests;

pub use api::{QuerierDeps, QuerierSettings, api_router};
pub use error::ApiError;

use std::future::Future;
use std::net::SocketAddr;

use strata_common::{Readiness, admin_router, serve_http};

/// Runs `strata querier` on its own: the query API over the storage in
/// `deps`, plus the admin endpoints.
pub async fn serve(
    listen: SocketAddr,
    deps: QuerierDeps,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = api_router(deps.clone()).merge(admin_router(deps.telemetry.clone(), readiness.clone()));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "querier listening");
    readiness.set_ready();
    serve_http(listener, router, shutdown).await
}
