//! Scrape loops: one task per target, spread over the interval by a hash
//! offset, each turning a page into one [`WriteBatch`] with the synthetic
//! series (`up`, `scrape_duration_seconds`, ...) and staleness markers for
//! series that disappeared, acknowledged by the [`Append`] it is given.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use strata_common::{Clock, Telemetry};
use strata_model::{Append, Labels, LabelsBuilder, METRIC_NAME, Sample, WriteBatch, stale_nan};
use tokio::sync::{mpsc, watch};

use crate::config::{ScrapeAuth, ScrapeJob, Secret};
use crate::discovery::file::FileDiscoverer;
use crate::discovery::kubernetes::KubernetesDiscoverer;
use crate::discovery::kubernetes::monitors::{MonitorController, OperatorConfig};
use crate::discovery::{Discoverer, GroupSender, StaticDiscoverer, TargetGroup, Update};
use crate::exposition::{Entry, Format, Parser};
use crate::relabel;
use crate::sharding::Sharding;
use crate::status::{ActiveTarget, HealthState, MetricMetadata, PoolStatus, ScrapeStatus, SharedHealth};
use crate::target::{Outcome, Target, targets_from_group};

/// What Prometheus 2.42+ sends as `Accept` when scraping.
const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// What the scrape loops need from their host.
#[derive(Clone)]
pub struct ScrapeDeps {
    /// Where scraped batches go.
    pub appender: Arc<dyn Append>,
    /// The clock stamping scrapes.
    pub clock: Arc<dyn Clock>,
    /// The metric registry.
    pub telemetry: Telemetry,
    /// The tenant the samples belong to.
    pub tenant: String,
}

/// Why the scrape manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(String),
    /// The HTTP server could not listen or failed.
    #[error("serving HTTP: {0}")]
    Serve(String),
}

#[derive(Debug, Clone)]
struct ScrapeMetrics {
    scrapes: Counter,
    failures: Counter,
    append_failures: Counter,
    sd_file_read_errors: Counter,
    sd_kubernetes_failures: Counter,
}

impl ScrapeMetrics {
    fn new(t: &Telemetry) -> Self {
        let m = Self {
            scrapes: Counter::default(),
            failures: Counter::default(),
            append_failures: Counter::default(),
            sd_file_read_errors: Counter::default(),
            sd_kubernetes_failures: Counter::default(),
        };
        t.register(
            "strata_sd_kubernetes_failures",
            "Kubernetes API client and watch failures of kubernetes_sd_configs",
            m.sd_kubernetes_failures.clone(),
        );
        t.register(
            "strata_sd_file_read_errors",
            "file_sd files that could not be read or parsed",
            m.sd_file_read_errors.clone(),
        );
        t.register("strata_target_scrapes", "Scrapes attempted", m.scrapes.clone());
        t.register("strata_target_scrape_failures", "Scrapes that failed (up = 0)", m.failures.clone());
        t.register(
            "strata_scrape_append_failures",
            "Scraped batches the storage did not acknowledge",
            m.append_failures.clone(),
        );
        m
    }
}

/// Runs discovery and the scrape loops of a set of jobs, following target
/// changes live: loops start for new targets and stop (with staleness
/// markers) for vanished ones.
pub struct ScrapeManager {
    jobs: Vec<Arc<ScrapeJob>>,
    deps: ScrapeDeps,
    client: reqwest::Client,
    metrics: ScrapeMetrics,
    status: ScrapeStatus,
    file_poll: Duration,
    reloads: Option<mpsc::Receiver<Vec<ScrapeJob>>>,
    operator: Option<OperatorConfig>,
    sharding: Option<Sharding>,
}

/// A running target loop.
struct LoopHandle {
    stop: watch::Sender<bool>,
    health: SharedHealth,
    target: Target,
}

/// One running job: its discoverers, discovered groups and loops.
struct JobRuntime {
    job: Arc<ScrapeJob>,
    /// Stops this job's discoverers.
    stop_discovery: watch::Sender<bool>,
    /// (provider, source) → group.
    groups: BTreeMap<(usize, String), TargetGroup>,
    /// Identity (all labels after relabeling) → loop.
    loops: HashMap<Labels, LoopHandle>,
}

impl JobRuntime {
    /// Stops the discoverers and every loop (each writes its staleness markers).
    fn stop(&self) {
        let _ = self.stop_discovery.send(true);
        for l in self.loops.values() {
            let _ = l.stop.send(true);
        }
    }
}

/// The tasks of a running manager.
struct Tasks {
    updates: mpsc::Sender<Update>,
    discoverers: tokio::task::JoinSet<()>,
    loops: tokio::task::JoinSet<()>,
    next_id: usize,
}

impl ScrapeManager {
    /// Prepares discovery and loops for `jobs`.
    pub fn new(jobs: Vec<ScrapeJob>, deps: ScrapeDeps) -> Result<Self, CollectorError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("Strata/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CollectorError::Client(e.to_string()))?;
        let metrics = ScrapeMetrics::new(&deps.telemetry);
        Ok(Self {
            jobs: jobs.into_iter().map(Arc::new).collect(),
            deps,
            client,
            metrics,
            status: ScrapeStatus::new(),
            file_poll: crate::discovery::file::POLL_INTERVAL,
            reloads: None,
            operator: None,
            sharding: None,
        })
    }

    /// The status the manager publishes (for [`crate::status::status_router`]).
    pub fn status(&self) -> ScrapeStatus {
        self.status.clone()
    }

    /// Sets how often `file_sd` files are checked for changes.
    pub fn set_file_poll_interval(&mut self, poll: Duration) {
        self.file_poll = poll;
    }

    /// Where to send a reloaded configuration's jobs. As in Prometheus, a job
    /// whose settings are unchanged keeps running untouched and a removed job
    /// stops (its series marked stale). A changed job is restarted: unlike
    /// Prometheus, which hands its loops over, its series are marked stale and
    /// then scraped again.
    pub fn reloader(&mut self) -> mpsc::Sender<Vec<ScrapeJob>> {
        let (tx, rx) = mpsc::channel(4);
        self.reloads = Some(rx);
        tx
    }

    /// Also runs the jobs of the ServiceMonitors and PodMonitors `operator`
    /// selects, next to the configured ones (a monitor job named like a
    /// configured job is ignored), following the monitors live.
    pub fn set_operator(&mut self, operator: OperatorConfig) {
        self.operator = Some(operator);
    }

    /// Scrapes only the targets `sharding` assigns to this collector, and
    /// re-assigns them when the live collectors change.
    pub fn set_sharding(&mut self, sharding: Sharding) {
        self.sharding = Some(sharding);
    }

    /// Discovers and scrapes until `shutdown` turns true, then stops every
    /// loop, each writing staleness markers for the series it had produced.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let (tx, mut rx) = mpsc::channel::<Update>(64);
        let mut tasks = Tasks {
            updates: tx,
            discoverers: tokio::task::JoinSet::new(),
            loops: tokio::task::JoinSet::new(),
            next_id: 0,
        };
        let mut runtimes: HashMap<usize, JobRuntime> = HashMap::new();
        let mut configured: Vec<ScrapeJob> = self.jobs.iter().map(|j| j.as_ref().clone()).collect();
        let mut monitor_jobs: Vec<ScrapeJob> = Vec::new();
        let mut monitor_updates = None;
        if let Some(op) = self.operator.take() {
            let (tx, rx) = mpsc::channel(4);
            let controller = MonitorController::new(op).with_failures(self.metrics.sd_kubernetes_failures.clone());
            tasks.discoverers.spawn(controller.run(tx, shutdown.clone()));
            monitor_updates = Some(rx);
        }
        for job in std::mem::take(&mut self.jobs) {
            let (id, rt) = self.start_job(job, &mut tasks);
            runtimes.insert(id, rt);
        }
        let mut reloads = self.reloads.take();
        let mut members = self.sharding.clone();
        loop {
            tokio::select! {
                // The manager holds a sender: this never ends while it runs.
                Some(u) = rx.recv() => {
                    if let Some(rt) = runtimes.get_mut(&u.job) {
                        self.apply(rt, u.provider, u.groups, &mut tasks.loops);
                    }
                }
                Some(jobs) = async { match reloads.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    configured = jobs;
                    self.reload(&mut runtimes, merge_jobs(&configured, &monitor_jobs), &mut tasks);
                }
                Some(jobs) = async { match monitor_updates.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    monitor_jobs = jobs;
                    self.reload(&mut runtimes, merge_jobs(&configured, &monitor_jobs), &mut tasks);
                }
                changed = async { match members.as_mut() { Some(m) => m.changed().await, None => std::future::pending().await } } => {
                    if changed {
                        for rt in runtimes.values_mut() {
                            self.apply(rt, usize::MAX, Vec::new(), &mut tasks.loops);
                        }
                    } else {
                        // The membership task is gone: the last view stays.
                        members = None;
                    }
                }
                _ = shutdown.changed() => break,
            }
            // Reap tasks that finished.
            while let Some(r) = tasks.loops.try_join_next() {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "scrape loop ended abnormally");
                }
            }
            while tasks.discoverers.try_join_next().is_some() {}
        }
        for rt in runtimes.values() {
            rt.stop();
        }
        while tasks.loops.join_next().await.is_some() {}
        tasks.discoverers.abort_all();
        while tasks.discoverers.join_next().await.is_some() {}
    }

    /// Starts a job's discoverers; its loops start as groups arrive.
    fn start_job(&self, job: Arc<ScrapeJob>, tasks: &mut Tasks) -> (usize, JobRuntime) {
        let id = tasks.next_id;
        tasks.next_id += 1;
        self.status.set_pool(&job.job_name, PoolStatus::default());
        let (stop_discovery, stop_rx) = watch::channel(false);
        let mut providers: Vec<Box<dyn Discoverer>> = Vec::new();
        if !job.static_groups.is_empty() {
            providers.push(Box::new(StaticDiscoverer::new(job.static_groups.clone())));
        }
        for f in &job.file_sd {
            providers.push(Box::new(
                FileDiscoverer::with_poll_interval(f.clone(), self.file_poll)
                    .with_read_errors(self.metrics.sd_file_read_errors.clone()),
            ));
        }
        for k in &job.kubernetes_sd {
            let mut k = k.clone();
            if let Some(s) = &self.sharding {
                crate::sharding::restrict_pods_to_node(&mut k, s.node());
            }
            providers.push(Box::new(
                KubernetesDiscoverer::new(k).with_failures(self.metrics.sd_kubernetes_failures.clone()),
            ));
        }
        for (pi, d) in providers.into_iter().enumerate() {
            tasks.discoverers.spawn(d.run(GroupSender::new(tasks.updates.clone(), id, pi), stop_rx.clone()));
        }
        (id, JobRuntime { job, stop_discovery, groups: BTreeMap::new(), loops: HashMap::new() })
    }

    /// Applies a reloaded job list.
    fn reload(&self, runtimes: &mut HashMap<usize, JobRuntime>, jobs: Vec<ScrapeJob>, tasks: &mut Tasks) {
        let mut unchanged = HashSet::new();
        runtimes.retain(|_, rt| {
            let keep = jobs.iter().any(|j| j == rt.job.as_ref());
            if keep {
                unchanged.insert(rt.job.job_name.clone());
            } else {
                rt.stop();
                self.status.remove_pool(&rt.job.job_name);
            }
            keep
        });
        let mut started = 0usize;
        for job in jobs {
            if !unchanged.contains(&job.job_name) {
                let (id, rt) = self.start_job(Arc::new(job), tasks);
                runtimes.insert(id, rt);
                started += 1;
            }
        }
        tracing::info!(unchanged = unchanged.len(), started, "scrape configuration reloaded");
    }

    /// Applies one discovery update to its job: recomputes the targets and
    /// starts and stops loops to match.
    fn apply(
        &self,
        rt: &mut JobRuntime,
        provider: usize,
        groups: Vec<TargetGroup>,
        loops: &mut tokio::task::JoinSet<()>,
    ) {
        let job = &rt.job;
        for g in groups {
            let key = (provider, g.source.clone());
            if g.targets.is_empty() {
                rt.groups.remove(&key);
            } else {
                rt.groups.insert(key, g);
            }
        }
        let mut active: Vec<Target> = Vec::new();
        let mut dropped = Vec::new();
        for g in rt.groups.values() {
            for (i, outcome) in targets_from_group(job, g).into_iter().enumerate() {
                match outcome {
                    Ok(Outcome::Active(t)) => active.push(t),
                    Ok(Outcome::Dropped(d)) => dropped.push(d),
                    Err(e) => {
                        tracing::warn!(job = %job.job_name, group = %g.source, instance = i, error = %e, "creating target failed");
                    }
                }
            }
        }
        if let Some(s) = &self.sharding {
            active.retain(|t| s.owns(&t.discovered, &t.all_labels));
        }
        let wanted: HashSet<Labels> = active.iter().map(|t| t.all_labels.clone()).collect();
        rt.loops.retain(|id, l| {
            let keep = wanted.contains(id);
            if !keep {
                let _ = l.stop.send(true);
            }
            keep
        });
        for t in active {
            if let Some(l) = rt.loops.get_mut(&t.all_labels) {
                // Same target; its discovered labels may have changed.
                l.target = t;
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            let health = SharedHealth::default();
            let l = TargetLoop {
                job: Arc::clone(job),
                target: t.clone(),
                deps: self.deps.clone(),
                client: self.client.clone(),
                metrics: self.metrics.clone(),
                previous: HashSet::new(),
                health: Arc::clone(&health),
            };
            loops.spawn(l.run(stop_rx));
            rt.loops.insert(t.all_labels.clone(), LoopHandle { stop, health, target: t });
        }
        let mut active: Vec<ActiveTarget> = rt
            .loops
            .values()
            .map(|l| ActiveTarget { target: l.target.clone(), health: Arc::clone(&l.health) })
            .collect();
        active.sort_by(|a, b| a.target.all_labels.cmp(&b.target.all_labels));
        self.status.set_pool(&job.job_name, PoolStatus { active, dropped });
    }
}

/// The configured jobs, then the monitor jobs whose names are free.
fn merge_jobs(configured: &[ScrapeJob], monitors: &[ScrapeJob]) -> Vec<ScrapeJob> {
    let mut out = configured.to_vec();
    for m in monitors {
        if configured.iter().any(|c| c.job_name == m.job_name) {
            tracing::warn!(job = %m.job_name, "a configured job has the name of a monitor job; the monitor job is ignored");
        } else {
            out.push(m.clone());
        }
    }
    out
}

struct TargetLoop {
    job: Arc<ScrapeJob>,
    target: Target,
    deps: ScrapeDeps,
    client: reqwest::Client,
    metrics: ScrapeMetrics,
    /// Series of the last scrape, to mark stale those that disappear.
    previous: HashSet<Labels>,
    /// What the status API shows.
    health: SharedHealth,
}

/// The report series Prometheus adds to every scrape.
const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

impl TargetLoop {
    fn offset(&self) -> Duration {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.target.labels.hash(&mut h);
        let interval = u64::try_from(self.target.interval.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(h.finish() % interval)
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tokio::select! {
            () = tokio::time::sleep(self.offset()) => {}
            _ = shutdown.changed() => return,
        }
        let mut tick = tokio::time::interval(self.target.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            let batch = self.scrape_once().await;
            self.append(batch).await;
        }
        // Shutting down: everything this target produced ends here.
        let t = self.deps.clock.now_ms();
        let mut batch = WriteBatch::new(self.deps.tenant.clone());
        for labels in self.previous.drain() {
            batch.push(labels, Sample::new(t, stale_nan()));
        }
        for name in REPORT_SERIES {
            batch.push(self.report_labels(name), Sample::new(t, stale_nan()));
        }
        self.append(batch).await;
    }

    async fn append(&self, batch: WriteBatch) {
        if let Err(e) = self.deps.appender.append(batch).await {
            self.metrics.append_failures.inc();
            tracing::warn!(target = %self.target.address, error = %e, "scraped samples not stored");
        }
    }

    fn report_labels(&self, name: &str) -> Labels {
        let mut b = self.target.labels.builder();
        b.set(METRIC_NAME, name);
        b.build()
    }

    async fn scrape_once(&mut self) -> WriteBatch {
        self.metrics.scrapes.inc();
        let ts = self.deps.clock.now_ms();
        let started = Instant::now();
        let mut metadata = BTreeMap::new();
        let page = match self.fetch().await {
            Ok((body, format)) => self.build(&body, format, ts, &mut metadata),
            Err(e) => Page { series: Vec::new(), scraped: 0, post: 0, error: Some(e) },
        };
        let duration = started.elapsed().as_secs_f64();
        let mut batch = WriteBatch::new(self.deps.tenant.clone());
        // As Prometheus: a failed scrape still reports the samples it counted.
        let (scraped, post) = (page.scraped, page.post);
        let (up, added) = match page.error {
            None => {
                let series = page.series;
                let current: HashSet<Labels> = series.iter().map(|(l, _)| l.clone()).collect();
                let added = current.difference(&self.previous).count();
                for gone in self.previous.difference(&current) {
                    batch.push(gone.clone(), Sample::new(ts, stale_nan()));
                }
                for (labels, sample) in series {
                    batch.push(labels, sample);
                }
                self.previous = current;
                self.set_health(HealthState::Up, String::new(), ts, duration);
                if let Ok(mut h) = self.health.lock() {
                    h.metadata = Arc::new(metadata);
                }
                (1.0, added)
            }
            Some(e) => {
                self.metrics.failures.inc();
                tracing::debug!(target = %self.target.address, job = %self.job.job_name, error = %e, "scrape failed");
                for gone in self.previous.drain() {
                    batch.push(gone, Sample::new(ts, stale_nan()));
                }
                self.set_health(HealthState::Down, e, ts, duration);
                (0.0, 0)
            }
        };
        for (name, v) in [
            ("up", up),
            ("scrape_duration_seconds", duration),
            ("scrape_samples_scraped", scraped as f64),
            ("scrape_samples_post_metric_relabeling", post as f64),
            ("scrape_series_added", added as f64),
        ] {
            batch.push(self.report_labels(name), Sample::new(ts, v));
        }
        batch
    }

    async fn fetch(&self) -> Result<(Vec<u8>, Format), String> {
        let deadline = tokio::time::Instant::now() + self.target.timeout;
        let url = &self.target.url;
        let mut req = self
            .client
            .get(url)
            .header("Accept", ACCEPT)
            .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", self.target.timeout.as_secs_f64()))
            .timeout(self.target.timeout);
        req = match &self.job.auth {
            ScrapeAuth::None => req,
            ScrapeAuth::Basic { username, password } => {
                let password =
                    password.as_ref().map(Secret::read).transpose().map_err(|e| format!("Get \"{url}\": {e}"))?;
                req.basic_auth(username, Some(password.unwrap_or_default()))
            }
            ScrapeAuth::Header { kind, credentials } => {
                let c =
                    credentials.as_ref().map(Secret::read).transpose().map_err(|e| format!("Get \"{url}\": {e}"))?;
                req.header(reqwest::header::AUTHORIZATION, format!("{kind} {}", c.unwrap_or_default()))
            }
        };
        let mut resp = if url.starts_with("https://") {
            let req = req.build().map_err(|e| format!("Get \"{url}\": {}", error_chain(&e)))?;
            tokio::time::timeout(self.target.timeout, crate::tls::send(&self.job.tls, req))
                .await
                .map_err(|_| format!("Get \"{url}\": context deadline exceeded"))?
                .map_err(|e| format!("Get \"{url}\": {e}"))?
        } else {
            req.send().await.map_err(|e| format!("Get \"{url}\": {}", error_chain(&e)))?
        };
        if !resp.status().is_success() {
            return Err(format!("server returned HTTP status {}", resp.status()));
        }
        let format = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map_or(Format::PrometheusText, Format::from_content_type);
        let limit = self.job.body_size_limit;
        let mut body = Vec::new();
        while let Some(chunk) = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .map_err(|_| "reading body: context deadline exceeded".to_owned())?
            .map_err(|e| format!("reading body: {}", error_chain(&e)))?
        {
            body.extend_from_slice(&chunk);
            if limit > 0 && body.len() as u64 > limit {
                return Err(format!("body size limit exceeded ({limit} bytes)"));
            }
        }
        Ok((body, format))
    }

    fn set_health(&self, state: HealthState, last_error: String, ts: i64, duration: f64) {
        if let Ok(mut h) = self.health.lock() {
            h.state = state;
            h.last_error = last_error;
            h.last_scrape_ms = Some(ts);
            h.last_duration = duration;
        }
    }

    /// The page as labelled samples after `metric_relabel_configs`, counted
    /// as Prometheus' `scrapeLoop.append` counts them; the page's metadata
    /// goes to `metadata`.
    fn build(&self, body: &[u8], format: Format, ts: i64, metadata: &mut BTreeMap<String, MetricMetadata>) -> Page {
        let mut page = Page { series: Vec::new(), scraped: 0, post: 0, error: None };
        let mut sample_limit_hit = false;
        for entry in Parser::new(body, format) {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    page.error = Some(e.to_string());
                    return page;
                }
            };
            let s = match entry {
                Entry::Sample(s) => s,
                Entry::Help { metric, text } => {
                    metadata.entry(metric.to_owned()).or_insert_with(MetricMetadata::unknown).help = text.into_owned();
                    continue;
                }
                Entry::Type { metric, kind } => {
                    metadata.entry(metric.to_owned()).or_insert_with(MetricMetadata::unknown).kind = kind.as_str();
                    continue;
                }
                Entry::Unit { metric, unit } => {
                    metadata.entry(metric.to_owned()).or_insert_with(MetricMetadata::unknown).unit = unit.to_owned();
                    continue;
                }
            };
            let mut b = LabelsBuilder::new();
            b.set(METRIC_NAME, s.name);
            for (name, value) in &s.labels {
                b.set(*name, value.as_ref());
            }
            page.scraped += 1;
            for l in &self.target.labels {
                merge_target_label(&mut b, &l.name, &l.value, self.job.honor_labels);
            }
            if !relabel::process_builder(&mut b, &self.job.metric_relabel_configs) {
                continue;
            }
            let labels = b.build();
            if labels.is_empty() {
                continue;
            }
            if labels.metric_name().is_none() {
                page.error = Some(format!("missing metric name ({METRIC_NAME} label)"));
                return page;
            }
            if let Err(e) = check_label_limits(&labels, &self.job) {
                page.error = Some(e);
                return page;
            }
            // Counted even past the sample limit: the samples left after relabeling.
            page.post += 1;
            if self.job.sample_limit > 0 && page.post as u64 > self.job.sample_limit {
                sample_limit_hit = true;
                continue;
            }
            let t = match s.timestamp_ms {
                Some(t) if self.job.honor_timestamps => t,
                _ => ts,
            };
            page.series.push((labels, Sample::new(t, s.value)));
        }
        if sample_limit_hit {
            page.error = Some("sample limit exceeded".to_owned());
        }
        page
    }
}

/// What one scrape's page gave.
struct Page {
    /// The samples to store (when `error` is `None`).
    series: Vec<(Labels, Sample)>,
    /// Samples on the page (up to an error).
    scraped: usize,
    /// Samples left after metric relabeling (up to an error).
    post: usize,
    /// Why the scrape failed.
    error: Option<String>,
}

/// Prometheus' `verifyLabelLimits`: a series over a limit fails the scrape.
fn check_label_limits(labels: &Labels, job: &ScrapeJob) -> Result<(), String> {
    let metric: String = labels.metric_name().unwrap_or("").chars().take(50).collect();
    if job.label_limit > 0 && labels.len() as u64 > job.label_limit {
        return Err(format!(
            "label_limit exceeded (metric: {metric}, number of labels: {}, limit: {})",
            labels.len(),
            job.label_limit
        ));
    }
    for l in labels {
        if job.label_name_length_limit > 0 && l.name.len() as u64 > job.label_name_length_limit {
            let name: String = l.name.chars().take(50).collect();
            return Err(format!(
                "label_name_length_limit exceeded (metric: {metric}, label name: {name}, length: {}, limit: {})",
                l.name.len(),
                job.label_name_length_limit
            ));
        }
        if job.label_value_length_limit > 0 && l.value.len() as u64 > job.label_value_length_limit {
            let name: String = l.name.chars().take(50).collect();
            let value: String = l.value.chars().take(50).collect();
            return Err(format!(
                "label_value_length_limit exceeded (metric: {metric}, label name: {name}, value: {value:?}, length: {}, limit: {})",
                l.value.len(),
                job.label_value_length_limit
            ));
        }
    }
    Ok(())
}

/// Adds a target label to a scraped series as Prometheus does: with
/// `honor_labels` the page wins; otherwise the page's clashing label is kept
/// as `exported_<name>` (prefixed again while that clashes too).
fn merge_target_label(b: &mut LabelsBuilder, name: &str, value: &str, honor_labels: bool) {
    match b.get(name).map(str::to_owned) {
        None => {
            b.set(name, value);
        }
        Some(_) if honor_labels => {}
        Some(page_value) => {
            let mut exported = format!("exported_{name}");
            while b.get(&exported).is_some() {
                exported = format!("exported_{exported}");
            }
            b.set(exported, page_value);
            b.set(name, value);
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use axum::http::StatusCode;
    use strata_common::ManualClock;
    use strata_model::{AppendSummary, BoxFuture, is_stale_nan};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<WriteBatch>>);

    impl Append for Recorder {
        fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, strata_model::AppendError>> {
            self.0.lock().expect("lock").push(batch);
            Box::pin(async { Ok(AppendSummary::default()) })
        }
    }

    /// A target whose page and status the test sets.
    async fn serve_page(page: Arc<Mutex<(StatusCode, String)>>) -> String {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let page = Arc::clone(&page);
                async move { page.lock().expect("lock").clone() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn value(batch: &WriteBatch, name: &str) -> Option<f64> {
        batch.series.iter().find(|s| s.labels.metric_name() == Some(name)).map(|s| s.samples[0].v)
    }

    #[tokio::test]
    async fn scrapes_mark_disappeared_series_stale_and_report_up() {
        let page = Arc::new(Mutex::new((StatusCode::OK, "a 1\nb{x=\"1\"} 2\nc 3\n".to_owned())));
        let address = serve_page(Arc::clone(&page)).await;
        let mut job = ScrapeJob::new("j", Duration::from_secs(1), Duration::from_secs(1));
        job.metric_relabel_configs = vec![
            crate::relabel::RawRelabelConfig {
                source_labels: Some(vec!["__name__".into()]),
                regex: Some("c".into()),
                action: Some("drop".into()),
                ..Default::default()
            }
            .validate()
            .expect("valid"),
        ];
        let target =
            Target::from_labels(&job, &crate::target::labels_of(&[("__address__", &address)])).expect("target");
        let job = Arc::new(job);
        let recorder = Arc::new(Recorder::default());
        let deps = ScrapeDeps {
            appender: recorder.clone(),
            clock: Arc::new(ManualClock::new(1_000)),
            telemetry: Telemetry::empty(),
            tenant: "t".into(),
        };
        let mut l = TargetLoop {
            job,
            target,
            deps,
            client: reqwest::Client::new(),
            metrics: ScrapeMetrics::new(&Telemetry::empty()),
            previous: HashSet::new(),
            health: SharedHealth::default(),
        };

        let b = l.scrape_once().await;
        assert_eq!(value(&b, "up"), Some(1.0));
        assert_eq!(value(&b, "a"), Some(1.0));
        assert_eq!(value(&b, "scrape_samples_scraped"), Some(3.0));
        assert_eq!(value(&b, "scrape_samples_post_metric_relabeling"), Some(2.0), "c dropped by metric relabeling");
        assert_eq!(value(&b, "c"), None);
        assert_eq!(value(&b, "scrape_series_added"), Some(2.0));
        assert_eq!(l.health.lock().expect("lock").state, HealthState::Up);
        let a = b.series.iter().find(|s| s.labels.metric_name() == Some("a")).expect("a");
        assert_eq!(a.labels.get("job"), Some("j"));

        page.lock().expect("lock").1 = "a 3\n".into();
        let b = l.scrape_once().await;
        assert!(value(&b, "b").is_some_and(is_stale_nan), "b disappeared: stale marker");
        assert_eq!(value(&b, "a"), Some(3.0));
        assert_eq!(value(&b, "scrape_series_added"), Some(0.0));

        page.lock().expect("lock").1 = "a 3\nthis is not a sample\n".into();
        let b = l.scrape_once().await;
        assert_eq!(value(&b, "up"), Some(0.0), "malformed page fails the scrape");
        assert_eq!(l.health.lock().expect("lock").state, HealthState::Down);
        assert!(!l.health.lock().expect("lock").last_error.is_empty());
        assert!(value(&b, "a").is_some_and(is_stale_nan));

        *page.lock().expect("lock") = (StatusCode::INTERNAL_SERVER_ERROR, "oops".into());
        let b = l.scrape_once().await;
        assert_eq!(value(&b, "up"), Some(0.0));
        assert_eq!(value(&b, "a"), None, "already marked stale");
    }

    #[tokio::test]
    async fn credentials_are_sent_and_label_limits_fail_the_scrape() {
        use axum::http::HeaderMap;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(|headers: HeaderMap| async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                match auth.as_str() {
                    // "u:p" and a token from a file.
                    "Basic dTpw" | "Bearer tok" => (StatusCode::OK, "m{a=\"12345\"} 1\n".to_owned()),
                    _ => (StatusCode::UNAUTHORIZED, String::new()),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "tok\n").expect("write");

        let run = |job: ScrapeJob| {
            let target =
                Target::from_labels(&job, &crate::target::labels_of(&[("__address__", &address)])).expect("target");
            TargetLoop {
                job: Arc::new(job),
                target,
                deps: ScrapeDeps {
                    appender: Arc::new(Recorder::default()),
                    clock: Arc::new(ManualClock::new(1_000)),
                    telemetry: Telemetry::empty(),
                    tenant: "t".into(),
                },
                client: reqwest::Client::new(),
                metrics: ScrapeMetrics::new(&Telemetry::empty()),
                previous: HashSet::new(),
                health: SharedHealth::default(),
            }
        };
        let base = ScrapeJob::new("j", Duration::from_secs(1), Duration::from_secs(1));
        let up = |b: &WriteBatch| value(b, "up");

        let mut l = run(base.clone());
        assert_eq!(up(&l.scrape_once().await), Some(0.0), "no credentials: 401");
        assert!(l.health.lock().expect("lock").last_error.contains("401"));

        let mut job = base.clone();
        job.auth = ScrapeAuth::Basic { username: "u".into(), password: Some(Secret::Inline("p".into())) };
        assert_eq!(up(&run(job).scrape_once().await), Some(1.0));

        let mut job = base.clone();
        job.auth =
            ScrapeAuth::Header { kind: "Bearer".into(), credentials: Some(Secret::File(token.display().to_string())) };
        assert_eq!(up(&run(job.clone()).scrape_once().await), Some(1.0), "token file, trimmed");

        for (limit, want) in [(0, 1.0), (4, 1.0), (3, 0.0)] {
            let mut j = job.clone();
            j.label_limit = limit; // __name__, a, instance, job
            assert_eq!(up(&run(j).scrape_once().await), Some(want), "label_limit {limit}");
        }
        let mut j = job.clone();
        j.label_value_length_limit = 4;
        let mut l = run(j);
        assert_eq!(up(&l.scrape_once().await), Some(0.0));
        let err = l.health.lock().expect("lock").last_error.clone();
        assert!(err.starts_with("label_value_length_limit exceeded (metric: m, label name: a"), "{err}");
        let mut j = job;
        j.label_name_length_limit = 2;
        assert_eq!(up(&run(j).scrape_once().await), Some(0.0), "`instance` is longer than 2");
    }

    /// Waits (bounded) until `f` holds.
    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn manager_follows_file_sd_changes_live() {
        let page = Arc::new(Mutex::new((StatusCode::OK, "m 1\n".to_owned())));
        let a = serve_page(Arc::clone(&page)).await;
        let b = serve_page(Arc::clone(&page)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("targets.yml");
        std::fs::write(&file, format!("- targets: ['{a}', 'drop.me:1']\n  labels: {{__meta_x: y}}\n")).expect("write");
        let yaml = format!(
            "scrape_configs:\n- job_name: fs\n  scrape_interval: 100ms\n  scrape_timeout: 100ms\n  file_sd_configs: [{{files: ['{}']}}]\n  relabel_configs:\n  - {{source_labels: [__address__], regex: 'drop.*', action: drop}}\n  - {{source_labels: [__meta_x], target_label: x}}\n",
            dir.path().join("*.yml").display()
        );
        #[derive(serde::Deserialize)]
        struct File {
            scrape_configs: Vec<crate::config::ScrapeConfig>,
        }
        let f: File = serde_saphyr::from_str(&yaml).expect("yaml");
        let jobs = crate::config::validate(&Default::default(), &f.scrape_configs).expect("valid");
        let recorder = Arc::new(Recorder::default());
        let deps = ScrapeDeps {
            appender: recorder.clone(),
            clock: Arc::new(ManualClock::new(1_000)),
            telemetry: Telemetry::empty(),
            tenant: "t".into(),
        };
        let mut m = ScrapeManager::new(jobs, deps).expect("manager");
        m.set_file_poll_interval(Duration::from_millis(50));
        let status = m.status();
        let (stop, stop_rx) = watch::channel(false);
        let run = tokio::spawn(m.run(stop_rx));

        let instances = |status: &ScrapeStatus| -> Vec<(String, HealthState)> {
            let snap = status.snapshot();
            snap.get("fs")
                .map(|p| {
                    p.active
                        .iter()
                        .map(|t| {
                            let h = t.health.lock().map(|h| h.state).unwrap_or_default();
                            (t.target.labels.get("instance").unwrap_or("").to_owned(), h)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        wait_for("target a up", || instances(&status) == [(a.clone(), HealthState::Up)]).await;
        let snap = status.snapshot();
        let pool = snap.get("fs").expect("pool");
        assert_eq!(pool.dropped.len(), 1);
        assert_eq!(pool.dropped[0].discovered.get("__address__"), Some("drop.me:1"));
        assert_eq!(pool.active[0].target.labels.get("x"), Some("y"));
        assert_eq!(pool.active[0].target.labels.get("__meta_x"), None);

        // The file now lists b only: a's loop stops with staleness markers.
        std::fs::write(&file, format!("- targets: ['{b}']\n")).expect("write");
        let later = std::time::SystemTime::now() + Duration::from_secs(2);
        std::fs::File::options().write(true).open(&file).expect("open").set_modified(later).expect("mtime");
        wait_for("target b up", || instances(&status) == [(b.clone(), HealthState::Up)]).await;
        let stale_for_a = |rec: &Recorder| {
            rec.0.lock().expect("lock").iter().flat_map(|w| w.series.iter()).any(|s| {
                s.labels.get("instance") == Some(a.as_str())
                    && s.labels.metric_name() == Some("m")
                    && s.samples.iter().any(|x| is_stale_nan(x.v))
            })
        };
        wait_for("stale markers for a", || stale_for_a(&recorder)).await;

        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), run).await.expect("manager stops").expect("join");
        let up_b_stale = recorder.0.lock().expect("lock").iter().flat_map(|w| w.series.iter()).any(|s| {
            s.labels.get("instance") == Some(b.as_str())
                && s.labels.metric_name() == Some("up")
                && s.samples.iter().any(|x| is_stale_nan(x.v))
        });
        assert!(up_b_stale, "shutdown marks b's series stale");
    }

    #[tokio::test]
    async fn reload_keeps_unchanged_jobs_and_restarts_changed_ones() {
        let page = Arc::new(Mutex::new((StatusCode::OK, "m 1\n".to_owned())));
        let addr = serve_page(Arc::clone(&page)).await;
        let job = |name: &str, ms: u64| {
            ScrapeJob::new(name, Duration::from_millis(ms), Duration::from_millis(ms))
                .with_static_targets([addr.as_str()], Labels::empty())
        };
        let recorder = Arc::new(Recorder::default());
        let deps = ScrapeDeps {
            appender: recorder.clone(),
            clock: Arc::new(ManualClock::new(1_000)),
            telemetry: Telemetry::empty(),
            tenant: "t".into(),
        };
        let mut m =
            ScrapeManager::new(vec![job("same", 100), job("changed", 100), job("gone", 100)], deps).expect("manager");
        let reload = m.reloader();
        let status = m.status();
        let (stop, stop_rx) = watch::channel(false);
        let run = tokio::spawn(m.run(stop_rx));
        let health_of = |pool: &str| -> Option<SharedHealth> {
            status.snapshot().get(pool).and_then(|p| p.active.first().map(|a| Arc::clone(&a.health)))
        };
        let up =
            |pool: &str| health_of(pool).is_some_and(|h| h.lock().map(|h| h.state == HealthState::Up).unwrap_or(false));
        wait_for("three jobs up", || up("same") && up("changed") && up("gone")).await;
        let (same, changed) = (health_of("same").expect("same"), health_of("changed").expect("changed"));

        reload.send(vec![job("same", 100), job("changed", 200), job("new", 100)]).await.expect("reload");
        wait_for("reloaded", || up("new") && !status.snapshot().contains_key("gone")).await;
        wait_for("changed job restarted", || health_of("changed").is_some_and(|h| !Arc::ptr_eq(&h, &changed))).await;
        assert!(health_of("same").is_some_and(|h| Arc::ptr_eq(&h, &same)), "unchanged job keeps its loop");
        let gone_stale = recorder.0.lock().expect("lock").iter().flat_map(|w| w.series.iter()).any(|s| {
            s.labels.get("job") == Some("gone")
                && s.labels.metric_name() == Some("m")
                && s.samples.iter().any(|x| is_stale_nan(x.v))
        });
        assert!(gone_stale, "a removed job's series are marked stale");
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), run).await.expect("manager stops").expect("join");
    }

    #[test]
    fn clashing_page_labels_become_exported() {
        let mut b = LabelsBuilder::new();
        b.set("job", "page").set("exported_job", "x");
        merge_target_label(&mut b, "job", "node", false);
        let l = b.build();
        assert_eq!(l.get("job"), Some("node"));
        assert_eq!(l.get("exported_exported_job"), Some("page"));

        let mut b = LabelsBuilder::new();
        b.set("job", "page");
        merge_target_label(&mut b, "job", "node", true);
        assert_eq!(b.build().get("job"), Some("page"));
    }

    /// A CA, and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
    struct TestPki {
        ca: String,
        server: (rustls::pki_types::CertificateDer<'static>, rustls::pki_types::PrivateKeyDer<'static>),
        ca_der: rustls::pki_types::CertificateDer<'static>,
        client_cert: String,
        client_key: String,
    }

    fn test_pki(dir: &std::path::Path) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        let server_key = KeyPair::generate().expect("key");
        let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&server_key, &ca)
            .expect("server cert");
        let client_key = KeyPair::generate().expect("key");
        let client_cert = CertificateParams::new(vec!["client".to_owned()])
            .expect("params")
            .signed_by(&client_key, &ca)
            .expect("cert");
        let write = |name: &str, pem: String| {
            let p = dir.join(name);
            std::fs::write(&p, pem).expect("write");
            p.display().to_string()
        };
        TestPki {
            ca: write("ca.pem", ca.pem()),
            server: (
                server_cert.der().clone(),
                rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).expect("key der"),
            ),
            ca_der: ca.der().clone(),
            client_cert: write("client.pem", client_cert.pem()),
            client_key: write("client-key.pem", client_key.serialize_pem()),
        }
    }

    /// An HTTPS server on 127.0.0.1 answering every request with a page;
    /// with `client_ca`, it requires a client certificate signed by it.
    async fn serve_https(pki: &TestPki, client_ca: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if client_ca {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(pki.ca_der.clone()).expect("root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config =
            builder.with_single_cert(vec![pki.server.0.clone()], pki.server.1.clone_key()).expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = "secure 1\n";
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        addr
    }

    fn https_loop(job: ScrapeJob, address: &str) -> TargetLoop {
        let target = Target::from_labels(&job, &crate::target::labels_of(&[("__address__", address)])).expect("target");
        TargetLoop {
            job: Arc::new(job),
            target,
            deps: ScrapeDeps {
                appender: Arc::new(Recorder::default()),
                clock: Arc::new(ManualClock::new(1_000)),
                telemetry: Telemetry::empty(),
                tenant: "t".into(),
            },
            client: reqwest::Client::new(),
            metrics: ScrapeMetrics::new(&Telemetry::empty()),
            previous: HashSet::new(),
            health: SharedHealth::default(),
        }
    }

    #[tokio::test]
    async fn https_scrapes_verify_the_server_and_send_a_client_cert() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = test_pki(dir.path());
        let address = serve_https(&pki, false).await;
        let mut base = ScrapeJob::new("j", Duration::from_secs(5), Duration::from_secs(5));
        base.scheme = "https".into();

        let mut job = base.clone();
        job.tls.ca_file = pki.ca.clone();
        let mut l = https_loop(job, &address);
        let b = l.scrape_once().await;
        assert_eq!(l.health.lock().expect("lock").last_error, "");
        assert_eq!(value(&b, "up"), Some(1.0), "trusted through ca_file");
        assert_eq!(value(&b, "secure"), Some(1.0));

        // No ca_file: the system roots do not know the test CA.
        let mut l = https_loop(base.clone(), &address);
        assert_eq!(value(&l.scrape_once().await, "up"), Some(0.0));
        let err = l.health.lock().expect("lock").last_error.clone();
        assert!(err.contains("certificate"), "{err}");

        let mut job = base.clone();
        job.tls.insecure_skip_verify = true;
        assert_eq!(value(&https_loop(job, &address).scrape_once().await, "up"), Some(1.0), "insecure_skip_verify");

        let mut job = base.clone();
        job.tls.ca_file = pki.ca.clone();
        job.tls.server_name = "other.example".into();
        let mut l = https_loop(job, &address);
        assert_eq!(value(&l.scrape_once().await, "up"), Some(0.0), "server_name not in the certificate");

        let mut job = base.clone();
        job.tls.ca_file = pki.ca.clone();
        job.tls.min_version = Some(crate::config::TlsVersion::Tls13);
        assert_eq!(value(&https_loop(job, &address).scrape_once().await, "up"), Some(1.0), "TLS13");

        // A server requiring a client certificate.
        let address = serve_https(&pki, true).await;
        let mut job = base.clone();
        job.tls.ca_file = pki.ca.clone();
        let mut l = https_loop(job.clone(), &address);
        assert_eq!(value(&l.scrape_once().await, "up"), Some(0.0), "no client certificate");
        job.tls.cert_file = pki.client_cert.clone();
        job.tls.key_file = pki.client_key.clone();
        let mut l = https_loop(job, &address);
        let b = l.scrape_once().await;
        assert_eq!(l.health.lock().expect("lock").last_error, "");
        assert_eq!(value(&b, "up"), Some(1.0), "client certificate sent");
    }
}
