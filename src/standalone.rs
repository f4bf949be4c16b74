//! `strata standalone`: collector, aggregator and querier in one process,
//! wired in-process through the same traits the distributed setup uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strata_aggregator::LocalStorage;
use strata_aggregator::remote_write::{RemoteWriteLimits, remote_write_router};
use strata_collector::config::ScrapeJob;
use strata_collector::scrape::{ScrapeDeps, ScrapeManager};
use strata_collector::status::{GlobalUrlOptions, status_router};
use strata_common::{Clock, Readiness, Telemetry, admin_router, serve_http};
use strata_model::{Append, DEFAULT_TENANT, Labels, Select};
use strata_querier::{QuerierDeps, QuerierSettings, api_router};

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
async fn reload_config(
    path: &std::path::Path,
    reload: &tokio::sync::mpsc::Sender<Vec<ScrapeJob>>,
) -> Result<(), String> {
    match crate::config::load(path) {
        Ok(config) => {
            reload.send(config.scrape_jobs).await.map_err(|_| "the scrape manager has stopped".to_owned())?;
            tracing::info!(file = %path.display(), "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "reloading the configuration failed; keeping the running one");
            Err(e.to_string())
        }
    }
}

/// `POST` (or `PUT`) `/-/reload`, as Prometheus serves it: 200 once the
/// config file is re-read, 500 with the reason when it is invalid, 403
/// without `--web.enable-lifecycle`.
fn reload_router(
    path: Option<std::path::PathBuf>,
    reload: Option<tokio::sync::mpsc::Sender<Vec<ScrapeJob>>>,
    enabled: bool,
) -> axum::Router {
    use axum::http::StatusCode;
    let handler = move || {
        let (path, reload) = (path.clone(), reload.clone());
        async move {
            if !enabled {
                return (StatusCode::FORBIDDEN, "Lifecycle API is not enabled.".to_owned());
            }
            let (Some(path), Some(reload)) = (path, reload) else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "no --config.file to reload".to_owned());
            };
            match reload_config(&path, &reload).await {
                Ok(()) => (StatusCode::OK, String::new()),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to reload config: {e}")),
            }
        }
    };
    axum::Router::new().route("/-/reload", axum::routing::post(handler.clone()).put(handler))
}

/// Re-reads the config file on SIGHUP, as Prometheus does: a valid file
/// replaces the scrape jobs (unchanged jobs keep running); an invalid one is
/// logged and the running configuration stays.
async fn reload_on_sighup(
    path: std::path::PathBuf,
    reload: tokio::sync::mpsc::Sender<Vec<ScrapeJob>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = reload_config(&path, &reload).await
                && e == "the scrape manager has stopped"
            {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, reload, stop.changed().await);
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
        ("query.lookback-delta", args.lookback_delta.to_string()),
        ("query.timeout", args.query_timeout.to_string()),
        ("query.max-samples", args.max_samples.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub(crate) async fn run(args: StandaloneArgs, telemetry: Telemetry, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let (jobs, operator) = match &args.config_file {
        Some(path) => {
            let c = crate::config::load(path)?;
            (c.scrape_jobs, c.operator)
        }
        None => (vec![self_scrape_job(args.serve.listen)], None),
    };
    let settings = args.storage.settings()?;
    let readiness = Readiness::new();

    let listener = tokio::net::TcpListener::bind(args.serve.listen)
        .await
        .with_context(|| format!("listening on {}", args.serve.listen))?;
    let deps = strata_aggregator::Deps { telemetry: telemetry.clone(), clock: Arc::clone(&clock) };
    let storage = LocalStorage::open(settings, deps).await.context("opening storage")?;

    let querier = QuerierDeps {
        storage: Arc::new(storage.clone()) as Arc<dyn Select>,
        telemetry: telemetry.clone(),
        clock: Arc::clone(&clock),
        settings: QuerierSettings {
            lookback_delta: args.lookback_delta.0,
            max_samples: args.max_samples,
            timeout: args.query_timeout.0,
        },
        flags: flags(&args),
    };
    let appender: Arc<dyn Append> = Arc::new(storage.clone());
    let router = api_router(querier)
        .merge(remote_write_router(Arc::clone(&appender), RemoteWriteLimits::default(), &telemetry))
        .merge(admin_router(telemetry.clone(), readiness.clone()))
        .merge(strata_aggregator::http::router(storage.clone()));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut scrapes =
        ScrapeManager::new(jobs, ScrapeDeps { appender, clock, telemetry, tenant: DEFAULT_TENANT.to_owned() })?;
    if let Some(op) = operator {
        scrapes.set_operator(op);
    }
    let router = router.merge(status_router(scrapes.status(), GlobalUrlOptions::for_listen(args.serve.listen)));
    let reloader = args.config_file.as_ref().map(|_| scrapes.reloader());
    if let (Some(path), Some(reload)) = (args.config_file.clone(), reloader.clone()) {
        tokio::spawn(reload_on_sighup(path, reload, stop_rx.clone()));
    }
    let router = router.merge(reload_router(args.config_file.clone(), reloader, args.enable_lifecycle));
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
    let _ = flush_task.await;
    server.await.context("HTTP server task")?.context("HTTP server")?;
    tracing::info!("stopped");
    Ok(())
}
