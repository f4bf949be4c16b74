//! Per-tenant ingest limits, as Mimir has them: active series, samples per
//! second (a token bucket with a burst) and label names per series.
//!
//! [`LimitedAppend`] sits in front of any write path ([`Append`]): a batch
//! that would take its tenant over a limit is refused whole with
//! [`AppendError::LimitExceeded`] (HTTP 429), nothing of it stored, and
//! counted in `strata_limits_refused_samples_total{tenant,reason}`. Limits
//! come from flags (the defaults for every tenant) and an overrides file:
//!
//! ```yaml
//! overrides:
//!   team-a:
//!     max_active_series: 100000
//!     ingestion_rate: 50000
//! ```
//!
//! Active series are the distinct series a tenant wrote through this
//! process within the active window (20 minutes by default), so in a
//! cluster with several receivers the limit holds per receiver.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use strata_common::{Clock, Telemetry};
use strata_model::{Append, AppendError, AppendSummary, BoxFuture, WriteBatch};

/// One tenant's limits; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantLimits {
    /// Most distinct series written within the active window.
    pub max_active_series: usize,
    /// Samples per second, sustained.
    pub ingestion_rate: f64,
    /// Samples a tenant may send at once above the rate (the bucket size);
    /// 0 means one second of `ingestion_rate`.
    pub ingestion_burst_size: usize,
    /// Most label names per series (`__name__` included).
    pub max_label_names_per_series: usize,
}

impl Default for TenantLimits {
    /// Mimir's defaults: 30 label names, the rest unlimited.
    fn default() -> Self {
        Self { max_active_series: 0, ingestion_rate: 0.0, ingestion_burst_size: 0, max_label_names_per_series: 30 }
    }
}

/// A tenant's overrides in the file; fields left out keep the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitsOverride {
    /// See [`TenantLimits::max_active_series`].
    pub max_active_series: Option<usize>,
    /// See [`TenantLimits::ingestion_rate`].
    pub ingestion_rate: Option<f64>,
    /// See [`TenantLimits::ingestion_burst_size`].
    pub ingestion_burst_size: Option<usize>,
    /// See [`TenantLimits::max_label_names_per_series`].
    pub max_label_names_per_series: Option<usize>,
}

/// The overrides file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverridesFile {
    /// Limits by tenant.
    #[serde(default)]
    pub overrides: HashMap<String, TenantLimitsOverride>,
}

/// Validated limits: the defaults and each tenant's.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    defaults: TenantLimits,
    tenants: HashMap<String, TenantLimits>,
    /// How long a series counts as active after its last sample, ms.
    active_window_ms: i64,
}

/// Why limits could not be loaded: every problem, with its line when known.
#[derive(Debug, thiserror::Error)]
#[error("invalid limits overrides {file}:{}", problems.iter().map(|p| format!("\n  {p}")).collect::<String>())]
pub struct LimitsError {
    /// The file.
    pub file: String,
    /// `line:column: message` or `tenant "x": message`.
    pub problems: Vec<String>,
}

impl Limits {
    /// Default active window: a series stays active 20 minutes after its last sample.
    pub const DEFAULT_ACTIVE_WINDOW_MS: i64 = 20 * 60 * 1000;

    /// Limits with `defaults` for every tenant.
    pub fn new(defaults: TenantLimits) -> Self {
        Self { defaults, tenants: HashMap::new(), active_window_ms: Self::DEFAULT_ACTIVE_WINDOW_MS }
    }

    /// Adds the overrides in YAML `text` (from `file`), validated; every
    /// problem is reported at once.
    pub fn with_overrides(mut self, file: &str, text: &str) -> Result<Self, LimitsError> {
        let raw: OverridesFile = if text.trim().is_empty() {
            OverridesFile::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| {
                let at = e.location().map(|l| format!("{}:{}: ", l.line(), l.column())).unwrap_or_default();
                let msg = e.to_string().lines().next().unwrap_or_default().to_owned();
                LimitsError { file: file.to_owned(), problems: vec![format!("{at}{msg}")] }
            })?
        };
        let mut problems = Vec::new();
        let mut tenants: Vec<_> = raw.overrides.into_iter().collect();
        tenants.sort_by(|a, b| a.0.cmp(&b.0));
        for (tenant, o) in tenants {
            if tenant.is_empty() {
                problems.push("an empty tenant name".to_owned());
            }
            if o.ingestion_rate.is_some_and(|r| !r.is_finite() || r < 0.0) {
                problems.push(format!("tenant {tenant:?}: ingestion_rate must be a non-negative number"));
            }
            let d = self.defaults;
            let limits = TenantLimits {
                max_active_series: o.max_active_series.unwrap_or(d.max_active_series),
                ingestion_rate: o.ingestion_rate.unwrap_or(d.ingestion_rate),
                ingestion_burst_size: o.ingestion_burst_size.unwrap_or(d.ingestion_burst_size),
                max_label_names_per_series: o.max_label_names_per_series.unwrap_or(d.max_label_names_per_series),
            };
            self.tenants.insert(tenant, limits);
        }
        if problems.is_empty() { Ok(self) } else { Err(LimitsError { file: file.to_owned(), problems }) }
    }

    /// The limits of `tenant`.
    pub fn of(&self, tenant: &str) -> TenantLimits {
        self.tenants.get(tenant).copied().unwrap_or(self.defaults)
    }

    /// Whether no tenant has any limit (the decorator can be skipped).
    pub fn is_unlimited(&self) -> bool {
        let none =
            |l: &TenantLimits| l.max_active_series == 0 && l.ingestion_rate == 0.0 && l.max_label_names_per_series == 0;
        none(&self.defaults) && self.tenants.values().all(none)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    tenant: String,
    reason: &'static str,
}

/// A tenant's running state: its token bucket and active series.
#[derive(Debug, Default)]
struct TenantState {
    tokens: f64,
    refilled_ms: Option<i64>,
    /// Series hash → last sample time written (wall clock, ms).
    active: HashMap<u64, i64>,
    pruned_ms: i64,
}

/// An [`Append`] that enforces [`Limits`] before passing batches on.
pub struct LimitedAppend {
    inner: Arc<dyn Append>,
    limits: Limits,
    clock: Arc<dyn Clock>,
    state: Mutex<HashMap<String, TenantState>>,
    refused: Family<RefusedLabels, Counter>,
    hasher: std::collections::hash_map::RandomState,
}

impl LimitedAppend {
    /// Wraps `inner`; refusals are counted on `telemetry`.
    pub fn new(inner: Arc<dyn Append>, limits: Limits, clock: Arc<dyn Clock>, telemetry: &Telemetry) -> Self {
        let refused = Family::<RefusedLabels, Counter>::default();
        telemetry.register(
            "strata_limits_refused_samples",
            "Samples refused because their tenant was over a limit, by reason",
            refused.clone(),
        );
        Self {
            inner,
            limits,
            clock,
            state: Mutex::new(HashMap::new()),
            refused,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn series_hash(&self, labels: &strata_model::Labels) -> u64 {
        let mut h = self.hasher.build_hasher();
        for l in labels.iter() {
            h.write(l.name.as_bytes());
            h.write_u8(0xff);
            h.write(l.value.as_bytes());
            h.write_u8(0xfe);
        }
        h.finish()
    }

    /// Checks `batch` against its tenant's limits and, when it passes, takes
    /// its samples from the bucket and records its series as active.
    fn admit(&self, batch: &WriteBatch) -> Result<(), (&'static str, String)> {
        let limits = self.limits.of(&batch.tenant);
        let tenant = &batch.tenant;
        if limits.max_label_names_per_series > 0
            && let Some(s) = batch.series.iter().find(|s| s.labels.len() > limits.max_label_names_per_series)
        {
            return Err((
                "max_label_names_per_series",
                format!(
                    "series {} has {} label names, more than the limit of {} for tenant {tenant:?} (max_label_names_per_series)",
                    s.labels,
                    s.labels.len(),
                    limits.max_label_names_per_series
                ),
            ));
        }
        let now = self.clock.now_ms();
        let samples = batch.sample_count() as f64;
        let hashes: Vec<u64> = if limits.max_active_series > 0 {
            batch.series.iter().map(|s| self.series_hash(&s.labels)).collect()
        } else {
            Vec::new()
        };
        let mut all = self.state.lock().map_err(|_| ("internal", "limits state poisoned".to_owned()))?;
        let st = all.entry(tenant.clone()).or_default();
        // Rate: a token bucket refilled at `ingestion_rate` per second, holding at most the burst.
        if limits.ingestion_rate > 0.0 {
            let burst = if limits.ingestion_burst_size > 0 {
                limits.ingestion_burst_size as f64
            } else {
                limits.ingestion_rate
            };
            let elapsed = st.refilled_ms.map_or(f64::INFINITY, |t| (now - t).max(0) as f64 / 1000.0);
            st.tokens = (st.tokens + elapsed * limits.ingestion_rate).min(burst);
            st.refilled_ms = Some(now);
            if samples > st.tokens {
                return Err((
                    "ingestion_rate",
                    format!(
                        "the ingestion rate limit of {} samples/s (burst {burst}) for tenant {tenant:?} is exceeded: {samples} samples refused",
                        limits.ingestion_rate
                    ),
                ));
            }
        }
        if limits.max_active_series > 0 {
            let window = self.limits.active_window_ms;
            if now - st.pruned_ms > window / 10 {
                st.active.retain(|_, last| now - *last <= window);
                st.pruned_ms = now;
            }
            let mut new: Vec<u64> = hashes.iter().copied().filter(|h| !st.active.contains_key(h)).collect();
            new.sort_unstable();
            new.dedup();
            if st.active.len() + new.len() > limits.max_active_series {
                return Err((
                    "max_active_series",
                    format!(
                        "the active series limit of {} for tenant {tenant:?} is exceeded: {} active, {} new in this request",
                        limits.max_active_series,
                        st.active.len(),
                        new.len()
                    ),
                ));
            }
            for h in hashes {
                st.active.insert(h, now);
            }
        }
        if limits.ingestion_rate > 0.0 {
            st.tokens -= samples;
        }
        Ok(())
    }
}

impl Append for LimitedAppend {
    fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
        Box::pin(async move {
            if let Err((reason, msg)) = self.admit(&batch) {
                self.refused
                    .get_or_create(&RefusedLabels { tenant: batch.tenant.clone(), reason })
                    .inc_by(batch.sample_count() as u64);
                return Err(AppendError::LimitExceeded(msg));
            }
            self.inner.append(batch).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_common::ManualClock;
    use strata_model::{Labels, Sample, TimeSeries};

    struct Sink;

    impl Append for Sink {
        fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
            Box::pin(async move { Ok(AppendSummary { accepted: batch.sample_count(), ..AppendSummary::default() }) })
        }
    }

    fn batch(tenant: &str, series: std::ops::Range<usize>, samples_each: usize) -> WriteBatch {
        let mut b = WriteBatch::new(tenant);
        for i in series {
            let labels = Labels::from_pairs([("__name__", "m".to_owned()), ("i", i.to_string())]).expect("labels");
            b.series
                .push(TimeSeries { labels, samples: (0..samples_each).map(|t| Sample::new(t as i64, 1.0)).collect() });
        }
        b
    }

    fn limited(limits: Limits) -> (LimitedAppend, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        (LimitedAppend::new(Arc::new(Sink), limits, clock.clone(), &Telemetry::empty()), clock)
    }

    #[tokio::test]
    async fn active_series_limit_refuses_new_series_only() {
        let defaults = TenantLimits { max_active_series: 10, ..TenantLimits::default() };
        let (l, clock) = limited(Limits::new(defaults));
        assert!(l.append(batch("a", 0..8, 1)).await.is_ok());
        // Old series keep flowing; three new ones would make 11.
        assert!(l.append(batch("a", 0..8, 1)).await.is_ok());
        let err = l.append(batch("a", 6..11, 1)).await.expect_err("over the limit");
        assert!(matches!(err, AppendError::LimitExceeded(ref m) if m.contains("active series limit of 10")), "{err}");
        // Another tenant has its own count.
        assert!(l.append(batch("b", 0..10, 1)).await.is_ok());
        // Series leave the window: room again.
        clock.advance(Limits::DEFAULT_ACTIVE_WINDOW_MS + 1);
        assert!(l.append(batch("a", 100..110, 1)).await.is_ok());
    }

    #[tokio::test]
    async fn ingestion_rate_is_a_token_bucket() {
        let defaults = TenantLimits { ingestion_rate: 100.0, ingestion_burst_size: 200, ..TenantLimits::default() };
        let (l, clock) = limited(Limits::new(defaults));
        assert!(l.append(batch("a", 0..10, 15)).await.is_ok(), "150 of a 200 burst");
        let err = l.append(batch("a", 0..10, 10)).await.expect_err("100 more: only 50 left");
        assert!(err.to_string().contains("ingestion rate limit of 100"), "{err}");
        clock.advance(1000);
        assert!(l.append(batch("a", 0..10, 10)).await.is_ok(), "refilled 100 in a second");
    }

    #[tokio::test]
    async fn label_names_per_series() {
        let (l, _) = limited(Limits::new(TenantLimits { max_label_names_per_series: 1, ..TenantLimits::default() }));
        let err = l.append(batch("a", 0..1, 1)).await.expect_err("2 label names");
        assert!(err.to_string().contains("max_label_names_per_series"), "{err}");
    }

    #[tokio::test]
    async fn overrides_apply_per_tenant_and_bad_files_name_every_problem() {
        let limits = Limits::new(TenantLimits::default())
            .with_overrides("o.yml", "overrides:\n  small:\n    max_active_series: 1\n")
            .expect("valid");
        assert_eq!(limits.of("small").max_active_series, 1);
        assert_eq!(limits.of("small").max_label_names_per_series, 30, "unset fields keep the defaults");
        assert_eq!(limits.of("other"), TenantLimits::default());
        let (l, _) = limited(limits);
        assert!(l.append(batch("small", 0..2, 1)).await.is_err());
        assert!(l.append(batch("other", 0..2, 1)).await.is_ok());

        let err = Limits::new(TenantLimits::default())
            .with_overrides("o.yml", "overrides:\n  a:\n    max_series: 1\n")
            .expect_err("unknown field");
        assert!(err.to_string().contains("o.yml") && err.problems[0].starts_with("3:"), "{err}");
        let err = Limits::new(TenantLimits::default())
            .with_overrides("o.yml", "overrides:\n  a:\n    ingestion_rate: -1\n  b:\n    ingestion_rate: -2\n")
            .expect_err("negative rates");
        assert_eq!(err.problems.len(), 2, "{err}");
    }
}
