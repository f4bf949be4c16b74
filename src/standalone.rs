//! `strata standalone`: collector, aggregator and querier in one process,
//! wired in-process through the same traits the distributed setup uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strata_aggregator::LocalStorage;
use strata_aggregator::remote_write::{RemoteWriteLimits, remote_write_router};
use strata_collector::config::{ScrapeJob, Target};
use strata_collector::scrape::{ScrapeDeps, ScrapeManager};
use strata_common::{Clock, Readiness, Telemetry, admin_router, serve_http};
use strata_model::{Append, DEFAULT_TENANT, Labels, Select};
use strata_querier::{QuerierDeps, QuerierSettings, api_router};

use crate::StandaloneArgs;

/// The job that scrapes Strata itself when no config file is given.
fn self_scrape_job(listen: SocketAddr) -> ScrapeJob {
    let address =
        if listen.ip().is_unspecified() { format!("localhost:{}", listen.port()) } else { listen.to_string() };
    let labels = Labels::from_pairs([("job", "strata"), ("instance", address.as_str())]).unwrap_or_default();
    ScrapeJob {
        job_name: "strata".into(),
        interval: Duration::from_secs(15),
        timeout: Duration::from_secs(10),
        metrics_path: "/metrics".into(),
        scheme: "http".into(),
        params: Default::default(),
        honor_labels: false,
        honor_timestamps: true,
        sample_limit: 0,
        body_size_limit: 0,
        targets: vec![Target { address, labels }],
    }
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

    let querier = QuerierDeps {
        storage: Arc::new(storage.clone()) as Arc<dyn Select>,
        telemetry: telemetry.clone(),
        clock: Arc::clone(&clock),
        settings: QuerierSettings {
            lookback_delta: args.lookback_delta.0,
            max_samples: args.max_samples,
            timeout: args.query_timeout.0,
        },
    };
    let appender: Arc<dyn Append> = Arc::new(storage.clone());
    let router = api_router(querier)
        .merge(remote_write_router(Arc::clone(&appender), RemoteWriteLimits::default(), &telemetry))
        .merge(admin_router(telemetry.clone(), readiness.clone()));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scrapes =
        ScrapeManager::new(jobs, ScrapeDeps { appender, clock, telemetry, tenant: DEFAULT_TENANT.to_owned() })?;
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
