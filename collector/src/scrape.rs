//! Scrape loops: one task per target, spread over the interval by a hash
//! offset, each turning a page into one [`WriteBatch`] with the synthetic
//! series (`up`, `scrape_duration_seconds`, ...) and staleness markers for
//! series that disappeared, acknowledged by the [`Append`] it is given.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use strata_common::{Clock, Telemetry};
use strata_model::{Append, Labels, LabelsBuilder, METRIC_NAME, Sample, WriteBatch, stale_nan};
use tokio::sync::watch;

use crate::config::{ScrapeJob, Target};
use crate::exposition::{Entry, Format, Parser};

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
}

#[derive(Debug, Clone)]
struct ScrapeMetrics {
    scrapes: Counter,
    failures: Counter,
    append_failures: Counter,
}

impl ScrapeMetrics {
    fn new(t: &Telemetry) -> Self {
        let m = Self { scrapes: Counter::default(), failures: Counter::default(), append_failures: Counter::default() };
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

/// Runs the scrape loops of a set of jobs.
pub struct ScrapeManager {
    jobs: Vec<Arc<ScrapeJob>>,
    deps: ScrapeDeps,
    client: reqwest::Client,
    metrics: ScrapeMetrics,
}

impl ScrapeManager {
    /// Prepares loops for every target of `jobs`.
    pub fn new(jobs: Vec<ScrapeJob>, deps: ScrapeDeps) -> Result<Self, CollectorError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("Strata/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CollectorError::Client(e.to_string()))?;
        let metrics = ScrapeMetrics::new(&deps.telemetry);
        Ok(Self { jobs: jobs.into_iter().map(Arc::new).collect(), deps, client, metrics })
    }

    /// Scrapes until `shutdown` turns true, then writes staleness markers for
    /// every series the loops had produced.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        for job in &self.jobs {
            for target in &job.targets {
                let l = TargetLoop {
                    job: Arc::clone(job),
                    target: target.clone(),
                    deps: self.deps.clone(),
                    client: self.client.clone(),
                    metrics: self.metrics.clone(),
                    previous: HashSet::new(),
                };
                tasks.spawn(l.run(shutdown.clone()));
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}

struct TargetLoop {
    job: Arc<ScrapeJob>,
    target: Target,
    deps: ScrapeDeps,
    client: reqwest::Client,
    metrics: ScrapeMetrics,
    /// Series of the last scrape, to mark stale those that disappear.
    previous: HashSet<Labels>,
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
        let interval = u64::try_from(self.job.interval.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(h.finish() % interval)
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tokio::select! {
            () = tokio::time::sleep(self.offset()) => {}
            _ = shutdown.changed() => return,
        }
        let mut tick = tokio::time::interval(self.job.interval);
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
        let result = match self.fetch().await {
            Ok((body, format)) => self.build(&body, format, ts),
            Err(e) => Err(e),
        };
        let duration = started.elapsed().as_secs_f64();
        let mut batch = WriteBatch::new(self.deps.tenant.clone());
        let (up, scraped, added) = match result {
            Ok((series, scraped)) => {
                let current: HashSet<Labels> = series.iter().map(|(l, _)| l.clone()).collect();
                let added = current.difference(&self.previous).count();
                for gone in self.previous.difference(&current) {
                    batch.push(gone.clone(), Sample::new(ts, stale_nan()));
                }
                for (labels, sample) in series {
                    batch.push(labels, sample);
                }
                self.previous = current;
                (1.0, scraped, added)
            }
            Err(e) => {
                self.metrics.failures.inc();
                tracing::debug!(target = %self.target.address, job = %self.job.job_name, error = %e, "scrape failed");
                for gone in self.previous.drain() {
                    batch.push(gone, Sample::new(ts, stale_nan()));
                }
                (0.0, 0, 0)
            }
        };
        for (name, v) in [
            ("up", up),
            ("scrape_duration_seconds", duration),
            ("scrape_samples_scraped", scraped as f64),
            ("scrape_samples_post_metric_relabeling", scraped as f64),
            ("scrape_series_added", added as f64),
        ] {
            batch.push(self.report_labels(name), Sample::new(ts, v));
        }
        batch
    }

    async fn fetch(&self) -> Result<(Vec<u8>, Format), String> {
        let url = self.job.url(&self.target);
        let mut resp = self
            .client
            .get(&url)
            .header("Accept", ACCEPT)
            .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", self.job.timeout.as_secs_f64()))
            .timeout(self.job.timeout)
            .send()
            .await
            .map_err(|e| format!("Get \"{url}\": {}", error_chain(&e)))?;
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
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading body: {}", error_chain(&e)))? {
            body.extend_from_slice(&chunk);
            if limit > 0 && body.len() as u64 > limit {
                return Err(format!("body size limit exceeded ({limit} bytes)"));
            }
        }
        Ok((body, format))
    }

    /// The page as labelled samples, and the number of samples scraped.
    fn build(&self, body: &[u8], format: Format, ts: i64) -> Result<(Vec<(Labels, Sample)>, usize), String> {
        let mut out = Vec::new();
        for entry in Parser::new(body, format) {
            let Entry::Sample(s) = entry.map_err(|e| e.to_string())? else { continue };
            let mut b = LabelsBuilder::new();
            b.set(METRIC_NAME, s.name);
            for (name, value) in &s.labels {
                b.set(*name, value.as_ref());
            }
            for l in &self.target.labels {
                merge_target_label(&mut b, &l.name, &l.value, self.job.honor_labels);
            }
            let t = match s.timestamp_ms {
                Some(t) if self.job.honor_timestamps => t,
                _ => ts,
            };
            out.push((b.build(), Sample::new(t, s.value)));
            if self.job.sample_limit > 0 && out.len() as u64 > self.job.sample_limit {
                return Err(format!("sample limit exceeded ({})", self.job.sample_limit));
            }
        }
        let n = out.len();
        Ok((out, n))
    }
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
        let page = Arc::new(Mutex::new((StatusCode::OK, "a 1\nb{x=\"1\"} 2\n".to_owned())));
        let address = serve_page(Arc::clone(&page)).await;
        let labels = Labels::from_pairs([("job", "j"), ("instance", address.as_str())]).expect("labels");
        let job = Arc::new(ScrapeJob {
            job_name: "j".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            metrics_path: "/metrics".into(),
            scheme: "http".into(),
            params: Default::default(),
            honor_labels: false,
            honor_timestamps: true,
            sample_limit: 0,
            body_size_limit: 0,
            targets: vec![],
        });
        let recorder = Arc::new(Recorder::default());
        let deps = ScrapeDeps {
            appender: recorder.clone(),
            clock: Arc::new(ManualClock::new(1_000)),
            telemetry: Telemetry::empty(),
            tenant: "t".into(),
        };
        let mut l = TargetLoop {
            job,
            target: Target { address, labels },
            deps,
            client: reqwest::Client::new(),
            metrics: ScrapeMetrics::new(&Telemetry::empty()),
            previous: HashSet::new(),
        };

        let b = l.scrape_once().await;
        assert_eq!(value(&b, "up"), Some(1.0));
        assert_eq!(value(&b, "a"), Some(1.0));
        assert_eq!(value(&b, "scrape_samples_scraped"), Some(2.0));
        assert_eq!(value(&b, "scrape_series_added"), Some(2.0));
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
        assert!(value(&b, "a").is_some_and(is_stale_nan));

        *page.lock().expect("lock") = (StatusCode::INTERNAL_SERVER_ERROR, "oops".into());
        let b = l.scrape_once().await;
        assert_eq!(value(&b, "up"), Some(0.0));
        assert_eq!(value(&b, "a"), None, "already marked stale");
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
}
