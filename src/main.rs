//! `strata`: one binary, every role. This file only parses flags and wires
//! the roles' `serve` functions together; the work is in the role crates.

mod config;
mod standalone;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use strata_common::{PromDuration, SystemClock, Telemetry};

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
    /// The Prometheus HTTP API over the aggregators' heads and blocks.
    Querier(QuerierArgs),
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
    /// Directory of the on-disk buffer that holds samples while the ingest
    /// log is unreachable.
    #[arg(long = "buffer.path", default_value = "./data/collector-buffer")]
    buffer_path: PathBuf,
    /// Most bytes the buffer holds; past it the oldest samples are dropped (counted).
    #[arg(long = "buffer.max-bytes", default_value_t = 1 << 30)]
    buffer_max_bytes: u64,
    /// DaemonSet mode: scrape only the targets on this node (and a share of
    /// those with no node, spread over the live collectors).
    #[arg(long = "node-name", env = "NODE_NAME")]
    node_name: Option<String>,
    /// Namespace of the collectors' Leases (default: the own namespace).
    #[arg(long = "sharding.namespace")]
    sharding_namespace: Option<String>,
    /// Kubeconfig for the Leases (default: the in-cluster service account).
    #[arg(long = "sharding.kubeconfig")]
    sharding_kubeconfig: Option<String>,
    /// Count Kubernetes Events as `strata_kubernetes_events_total` (one
    /// collector at a time, through a Lease in `--sharding.namespace`).
    #[arg(long = "kubernetes.events")]
    kubernetes_events: bool,
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
    #[command(flatten)]
    limits: LimitsArgs,
    #[command(flatten)]
    ha: HaArgs,
}

/// Per-tenant ingest limits (defaults for every tenant; 0 = unlimited),
/// named as Mimir's.
#[derive(Debug, Args)]
struct LimitsArgs {
    /// Most active series per tenant.
    #[arg(long = "limits.max-active-series", default_value_t = 0)]
    max_active_series: usize,
    /// Samples per second per tenant.
    #[arg(long = "limits.ingestion-rate", default_value_t = 0.0)]
    ingestion_rate: f64,
    /// Samples a tenant may send at once above the rate (0: one second's worth).
    #[arg(long = "limits.ingestion-burst-size", default_value_t = 0)]
    ingestion_burst_size: usize,
    /// Most label names per series.
    #[arg(long = "limits.max-label-names-per-series", default_value_t = 30)]
    max_label_names_per_series: usize,
    /// YAML file of per-tenant overrides (`overrides: {tenant: {max_active_series: N, ...}}`).
    #[arg(long = "limits.overrides-file")]
    overrides_file: Option<PathBuf>,
}

/// HA-pair deduplication of remote write (Mimir's HA tracker).
#[derive(Debug, Args)]
struct HaArgs {
    /// Keep one replica's samples per `cluster` and drop the other replicas'.
    #[arg(long = "ha-tracker.enable", default_value_t = false)]
    enable: bool,
    /// The label naming an HA group.
    #[arg(long = "ha-tracker.cluster-label", default_value = "cluster")]
    cluster_label: String,
    /// The label naming a replica within the group (removed from stored series).
    #[arg(long = "ha-tracker.replica-label", default_value = "__replica__")]
    replica_label: String,
    /// How often the elected replica's last sample time is recorded.
    #[arg(long = "ha-tracker.update-timeout", default_value = "15s")]
    update_timeout: PromDuration,
    /// Silence after which another replica takes over.
    #[arg(long = "ha-tracker.failover-timeout", default_value = "30s")]
    failover_timeout: PromDuration,
}

impl HaArgs {
    fn config(&self) -> anyhow::Result<Option<strata_aggregator::ha::HaConfig>> {
        if !self.enable {
            return Ok(None);
        }
        let ms = |d: &PromDuration| i64::try_from(d.0.as_millis()).unwrap_or(i64::MAX);
        anyhow::ensure!(
            ms(&self.failover_timeout) > ms(&self.update_timeout),
            "--ha-tracker.failover-timeout must be longer than --ha-tracker.update-timeout"
        );
        Ok(Some(strata_aggregator::ha::HaConfig {
            cluster_label: self.cluster_label.clone(),
            replica_label: self.replica_label.clone(),
            update_timeout_ms: ms(&self.update_timeout),
            failover_timeout_ms: ms(&self.failover_timeout),
        }))
    }
}

impl LimitsArgs {
    fn limits(&self) -> anyhow::Result<strata_aggregator::limits::Limits> {
        anyhow::ensure!(
            self.ingestion_rate.is_finite() && self.ingestion_rate >= 0.0,
            "--limits.ingestion-rate must be a non-negative number"
        );
        let limits = strata_aggregator::limits::Limits::new(strata_aggregator::limits::TenantLimits {
            max_active_series: self.max_active_series,
            ingestion_rate: self.ingestion_rate,
            ingestion_burst_size: self.ingestion_burst_size,
            max_label_names_per_series: self.max_label_names_per_series,
        });
        Ok(match &self.overrides_file {
            None => limits,
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                limits.with_overrides(&path.display().to_string(), &text)?
            }
        })
    }
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
    #[command(flatten)]
    query: QueryArgs,
    #[command(flatten)]
    rules: RuleArgs,
    /// Serve `POST /-/reload` (re-read `--config.file`), as Prometheus' flag.
    #[arg(long = "web.enable-lifecycle")]
    enable_lifecycle: bool,
    #[command(flatten)]
    limits: LimitsArgs,
    #[command(flatten)]
    ha: HaArgs,
}

/// Query limits, as Prometheus names them.
#[derive(Debug, Args)]
struct QueryArgs {
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

/// Prometheus' rule and alerting flags.
#[derive(Debug, Args)]
struct RuleArgs {
    /// Longest downtime after which `for` state of alerts is still restored.
    #[arg(long = "rules.alert.for-outage-tolerance", default_value = "1h")]
    outage_tolerance: PromDuration,
    /// Least time between restoring `for` state and firing an alert.
    #[arg(long = "rules.alert.for-grace-period", default_value = "10m")]
    grace_period: PromDuration,
    /// Least time between two sends of the same alert to Alertmanager.
    #[arg(long = "rules.alert.resend-delay", default_value = "1m")]
    resend_delay: PromDuration,
    /// Alerts waiting to be sent to Alertmanager, at most.
    #[arg(long = "alertmanager.notification-queue-capacity", default_value_t = 10_000)]
    queue_capacity: usize,
    /// The URL Strata is reached under (generator URLs, `$externalURL`);
    /// default `http://<hostname>:<port>`.
    #[arg(long = "web.external-url")]
    external_url: Option<String>,
}

impl QueryArgs {
    fn settings(&self) -> strata_querier::QuerierSettings {
        strata_querier::QuerierSettings {
            lookback_delta: self.lookback_delta.0,
            max_samples: self.max_samples,
            timeout: self.query_timeout.0,
        }
    }

    /// The flags, named as on the command line (`/api/v1/status/flags`).
    fn flags(&self) -> [(&'static str, String); 3] {
        [
            ("query.lookback-delta", self.lookback_delta.to_string()),
            ("query.timeout", self.query_timeout.to_string()),
            ("query.max-samples", self.max_samples.to_string()),
        ]
    }
}

#[derive(Debug, Args)]
struct QuerierArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// The aggregators to read from (`host:port` of their HTTP/gRPC port),
    /// comma-separated or repeated.
    #[arg(long = "querier.aggregator", value_delimiter = ',', required = true)]
    aggregators: Vec<String>,
    #[command(flatten)]
    query: QueryArgs,
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
            let config = strata_aggregator::AggregatorConfig {
                storage: args.storage.settings()?,
                listen: args.serve.listen,
                distributed,
                limits: args.limits.limits()?,
                ha: args.ha.config()?,
            };
            strata_aggregator::serve(config, deps, shutdown_signal()).await?;
            Ok(())
        }
        Role::Import(args) => import(args).await,
        Role::Collector(args) => {
            let config = config::load(&args.config_file)?;
            let nats = anyhow::Context::context(
                args.nats.settings()?,
                "the collector needs --nats.url (the ingest log it ships to)",
            )?;
            let js = strata_ingest::stream::connect(&nats).await?;
            strata_ingest::stream::ensure_stream(&js, &nats).await?;
            let log: Arc<dyn strata_model::Append> =
                Arc::new(strata_ingest::JetStreamAppender::new(js, nats, &telemetry));
            // Scrapes go to the on-disk buffer; a forwarder ships it to the log.
            let buffer = strata_ingest::buffer::DiskBuffer::open(&args.buffer_path, args.buffer_max_bytes, &telemetry)
                .map_err(|e| anyhow::anyhow!("opening the buffer in {}: {e}", args.buffer_path.display()))?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let forwarder = tokio::spawn(buffer.clone().run_forwarder(log, stop_rx, Duration::from_secs(5)));
            let deps = strata_collector::CollectorDeps {
                appender: Arc::new(buffer),
                clock,
                telemetry,
                tenant: strata_model::DEFAULT_TENANT.to_owned(),
            };
            let access = match args.sharding_kubeconfig {
                Some(k) => strata_collector::discovery::kubernetes::config::ApiAccess::Kubeconfig(k),
                None => strata_collector::discovery::kubernetes::config::ApiAccess::InCluster,
            };
            let events = args.kubernetes_events.then(|| strata_collector::EventsOptions {
                identity: args
                    .node_name
                    .clone()
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .unwrap_or_else(|| "strata-collector".to_owned()),
                access: access.clone(),
                namespace: args.sharding_namespace.clone(),
            });
            let sharding = args.node_name.map(|node_name| strata_collector::ShardingOptions {
                node_name,
                access,
                namespace: args.sharding_namespace,
            });
            let options = strata_collector::CollectorOptions { operator: config.operator, sharding, events };
            strata_collector::serve(config.scrape_jobs, options, args.serve.listen, deps, shutdown_signal()).await?;
            let _ = stop_tx.send(true);
            let _ = forwarder.await;
            Ok(())
        }
        Role::Querier(args) => {
            let mut flags: std::collections::BTreeMap<String, String> =
                args.query.flags().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            flags.insert("web.listen-address".to_owned(), args.serve.listen.to_string());
            flags.insert("querier.aggregator".to_owned(), args.aggregators.join(","));
            let config = strata_querier::QuerierConfig {
                listen: args.serve.listen,
                aggregators: args.aggregators,
                settings: args.query.settings(),
                flags,
            };
            strata_querier::serve(config, telemetry, clock, shutdown_signal()).await?;
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
