//! `strata standalone`: collector, aggregator and querier in one process,
//! wired in-process through the same traits the distributed setup uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strata_aggregator::LocalStorage;
use strata_aggregator::ha::MemoryHaStore;
use strata_aggregator::remote_write::{ReceiverChain, RemoteWriteLimits, remote_write_router};
use strata_collector::config::ScrapeJob;
use strata_collector::scrape::{ScrapeDeps, ScrapeManager};
use strata_collector::status::{GlobalUrlOptions, status_router};
use strata_common::{Clock, Readiness, Telemetry, admin_router, serve_http};
use strata_model::{Append, DEFAULT_TENANT, Labels, Select};
use strata_querier::{QuerierDeps, api_router};
use strata_ruler::{Ruler, RulerConfig, RulerDeps, RulerSettings};

use crate::StandaloneArgs;

/// The job that scrapes Strata itself when no config file is given.
fn self_scrape_job(listen: SocketAddr) -> ScrapeJob {
    let address =
        if listen.ip().is_unspecified() { format!("localhost:{}", listen.port()) } else { listen.to_string() };
    ScrapeJob::new("strata", Duration::from_secs(15), Duration::from_secs(10))
        .with_static_targets([address.as_str()], Labels::empty())
}

/// How `/api/v1/targets` turns loopback scrape URLs into `globalUrl`: this
/// machine's host name, as Prometheus' default external URL has it.
/// Re-reads the config file: a valid file replaces the scrape jobs
/// (unchanged jobs keep running); an invalid one leaves the running
/// configuration and is returned as the error.
/// What a reload re-reads: the config file, into the scrape manager and the ruler.
#[derive(Clone)]
struct Reloader {
    path: std::path::PathBuf,
    scrapes: tokio::sync::mpsc::Sender<Vec<ScrapeJob>>,
    ruler: Arc<Ruler>,
}

/// Why a reload did not apply.
#[derive(Debug, PartialEq)]
enum ReloadError {
    /// The file is invalid; the running configuration stays.
    Invalid(String),
    /// The process is shutting down.
    Stopped,
}

impl Reloader {
    /// Re-reads the config file: a valid file replaces the scrape jobs
    /// (unchanged jobs keep running) and the rule groups; an invalid one is
    /// logged and the running configuration stays.
    async fn reload(&self) -> Result<(), ReloadError> {
        match crate::config::load(&self.path) {
            Ok(config) => {
                self.scrapes.send(config.scrape_jobs).await.map_err(|_| ReloadError::Stopped)?;
                if let Err(e) = self.ruler.reload(config.ruler).await {
                    tracing::error!(error = %e, "reloading rule groups failed");
                    return Err(ReloadError::Invalid(e.to_string()));
                }
                tracing::info!(file = %self.path.display(), "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "reloading the configuration failed; keeping the running one");
                Err(ReloadError::Invalid(e.to_string()))
            }
        }
    }
}

/// `POST` (or `PUT`) `/-/reload`, as Prometheus serves it: 200 once the
/// config file is re-read, 500 with the reason when it is invalid, 403
/// without `--web.enable-lifecycle`.
fn reload_router(reloader: Option<Reloader>, enabled: bool) -> axum::Router {
    use axum::http::StatusCode;
    let handler = move || {
        let reloader = reloader.clone();
        async move {
            if !enabled {
                return (StatusCode::FORBIDDEN, "Lifecycle API is not enabled.".to_owned());
            }
            let Some(reloader) = reloader else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "no --config.file to reload".to_owned());
            };
            match reloader.reload().await {
                Ok(()) => (StatusCode::OK, String::new()),
                Err(ReloadError::Invalid(e)) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to reload config: {e}"))
                }
                Err(ReloadError::Stopped) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned()),
            }
        }
    };
    axum::Router::new().route("/-/reload", axum::routing::post(handler.clone()).put(handler))
}

/// Re-reads the config file on SIGHUP, as Prometheus does.
async fn reload_on_sighup(reloader: Reloader, mut stop: tokio::sync::watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = stop.changed() => return,
            }
            if reloader.reload().await == Err(ReloadError::Stopped) {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (reloader, stop.changed().await);
    }
}

/// The flags of `strata standalone`, named as on the command line, for
/// `/api/v1/status/flags`.
fn flags(args: &StandaloneArgs) -> std::collections::BTreeMap<String, String> {
    let config = args.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    [
        ("config.file", config),
        ("web.listen-address", args.serve.listen.to_string()),
        ("storage.path", args.storage.path.display().to_string()),
        ("storage.tsdb.min-block-duration", args.storage.block_duration.to_string()),
        ("storage.flush-interval", args.storage.flush_interval.to_string()),
        ("rules.alert.for-outage-tolerance", args.rules.outage_tolerance.to_string()),
        ("rules.alert.for-grace-period", args.rules.grace_period.to_string()),
        ("rules.alert.resend-delay", args.rules.resend_delay.to_string()),
        ("alertmanager.notification-queue-capacity", args.rules.queue_capacity.to_string()),
        ("web.external-url", external_url(args)),
        ("storage.object-store.url", args.storage.object_store_url.clone()),
    ]
    .into_iter()
    .chain(args.query.flags())
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `--web.external-url`, or `http://<hostname>:<port>` as Prometheus defaults it.
fn external_url(args: &StandaloneArgs) -> String {
    if let Some(u) = &args.rules.external_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("http://{host}:{}", args.serve.listen.port())
}

pub(crate) async fn run(args: StandaloneArgs, telemetry: Telemetry, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let (jobs, ruler_config, operator) = match &args.config_file {
        Some(path) => {
            let c = crate::config::load(path)?;
            (c.scrape_jobs, c.ruler, c.operator)
        }
        None => (
            vec![self_scrape_job(args.serve.listen)],
            RulerConfig { evaluation_interval: Duration::from_secs(60), ..RulerConfig::default() },
            None,
        ),
    };
    let settings = args.storage.settings()?;
    let readiness = Readiness::new();

    let listener = tokio::net::TcpListener::bind(args.serve.listen)
        .await
        .with_context(|| format!("listening on {}", args.serve.listen))?;
    let deps = strata_aggregator::Deps { telemetry: telemetry.clone(), clock: Arc::clone(&clock) };
    let storage = LocalStorage::open(settings, deps).await.context("opening storage")?;
    storage.report_to(readiness.clone());

    let querier = QuerierDeps {
        storage: Arc::new(storage.clone()) as Arc<dyn Select>,
        telemetry: telemetry.clone(),
        clock: Arc::clone(&clock),
        settings: args.query.settings(),
        flags: flags(&args),
        completeness: None,
    };
    let appender: Arc<dyn Append> = Arc::new(storage.clone());
    let ruler = Ruler::new(
        RulerDeps {
            select: Arc::new(storage.clone()) as Arc<dyn Select>,
            append: Arc::clone(&appender),
            engine: strata_promql::Engine::new(strata_promql::EngineOptions {
                lookback_delta_ms: i64::try_from(args.query.lookback_delta.0.as_millis()).unwrap_or(i64::MAX),
                max_samples: args.query.max_samples,
                timeout: args.query.query_timeout.0,
            }),
            telemetry: telemetry.clone(),
            clock: Arc::clone(&clock),
            store: strata_ruler::store::local_store(&args.storage.path.join("rules"))?,
        },
        RulerSettings {
            outage_tolerance: args.rules.outage_tolerance.0,
            for_grace_period: args.rules.grace_period.0,
            resend_delay: args.rules.resend_delay.0,
            external_url: external_url(&args),
            queue_capacity: args.rules.queue_capacity,
            default_tenant: DEFAULT_TENANT.to_owned(),
        },
        ruler_config,
    );
    let chain = ReceiverChain {
        ha: args
            .ha
            .config()?
            .map(|c| (c, Arc::new(MemoryHaStore::default()) as Arc<dyn strata_aggregator::ha::HaStore>)),
        limits: args.limits.limits()?,
    };
    let remote_write = chain.wrap(Arc::clone(&appender), &clock, &telemetry);
    let router = api_router(querier)
        .merge(strata_ruler::api::router(Arc::clone(&ruler)))
        .merge(remote_write_router(remote_write, RemoteWriteLimits::default(), &telemetry))
        .merge(admin_router(telemetry.clone(), readiness.clone()))
        .merge(strata_aggregator::http::router(storage.clone()));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut scrapes =
        ScrapeManager::new(jobs, ScrapeDeps { appender, clock, telemetry, tenant: DEFAULT_TENANT.to_owned() })?;
    if let Some(op) = operator {
        scrapes.set_operator(op);
    }
    let router = router.merge(status_router(scrapes.status(), GlobalUrlOptions::for_listen(args.serve.listen)));
    let reloader =
        args.config_file.clone().map(|path| Reloader { path, scrapes: scrapes.reloader(), ruler: Arc::clone(&ruler) });
    if let Some(r) = reloader.clone() {
        tokio::spawn(reload_on_sighup(r, stop_rx.clone()));
    }
    let router = router.merge(reload_router(reloader, args.enable_lifecycle));
    let ruler_task = tokio::spawn(Arc::clone(&ruler).run(stop_rx.clone()));
    let scrape_task = tokio::spawn(scrapes.run(stop_rx.clone()));
    let flush_task = tokio::spawn(storage.clone().run_flusher(stop_rx));

    tracing::info!(listen = %args.serve.listen, "Strata standalone is ready");
    readiness.set_ready();
    let mut http_stop = stop_tx.subscribe();
    let server = tokio::spawn(serve_http(listener, router, async move {
        let _ = http_stop.changed().await;
    }));

    crate::shutdown_signal().await;
    let _ = stop_tx.send(true);
    // Scrape loops write their staleness markers before the server goes.
    let _ = scrape_task.await;
    let _ = ruler_task.await;
    let _ = flush_task.await;
    server.await.context("HTTP server task")?.context("HTTP server")?;
    tracing::info!("stopped");
    Ok(())
}
