//! Rule group evaluation with Prometheus' semantics: interval-aligned
//! evaluation times offset by a hash of the group, recording rules written
//! through [`strata_model::Append`], alerts pending → firing → inactive with
//! `for` and `keep_firing_for`, the `ALERTS` and `ALERTS_FOR_STATE` series,
//! staleness markers for series that disappear, and the restore of `for`
//! state after a restart (`RestoreForState`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_model::{Labels, LabelsBuilder, Matcher, Sample, WriteBatch};
use strata_promql::Value;

use crate::rulefile::{Rule, RuleGroup, RuleKind};
use crate::template::{ExecContext, QuerySample, TemplateData, expand};
use crate::{Shared, notifier::NotifyAlert};

/// How long resolved alerts are kept (and re-sent) after they resolve.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    /// Resolved (kept for [`RESOLVED_RETENTION_MS`]).
    Inactive,
    /// Active, waiting for `for`.
    Pending,
    /// Firing.
    Firing,
}

impl AlertState {
    /// Prometheus' name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::Pending => "pending",
            Self::Firing => "firing",
        }
    }
}

/// One alert of an alerting rule.
#[derive(Debug, Clone)]
pub struct Alert {
    /// Labels (expression result without `__name__`, rule labels, `alertname`).
    pub labels: Labels,
    /// Rendered annotations.
    pub annotations: BTreeMap<String, String>,
    /// State.
    pub state: AlertState,
    /// The expression's value at the last evaluation.
    pub value: f64,
    /// When it became active, ms.
    pub active_at: i64,
    /// When it fired, ms (0: not yet).
    pub fired_at: i64,
    /// When it resolved, ms (0: not resolved).
    pub resolved_at: i64,
    /// When it was last sent, ms (0: never).
    pub last_sent_at: i64,
    /// `endsAt` of a firing alert as last sent.
    pub valid_until: i64,
    /// Since when it has been kept firing without its condition, ms (0: not).
    pub keep_firing_since: i64,
}

/// Health of a rule's last evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// Last evaluation succeeded.
    Ok,
    /// Last evaluation failed.
    Err,
}

impl Health {
    /// Prometheus' name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Ok => "ok",
            Self::Err => "err",
        }
    }
}

/// The evaluation state of one rule.
#[derive(Debug, Clone)]
pub struct RuleState {
    /// Health.
    pub health: Health,
    /// Last error message ("" when none).
    pub last_error: String,
    /// Seconds the last evaluation took.
    pub eval_seconds: f64,
    /// When it was last evaluated, ms (0: never).
    pub last_eval_ms: i64,
    /// Alerts by label set (alerting rules).
    pub active: HashMap<Labels, Alert>,
    /// Whether `for` state has been restored (ALERTS are written only then).
    pub restored: bool,
    /// Series written at the last evaluation (for staleness markers).
    pub prev_series: HashSet<Labels>,
}

impl RuleState {
    fn new(restored: bool) -> Self {
        Self {
            health: Health::Unknown,
            last_error: String::new(),
            eval_seconds: 0.0,
            last_eval_ms: 0,
            active: HashMap::new(),
            restored,
            prev_series: HashSet::new(),
        }
    }
}

/// The evaluation state of a group.
#[derive(Debug, Clone)]
pub struct GroupState {
    /// One per rule, in order.
    pub rules: Vec<RuleState>,
    /// Seconds the last evaluation of the whole group took.
    pub eval_seconds: f64,
    /// When the group was last evaluated, ms (0: never).
    pub last_eval_ms: i64,
}

/// A running group: its definition, tenant and state.
#[derive(Debug)]
pub struct Group {
    /// The group.
    pub def: RuleGroup,
    /// The tenant whose data it reads and writes.
    pub tenant: String,
    /// Its evaluation state.
    pub state: Mutex<GroupState>,
}

impl Group {
    /// A group not evaluated yet; `restore` says whether alert `for` state
    /// will be restored from `ALERTS_FOR_STATE` after the second evaluation.
    pub fn new(def: RuleGroup, tenant: String, restore: bool) -> Self {
        let rules = def.rules.iter().map(|_| RuleState::new(!restore)).collect();
        Self { def, tenant, state: Mutex::new(GroupState { rules, eval_seconds: 0.0, last_eval_ms: 0 }) }
    }

    /// Takes over the state of `old` for rules that are the same (by name,
    /// labels and kind), as Prometheus' `CopyState` does on reload.
    pub fn copy_state_from(&self, old: &Group) {
        let old_state = lock(&old.state).clone();
        let mut st = lock(&self.state);
        let mut used = HashSet::new();
        for (i, r) in self.def.rules.iter().enumerate() {
            // Prometheus matches rules by name and labels (not expression).
            let found = old.def.rules.iter().enumerate().position(|(j, o)| {
                !used.contains(&j) && o.name == r.name && o.labels == r.labels && o.is_alerting() == r.is_alerting()
            });
            if let Some(j) = found {
                used.insert(j);
                if let Some(s) = old_state.rules.get(j) {
                    st.rules[i] = s.clone();
                }
            }
        }
        st.eval_seconds = old_state.eval_seconds;
        st.last_eval_ms = old_state.last_eval_ms;
    }

    /// Prometheus' `EvalTimestamp`: the latest interval-aligned time (offset by
    /// the group's hash) at or before `now_ms`.
    pub fn eval_timestamp(&self, now_ms: i64) -> i64 {
        let interval = i64::try_from(self.def.interval.as_nanos()).unwrap_or(i64::MAX).max(1);
        let offset = i64::try_from(group_hash(&self.def.name, &self.def.file) % interval as u64).unwrap_or(0);
        let now_ns = now_ms.saturating_mul(1_000_000);
        let adj = now_ns - offset;
        let base = adj - adj.rem_euclid(interval);
        (base + offset).div_euclid(1_000_000)
    }
}

/// `labels.New({name}, {file}).Hash()`: xxhash64 of the sorted label pairs.
pub fn group_hash(name: &str, file: &str) -> u64 {
    let mut b = Vec::with_capacity(name.len() + file.len() + 12);
    for (k, v) in [("file", file), ("name", name)] {
        b.extend_from_slice(k.as_bytes());
        b.push(0xff);
        b.extend_from_slice(v.as_bytes());
        b.push(0xff);
    }
    twox_hash::XxHash64::oneshot(0, &b)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs an instant query; the vector (or scalar, as one sample without labels).
async fn query(shared: &Shared, tenant: &str, expr: &str, ts: i64) -> Result<Vec<(Labels, f64)>, String> {
    let res = shared.engine.instant_query(shared.select.as_ref(), tenant, expr, ts).await.map_err(|e| e.to_string())?;
    match res.value {
        Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
        Value::Scalar { v, .. } => Ok(vec![(Labels::empty(), v)]),
        _ => Err("rule result is not a vector or scalar".into()),
    }
}

/// The `query` function of templates: blocks on the engine (the ruler runs
/// on a multi-threaded runtime).
fn template_query(shared: &Shared, tenant: &str, ts: i64, q: &str) -> Result<Vec<QuerySample>, String> {
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err("query is only available on a multi-threaded runtime".into());
    }
    let res = tokio::task::block_in_place(|| handle.block_on(query(shared, tenant, q, ts)))?;
    Ok(res
        .into_iter()
        .map(|(l, v)| QuerySample { labels: l.iter().map(|l| (l.name.clone(), l.value.clone())).collect(), value: v })
        .collect())
}

fn to_map(l: &Labels) -> BTreeMap<String, String> {
    l.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
}

/// Evaluates the group at `ts` (ms): every rule in order, outputs appended,
/// alerts handed to the notifier.
pub(crate) async fn eval_group(shared: &Shared, group: &Group, ts: i64) {
    let started = Instant::now();
    let started_ms = shared.clock.now_ms();
    let query_ts = ts - i64::try_from(group.def.query_offset.as_millis()).unwrap_or(0);
    let mut batch = WriteBatch::new(group.tenant.clone());
    let mut notify: Vec<NotifyAlert> = Vec::new();
    for (i, rule) in group.def.rules.iter().enumerate() {
        let rule_started = Instant::now();
        let rule_started_ms = shared.clock.now_ms();
        let result = match &rule.kind {
            RuleKind::Recording => eval_recording(shared, group, rule, query_ts).await,
            RuleKind::Alerting { .. } => eval_alerting(shared, group, i, rule, query_ts).await,
        };
        shared.metrics.evaluations.get_or_create(&group_labels(group)).inc();
        let mut st = lock(&group.state);
        let rs = &mut st.rules[i];
        rs.eval_seconds = rule_started.elapsed().as_secs_f64();
        rs.last_eval_ms = rule_started_ms;
        let samples = match result {
            Ok(samples) => {
                rs.health = Health::Ok;
                rs.last_error.clear();
                samples
            }
            Err(e) => {
                tracing::warn!(group = %group.def.name, rule = %rule.name, error = %e, "rule evaluation failed");
                rs.health = Health::Err;
                rs.last_error = e;
                shared.metrics.failures.get_or_create(&group_labels(group)).inc();
                Vec::new()
            }
        };
        // Staleness markers for series gone since the last evaluation.
        let current: HashSet<Labels> = samples.iter().map(|(l, _)| l.clone()).collect();
        for gone in rs.prev_series.difference(&current) {
            batch.push(gone.clone(), Sample::new(query_ts, strata_model::sample::stale_nan()));
        }
        rs.prev_series = current;
        for (l, v) in samples {
            batch.push(l, Sample::new(query_ts, v));
        }
        if let RuleKind::Alerting { .. } = rule.kind {
            collect_sends(shared, group, rs, rule, ts, &mut notify);
        }
    }
    {
        let mut st = lock(&group.state);
        st.eval_seconds = started.elapsed().as_secs_f64();
        st.last_eval_ms = started_ms;
    }
    let labels = group_labels(group);
    shared.metrics.last_samples.get_or_create(&labels).set(batch.sample_count() as i64);
    shared.metrics.last_eval_ts.get_or_create(&labels).set(started_ms as f64 / 1000.0);
    if !batch.is_empty()
        && let Err(e) = shared.append.append(batch).await
    {
        tracing::warn!(group = %group.def.name, error = %e, "writing rule results failed");
        shared.metrics.write_failures.get_or_create(&group_labels(group)).inc();
    }
    if !notify.is_empty() {
        shared.notifier.send(notify);
    }
    shared.metrics.last_duration.get_or_create(&group_labels(group)).set(started.elapsed().as_secs_f64());
}

pub(crate) fn group_labels(g: &Group) -> Vec<(String, String)> {
    vec![("rule_group".to_owned(), format!("{};{}", g.def.file, g.def.name))]
}

async fn eval_recording(shared: &Shared, group: &Group, rule: &Rule, ts: i64) -> Result<Vec<(Labels, f64)>, String> {
    let res = query(shared, &group.tenant, &rule.expr, ts).await?;
    let mut out = Vec::with_capacity(res.len());
    let mut seen = HashSet::new();
    for (l, v) in res {
        let mut b = l.builder();
        b.set("__name__", rule.name.clone());
        for (k, val) in &rule.labels {
            if val.is_empty() {
                b.del(k);
            } else {
                b.set(k.clone(), val.clone());
            }
        }
        let l = b.build();
        if !seen.insert(l.clone()) {
            return Err("vector contains metrics with the same labelset after applying rule labels".into());
        }
        out.push((l, v));
    }
    if group.def.limit > 0 && out.len() > group.def.limit {
        return Err(format!("exceeded limit of {} with {} series", group.def.limit, out.len()));
    }
    Ok(out)
}

async fn eval_alerting(
    shared: &Shared,
    group: &Group,
    idx: usize,
    rule: &Rule,
    ts: i64,
) -> Result<Vec<(Labels, f64)>, String> {
    let RuleKind::Alerting { hold, keep_firing_for, annotations } = &rule.kind else { return Ok(Vec::new()) };
    let res = query(shared, &group.tenant, &rule.expr, ts).await?;
    let name = format!("__alert_{}", rule.name);
    let mut fresh: HashMap<Labels, Alert> = HashMap::new();
    let mut expand_all = || -> Result<(), String> {
        for (l, v) in &res {
            let data = TemplateData {
                labels: to_map(l),
                external_labels: shared.config().external_labels.clone(),
                external_url: shared.settings.external_url.clone(),
                value: *v,
            };
            let mut qf = |q: &str| template_query(shared, &group.tenant, ts, q);
            let mut ctx = ExecContext { query: &mut qf, external_url: shared.settings.external_url.clone() };
            let mut render = |text: &str| match expand(&name, text, &data, &mut ctx) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(alert = %rule.name, error = %e, "expanding alert template failed");
                    format!("<error expanding template: {e}>")
                }
            };
            let mut b: LabelsBuilder = l.without_metric_name().builder();
            for (k, t) in &rule.labels {
                let val = render(t);
                if val.is_empty() {
                    b.del(k);
                } else {
                    b.set(k.clone(), val);
                }
            }
            b.set("alertname", rule.name.clone());
            let ann: BTreeMap<String, String> = annotations.iter().map(|(k, t)| (k.clone(), render(t))).collect();
            let labels = b.build();
            if fresh.contains_key(&labels) {
                return Err("vector contains metrics with the same labelset after applying alert labels".into());
            }
            fresh.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations: ann,
                    state: AlertState::Pending,
                    value: *v,
                    active_at: ts,
                    fired_at: 0,
                    resolved_at: 0,
                    last_sent_at: 0,
                    valid_until: 0,
                    keep_firing_since: 0,
                },
            );
        }
        Ok(())
    };
    expand_all()?;
    let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
    let keep_ms = i64::try_from(keep_firing_for.as_millis()).unwrap_or(i64::MAX);
    let mut st = lock(&group.state);
    let rs = &mut st.rules[idx];
    let result_keys: HashSet<Labels> = fresh.keys().cloned().collect();
    for (k, a) in fresh {
        match rs.active.get_mut(&k) {
            Some(old) if old.state != AlertState::Inactive => {
                old.value = a.value;
                old.annotations = a.annotations;
            }
            _ => {
                rs.active.insert(k, a);
            }
        }
    }
    let mut out = Vec::new();
    let mut active_pending = 0;
    let mut remove = Vec::new();
    for (k, a) in rs.active.iter_mut() {
        if !result_keys.contains(k) {
            let mut keep_firing = false;
            if a.state == AlertState::Firing && keep_ms > 0 {
                if a.keep_firing_since == 0 {
                    a.keep_firing_since = ts;
                }
                if ts - a.keep_firing_since < keep_ms {
                    keep_firing = true;
                }
            }
            if !keep_firing {
                if a.state == AlertState::Pending || (a.resolved_at != 0 && ts - a.resolved_at > RESOLVED_RETENTION_MS)
                {
                    remove.push(k.clone());
                }
                if a.state != AlertState::Inactive {
                    a.state = AlertState::Inactive;
                    a.resolved_at = ts;
                }
                continue;
            }
        } else {
            a.keep_firing_since = 0;
        }
        active_pending += 1;
        if a.state == AlertState::Pending && ts - a.active_at >= hold_ms {
            a.state = AlertState::Firing;
            a.fired_at = ts;
        }
        if rs.restored {
            let mut b = a.labels.builder();
            b.set("__name__", "ALERTS");
            b.set("alertstate", a.state.as_str());
            out.push((b.build(), 1.0));
            let mut b = a.labels.builder();
            b.set("__name__", "ALERTS_FOR_STATE");
            out.push((b.build(), (a.active_at.div_euclid(1000)) as f64));
        }
    }
    for k in remove {
        rs.active.remove(&k);
    }
    if group.def.limit > 0 && active_pending > group.def.limit {
        rs.active.clear();
        return Err(format!("exceeded limit of {} with {} alerts", group.def.limit, active_pending));
    }
    Ok(out)
}

/// Prometheus' `sendAlerts`: firing alerts every resend delay, resolved
/// alerts once more after they resolve; `endsAt` as Prometheus computes it.
fn collect_sends(shared: &Shared, group: &Group, rs: &mut RuleState, rule: &Rule, ts: i64, out: &mut Vec<NotifyAlert>) {
    let resend_ms = i64::try_from(shared.settings.resend_delay.as_millis()).unwrap_or(i64::MAX);
    let interval_ms = i64::try_from(group.def.interval.as_millis()).unwrap_or(i64::MAX);
    let delta = resend_ms.max(interval_ms);
    for a in rs.active.values_mut() {
        let needs = a.state != AlertState::Pending
            && (a.resolved_at > a.last_sent_at || a.last_sent_at == 0 || a.last_sent_at + resend_ms < ts);
        if !needs {
            continue;
        }
        a.last_sent_at = ts;
        a.valid_until = ts + 4 * delta;
        out.push(NotifyAlert {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: a.fired_at,
            ends_at: if a.resolved_at != 0 { a.resolved_at } else { a.valid_until },
            generator_url: format!(
                "{}/graph?g0.expr={}&g0.tab=1",
                shared.settings.external_url,
                crate::template::query_escape(&rule.expr)
            ),
        });
    }
}

/// Prometheus' `RestoreForState`: moves `ActiveAt` of pending alerts so that
/// time spent down does not count (within the outage tolerance), giving
/// at least the grace period before firing.
pub(crate) async fn restore_for_state(shared: &Shared, group: &Group, now: i64) {
    let tolerance = i64::try_from(shared.settings.outage_tolerance.as_millis()).unwrap_or(i64::MAX);
    let grace = i64::try_from(shared.settings.for_grace_period.as_millis()).unwrap_or(i64::MAX);
    let mint = now - tolerance;
    for (i, rule) in group.def.rules.iter().enumerate() {
        let RuleKind::Alerting { hold, .. } = &rule.kind else { continue };
        let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
        if hold_ms < grace {
            lock(&group.state).rules[i].restored = true;
            continue;
        }
        let alerts: Vec<Labels> = lock(&group.state).rules[i].active.keys().cloned().collect();
        for key in alerts {
            let mut b = key.builder();
            b.set("__name__", "ALERTS_FOR_STATE");
            let want = b.build();
            let matchers: Vec<Matcher> = want.iter().map(|l| Matcher::equal(&l.name, &l.value)).collect();
            let series = match shared.select.select(&group.tenant, &matchers, mint, now).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(alert = %rule.name, error = %e, "reading ALERTS_FOR_STATE failed");
                    continue;
                }
            };
            let Some(s) = series.iter().find(|s| s.labels.len() == want.len()) else { continue };
            let Some(last) = s.samples.last() else { continue };
            if last.is_stale() {
                continue;
            }
            let down_at = last.t.div_euclid(1000) * 1000;
            let mut restored_active_at = (last.v as i64) * 1000;
            let spent = down_at - restored_active_at;
            let remaining = hold_ms - spent;
            if remaining <= 0 {
                // It was firing when we went down; the next evaluation sets it firing again.
            } else if remaining < grace {
                restored_active_at = now + grace - hold_ms;
            } else {
                restored_active_at += now - down_at;
            }
            let mut st = lock(&group.state);
            if let Some(a) = st.rules[i].active.get_mut(&key) {
                tracing::info!(alert = %rule.name, labels = %key, active_at = restored_active_at, "restored 'for' state");
                a.active_at = restored_active_at;
            }
        }
        lock(&group.state).rules[i].restored = true;
    }
}

/// Staleness markers for every series the group wrote at its last
/// evaluation (a group that is removed), written at `ts`.
pub(crate) async fn mark_stale(shared: &Shared, group: &Group, ts: i64) {
    let mut batch = WriteBatch::new(group.tenant.clone());
    {
        let mut st = lock(&group.state);
        for rs in &mut st.rules {
            for l in rs.prev_series.drain() {
                batch.push(l, Sample::new(ts, strata_model::sample::stale_nan()));
            }
        }
    }
    if !batch.is_empty()
        && let Err(e) = shared.append.append(batch).await
    {
        tracing::warn!(group = %group.def.name, error = %e, "writing staleness markers failed");
    }
}

/// The group's evaluation loop, as Prometheus' `Group.run`: waits for the
/// first aligned time, evaluates every interval, counts missed iterations,
/// restores `for` state after the second evaluation when asked to.
pub(crate) async fn run_group(
    shared: Arc<Shared>,
    group: Arc<Group>,
    restore: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let interval_ms = i64::try_from(group.def.interval.as_millis()).unwrap_or(i64::MAX).max(1);
    let mut eval_ts = group.eval_timestamp(shared.clock.now_ms()) + interval_ms;
    let mut iteration = 0u64;
    loop {
        let wait = eval_ts - shared.clock.now_ms();
        if wait > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                _ = stop.changed() => break,
            }
        }
        if *stop.borrow() {
            break;
        }
        eval_group(&shared, &group, eval_ts).await;
        iteration += 1;
        if restore && iteration == 2 {
            restore_for_state(&shared, &group, shared.clock.now_ms()).await;
        }
        let now = shared.clock.now_ms();
        let missed = (now - eval_ts) / interval_ms - 1;
        if missed > 0 {
            shared.metrics.missed.get_or_create(&group_labels(&group)).inc_by(missed as u64);
        }
        eval_ts += (missed.max(0) + 1) * interval_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifier::{Notifier, NotifierConfig};
    use crate::{Metrics, RulerConfig, RulerSettings};
    use strata_common::ManualClock;
    use strata_model::storage::{AppendError, AppendSummary, BoxFuture};
    use strata_model::{Append, Select};
    use strata_promql::memstore::MemStore;

    struct MemAppend(Arc<MemStore>);

    impl Append for MemAppend {
        fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
            Box::pin(async move {
                let n = batch.sample_count();
                for s in batch.series {
                    self.0.add(&batch.tenant, s.labels, s.samples);
                }
                Ok(AppendSummary { accepted: n, ..AppendSummary::default() })
            })
        }
    }

    fn shared(store: &Arc<MemStore>, settings: RulerSettings) -> Shared {
        let telemetry = strata_common::Telemetry::empty();
        let metrics = Arc::new(Metrics::register(&telemetry));
        Shared {
            select: Arc::clone(store) as Arc<dyn Select>,
            append: Arc::new(MemAppend(Arc::clone(store))),
            engine: strata_promql::Engine::default(),
            clock: Arc::new(ManualClock::new(0)),
            settings,
            notifier: Arc::new(Notifier::new(NotifierConfig::default(), 100, Arc::clone(&metrics))),
            metrics,
            config: std::sync::RwLock::new(Arc::new(RulerConfig::default())),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).expect("labels")
    }

    fn group(yaml: &str, restore: bool) -> Group {
        let groups = crate::rulefile::parse_rule_file("t.yml", yaml, Duration::from_secs(1)).expect("valid");
        Group::new(groups[0].clone(), "t".into(), restore)
    }

    async fn series(store: &MemStore, name: &str, t: i64) -> Vec<(Labels, f64)> {
        let m = [Matcher::equal("__name__", name)];
        let got = store.select("t", &m, t, t).await.expect("select");
        got.into_iter().filter_map(|s| s.samples.first().map(|x| (s.labels, x.v))).collect()
    }

    #[tokio::test]
    async fn pending_firing_keep_firing_resolved() {
        let store = Arc::new(MemStore::new());
        // x is 1 up to 12 s, then 0.
        store.add(
            "t",
            labels(&[("__name__", "x"), ("a", "1")]),
            (0..=30).map(|s| Sample::new(s * 1000, if s <= 12 { 1.0 } else { 0.0 })),
        );
        let sh = shared(&store, RulerSettings::default());
        let g = group(
            "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: x > 0\n    for: 2s\n    keep_firing_for: 2s\n    labels: {sev: '{{ $labels.a }}!'}\n",
            false,
        );
        let state = |g: &Group| lock(&g.state).rules[0].active.values().next().map(|a| a.state);
        eval_group(&sh, &g, 10_000).await;
        assert_eq!(state(&g), Some(AlertState::Pending));
        let alerts = series(&store, "ALERTS", 10_000).await;
        assert_eq!(
            alerts,
            vec![(
                labels(&[
                    ("__name__", "ALERTS"),
                    ("a", "1"),
                    ("alertname", "X"),
                    ("alertstate", "pending"),
                    ("sev", "1!")
                ]),
                1.0
            )]
        );
        assert_eq!(series(&store, "ALERTS_FOR_STATE", 10_000).await[0].1, 10.0);
        assert_eq!(sh.notifier.queue_len(), 0, "pending alerts are not sent");
        eval_group(&sh, &g, 11_000).await;
        assert_eq!(state(&g), Some(AlertState::Pending));
        eval_group(&sh, &g, 12_000).await;
        assert_eq!(state(&g), Some(AlertState::Firing));
        assert_eq!(sh.notifier.queue_len(), 1, "firing alert sent");
        // The pending series went stale when the alert fired.
        assert!(
            series(&store, "ALERTS", 12_000)
                .await
                .iter()
                .any(|(l, v)| l.get("alertstate") == Some("pending") && strata_model::is_stale_nan(*v))
        );
        // Condition gone at 13 s: kept firing for 2 s, then resolved.
        eval_group(&sh, &g, 13_000).await;
        assert_eq!(state(&g), Some(AlertState::Firing));
        eval_group(&sh, &g, 14_000).await;
        assert_eq!(state(&g), Some(AlertState::Firing));
        eval_group(&sh, &g, 15_000).await;
        assert_eq!(state(&g), Some(AlertState::Inactive));
        assert_eq!(sh.notifier.queue_len(), 2, "resolved alert sent");
        let firing = series(&store, "ALERTS", 15_000).await;
        assert!(firing.iter().all(|(_, v)| strata_model::is_stale_nan(*v)), "{firing:?}");
        // Kept 15 minutes as resolved, then dropped.
        eval_group(&sh, &g, 15_000 + RESOLVED_RETENTION_MS + 1000).await;
        assert_eq!(state(&g), None);
    }

    #[tokio::test]
    async fn limits_and_duplicate_series_are_errors() {
        let store = Arc::new(MemStore::new());
        for a in ["1", "2", "3"] {
            store.add("t", labels(&[("__name__", "x"), ("a", a)]), [Sample::new(1000, 1.0)]);
        }
        let sh = shared(&store, RulerSettings::default());
        let g = group(
            "groups:\n- name: g\n  limit: 2\n  rules:\n  - alert: X\n    expr: x > 0\n  - record: y\n    expr: x\n  - record: z\n    expr: x\n    labels: {a: same}\n",
            false,
        );
        eval_group(&sh, &g, 2000).await;
        let st = lock(&g.state);
        assert_eq!(st.rules[0].health, Health::Err);
        assert_eq!(st.rules[0].last_error, "exceeded limit of 2 with 3 alerts");
        assert_eq!(st.rules[1].last_error, "exceeded limit of 2 with 3 series");
        assert_eq!(st.rules[2].last_error, "vector contains metrics with the same labelset after applying rule labels");
    }

    #[tokio::test]
    async fn restore_moves_active_at_as_prometheus() {
        for (down_at, want) in [(110_000, 190_000), (128_000, 175_000)] {
            let store = Arc::new(MemStore::new());
            store.add("t", labels(&[("__name__", "x")]), (0..=200).map(|s| Sample::new(s * 1000, 1.0)));
            store.add(
                "t",
                labels(&[("__name__", "ALERTS_FOR_STATE"), ("alertname", "X")]),
                (100..=down_at / 1000).map(|s| Sample::new(s * 1000, 100.0)),
            );
            let settings = RulerSettings { for_grace_period: Duration::from_secs(5), ..RulerSettings::default() };
            let sh = shared(&store, settings);
            let g = group("groups:\n- name: g\n  rules:\n  - alert: X\n    expr: x > 0\n    for: 30s\n", true);
            eval_group(&sh, &g, 199_000).await;
            assert!(series(&store, "ALERTS", 199_000).await.is_empty(), "nothing written before the restore");
            restore_for_state(&sh, &g, 200_000).await;
            let st = lock(&g.state);
            assert!(st.rules[0].restored);
            assert_eq!(st.rules[0].active.values().next().map(|a| a.active_at), Some(want), "down at {down_at}");
        }
    }

    #[tokio::test]
    async fn query_offset_shifts_queries_and_outputs() {
        let store = Arc::new(MemStore::new());
        store.add("t", labels(&[("__name__", "x")]), [Sample::new(5_000, 7.0), Sample::new(10_000, 9.0)]);
        let sh = shared(&store, RulerSettings::default());
        let g = group("groups:\n- name: g\n  query_offset: 5s\n  rules:\n  - record: y\n    expr: x\n", false);
        eval_group(&sh, &g, 10_000).await;
        // Evaluated at 10 s - 5 s: sees the sample at 5 s, written at 5 s.
        assert_eq!(series(&store, "y", 5_000).await, vec![(labels(&[("__name__", "y")]), 7.0)]);
        assert!(series(&store, "y", 10_000).await.is_empty());
    }

    #[tokio::test]
    async fn reload_keeps_alert_state_of_the_same_rule() {
        let store = Arc::new(MemStore::new());
        store.add("t", labels(&[("__name__", "x")]), (0..=20).map(|s| Sample::new(s * 1000, 1.0)));
        let sh = shared(&store, RulerSettings::default());
        let old = group("groups:\n- name: g\n  rules:\n  - alert: X\n    expr: x > 0\n    for: 5s\n", false);
        eval_group(&sh, &old, 10_000).await;
        let new = group(
            "groups:\n- name: g\n  rules:\n  - record: r\n    expr: x\n  - alert: X\n    expr: x >= 1\n    for: 5s\n",
            false,
        );
        new.copy_state_from(&old);
        let st = lock(&new.state);
        assert!(st.rules[0].active.is_empty());
        assert_eq!(st.rules[1].active.values().next().map(|a| a.active_at), Some(10_000));
    }

    #[test]
    fn eval_timestamps_are_aligned_with_a_stable_offset() {
        let g = group("groups:\n- name: g\n  interval: 10s\n  rules: []\n", false);
        let a = g.eval_timestamp(1_000_000_123);
        let b = g.eval_timestamp(1_000_004_567);
        assert!(a <= 1_000_000_123 && a > 1_000_000_123 - 10_000);
        assert!(b == a || b == a + 10_000);
        assert_eq!(g.eval_timestamp(a + 25_000), a + 20_000);
    }
}
