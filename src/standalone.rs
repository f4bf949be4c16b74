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
            match crate::config::load(&path) {
                Ok(config) => {
                    if reload.send(config.scrape_jobs).await.is_err() {
                        return;
                    }
                    tracing::info!(file = %path.display(), "configuration reloaded");
                }
                Err(e) => tracing::error!(error = %e, "reloading the configuration failed; keeping the running one"),
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
        ("storage.object-store.url", args.storage.object_store_url.clone()),
        ("query.lookback-delta", args.lookback_delta.to_string()),
        ("query.timeout", args.query_timeout.to_string()),
        ("query.max-samples", args.max_samples.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub(crate) async fn run(args: StandaloneArgs, telemetry: Telemetry, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let jobs = match &args.config_file {
        Some(path) => crate::config::load(path)?.scrape_jobs,
        None => vec![self_scrape_job(args.serve.listen)],
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
    let router = router.merge(status_router(scrapes.status(), GlobalUrlOptions::for_listen(args.serve.listen)));
    if let Some(path) = args.config_file.clone() {
        tokio::spawn(reload_on_sighup(path, scrapes.reloader(), stop_rx.clone()));
    }
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
