//! Strata collector: finds targets, scrapes them and ships the samples.
//!
//! - [`config`]: Prometheus' `global` and `scrape_configs`, validated.
//! - [`discovery`]: where targets come from (static lists, files, the
//!   Kubernetes API, ServiceMonitors and PodMonitors).
//! - [`target`]: discovered labels → relabeled scrape targets.
//! - [`status`]: target health, served as `/api/v1/targets`.
//! - [`exposition`]: the text and OpenMetrics page parser.
//! - [`relabel`]: `relabel_configs` and `metric_relabel_configs`, as Prometheus.
//! - [`scrape`]: one loop per target; samples go to an [`strata_model::Append`].
//!
//! [`serve`] runs the collector role on its own: the scrape loops shipping to
//! any `Append` (the JetStream ingest log in the distributed setup), the
//! targets API and the admin endpoints.

pub mod config;
pub mod discovery;
pub mod exposition;
pub mod relabel;
pub mod scrape;
pub mod status;
pub mod target;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use strata_common::{Clock, Readiness, Telemetry, admin_router, serve_http};
use strata_model::Append;

pub use scrape::CollectorError;

/// What the collector role needs from its host process.
#[derive(Clone)]
pub struct CollectorDeps {
    /// Where scraped batches go.
    pub appender: Arc<dyn Append>,
    /// The clock stamping scrapes.
    pub clock: Arc<dyn Clock>,
    /// The metric registry.
    pub telemetry: Telemetry,
    /// The tenant the samples belong to.
    pub tenant: String,
}

/// Runs `strata collector`: scrapes `jobs` (and, with `operator`, the jobs of
/// the selected ServiceMonitors and PodMonitors) into `deps.appender` and serves
/// `/api/v1/targets` and the admin endpoints on `listen` until `shutdown`
/// resolves; then the loops write their staleness markers and stop.
pub async fn serve(
    jobs: Vec<config::ScrapeJob>,
    operator: Option<discovery::kubernetes::monitors::OperatorConfig>,
    listen: SocketAddr,
    deps: CollectorDeps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CollectorError> {
    let readiness = Readiness::new();
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| CollectorError::Serve(e.to_string()))?;
    let mut scrapes = scrape::ScrapeManager::new(
        jobs,
        scrape::ScrapeDeps {
            appender: deps.appender,
            clock: deps.clock,
            telemetry: deps.telemetry.clone(),
            tenant: deps.tenant,
        },
    )?;
    if let Some(op) = operator {
        scrapes.set_operator(op);
    }
    let router = status::status_router(scrapes.status(), status::GlobalUrlOptions::for_listen(listen))
        .merge(admin_router(deps.telemetry, readiness.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loops = tokio::spawn(scrapes.run(stop_rx));
    tracing::info!(%listen, "collector listening");
    readiness.set_ready();
    let served = serve_http(listener, router, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = loops.await;
    served.map_err(|e| CollectorError::Serve(e.to_string()))
}
