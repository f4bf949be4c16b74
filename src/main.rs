//! `strata`: one binary, every role. This file only parses flags and wires
//! the roles' `serve` functions together; the work is in the role crates.

mod config;
mod standalone;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use strata_common::{PromDuration, Readiness, SystemClock, Telemetry};

/// Strata: a distributed, Prometheus-compatible metrics pipeline.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    role: Role,
    /// Log level filter (`error`, `warn`, `info`, `debug`, or a tracing filter).
    #[arg(long = "log.level", global = true, default_value = "info", env = "STRATA_LOG")]
    log_level: String,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Every role in one process on local disk: scrape, store, query.
    Standalone(StandaloneArgs),
    /// Discover and scrape targets; ship samples to the NATS JetStream ingest log.
    Collector(CollectorArgs),
    /// Consume shards of the ingest log (or take remote write) into a head and blocks.
    Aggregator(AggregatorArgs),
    /// The Prometheus HTTP API (health endpoints only for now).
    Querier(ServeArgs),
    /// Write OpenMetrics text with timestamps (samples of any age) into blocks.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
struct ImportArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Tenant the samples belong to.
    #[arg(long = "tenant", default_value = strata_model::DEFAULT_TENANT)]
    tenant: String,
    /// OpenMetrics file with a timestamp on every sample (`-` for stdin).
    file: PathBuf,
}

/// Where the distributed ingest log is.
#[derive(Debug, Args)]
struct NatsArgs {
    /// NATS server with JetStream, e.g. `nats://127.0.0.1:4222`.
    #[arg(long = "nats.url")]
    url: Option<String>,
    /// Logical shards of the ingest stream; the same on every process.
    #[arg(long = "nats.shards", default_value_t = 64)]
    shards: u32,
}

impl NatsArgs {
    fn settings(&self) -> anyhow::Result<Option<strata_ingest::NatsSettings>> {
        let Some(url) = &self.url else { return Ok(None) };
        let mut c = strata_ingest::NatsConfig::with_url(url.clone());
        c.shards = self.shards;
        c.validate().map(Some).map_err(|errs| anyhow::anyhow!("invalid NATS flags:\n  {}", errs.join("\n  ")))
    }
}

#[derive(Debug, Args)]
struct CollectorArgs {
    /// Prometheus configuration file (`global`, `scrape_configs`).
    #[arg(long = "config.file")]
    config_file: PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    nats: NatsArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to serve HTTP on.
    #[arg(long = "web.listen-address", default_value = "0.0.0.0:9090")]
    listen: SocketAddr,
}

#[derive(Debug, Args)]
struct StorageArgs {
    /// Where the ingest log and blocks live.
    #[arg(long = "storage.path", default_value = "./data")]
    path: PathBuf,
    /// Time range of a block cut from the head.
    #[arg(long = "storage.tsdb.min-block-duration", default_value = "2h", hide = true)]
    block_duration: PromDuration,
    /// How often the head is checked for a range to flush.
    #[arg(long = "storage.flush-interval", default_value = "1m", hide = true)]
    flush_interval: PromDuration,
    /// Time range blocks are compacted into (at least the block duration).
    #[arg(long = "storage.tsdb.max-block-duration", default_value = "24h", hide = true)]
    compaction_range: PromDuration,
    /// Delete blocks whose newest sample is older than this (`0`: keep forever).
    #[arg(long = "storage.tsdb.retention.time", default_value = "0")]
    retention: PromDuration,
    /// Keep blocks in an S3-compatible bucket: `s3://bucket[/prefix]` (default: `<storage.path>/blocks`).
    /// The ingest log stays under `--storage.path`. Credentials default to the `AWS_*` environment variables.
    #[arg(long = "storage.object-store.url", default_value = "")]
    object_store_url: String,
    /// S3 endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000` (default AWS or `AWS_ENDPOINT_URL`).
    #[arg(long = "storage.object-store.endpoint")]
    object_store_endpoint: Option<String>,
    /// S3 region (default `AWS_REGION`, else `us-east-1`).
    #[arg(long = "storage.object-store.region")]
    object_store_region: Option<String>,
    /// S3 access key id (default `AWS_ACCESS_KEY_ID`).
    #[arg(long = "storage.object-store.access-key-id")]
    object_store_access_key_id: Option<String>,
    /// S3 secret access key (default `AWS_SECRET_ACCESS_KEY`).
    #[arg(long = "storage.object-store.secret-access-key")]
    object_store_secret_access_key: Option<String>,
    /// Allow a plain `http://` endpoint.
    #[arg(long = "storage.object-store.allow-http")]
    object_store_allow_http: bool,
    /// Virtual-hosted-style requests (`bucket.endpoint`) instead of path style.
    #[arg(long = "storage.object-store.virtual-hosted-style")]
    object_store_virtual_hosted_style: bool,
}

impl StorageArgs {
    fn settings(&self) -> anyhow::Result<strata_aggregator::StorageSettings> {
        let mut c = strata_aggregator::StorageConfig::with_path(&self.path);
        c.block_duration = self.block_duration;
        c.flush_interval = self.flush_interval;
        c.compaction_range = PromDuration(self.compaction_range.0.max(self.block_duration.0));
        c.retention = self.retention;
        c.object_store = strata_aggregator::config::ObjectStoreConfig {
            url: self.object_store_url.clone(),
            endpoint: self.object_store_endpoint.clone(),
            region: self.object_store_region.clone(),
            access_key_id: self.object_store_access_key_id.clone(),
            secret_access_key: self.object_store_secret_access_key.clone(),
            allow_http: self.object_store_allow_http,
            virtual_hosted_style: self.object_store_virtual_hosted_style,
        };
        c.validate().map_err(|errs| anyhow::anyhow!("invalid storage flags:\n  {}", errs.join("\n  ")))
    }
}

#[derive(Debug, Args)]
struct AggregatorArgs {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    nats: NatsArgs,
    /// This aggregator's ordinal (`0..count`), as a StatefulSet names its pods.
    #[arg(long = "aggregator.ordinal", default_value_t = 0)]
    ordinal: u32,
    /// Number of aggregators.
    #[arg(long = "aggregator.count", default_value_t = 1)]
    aggregators: u32,
    /// Heads kept per shard (replication factor).
    #[arg(long = "aggregator.replication-factor", default_value_t = 2)]
    replicas: u32,
}

#[derive(Debug, Args)]
struct StandaloneArgs {
    /// Prometheus configuration file (`global`, `scrape_configs`).
    #[arg(long = "config.file")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    storage: StorageArgs,
    /// How far back an instant selector looks for a sample.
    #[arg(long = "query.lookback-delta", default_value = "5m")]
    lookback_delta: PromDuration,
    /// Longest a query may run.
    #[arg(long = "query.timeout", default_value = "2m")]
    query_timeout: PromDuration,
    /// Most samples a query may hold in memory.
    #[arg(long = "query.max-samples", default_value_t = 50_000_000)]
    max_samples: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strata: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.role)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn run(role: Role) -> anyhow::Result<()> {
    let telemetry = Telemetry::new();
    let clock: Arc<dyn strata_common::Clock> = Arc::new(SystemClock);
    match role {
        Role::Standalone(args) => standalone::run(args, telemetry, clock).await,
        Role::Aggregator(args) => {
            let distributed = args.nats.settings()?.map(|nats| strata_aggregator::Distributed {
                nats,
                ordinal: args.ordinal,
                aggregators: args.aggregators,
                replicas: args.replicas,
            });
            anyhow::ensure!(
                args.ordinal < args.aggregators,
                "--aggregator.ordinal {} must be below --aggregator.count {}",
                args.ordinal,
                args.aggregators
            );
            let deps = strata_aggregator::Deps { telemetry, clock };
            strata_aggregator::serve(args.storage.settings()?, args.serve.listen, deps, distributed, shutdown_signal())
                .await?;
            Ok(())
        }
        Role::Import(args) => import(args).await,
        Role::Collector(args) => {
            let jobs = config::load(&args.config_file)?.scrape_jobs;
            let nats = anyhow::Context::context(
                args.nats.settings()?,
                "the collector needs --nats.url (the ingest log it ships to)",
            )?;
            let js = strata_ingest::stream::connect(&nats).await?;
            strata_ingest::stream::ensure_stream(&js, &nats).await?;
            let appender = Arc::new(strata_ingest::JetStreamAppender::new(js, nats, &telemetry));
            let deps = strata_collector::CollectorDeps {
                appender,
                clock,
                telemetry,
                tenant: strata_model::DEFAULT_TENANT.to_owned(),
            };
            strata_collector::serve(jobs, args.serve.listen, deps, shutdown_signal()).await?;
            Ok(())
        }
        Role::Querier(args) => {
            // The querier runs on its own once the distributed issue lands; until
            // then it starts and serves its admin endpoints.
            let readiness = Readiness::new();
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            tracing::info!(listen = %args.listen, "listening (admin endpoints only)");
            readiness.set_ready();
            strata_common::serve_http(listener, strata_common::admin_router(telemetry, readiness), shutdown_signal())
                .await?;
            Ok(())
        }
    }
}

/// `strata import`: parses the whole file first, a piece at a time (a
/// malformed file writes nothing), then writes one block per block range;
/// progress on stderr.
async fn import(args: ImportArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use strata_aggregator::import::Progress;
    let settings = args.storage.settings()?;
    let input: Box<dyn std::io::BufRead + Send> = if args.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
    } else {
        let f = std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, f))
    };
    let blocks = strata_aggregator::storage::open_block_store(&settings).await?;
    let started = std::time::Instant::now();
    let mut progress = |p: Progress| match p {
        Progress::Parsed { samples } => eprintln!("parsed {samples} samples"),
        Progress::Block { done, total, meta } => eprintln!(
            "block {done}/{total} written: {} ({} series, {} samples, {} bytes)",
            meta.ulid,
            meta.num_series,
            meta.num_samples,
            meta.samples_bytes + meta.series_bytes
        ),
    };
    let what = || format!("importing {}", args.file.display());
    let parsed = strata_aggregator::import::parse_reader(input, &mut progress).with_context(what)?;
    let summary =
        strata_aggregator::import::write(&blocks, &args.tenant, parsed, settings.block_duration_ms, &mut progress)
            .await
            .with_context(what)?;
    eprintln!("{summary} in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
