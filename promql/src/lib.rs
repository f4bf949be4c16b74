//! Strata's PromQL engine: evaluates PromQL (Prometheus 3 semantics, floats)
//! over any [`strata_model::Select`] storage.
//!
//! - [`value`]: results ([`Value`], [`QueryResult`]) and [`PromqlError`].
//! - [`memstore`]: an in-memory store for tests.
//! - `plan`: which series each selector needs, fetched once per query.
//! - `eval`: the step-wise evaluator (`rangeEval`), selectors, subqueries.
//! - `stream`: range functions over selectors (and aggregations over them)
//!   evaluated series by series as storage streams them, before the walk.
//! - `binary`, `aggregate`, `functions`: operators, aggregations, functions.
//! - `gostr`: string literals as Go decodes them (non-UTF-8 label names).
//!
//! Names are dropped the Prometheus 3 way ("delayed name removal"):
//! functions mark series, and `__name__` is removed from the final result.

mod aggregate;
mod binary;
mod eval;
mod functions;
mod gostr;
pub mod memstore;
mod plan;
mod stream;
pub mod value;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use promql_parser::parser::Expr;
use promql_parser::parser::value::ValueType;
use strata_model::{Sample as RawSample, Select, Series};

use crate::eval::{Annotations, Evaluator, Range, cleanup_metric_labels};
use crate::gostr::NonUtf8Literals;
pub use crate::value::{InstantSample, PromqlError, QueryResult, Value};
use crate::value::{RSeries, Val};

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample, ms.
    pub lookback_delta_ms: i64,
    /// Maximum samples loaded and in flight per query.
    pub max_samples: usize,
    /// Maximum evaluation time per query.
    pub timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { lookback_delta_ms: 300_000, max_samples: 50_000_000, timeout: Duration::from_secs(120) }
    }
}

/// Evaluates PromQL queries.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
    /// Evaluates every node step-wise (tests compare both paths).
    no_streaming: bool,
}

/// Parses a query, mapping the parser's message into a [`PromqlError::Parse`].
fn parse(query: &str) -> Result<Expr, PromqlError> {
    promql_parser::parser::parse(query).map_err(PromqlError::Parse)
}

/// Parses a series selector (the `match[]` of the series and label APIs)
/// into matcher sets, one per `or` alternative.
pub fn parse_selector(s: &str) -> Result<Vec<Vec<strata_model::Matcher>>, PromqlError> {
    match parse(s)? {
        Expr::VectorSelector(vs) => plan::matcher_sets(&vs),
        other => Err(PromqlError::Parse(format!(
            "1:1: parse error: expected a series selector, got {}",
            type_name(other.value_type())
        ))),
    }
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    }
}

/// Whether the expression sorts its result somewhere (ineffective in range queries).
fn contains_sort(e: &Expr) -> bool {
    match e {
        Expr::Call(c) => {
            matches!(c.func.name, "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc")
                || c.args.args.iter().any(|a| contains_sort(a))
        }
        Expr::Aggregate(a) => contains_sort(&a.expr) || a.param.as_deref().is_some_and(contains_sort),
        Expr::Unary(u) => contains_sort(&u.expr),
        Expr::Binary(b) => contains_sort(&b.lhs) || contains_sort(&b.rhs),
        Expr::Paren(p) => contains_sort(&p.expr),
        Expr::Subquery(s) => contains_sort(&s.expr),
        _ => false,
    }
}

impl Engine {
    /// An engine with the given options.
    pub fn new(opts: EngineOptions) -> Self {
        Self { opts, no_streaming: false }
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at `time_ms`.
    pub async fn instant_query(
        &self,
        store: &dyn Select,
        tenant: &str,
        query: &str,
        time_ms: i64,
    ) -> Result<QueryResult, PromqlError> {
        let expr = parse(query)?;
        self.exec(store, tenant, query, &expr, Range { start: time_ms, end: time_ms, interval: 1 }, false).await
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms`.
    pub async fn range_query(
        &self,
        store: &dyn Select,
        tenant: &str,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, PromqlError> {
        if step_ms <= 0 {
            return Err(PromqlError::Parse(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(PromqlError::Parse("end timestamp must not be before start time".into()));
        }
        let expr = parse(query)?;
        let t = expr.value_type();
        if t != ValueType::Scalar && t != ValueType::Vector {
            return Err(PromqlError::Parse(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                type_name(t)
            )));
        }
        self.exec(store, tenant, query, &expr, Range { start: start_ms, end: end_ms, interval: step_ms }, true).await
    }

    async fn exec(
        &self,
        store: &dyn Select,
        tenant: &str,
        query: &str,
        expr: &Expr,
        r: Range,
        is_range: bool,
    ) -> Result<QueryResult, PromqlError> {
        let deadline = Instant::now() + self.opts.timeout;
        let ctx = plan::PlanCtx { start: r.start, end: r.end, lookback: self.opts.lookback_delta_ms };
        let fetches = plan::collect(expr, &ctx);
        let streamed = if self.no_streaming { Vec::new() } else { stream::find(expr, r, r.start, r.end) };
        // The selectors of streamed nodes are read while those are evaluated.
        let mut skip: HashMap<usize, (i64, i64)> =
            streamed.iter().map(|n| (eval::selector_key(n.selector()), (i64::MAX, i64::MIN))).collect();
        for f in &fetches {
            if let Some(range) = skip.get_mut(&eval::selector_key(f.vs)) {
                *range = (f.mint, f.maxt);
            }
        }
        let (mut data, mut left) = plan::fetch_all(store, tenant, &fetches, &skip, self.opts.max_samples).await?;
        let mut infos = Vec::new();
        plan::collect_info(expr, &ctx, &mut infos);
        plan::fetch_info(store, tenant, &infos, &mut data, &mut left).await?;
        if Instant::now() > deadline {
            return Err(PromqlError::Timeout);
        }
        let mut ev = Evaluator {
            data: &data,
            lookback: self.opts.lookback_delta_ms,
            max_samples: self.opts.max_samples,
            cur_samples: 0,
            deadline,
            query_start: r.start,
            query_end: r.end,
            query_step: if is_range { r.interval } else { 0 },
            annos: Annotations::default(),
            non_utf8: NonUtf8Literals::scan(query),
            precomputed: HashMap::new(),
        };
        for node in &streamed {
            let (mint, maxt) = skip.get(&eval::selector_key(node.selector())).copied().unwrap_or((0, -1));
            stream::run(&mut ev, store, tenant, node, mint, maxt, &mut left, node.range).await?;
        }
        if is_range && contains_sort(expr) {
            ev.annos.warn("sort is ineffective for range queries since results are always ordered by labels");
        }
        let val = ev.eval(expr, r)?;
        let annos = std::mem::take(&mut ev.annos);
        let value = match val {
            Val::String(s) => Value::String { t: r.start, s },
            Val::Matrix(m) => {
                let m = cleanup_metric_labels(m)?;
                if is_range {
                    Value::Matrix(to_series(m))
                } else {
                    match expr.value_type() {
                        ValueType::Scalar => {
                            let v = m.first().and_then(|s| s.points.first()).map_or(f64::NAN, |p| p.f);
                            Value::Scalar { t: r.start, v }
                        }
                        ValueType::Vector => Value::Vector(
                            m.into_iter()
                                .filter_map(|s| {
                                    let v = s.points.first()?.f;
                                    Some(InstantSample { labels: Arc::unwrap_or_clone(s.metric), t: r.start, v })
                                })
                                .collect(),
                        ),
                        _ => Value::Matrix(to_series(m)),
                    }
                }
            }
        };
        Ok(QueryResult { value, warnings: annos.warnings, infos: annos.infos })
    }
}

fn to_series(m: Vec<RSeries>) -> Vec<Series> {
    let mut out: Vec<Series> = m
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .map(|s| Series {
            labels: Arc::unwrap_or_clone(s.metric),
            samples: s.points.iter().map(|p| RawSample::new(p.t, p.f)).collect(),
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memstore::MemStore;
    use strata_model::Labels;

    fn store() -> MemStore {
        let st = MemStore::new();
        for (job, mul) in [("a", 1.0), ("b", 2.0)] {
            let l = Labels::from_pairs([("__name__", "http_requests_total"), ("job", job)]).expect("labels");
            st.add("t", l, (0..=10).map(|i| RawSample::new(i * 60_000, i as f64 * 60.0 * mul)));
        }
        st
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn instant_rate_and_sum() {
        let st = store();
        let e = Engine::default();
        let res = block(e.instant_query(&st, "t", "sum(rate(http_requests_total[5m]))", 600_000)).expect("ok");
        match res.value {
            Value::Vector(v) => {
                assert_eq!(v.len(), 1);
                assert!((v[0].v - 3.0).abs() < 1e-9);
                assert!(v[0].labels.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn range_query_rejects_matrix() {
        let st = store();
        let e = Engine::default();
        let err = block(e.range_query(&st, "t", "http_requests_total[5m]", 0, 60_000, 1000)).expect_err("fails");
        assert_eq!(
            err.to_string(),
            "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
        );
        assert_eq!(err.error_type(), "bad_data");
    }

    #[test]
    fn range_query_steps() {
        let st = store();
        let e = Engine::default();
        let res = block(e.range_query(&st, "t", "http_requests_total{job=\"a\"} * 2", 0, 120_000, 60_000)).expect("ok");
        let Value::Matrix(m) = res.value else { panic!("matrix expected") };
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].labels.metric_name(), None);
        assert_eq!(m[0].samples.iter().map(|s| s.v).collect::<Vec<_>>(), vec![0.0, 120.0, 240.0]);
    }

    #[test]
    fn sample_limit_fails_cleanly() {
        let st = store();
        // Two series of 11 samples: a 10m range at 600 s loads 10 samples of each.
        let opts = |max_samples| EngineOptions { max_samples, ..EngineOptions::default() };
        let q = "sum(rate(http_requests_total[10m]))";
        assert!(block(Engine::new(opts(100)).instant_query(&st, "t", q, 600_000)).is_ok());
        let err = block(Engine::new(opts(19)).instant_query(&st, "t", q, 600_000)).expect_err("over the limit");
        assert_eq!(err, PromqlError::TooManySamples);
        assert_eq!(err.error_type(), "execution");
    }

    #[test]
    fn limit_ratio_caps_and_complements() {
        let st = store();
        let e = Engine::default();
        let count = |q: &str| {
            let res = block(e.instant_query(&st, "t", q, 600_000)).expect("ok");
            let Value::Vector(v) = res.value else { panic!("vector expected") };
            (v.len(), res.warnings)
        };
        let (n, w) = count("limit_ratio(1.5, http_requests_total)");
        assert_eq!(n, 2);
        assert_eq!(w, ["PromQL warning: ratio value should be between -1 and 1, got 1.5, capping to 1"]);
        let (n, w) = count("limit_ratio(-1e6, http_requests_total)");
        assert_eq!(n, 2);
        assert_eq!(w, ["PromQL warning: ratio value should be between -1 and 1, got -1e+06, capping to -1"]);
        assert_eq!(count("limit_ratio(0, http_requests_total)").0, 0);
        let (a, _) = count("limit_ratio(0.3, http_requests_total)");
        let (b, _) = count("limit_ratio(-0.7, http_requests_total)");
        assert_eq!(a + b, 2);
        let err = block(e.instant_query(&st, "t", "limit_ratio(NaN, http_requests_total)", 0)).expect_err("NaN");
        assert_eq!(err.to_string(), "Ratio value is NaN");
    }

    /// Streamed evaluation gives what the step-wise evaluation gives, bit
    /// for bit, with the same annotations.
    #[test]
    fn streamed_equals_stepwise() {
        let st = MemStore::new();
        for (i, job) in ["a", "b", "c"].into_iter().enumerate() {
            for inst in 0..3 {
                let inst = inst.to_string();
                let l = Labels::from_pairs([("__name__", "x_total"), ("job", job), ("instance", &inst)]).expect("l");
                let mut v = 0.0;
                let samples: Vec<RawSample> = (0..200i64)
                    .filter(|k| (k + i as i64) % 17 != 0)
                    .map(|k| {
                        v = if k % 50 == 49 { 1.0 } else { v + (k % 7) as f64 * 0.3 + i as f64 };
                        let v = if k == 120 && inst == "1" { strata_model::stale_nan() } else { v };
                        RawSample::new(k * 15_000 + 1_000 * i as i64, v)
                    })
                    .collect();
                st.add("t", l, samples);
            }
            let g = Labels::from_pairs([("__name__", "g"), ("job", job)]).expect("l");
            st.add("t", g, (0..100).map(|k| RawSample::new(k * 30_000, ((k * 37) % 11) as f64 - 5.0)));
        }
        let queries = [
            "sum by (job) (rate(x_total[5m]))",
            "sum(rate(x_total[1m]))",
            "avg without (instance) (increase(x_total[5m]))",
            "count by (job) (irate(x_total[2m]))",
            "min(delta(g[10m]))",
            "max by (job) (max_over_time(g[3m]))",
            "group by (instance) (changes(x_total[5m]))",
            "stddev by (job) (avg_over_time(x_total[5m] offset 2m))",
            "stdvar(sum_over_time(g[5m]))",
            "sum by (__name__) (last_over_time(x_total[5m]))",
            "quantile_over_time(0.3, x_total[10m])",
            "predict_linear(g[10m], 600)",
            "resets(x_total[30m]) + 1",
            "sum(rate(x_total[5m] @ 1500)) / count(count_over_time(g[5m]))",
            "rate(g[5m])",
            "sum(deriv(x_total[5m])) or max(stddev_over_time(g[5m]))",
            "double_exponential_smoothing(g[10m], 0.5, 0.5)",
            "x_total",
            "sum by (job) (g)",
            "avg(x_total offset 1m)",
            "max(g @ 1500)",
            "timestamp(g) + on(job) g",
            "g / on(job) group_left sum by (job) (x_total)",
            "absent(nope)",
            "count(x_total > 50)",
            "max_over_time(rate(x_total[5m])[30m:1m])",
            "avg_over_time(sum by (job) (g)[10m:])",
            "min_over_time(x_total[20m:2m] @ 1800)",
            "sum_over_time(max_over_time(g[5m:30s])[15m:90s] offset 1m)",
            "rate(x_total[5m:1m] @ end())",
        ];
        let bits = |v: &Value| match v {
            Value::Matrix(m) => m
                .iter()
                .map(|s| (s.labels.clone(), s.samples.iter().map(|p| (p.t, p.v.to_bits())).collect::<Vec<_>>()))
                .collect::<Vec<_>>(),
            Value::Vector(v) => v.iter().map(|s| (s.labels.clone(), vec![(s.t, s.v.to_bits())])).collect(),
            other => panic!("unexpected {other:?}"),
        };
        let streaming = Engine::default();
        let stepwise = Engine { no_streaming: true, ..Engine::default() };
        for q in queries {
            assert!(
                !stream::find(&parse(q).expect("parses"), Range { start: 0, end: 0, interval: 1 }, 0, 0).is_empty()
            );
            for (start, end, step) in [(0, 3_000_000, 60_000), (0, 3_000_000, 7_000), (1_234_567, 1_234_567, 1)] {
                let a = block(streaming.range_query(&st, "t", q, start, end, step)).expect("streamed");
                let b = block(stepwise.range_query(&st, "t", q, start, end, step)).expect("step-wise");
                assert_eq!(bits(&a.value), bits(&b.value), "{q} {start} {end} {step}");
                assert!(!bits(&a.value).is_empty(), "{q}");
                let (mut wa, mut wb) = ([a.warnings, a.infos].concat(), [b.warnings, b.infos].concat());
                wa.sort();
                wb.sort();
                assert_eq!(wa, wb, "{q}");
            }
            let a = block(streaming.instant_query(&st, "t", q, 2_000_000)).expect("streamed");
            let b = block(stepwise.instant_query(&st, "t", q, 2_000_000)).expect("step-wise");
            assert_eq!(bits(&a.value), bits(&b.value), "{q} instant");
        }
    }

    #[test]
    fn parse_errors_are_bad_data() {
        let st = store();
        let e = Engine::default();
        let err = block(e.instant_query(&st, "t", "sum(", 0)).expect_err("fails");
        assert_eq!(err.error_type(), "bad_data");
    }
}
