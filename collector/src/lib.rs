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
//! - [`sharding`]: node-local sharding of targets over collectors (Leases).
//! - [`events`]: Kubernetes Events counted by one collector at a time (a Lease).
//!
//! [`serve`] runs the collector role on its own: the scrape loops shipping to
//! any `Append` (the JetStream ingest log in the distributed setup), the
//! targets API and the admin endpoints.

pub mod config;
pub mod discovery;
pub mod events;
pub mod exposition;
pub mod relabel;
pub mod scrape;
pub mod sharding;
pub mod status;
pub mod target;
pub mod tls;

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

/// Node-local sharding settings of `strata collector --node-name`.
#[derive(Debug, Clone)]
pub struct ShardingOptions {
    /// The node this collector runs on.
    pub node_name: String,
    /// How to reach the API server holding the collectors' Leases.
    pub access: discovery::kubernetes::config::ApiAccess,
    /// The Leases' namespace (default: the client's own namespace).
    pub namespace: Option<String>,
}

/// Settings of the Kubernetes Events watcher.
#[derive(Debug, Clone)]
pub struct EventsOptions {
    /// This collector's name in the Lease.
    pub identity: String,
    /// How to reach the API server.
    pub access: discovery::kubernetes::config::ApiAccess,
    /// The Lease's namespace (default: the client's own namespace).
    pub namespace: Option<String>,
}

/// Optional parts of the collector role.
#[derive(Debug, Clone, Default)]
pub struct CollectorOptions {
    /// Kubernetes Events counted by one collector at a time.
    pub events: Option<EventsOptions>,
    /// ServiceMonitors and PodMonitors to scrape.
    pub operator: Option<discovery::kubernetes::monitors::OperatorConfig>,
    /// Node-local sharding.
    pub sharding: Option<ShardingOptions>,
}

/// Keeps the collector's Lease (retrying the client until it can be built)
/// and publishes the live collectors.
async fn run_membership(
    s: ShardingOptions,
    clock: Arc<dyn Clock>,
    out: tokio::sync::watch::Sender<Vec<String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = loop {
        match discovery::kubernetes::client::build(&s.access).await {
            Ok(c) => break c,
            Err(e) => tracing::warn!(error = %e, "sharding: cannot build the API client"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    };
    let ns = s.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    sharding::LeaseMembership::new(client, ns, s.node_name, clock).run(out, stop).await;
}

/// Campaigns for the Events Lease and counts Events while holding it.
async fn run_events(
    e: EventsOptions,
    clock: Arc<dyn Clock>,
    metrics: events::EventMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = loop {
        match discovery::kubernetes::client::build(&e.access).await {
            Ok(c) => break c,
            Err(err) => tracing::warn!(error = %err, "kubernetes events: cannot build the API client"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    };
    let ns = e.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    events::EventsWatcher::new(client, ns, e.identity, clock, metrics).run(stop).await;
}

/// Runs `strata collector`: scrapes `jobs` (and the jobs of the selected
/// ServiceMonitors and PodMonitors; with sharding, only this collector's
/// share of the targets) into `deps.appender` and serves
/// `/api/v1/targets` and the admin endpoints on `listen` until `shutdown`
/// resolves; then the loops write their staleness markers and stop.
pub async fn serve(
    jobs: Vec<config::ScrapeJob>,
    options: CollectorOptions,
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
            clock: Arc::clone(&deps.clock),
            telemetry: deps.telemetry.clone(),
            tenant: deps.tenant,
        },
    )?;
    if let Some(op) = options.operator {
        scrapes.set_operator(op);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let membership = options.sharding.map(|s| {
        let (tx, rx) = tokio::sync::watch::channel(vec![s.node_name.clone()]);
        scrapes.set_sharding(sharding::Sharding::new(s.node_name.clone(), rx));
        tokio::spawn(run_membership(s, Arc::clone(&deps.clock), tx, stop_rx.clone()))
    });
    let router = status::status_router(scrapes.status(), status::GlobalUrlOptions::for_listen(listen))
        .merge(admin_router(deps.telemetry.clone(), readiness.clone()));
    let events_task = options.events.map(|e| {
        let metrics = events::EventMetrics::new(&deps.telemetry);
        tokio::spawn(run_events(e, Arc::clone(&deps.clock), metrics, stop_rx.clone()))
    });
    let loops = tokio::spawn(scrapes.run(stop_rx));
    tracing::info!(%listen, "collector listening");
    readiness.set_ready();
    let served = serve_http(listener, router, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = loops.await;
    if let Some(m) = membership {
        let _ = m.await;
    }
    if let Some(e) = events_task {
        let _ = e.await;
    }
    served.map_err(|e| CollectorError::Serve(e.to_string()))
}
