//! Strata's ruler: Prometheus rule groups (recording and alerting rules)
//! evaluated with Prometheus' semantics, alerts sent to Alertmanager, the
//! rules and alerts APIs, and a per-tenant API to manage rule groups.
//!
//! - [`rulefile`]: rule files, validated as `promtool check rules` does.
//! - [`template`]: Prometheus' template language for labels and annotations.
//! - [`gofmt`]: Go's number and time formatting the templates and API use.
//! - [`group`]: group evaluation, alert states, `ALERTS`, restore after restart.
//! - [`notifier`]: the `alerting` section and the Alertmanager v2 client.
//! - [`store`]: API-managed groups in object storage.
//! - [`api`]: `/api/v1/rules`, `/api/v1/alerts` and the management API.
//!
//! Groups come from sources (rule files, the API store, and any
//! [`RuleSource`] added, e.g. Kubernetes `PrometheusRule` objects later),
//! each group keyed by tenant, file and name; [`Ruler::set_owner`] decides
//! which groups this process evaluates (all by default), the hook for
//! sharding groups across queriers.

pub mod api;
pub mod gofmt;
pub mod group;
pub mod notifier;
pub mod rulefile;
pub mod store;
pub mod template;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use strata_common::{Clock, Telemetry};
use strata_model::{Append, Select};
use strata_promql::Engine;

use crate::group::{Group, mark_stale, run_group};
use crate::notifier::{AlertingConfig, Notifier, NotifierConfig};
use crate::rulefile::{RuleGroup, parse_single_group};
use crate::store::RuleStore;

/// Errors of the ruler.
#[derive(Debug, thiserror::Error)]
pub enum RulerError {
    /// A rule file or posted group is invalid.
    #[error("{0}")]
    Invalid(#[from] rulefile::RuleFileError),
    /// The rule store failed.
    #[error("rule store: {0}")]
    Store(String),
    /// Something asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request is malformed.
    #[error("{0}")]
    BadRequest(String),
}

/// What the ruler needs from its host process.
#[derive(Clone)]
pub struct RulerDeps {
    /// Where queries read.
    pub select: Arc<dyn Select>,
    /// Where recording rules and `ALERTS` series are written.
    pub append: Arc<dyn Append>,
    /// The PromQL engine.
    pub engine: Engine,
    /// The metric registry.
    pub telemetry: Telemetry,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Where API-managed rule groups are kept.
    pub store: Arc<dyn object_store::ObjectStore>,
}

/// Flags of the ruler (Prometheus' `--rules.*` flags and the external URL).
#[derive(Debug, Clone)]
pub struct RulerSettings {
    /// `--rules.alert.for-outage-tolerance` (default 1h).
    pub outage_tolerance: Duration,
    /// `--rules.alert.for-grace-period` (default 10m).
    pub for_grace_period: Duration,
    /// `--rules.alert.resend-delay` (default 1m).
    pub resend_delay: Duration,
    /// `--web.external-url`, for `generatorURL` and templates.
    pub external_url: String,
    /// `--alertmanager.notification-queue-capacity` (default 10000).
    pub queue_capacity: usize,
    /// The tenant of file rule groups and requests without `X-Scope-OrgID`.
    pub default_tenant: String,
}

impl Default for RulerSettings {
    fn default() -> Self {
        Self {
            outage_tolerance: Duration::from_secs(3600),
            for_grace_period: Duration::from_secs(600),
            resend_delay: Duration::from_secs(60),
            external_url: String::new(),
            queue_capacity: 10_000,
            default_tenant: strata_model::DEFAULT_TENANT.to_owned(),
        }
    }
}

/// The ruler's part of the config file.
#[derive(Debug, Clone, Default)]
pub struct RulerConfig {
    /// Groups of the `rule_files`.
    pub file_groups: Vec<RuleGroup>,
    /// `global.evaluation_interval` (default of groups without `interval`).
    pub evaluation_interval: Duration,
    /// `global.external_labels`.
    pub external_labels: BTreeMap<String, String>,
    /// The `alerting` section.
    pub alerting: AlertingConfig,
}

/// The ruler's metrics.
pub(crate) struct Metrics {
    pub(crate) evaluations: Family<Vec<(String, String)>, Counter>,
    pub(crate) failures: Family<Vec<(String, String)>, Counter>,
    pub(crate) missed: Family<Vec<(String, String)>, Counter>,
    pub(crate) write_failures: Family<Vec<(String, String)>, Counter>,
    pub(crate) last_duration: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub(crate) last_eval_ts: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub(crate) last_samples: Family<Vec<(String, String)>, Gauge<i64, AtomicI64>>,
    pub(crate) interval: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub(crate) rules: Family<Vec<(String, String)>, Gauge<i64, AtomicI64>>,
    pub(crate) alertmanagers: Gauge<i64, AtomicI64>,
    pub(crate) sent: Family<Vec<(String, String)>, Counter>,
    pub(crate) errors: Family<Vec<(String, String)>, Counter>,
    pub(crate) dropped: Counter,
    pub(crate) queue_length: Gauge<i64, AtomicI64>,
    pub(crate) api_rejected: Counter,
}

impl Metrics {
    fn register(t: &Telemetry) -> Self {
        let m = Self {
            evaluations: Family::default(),
            failures: Family::default(),
            missed: Family::default(),
            write_failures: Family::default(),
            last_duration: Family::default(),
            last_eval_ts: Family::default(),
            last_samples: Family::default(),
            interval: Family::default(),
            rules: Family::default(),
            alertmanagers: Gauge::default(),
            sent: Family::default(),
            errors: Family::default(),
            dropped: Counter::default(),
            queue_length: Gauge::default(),
            api_rejected: Counter::default(),
        };
        t.register("strata_rule_evaluations", "Rule evaluations.", m.evaluations.clone());
        t.register("strata_rule_evaluation_failures", "Rule evaluations that failed.", m.failures.clone());
        t.register("strata_rule_group_iterations_missed", "Group evaluations missed (too slow).", m.missed.clone());
        t.register("strata_rule_write_failures", "Rule outputs that could not be written.", m.write_failures.clone());
        t.register(
            "strata_rule_group_last_duration_seconds",
            "Duration of the last evaluation of a group.",
            m.last_duration.clone(),
        );
        t.register(
            "strata_rule_group_last_evaluation_timestamp_seconds",
            "When a group was last evaluated.",
            m.last_eval_ts.clone(),
        );
        t.register(
            "strata_rule_group_last_evaluation_samples",
            "Samples a group wrote at its last evaluation.",
            m.last_samples.clone(),
        );
        t.register("strata_rule_group_interval_seconds", "A group's evaluation interval.", m.interval.clone());
        t.register("strata_rule_group_rules", "Rules in a group.", m.rules.clone());
        t.register(
            "strata_notifications_alertmanagers_discovered",
            "Alertmanagers alerts are sent to.",
            m.alertmanagers.clone(),
        );
        t.register("strata_notifications_sent", "Alerts sent to an Alertmanager.", m.sent.clone());
        t.register("strata_notifications_errors", "Alerts that failed to reach an Alertmanager.", m.errors.clone());
        t.register(
            "strata_notifications_dropped",
            "Alerts dropped (queue full or no Alertmanager took them).",
            m.dropped.clone(),
        );
        t.register("strata_notifications_queue_length", "Alerts waiting to be sent.", m.queue_length.clone());
        t.register(
            "strata_ruler_api_rejected_requests",
            "Rules API requests refused as invalid (400).",
            m.api_rejected.clone(),
        );
        m
    }
}

/// What every group's evaluation shares.
pub(crate) struct Shared {
    pub(crate) select: Arc<dyn Select>,
    pub(crate) append: Arc<dyn Append>,
    pub(crate) engine: Engine,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: RulerSettings,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) notifier: Arc<Notifier>,
    pub(crate) config: RwLock<Arc<RulerConfig>>,
}

impl Shared {
    pub(crate) fn config(&self) -> Arc<RulerConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// How often the ruler re-reads its sources on its own.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Identifies a group: tenant, file (or API namespace), name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    /// The tenant.
    pub tenant: String,
    /// The file or namespace.
    pub file: String,
    /// The group name.
    pub name: String,
}

/// Decides whether this process evaluates a group.
pub type OwnsFn = dyn Fn(&GroupKey) -> bool + Send + Sync;

/// A further source of rule groups (e.g. Kubernetes `PrometheusRule`
/// objects): asked for its groups at every [`Ruler::sync`]; it calls
/// `sync` itself when its groups change.
pub trait RuleSource: Send + Sync {
    /// The groups, each with its tenant; `default_interval` is
    /// `global.evaluation_interval`.
    fn groups(
        &self,
        default_interval: Duration,
    ) -> strata_model::storage::BoxFuture<'_, Result<Vec<(String, RuleGroup)>, RulerError>>;
}

struct Running {
    group: Arc<Group>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The ruler: groups from rule files and the API store, evaluated in tasks.
pub struct Ruler {
    shared: Arc<Shared>,
    store: RuleStore,
    running: tokio::sync::Mutex<BTreeMap<GroupKey, Running>>,
    /// Whether groups created by the next sync restore `for` state (only the first).
    first_sync: std::sync::atomic::AtomicBool,
    owns: RwLock<Arc<OwnsFn>>,
    sources: RwLock<Vec<Arc<dyn RuleSource>>>,
}

impl std::fmt::Debug for Ruler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ruler")
    }
}

impl Ruler {
    /// A ruler with `config`; nothing runs until [`Ruler::run`].
    pub fn new(deps: RulerDeps, settings: RulerSettings, config: RulerConfig) -> Arc<Self> {
        let metrics = Arc::new(Metrics::register(&deps.telemetry));
        let notifier = Arc::new(Notifier::new(
            NotifierConfig { alerting: config.alerting.clone(), external_labels: config.external_labels.clone() },
            settings.queue_capacity,
            Arc::clone(&metrics),
        ));
        let shared = Arc::new(Shared {
            select: deps.select,
            append: deps.append,
            engine: deps.engine,
            clock: deps.clock,
            settings,
            metrics,
            notifier,
            config: RwLock::new(Arc::new(config)),
        });
        Arc::new(Self {
            shared,
            store: RuleStore::new(deps.store),
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            first_sync: std::sync::atomic::AtomicBool::new(true),
            owns: RwLock::new(Arc::new(|_: &GroupKey| true)),
            sources: RwLock::new(Vec::new()),
        })
    }

    /// Sets which groups this process evaluates (applied at the next sync).
    pub fn set_owner(&self, owns: Arc<OwnsFn>) {
        *self.owns.write().unwrap_or_else(std::sync::PoisonError::into_inner) = owns;
    }

    /// Adds a source of rule groups (applied at the next sync).
    pub fn add_source(&self, source: Arc<dyn RuleSource>) {
        self.sources.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(source);
    }

    /// The settings.
    pub fn settings(&self) -> &RulerSettings {
        &self.shared.settings
    }

    /// Counts a rules API request refused as invalid.
    pub(crate) fn count_rejected(&self) {
        self.shared.metrics.api_rejected.inc();
    }

    /// The API store.
    pub fn store(&self) -> &RuleStore {
        &self.store
    }

    /// Replaces the config (rule files, alerting) and applies it.
    pub async fn reload(&self, config: RulerConfig) -> Result<(), RulerError> {
        self.shared.notifier.set_config(NotifierConfig {
            alerting: config.alerting.clone(),
            external_labels: config.external_labels.clone(),
        });
        *self.shared.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
        self.sync().await
    }

    /// Every group that should run: file groups (default tenant) and the API store's.
    async fn desired(&self) -> Result<BTreeMap<GroupKey, RuleGroup>, RulerError> {
        let cfg = self.shared.config();
        let mut out = BTreeMap::new();
        let tenant = &self.shared.settings.default_tenant;
        for g in &cfg.file_groups {
            out.insert(GroupKey { tenant: tenant.clone(), file: g.file.clone(), name: g.name.clone() }, g.clone());
        }
        for ns in self.store.list_all().await? {
            for text in &ns.groups {
                match parse_single_group(&ns.namespace, text, cfg.evaluation_interval) {
                    Ok(g) => {
                        let key =
                            GroupKey { tenant: ns.tenant.clone(), file: ns.namespace.clone(), name: g.name.clone() };
                        out.insert(key, g);
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %ns.tenant, namespace = %ns.namespace, error = %e, "skipping a stored rule group")
                    }
                }
            }
        }
        let sources = self.sources.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for src in sources {
            for (tenant, g) in src.groups(cfg.evaluation_interval).await? {
                out.insert(GroupKey { tenant, file: g.file.clone(), name: g.name.clone() }, g);
            }
        }
        let owns = Arc::clone(&self.owns.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        out.retain(|k, _| owns(k));
        Ok(out)
    }

    /// Starts, stops and replaces groups to match the sources.
    pub async fn sync(&self) -> Result<(), RulerError> {
        let desired = self.desired().await?;
        let restore = self.first_sync.swap(false, std::sync::atomic::Ordering::SeqCst);
        let mut running = self.running.lock().await;
        let gone: Vec<GroupKey> = running.keys().filter(|k| !desired.contains_key(*k)).cloned().collect();
        for k in gone {
            if let Some(r) = running.remove(&k) {
                let _ = r.stop.send(true);
                let _ = r.task.await;
                mark_stale(&self.shared, &r.group, self.shared.clock.now_ms()).await;
                let l = group::group_labels(&r.group);
                let m = &self.shared.metrics;
                m.last_duration.remove(&l);
                m.last_eval_ts.remove(&l);
                m.last_samples.remove(&l);
                m.interval.remove(&l);
                m.rules.remove(&l);
            }
        }
        for (k, def) in desired {
            if let Some(r) = running.get(&k)
                && r.group.def == def
            {
                continue;
            }
            let group = Arc::new(Group::new(def, k.tenant.clone(), restore));
            if let Some(old) = running.remove(&k) {
                let _ = old.stop.send(true);
                let _ = old.task.await;
                group.copy_state_from(&old.group);
            }
            let l = group::group_labels(&group);
            self.shared.metrics.interval.get_or_create(&l).set(group.def.interval.as_secs_f64());
            self.shared.metrics.rules.get_or_create(&l).set(group.def.rules.len() as i64);
            let (tx, rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(run_group(Arc::clone(&self.shared), Arc::clone(&group), restore, rx));
            running.insert(k, Running { group, stop: tx, task });
        }
        Ok(())
    }

    /// The running groups of `tenant`, ordered by file and name.
    pub async fn groups(&self, tenant: &str) -> Vec<Arc<Group>> {
        let running = self.running.lock().await;
        running.iter().filter(|(k, _)| k.tenant == tenant).map(|(_, r)| Arc::clone(&r.group)).collect()
    }

    /// Runs the ruler until `stop`: starts every group and the notifier,
    /// re-reads the sources every [`RESYNC_INTERVAL`] (so groups another
    /// process stored are picked up, and a failed start is retried); on
    /// stop, stops the groups and sends what is queued.
    pub async fn run(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        if let Err(e) = self.sync().await {
            tracing::error!(error = %e, "starting rule groups failed; retrying");
        }
        let notifier = tokio::spawn(Arc::clone(&self.shared.notifier).run(stop.clone()));
        let mut stop = stop;
        while !*stop.borrow() {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                () = tokio::time::sleep(RESYNC_INTERVAL) => {
                    if let Err(e) = self.sync().await {
                        tracing::warn!(error = %e, "re-reading rule groups failed");
                    }
                }
            }
        }
        let mut running = self.running.lock().await;
        for (_, r) in std::mem::take(&mut *running) {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
        let _ = notifier.await;
    }

    /// Groups by file, for the management API's lookups.
    pub(crate) fn default_interval(&self) -> Duration {
        self.shared.config().evaluation_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<(String, RuleGroup)>);

    impl RuleSource for Fixed {
        fn groups(
            &self,
            _default_interval: Duration,
        ) -> strata_model::storage::BoxFuture<'_, Result<Vec<(String, RuleGroup)>, RulerError>> {
            Box::pin(async move { Ok(self.0.clone()) })
        }
    }

    fn group(file: &str, name: &str) -> RuleGroup {
        let text = format!("groups:\n- name: {name}\n  rules:\n  - record: r\n    expr: vector(1)\n");
        rulefile::parse_rule_file(file, &text, Duration::from_secs(60)).expect("valid").remove(0)
    }

    #[tokio::test]
    async fn sources_and_ownership_decide_the_groups() {
        let store = Arc::new(strata_promql::memstore::MemStore::new());
        let deps = RulerDeps {
            select: store as Arc<dyn Select>,
            append: Arc::new(NoAppend),
            engine: Engine::default(),
            telemetry: Telemetry::empty(),
            clock: Arc::new(strata_common::ManualClock::new(0)),
            store: Arc::new(object_store::memory::InMemory::new()),
        };
        let config = RulerConfig { file_groups: vec![group("a.yml", "files")], ..RulerConfig::default() };
        let ruler = Ruler::new(deps, RulerSettings::default(), config);
        ruler.store().put("team", "ns", &["name: api\nrules: []\n".to_owned()]).await.expect("put");
        ruler.add_source(Arc::new(Fixed(vec![("crd-tenant".to_owned(), group("ns/rule", "crd"))])));
        let names = |m: &BTreeMap<GroupKey, RuleGroup>| {
            m.keys().map(|k| format!("{}/{}/{}", k.tenant, k.file, k.name)).collect::<Vec<_>>()
        };
        assert_eq!(
            names(&ruler.desired().await.expect("desired")),
            ["anonymous/a.yml/files", "crd-tenant/ns/rule/crd", "team/ns/api"]
        );
        ruler.set_owner(Arc::new(|k: &GroupKey| k.tenant != "team"));
        assert_eq!(
            names(&ruler.desired().await.expect("desired")),
            ["anonymous/a.yml/files", "crd-tenant/ns/rule/crd"]
        );
    }

    struct NoAppend;

    impl Append for NoAppend {
        fn append(
            &self,
            _batch: strata_model::WriteBatch,
        ) -> strata_model::storage::BoxFuture<
            '_,
            Result<strata_model::storage::AppendSummary, strata_model::storage::AppendError>,
        > {
            Box::pin(async { Ok(strata_model::storage::AppendSummary::default()) })
        }
    }
}
