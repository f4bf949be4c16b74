//! PromQL functions: range-vector functions (`rate`, `*_over_time`, ...),
//! instant-vector functions (math, clamps, dates, sorting, `absent`,
//! `histogram_quantile` over classic buckets, ...) and the label functions.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Call, Expr};
use regex::Regex;
use strata_model::{Labels, METRIC_NAME};

use crate::eval::{
    Evaluator, Range, dur_ms, merge_same_labelset, offset_ms, scalar_per_step, selector_key, unwrap_parens,
};
use crate::value::{Matrix, Metric, Point, PromqlError, RSeries, Sample, Val, exec_err};

/// Kahan-Neumaier summation step: returns the new sum and compensation.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)` (and `%g` for the usual cases).
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{f}")
    }
}

/// Go's `%g` (shortest digits; an exponent of at least two digits below
/// 1e-4 and from 1e6 on), as Prometheus' annotations print their values.
pub(crate) fn format_g(f: f64) -> String {
    if !f.is_finite() || f == 0.0 {
        return format_float(f);
    }
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return format_float(f);
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format_float(f)
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    }
}

/// Prometheus' `FormatOpenMetricsFloat`: like `%g`, with `.0` on integers.
fn format_openmetrics_float(f: f64) -> String {
    let s = format_float(f);
    if f.is_finite() && !s.contains(['e', '.']) { format!("{s}.0") } else { s }
}

/// Orders NaN first, then ascending (Prometheus' `vectorByValueHeap`).
fn cmp_nan_first(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// The q-quantile of `values` (sorted in place), as Prometheus' `quantile`.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| cmp_nan_first(*a, *b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

/// A string literal argument.
fn string_arg(e: &Expr) -> Result<String, PromqlError> {
    match unwrap_parens(e) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        _ => exec_err("expected a string literal argument"),
    }
}

/// Evaluates a function call.
pub(crate) fn eval_call(ev: &mut Evaluator<'_>, call: &Call, r: Range) -> Result<Val, PromqlError> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| unwrap_parens(a)).collect();
    match name {
        "timestamp" => {
            if let Some(Expr::VectorSelector(vs)) = args.first() {
                return ev.eval_vector_selector(vs, r, true).map(Val::Matrix);
            }
        }
        "label_replace" => return label_replace(ev, &args, r).map(Val::Matrix),
        "label_join" => return label_join(ev, &args, r).map(Val::Matrix),
        "info" => return eval_info(ev, call, &args, r).map(Val::Matrix),
        _ => {}
    }
    if let Some(idx) = args.iter().position(|a| matches!(a, Expr::MatrixSelector(_) | Expr::Subquery(_))) {
        return eval_range_call(ev, name, &args, idx, r).map(Val::Matrix);
    }
    instant_call(ev, name, &args, r).map(Val::Matrix)
}

// ---------------------------------------------------------------------------
// Range-vector functions.

/// One input series of a range function: labels, points, name-drop mark.
type RangeSource<'a> = (Metric, &'a [Point], bool);

/// What a range function needs to know besides the points.
struct RangeCtx {
    /// Evaluation time, ms.
    ts: i64,
    /// Window start (exclusive), ms.
    range_start: i64,
    /// Window end (inclusive), ms.
    range_end: i64,
    /// Window length, ms.
    range_ms: i64,
}

fn eval_range_call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    idx: usize,
    r: Range,
) -> Result<Matrix, PromqlError> {
    // Scalar arguments, per step.
    let mut scalars: Vec<Vec<f64>> = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i == idx {
            continue;
        }
        let m = ev.eval_matrix(a, r)?;
        let vals = scalar_per_step(&m, r);
        ev.release(m.iter().map(|s| s.points.len()).sum());
        scalars.push(vals);
    }

    let data = ev.data;
    let sub_matrix: Matrix;
    let (series, range_ms, off, at): (Vec<RangeSource<'_>>, i64, i64, Option<i64>) = match args[idx] {
        Expr::MatrixSelector(ms) => {
            let Some(d) = data.get(&selector_key(&ms.vs)) else {
                return exec_err("internal error: selector was not fetched");
            };
            let s = d.metrics.iter().zip(&d.clean).map(|(m, p)| (m.clone(), p.as_slice(), false)).collect();
            (s, dur_ms(ms.range), offset_ms(ms.vs.offset.as_ref()), ev.at_ms(ms.vs.at.as_ref()))
        }
        Expr::Subquery(sq) => {
            let (m, at) = ev.eval_subquery(sq, r)?;
            sub_matrix = m;
            let s = sub_matrix.iter().map(|s| (s.metric.clone(), s.points.as_slice(), s.drop_name)).collect();
            (s, dur_ms(sq.range), offset_ms(sq.offset.as_ref()), at)
        }
        _ => return exec_err("internal error: expected a range argument"),
    };

    let spec = RangeSpec { name, scalars, range_ms, off, at };
    let mut out: Matrix = Vec::with_capacity(series.len());
    let mut sargs = Vec::new();
    for (metric, pts, inner_drop) in series {
        if let Some(s) = range_series(ev, &spec, metric, pts, inner_drop, r, &mut sargs)? {
            out.push(s);
        }
    }

    if name == "absent_over_time" {
        let steps = r.num_steps();
        if out.iter().any(|s| s.points.len() == steps) {
            return Ok(Vec::new());
        }
        let found: HashSet<i64> = out.iter().flat_map(|s| s.points.iter().map(|p| p.t)).collect();
        let points: Vec<Point> = r.steps().filter(|t| !found.contains(t)).map(|t| Point { t, f: 1.0 }).collect();
        if points.is_empty() {
            return Ok(Vec::new());
        }
        return Ok(vec![RSeries { metric: Arc::new(absent_labels(args[idx])), points, drop_name: true }]);
    }
    Ok(out)
}

/// A range-vector function call over a range argument: everything but the
/// series it reads.
pub(crate) struct RangeSpec<'a> {
    /// The function.
    pub name: &'a str,
    /// Its scalar arguments, each per step of the evaluation range.
    pub scalars: Vec<Vec<f64>>,
    /// The range, ms.
    pub range_ms: i64,
    /// The range argument's offset, ms.
    pub off: i64,
    /// The time the range argument is pinned to by `@`, ms.
    pub at: Option<i64>,
}

/// The range-vector functions, resolved once per call rather than per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeFn {
    /// `rate`
    Rate,
    /// `increase`
    Increase,
    /// `delta`
    Delta,
    /// `irate`
    Irate,
    /// `idelta`
    Idelta,
    /// `avg_over_time`
    AvgOverTime,
    /// `count_over_time`
    CountOverTime,
    /// `sum_over_time`
    SumOverTime,
    /// `min_over_time`
    MinOverTime,
    /// `max_over_time`
    MaxOverTime,
    /// `ts_of_min_over_time`
    TsOfMinOverTime,
    /// `ts_of_max_over_time`
    TsOfMaxOverTime,
    /// `ts_of_first_over_time`
    TsOfFirstOverTime,
    /// `ts_of_last_over_time`
    TsOfLastOverTime,
    /// `last_over_time`
    LastOverTime,
    /// `first_over_time`
    FirstOverTime,
    /// `present_over_time`
    PresentOverTime,
    /// `absent_over_time`
    AbsentOverTime,
    /// `stddev_over_time`
    StddevOverTime,
    /// `stdvar_over_time`
    StdvarOverTime,
    /// `quantile_over_time`
    QuantileOverTime,
    /// `mad_over_time`
    MadOverTime,
    /// `changes`
    Changes,
    /// `resets`
    Resets,
    /// `deriv`
    Deriv,
    /// `predict_linear`
    PredictLinear,
    /// `double_exponential_smoothing`
    DoubleExponentialSmoothing,
    /// `holt_winters`
    HoltWinters,
}

impl RangeFn {
    /// The function named `name`, if it is a range-vector function.
    pub(crate) fn of(name: &str) -> Option<Self> {
        Some(match name {
            "rate" => Self::Rate,
            "increase" => Self::Increase,
            "delta" => Self::Delta,
            "irate" => Self::Irate,
            "idelta" => Self::Idelta,
            "avg_over_time" => Self::AvgOverTime,
            "count_over_time" => Self::CountOverTime,
            "sum_over_time" => Self::SumOverTime,
            "min_over_time" => Self::MinOverTime,
            "max_over_time" => Self::MaxOverTime,
            "ts_of_min_over_time" => Self::TsOfMinOverTime,
            "ts_of_max_over_time" => Self::TsOfMaxOverTime,
            "ts_of_first_over_time" => Self::TsOfFirstOverTime,
            "ts_of_last_over_time" => Self::TsOfLastOverTime,
            "last_over_time" => Self::LastOverTime,
            "first_over_time" => Self::FirstOverTime,
            "present_over_time" => Self::PresentOverTime,
            "absent_over_time" => Self::AbsentOverTime,
            "stddev_over_time" => Self::StddevOverTime,
            "stdvar_over_time" => Self::StdvarOverTime,
            "quantile_over_time" => Self::QuantileOverTime,
            "mad_over_time" => Self::MadOverTime,
            "changes" => Self::Changes,
            "resets" => Self::Resets,
            "deriv" => Self::Deriv,
            "predict_linear" => Self::PredictLinear,
            "double_exponential_smoothing" => Self::DoubleExponentialSmoothing,
            "holt_winters" => Self::HoltWinters,
            _ => return None,
        })
    }
}

/// Whether `name` is a range-vector function [`range_series`] evaluates
/// series by series (everything except `absent_over_time`, which looks at
/// all series together).
pub(crate) fn is_series_range_fn(name: &str) -> bool {
    RangeFn::of(name).is_some_and(|f| f != RangeFn::AbsentOverTime)
}

/// Evaluates a range function over one series (`pts`: its points without
/// staleness markers) at every step of `r`; `None` when no step has a
/// value. The result's points are accounted in `ev`. `sargs` is scratch.
pub(crate) fn range_series(
    ev: &mut Evaluator<'_>,
    spec: &RangeSpec<'_>,
    metric: Metric,
    pts: &[Point],
    inner_drop: bool,
    r: Range,
    sargs: &mut Vec<f64>,
) -> Result<Option<RSeries>, PromqlError> {
    let mut points = Vec::new();
    if !range_points(ev, spec, &metric, pts, r, sargs, &mut points)? {
        return Ok(None);
    }
    ev.account(points.len())?;
    Ok(Some(RSeries { metric, points, drop_name: range_fn_drops_name(spec.name) || inner_drop }))
}

/// Whether a range function's result drops the metric name.
pub(crate) fn range_fn_drops_name(name: &str) -> bool {
    name != "last_over_time" && name != "first_over_time"
}

/// The points of [`range_series`] into `points` (cleared first), without
/// accounting them; whether there is any.
pub(crate) fn range_points(
    ev: &mut Evaluator<'_>,
    spec: &RangeSpec<'_>,
    metric: &Metric,
    pts: &[Point],
    r: Range,
    sargs: &mut Vec<f64>,
    points: &mut Vec<Point>,
) -> Result<bool, PromqlError> {
    ev.check_deadline()?;
    let name = spec.name;
    let func = RangeFn::of(name);
    sargs.clear();
    sargs.resize(spec.scalars.len(), 0.0);
    points.clear();
    // Counter resets, found once per series rather than once per window.
    let resets: Vec<usize> = if matches!(func, Some(RangeFn::Rate | RangeFn::Increase)) {
        (1..pts.len()).filter(|&j| pts[j].f < pts[j - 1].f).collect()
    } else {
        Vec::new()
    };
    // Steps only move forward, so the window's bounds do too (unless `@`
    // pins them): two cursors instead of two searches per step.
    let (mut lo, mut hi) = (0usize, 0usize);
    for (step, ts) in r.steps().enumerate() {
        let maxt = spec.at.unwrap_or(ts) - spec.off;
        let mint = maxt - spec.range_ms;
        if spec.at.is_some() {
            lo = pts.partition_point(|p| p.t <= mint);
            hi = pts.partition_point(|p| p.t <= maxt);
        } else {
            while lo < pts.len() && pts[lo].t <= mint {
                lo += 1;
            }
            hi = hi.max(lo);
            while hi < pts.len() && pts[hi].t <= maxt {
                hi += 1;
            }
        }
        if lo >= hi {
            continue;
        }
        let w = &pts[lo..hi];
        ev.check_transient(w.len())?;
        for (k, s) in spec.scalars.iter().enumerate() {
            sargs[k] = s[step];
        }
        let ctx = RangeCtx { ts, range_start: mint, range_end: maxt, range_ms: spec.range_ms };
        let v = match func {
            Some(RangeFn::Rate) => counter_rate(pts, lo, hi, &resets, &ctx, true),
            Some(RangeFn::Increase) => counter_rate(pts, lo, hi, &resets, &ctx, false),
            _ => range_fn(ev, name, func, w, sargs, &ctx)?,
        };
        if let Some(f) = v {
            points.push(Point { t: ts, f });
        }
    }
    let counter_fn = matches!(func, Some(RangeFn::Rate | RangeFn::Increase));
    if let Some(n) = metric.metric_name().filter(|_| counter_fn && !points.is_empty())
        && !["_total", "_sum", "_count", "_bucket"].iter().any(|suf| n.ends_with(suf))
    {
        ev.annos.info(format!("metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {n:?}"));
    }
    Ok(!points.is_empty())
}

fn range_fn(
    ev: &mut Evaluator<'_>,
    name: &str,
    func: Option<RangeFn>,
    w: &[Point],
    sargs: &[f64],
    ctx: &RangeCtx,
) -> Result<Option<f64>, PromqlError> {
    let n = w.len();
    let first = w[0];
    let last = w[n - 1];
    let Some(func) = func else {
        return exec_err(format!("function {name:?} is not supported"));
    };
    Ok(match func {
        RangeFn::Rate => extrapolated_rate(w, ctx, true, true),
        RangeFn::Increase => extrapolated_rate(w, ctx, true, false),
        RangeFn::Delta => extrapolated_rate(w, ctx, false, false),
        RangeFn::Irate => instant_value(w, true),
        RangeFn::Idelta => instant_value(w, false),
        RangeFn::AvgOverTime => Some(avg_over_time(w)),
        RangeFn::CountOverTime => Some(n as f64),
        RangeFn::SumOverTime => {
            let (mut sum, mut c) = (0.0, 0.0);
            for p in w {
                (sum, c) = kahan_inc(p.f, sum, c);
            }
            Some(if sum.is_infinite() { sum } else { sum + c })
        }
        RangeFn::MinOverTime => Some(compare_over_time(w, |cur, m| cur < m || m.is_nan()).1),
        RangeFn::MaxOverTime => Some(compare_over_time(w, |cur, m| cur > m || m.is_nan()).1),
        RangeFn::TsOfMinOverTime => Some(compare_over_time(w, |cur, m| cur <= m || m.is_nan()).0 as f64 / 1000.0),
        RangeFn::TsOfMaxOverTime => Some(compare_over_time(w, |cur, m| cur >= m || m.is_nan()).0 as f64 / 1000.0),
        RangeFn::TsOfFirstOverTime => Some(first.t as f64 / 1000.0),
        RangeFn::TsOfLastOverTime => Some(last.t as f64 / 1000.0),
        RangeFn::LastOverTime => Some(last.f),
        RangeFn::FirstOverTime => Some(first.f),
        RangeFn::PresentOverTime | RangeFn::AbsentOverTime => Some(1.0),
        RangeFn::StddevOverTime => Some(variance_over_time(w).sqrt()),
        RangeFn::StdvarOverTime => Some(variance_over_time(w)),
        RangeFn::QuantileOverTime => {
            let q = sargs.first().copied().unwrap_or(f64::NAN);
            if q.is_nan() || !(0.0..=1.0).contains(&q) {
                ev.annos.warn(format!("quantile value should be between 0 and 1, got {}", format_float(q)));
            }
            let mut vals: Vec<f64> = w.iter().map(|p| p.f).collect();
            Some(quantile(q, &mut vals))
        }
        RangeFn::MadOverTime => {
            if w.iter().any(|p| p.f.is_nan()) {
                return Ok(Some(f64::NAN));
            }
            let mut vals: Vec<f64> = w.iter().map(|p| p.f).collect();
            let median = quantile(0.5, &mut vals);
            let mut dev: Vec<f64> = w.iter().map(|p| (p.f - median).abs()).collect();
            Some(quantile(0.5, &mut dev))
        }
        RangeFn::Changes => {
            let mut c = 0usize;
            for pair in w.windows(2) {
                let (p, q) = (pair[0].f, pair[1].f);
                if p != q && !(p.is_nan() && q.is_nan()) {
                    c += 1;
                }
            }
            Some(c as f64)
        }
        RangeFn::Resets => Some(w.windows(2).filter(|p| p[1].f < p[0].f).count() as f64),
        RangeFn::Deriv => {
            if n < 2 {
                None
            } else {
                Some(linear_regression(w, first.t).0)
            }
        }
        RangeFn::PredictLinear => {
            if n < 2 {
                None
            } else {
                let d = sargs.first().copied().unwrap_or(f64::NAN);
                let (slope, intercept) = linear_regression(w, ctx.ts);
                Some(slope * d + intercept)
            }
        }
        RangeFn::DoubleExponentialSmoothing | RangeFn::HoltWinters => {
            let sf = sargs.first().copied().unwrap_or(f64::NAN);
            let tf = sargs.get(1).copied().unwrap_or(f64::NAN);
            if sf.is_nan() || sf <= 0.0 || sf >= 1.0 {
                return exec_err(format!("invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"));
            }
            if tf.is_nan() || tf <= 0.0 || tf >= 1.0 {
                return exec_err(format!("invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"));
            }
            double_exponential_smoothing(w, sf, tf)
        }
    })
}

fn extrapolated_rate(w: &[Point], ctx: &RangeCtx, is_counter: bool, is_rate: bool) -> Option<f64> {
    let n = w.len();
    if n < 2 {
        return None;
    }
    let mut result = w[n - 1].f - w[0].f;
    if is_counter {
        for p in w.windows(2) {
            if p[1].f < p[0].f {
                result += p[0].f;
            }
        }
    }
    extrapolate(w, ctx, result, is_counter, is_rate)
}

/// `rate` or `increase` over `pts[lo..hi]`, where `resets` lists (in order)
/// the positions `j` of `pts` with `pts[j] < pts[j - 1]`: adds the same
/// values in the same order as [`extrapolated_rate`] without visiting
/// every point.
fn counter_rate(pts: &[Point], lo: usize, hi: usize, resets: &[usize], ctx: &RangeCtx, is_rate: bool) -> Option<f64> {
    let w = &pts[lo..hi];
    let n = w.len();
    if n < 2 {
        return None;
    }
    let mut result = w[n - 1].f - w[0].f;
    let from = resets.partition_point(|&j| j <= lo);
    for &j in resets[from..].iter().take_while(|&&j| j < hi) {
        result += pts[j - 1].f;
    }
    extrapolate(w, ctx, result, true, is_rate)
}

/// Prometheus' extrapolation of a window's difference `result` to the
/// window's edges (`extrapolatedRate`).
fn extrapolate(w: &[Point], ctx: &RangeCtx, result: f64, is_counter: bool, is_rate: bool) -> Option<f64> {
    let n = w.len();
    if n < 2 {
        return None;
    }
    let (first, last) = (w[0], w[n - 1]);
    let mut to_start = (first.t - ctx.range_start) as f64 / 1000.0;
    let mut to_end = (ctx.range_end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg = sampled / (n - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if is_counter {
        let mut to_zero = to_start;
        if result > 0.0 && first.f >= 0.0 {
            to_zero = sampled * (first.f / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= ctx.range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_value(w: &[Point], is_rate: bool) -> Option<f64> {
    let n = w.len();
    if n < 2 {
        return None;
    }
    let (a, b) = (w[n - 2], w[n - 1]);
    let interval = b.t - a.t;
    if interval == 0 {
        return None;
    }
    let mut v = b.f;
    if !is_rate || b.f >= a.f || b.f.is_nan() || a.f.is_nan() {
        v = b.f - a.f;
    }
    if is_rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

fn avg_over_time(w: &[Point]) -> f64 {
    let (mut sum, mut count) = (w[0].f, 1.0);
    let (mut mean, mut c) = (0.0, 0.0);
    let mut incremental = false;
    for (i, p) in w[1..].iter().enumerate() {
        count = (i + 2) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(p.f, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(p.f / count, q * mean, q * c);
    }
    if incremental { mean + c } else { sum / count + c / count }
}

fn compare_over_time(w: &[Point], better: impl Fn(f64, f64) -> bool) -> (i64, f64) {
    let (mut t, mut v) = (w[0].t, w[0].f);
    for p in w {
        if better(p.f, v) {
            v = p.f;
            t = p.t;
        }
    }
    (t, v)
}

fn variance_over_time(w: &[Point]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in w {
        count += 1.0;
        let delta = p.f - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (p.f - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Least-squares slope and intercept (at `intercept_t`).
fn linear_regression(w: &[Point], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = w[0].f;
    let mut const_y = true;
    for (i, p) in w.iter().enumerate() {
        if const_y && i > 0 && p.f != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_t) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(p.f, sy, cy);
        (sxy, cxy) = kahan_inc(x * p.f, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn double_exponential_smoothing(w: &[Point], sf: f64, tf: f64) -> Option<f64> {
    let l = w.len();
    if l < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, w[0].f);
    let mut b = w[1].f - w[0].f;
    for (i, p) in w.iter().enumerate().skip(1) {
        let x = sf * p.f;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

// ---------------------------------------------------------------------------
// Instant-vector functions.

fn instant_call(ev: &mut Evaluator<'_>, name: &str, args: &[&Expr], r: Range) -> Result<Matrix, PromqlError> {
    let mut mats: Vec<Matrix> = Vec::with_capacity(args.len());
    let mut strings: Vec<Option<String>> = Vec::with_capacity(args.len());
    for a in args {
        if a.value_type() == ValueType::String {
            strings.push(Some(string_arg(a)?));
            mats.push(Vec::new());
        } else {
            strings.push(None);
            mats.push(ev.eval_matrix(a, r)?);
        }
    }
    let absent_metric = if name == "absent" {
        Some(Arc::new(args.first().map(|a| absent_labels(a)).unwrap_or_default()))
    } else {
        None
    };
    let sort_labels: Vec<String> = strings.iter().skip(1).flatten().cloned().collect();
    let empty = Arc::new(Labels::empty());
    ev.range_eval(r, &mats, |ev, v, ts| {
        let scalar = |i: usize| v.get(i).and_then(|x| x.first()).map_or(f64::NAN, |s| s.f);
        let simple = |f: &dyn Fn(f64) -> f64| -> Vec<Sample> {
            v[0].iter().map(|s| Sample { metric: s.metric.clone(), t: s.t, f: f(s.f), drop_name: true }).collect()
        };
        Ok(match name {
            "abs" => simple(&f64::abs),
            "ceil" => simple(&f64::ceil),
            "floor" => simple(&f64::floor),
            "exp" => simple(&f64::exp),
            "sqrt" => simple(&f64::sqrt),
            "ln" => simple(&f64::ln),
            "log2" => simple(&f64::log2),
            "log10" => simple(&f64::log10),
            "sin" => simple(&f64::sin),
            "cos" => simple(&f64::cos),
            "tan" => simple(&f64::tan),
            "asin" => simple(&f64::asin),
            "acos" => simple(&f64::acos),
            "atan" => simple(&f64::atan),
            "sinh" => simple(&f64::sinh),
            "cosh" => simple(&f64::cosh),
            "tanh" => simple(&f64::tanh),
            "asinh" => simple(&f64::asinh),
            "acosh" => simple(&f64::acosh),
            "atanh" => simple(&f64::atanh),
            "rad" => simple(&|x| x * std::f64::consts::PI / 180.0),
            "deg" => simple(&|x| x * 180.0 / std::f64::consts::PI),
            "sgn" => simple(&|x| {
                if x < 0.0 {
                    -1.0
                } else if x > 0.0 {
                    1.0
                } else {
                    x
                }
            }),
            "round" => {
                let to_nearest = if args.len() >= 2 { scalar(1) } else { 1.0 };
                let inv = 1.0 / to_nearest;
                simple(&|x| (x * inv + 0.5).floor() / inv)
            }
            "clamp" => clamp(&v[0], scalar(1), scalar(2)),
            "clamp_min" => clamp(&v[0], scalar(1), f64::INFINITY),
            "clamp_max" => clamp(&v[0], f64::NEG_INFINITY, scalar(1)),
            "scalar" => {
                let f = if v[0].len() == 1 { v[0][0].f } else { f64::NAN };
                vec![Sample::new(empty.clone(), f)]
            }
            "vector" => vec![Sample::new(empty.clone(), scalar(0))],
            "time" => vec![Sample::new(empty.clone(), ts as f64 / 1000.0)],
            "step" => vec![Sample::new(empty.clone(), ev.query_step as f64 / 1000.0)],
            "range" => vec![Sample::new(empty.clone(), (ev.query_end - ev.query_start) as f64 / 1000.0)],
            "start" => vec![Sample::new(empty.clone(), ev.query_start as f64 / 1000.0)],
            "end" => vec![Sample::new(empty.clone(), ev.query_end as f64 / 1000.0)],
            "min_of" => vec![Sample::new(empty.clone(), go_min(scalar(0), scalar(1)))],
            "max_of" => vec![Sample::new(empty.clone(), go_max(scalar(0), scalar(1)))],
            "pi" => vec![Sample::new(empty.clone(), std::f64::consts::PI)],
            "timestamp" => v[0]
                .iter()
                .map(|s| Sample { metric: s.metric.clone(), t: s.t, f: s.t as f64 / 1000.0, drop_name: true })
                .collect(),
            "days_in_month" | "day_of_month" | "day_of_week" | "day_of_year" | "hour" | "minute" | "month" | "year" => {
                if args.is_empty() {
                    vec![Sample::new(empty.clone(), date_fn(name, ts.div_euclid(1000)))]
                } else {
                    v[0].iter()
                        .map(|s| Sample {
                            metric: s.metric.clone(),
                            t: s.t,
                            f: date_fn(name, s.f as i64),
                            drop_name: true,
                        })
                        .collect()
                }
            }
            "sort" => {
                let mut out = v[0].clone();
                out.sort_by(|a, b| cmp_nan_last_asc(a.f, b.f));
                out
            }
            "sort_desc" => {
                let mut out = v[0].clone();
                out.sort_by(|a, b| cmp_nan_last_desc(a.f, b.f));
                out
            }
            "sort_by_label" | "sort_by_label_desc" => {
                let mut out = v[0].clone();
                out.sort_by(|a, b| {
                    let o = cmp_by_labels(&a.metric, &b.metric, &sort_labels);
                    if name == "sort_by_label" { o } else { o.reverse() }
                });
                out
            }
            "absent" => {
                if v[0].is_empty() {
                    let m = absent_metric.clone().unwrap_or_else(|| empty.clone());
                    vec![Sample { metric: m, t: ts, f: 1.0, drop_name: true }]
                } else {
                    Vec::new()
                }
            }
            "histogram_quantile" => histogram_quantile(ev, scalar(0), &v[1]),
            "histogram_fraction" => histogram_fraction(ev, scalar(0), scalar(1), &v[2]),
            "histogram_quantiles" => {
                let label = strings.get(1).cloned().flatten().unwrap_or_default();
                let qs: Vec<f64> = (2..v.len()).map(scalar).collect();
                histogram_quantiles(ev, &v[0], &label, &qs)
            }
            "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev" | "histogram_stdvar" => {
                // Only native histograms have these; floats are ignored.
                Vec::new()
            }
            _ => return exec_err(format!("function {name:?} is not supported")),
        })
    })
}

fn clamp(v: &[Sample], min: f64, max: f64) -> Vec<Sample> {
    if max < min {
        return Vec::new();
    }
    v.iter()
        .map(|s| Sample { metric: s.metric.clone(), t: s.t, f: go_max(min, go_min(max, s.f)), drop_name: true })
        .collect()
}

fn cmp_nan_last_asc(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn cmp_nan_last_desc(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

fn chunkify(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_digit: Option<bool> = None;
    for (i, c) in s.char_indices() {
        let d = c.is_ascii_digit();
        if prev_digit.is_some_and(|p| p != d) {
            out.push(&s[start..i]);
            start = i;
        }
        prev_digit = Some(d);
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// facette/natsort's `Compare`: natural "less than".
fn natural_less(a: &str, b: &str) -> bool {
    let ca = chunkify(a);
    let cb = chunkify(b);
    for i in 0..ca.len() {
        if i >= cb.len() {
            return false;
        }
        let (x, y) = (ca[i], cb[i]);
        if let (Ok(xi), Ok(yi)) = (x.parse::<i64>(), y.parse::<i64>()) {
            if xi == yi {
                if i == ca.len() - 1 {
                    return true;
                } else if i == cb.len() - 1 {
                    return false;
                }
                continue;
            }
            return xi < yi;
        }
        if x == y {
            if i == ca.len() - 1 {
                return true;
            } else if i == cb.len() - 1 {
                return false;
            }
            continue;
        }
        return x < y;
    }
    false
}

fn cmp_by_labels(a: &Labels, b: &Labels, names: &[String]) -> Ordering {
    for n in names {
        let (x, y) = (a.get(n).unwrap_or(""), b.get(n).unwrap_or(""));
        if x == y {
            continue;
        }
        return if natural_less(x, y) { Ordering::Less } else { Ordering::Greater };
    }
    a.cmp(b)
}

/// Labels of `absent()`'s output: the selector's equality matchers.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match unwrap_parens(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut b = Labels::empty().builder();
    let mut has: HashSet<&str> = HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if m.op == PMatchOp::Equal && !has.contains(m.name.as_str()) {
            b.set(m.name.clone(), m.value.clone());
            has.insert(&m.name);
        } else {
            b.del(&m.name);
        }
    }
    b.build()
}

// ---------------------------------------------------------------------------
// Dates.

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn date_fn(name: &str, secs: i64) -> f64 {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let v = match name {
        "hour" => sod / 3600,
        "minute" => sod % 3600 / 60,
        "day_of_week" => (days + 4).rem_euclid(7),
        "day_of_month" => d,
        "day_of_year" => days - days_from_civil(y, 1, 1) + 1,
        "month" => m,
        "year" => y,
        _ => {
            let next = if m == 12 { days_from_civil(y + 1, 1, 1) } else { days_from_civil(y, m + 1, 1) };
            next - days_from_civil(y, m, 1)
        }
    };
    v as f64
}

// ---------------------------------------------------------------------------
// Classic histograms.

/// Go's `strconv.ParseFloat` for the values `le` labels use.
fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "+inf" | "Inf" | "inf" | "+Infinity" | "Infinity" => return Some(f64::INFINITY),
        "-Inf" | "-inf" | "-Infinity" => return Some(f64::NEG_INFINITY),
        "NaN" | "nan" => return Some(f64::NAN),
        _ => {}
    }
    let t = s.strip_prefix('+').unwrap_or(s);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+')) {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Buckets of one classic histogram, grouped by labels without `le`.
fn group_buckets(ev: &mut Evaluator<'_>, v: &[Sample]) -> Vec<(Metric, Vec<(f64, f64)>)> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<(Metric, Vec<(f64, f64)>)> = Vec::new();
    for s in v {
        let le = s.metric.get("le").unwrap_or("");
        let Some(upper) = parse_go_float(le) else {
            ev.annos.warn(format!(
                "bucket label \"le\" is missing or has a malformed value of {le:?} for metric name {:?}",
                s.metric.metric_name().unwrap_or("")
            ));
            continue;
        };
        let mut b = s.metric.builder();
        b.del("le");
        let key = b.build();
        match index.get(&key) {
            Some(&i) => out[i].1.push((upper, s.f)),
            None => {
                index.insert(key.clone(), out.len());
                out.push((Arc::new(key), vec![(upper, s.f)]));
            }
        }
    }
    out
}

fn coalesce(buckets: &mut Vec<(f64, f64)>) {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(u, c) in buckets.iter() {
        match out.last_mut() {
            Some(last) if last.0 == u => last.1 += c,
            _ => out.push((u, c)),
        }
    }
    *buckets = out;
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < eps * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Prometheus' `BucketQuantile`: the value and whether monotonicity was forced.
fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));
    match buckets.last() {
        Some(l) if l.0 == f64::INFINITY => {}
        _ => return (f64::NAN, false),
    }
    coalesce(buckets);
    let mut forced = false;
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) {
            b.1 = prev;
            continue;
        }
        if curr < prev {
            b.1 = prev;
            forced = true;
            continue;
        }
        prev = curr;
    }
    if buckets.len() < 2 {
        return (f64::NAN, forced);
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * observations;
    let b = buckets[..buckets.len() - 1].partition_point(|x| x.1 < rank);
    if b == buckets.len() - 1 {
        return (buckets[buckets.len() - 2].0, forced);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return (buckets[0].0, forced);
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

fn histogram_quantile(ev: &mut Evaluator<'_>, q: f64, v: &[Sample]) -> Vec<Sample> {
    if q.is_nan() || !(0.0..=1.0).contains(&q) {
        ev.annos.warn(format!("quantile value should be between 0 and 1, got {}", format_float(q)));
    }
    let mut out = Vec::new();
    for (metric, mut buckets) in group_buckets(ev, v) {
        let (val, forced) = bucket_quantile(q, &mut buckets);
        if forced {
            ev.annos.info(format!(
                "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}",
                metric.metric_name().unwrap_or("")
            ));
        }
        out.push(Sample { metric, t: 0, f: val, drop_name: true });
    }
    out
}

fn histogram_quantiles(ev: &mut Evaluator<'_>, v: &[Sample], label: &str, qs: &[f64]) -> Vec<Sample> {
    for q in qs {
        if q.is_nan() || !(0.0..=1.0).contains(q) {
            ev.annos.warn(format!("quantile value should be between 0 and 1, got {}", format_float(*q)));
        }
    }
    let groups = group_buckets(ev, v);
    let mut out = Vec::new();
    for q in qs {
        for (metric, buckets) in &groups {
            let mut b = buckets.clone();
            let (val, forced) = bucket_quantile(*q, &mut b);
            if forced {
                ev.annos.info(format!(
                    "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}",
                    metric.metric_name().unwrap_or("")
                ));
            }
            let mut lb = metric.builder();
            lb.set(label, format_openmetrics_float(*q));
            out.push(Sample { metric: Arc::new(lb.build()), t: 0, f: val, drop_name: true });
        }
    }
    out
}

/// Prometheus' `BucketFraction` over classic buckets.
fn bucket_fraction(lower: f64, upper: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));
    match buckets.last() {
        Some(l) if l.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    coalesce(buckets);
    let count = buckets[buckets.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for (i, &(ub, bc)) in buckets.iter().enumerate() {
        let lb = if i > 0 {
            buckets[i - 1].0
        } else if ub > 0.0 {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        let infinite = lb.is_infinite() || ub.is_infinite();
        // No interpolation within an infinitely wide bucket: a lower bound
        // inside it excludes the bucket, an upper bound inside it too.
        let interp_lower = |v: f64| {
            if infinite { bc } else { rank + (bc - rank) * (v - lb) / (ub - lb) }
        };
        let interp_upper = |v: f64| {
            if infinite { rank } else { rank + (bc - rank) * (v - lb) / (ub - lb) }
        };
        if !lower_set && lb >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lb >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lb < lower && ub > lower {
            lower_rank = interp_lower(lower);
            lower_set = true;
        }
        if !upper_set && lb < upper && ub > upper {
            upper_rank = interp_upper(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = bc;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

fn histogram_fraction(ev: &mut Evaluator<'_>, lower: f64, upper: f64, v: &[Sample]) -> Vec<Sample> {
    group_buckets(ev, v)
        .into_iter()
        .map(|(metric, mut b)| Sample { metric, t: 0, f: bucket_fraction(lower, upper, &mut b), drop_name: true })
        .collect()
}

// ---------------------------------------------------------------------------
// Label functions.

/// The labels `info()` joins on.
const IDENTIFYING_LABELS: [&str; 2] = ["instance", "job"];

/// `info(v, {data matchers})` (experimental), as Prometheus' `evalInfo`:
/// adds to each series of `v` the data labels of the info series (by default
/// `target_info`) with the same `instance` and `job`, at every step the
/// newest such info sample; info series themselves pass unchanged.
fn eval_info(ev: &mut Evaluator<'_>, call: &Call, args: &[&Expr], r: Range) -> Result<Matrix, PromqlError> {
    let Some(first) = args.first() else {
        return exec_err("info needs an argument");
    };
    let base = ev.eval_matrix(first, r)?;
    let mut data_matchers = crate::plan::info_data_matchers(call)?;
    let name_matchers = crate::plan::info_name_matchers(&data_matchers);
    // Info series themselves are not enriched.
    let ignore: HashSet<Labels> = base
        .iter()
        .filter(|s| name_matchers.iter().all(|m| m.matches(s.metric.metric_name().unwrap_or(""))))
        .map(|s| (*s.metric).clone())
        .collect();
    let mut id_values: HashMap<&str, HashSet<String>> = HashMap::new();
    for s in base.iter().filter(|s| !ignore.contains(&*s.metric)) {
        for l in IDENTIFYING_LABELS {
            if let Some(v) = s.metric.get(l).filter(|v| !v.is_empty()) {
                id_values.entry(l).or_default().insert(v.to_owned());
            }
        }
    }
    data_matchers.retain(|m| m.name != METRIC_NAME);

    // The info series at each step, valued with their sample's time (ms).
    let mut info: Matrix = Vec::new();
    if !id_values.is_empty() {
        let Some(d) = ev.data.get(&crate::plan::info_key(call)) else {
            return exec_err("internal error: info series were not fetched");
        };
        let mut points = Vec::new();
        for (s, metric) in d.raw.iter().zip(&d.metrics) {
            let wanted = id_values.iter().all(|(l, vals)| metric.get(l).is_some_and(|v| vals.contains(v)));
            if wanted && crate::eval::vector_points(&s.samples, r, None, 0, ev.lookback, true, &mut points) {
                for p in &mut points {
                    p.f = (p.f * 1000.0).round();
                }
                info.push(RSeries { metric: metric.clone(), points: points.clone(), drop_name: false });
            }
        }
    }
    let sig = |name: &str, l: &Labels| -> (String, Option<String>, Option<String>) {
        (name.to_owned(), l.get("instance").map(str::to_owned), l.get("job").map(str::to_owned))
    };
    let info_names: Vec<String> = {
        let mut n: Vec<String> = info.iter().filter_map(|s| s.metric.metric_name().map(str::to_owned)).collect();
        n.sort();
        n.dedup();
        n
    };
    let data_names: HashSet<String> = data_matchers.iter().map(|m| m.name.clone()).collect();
    let all_match_empty = data_matchers.iter().all(|m| m.matches(""));
    ev.range_eval(r, &[base, info], |_, v, _| {
        let mut right: HashMap<(String, Option<String>, Option<String>), &Sample> = HashMap::new();
        for s in &v[1] {
            let key = sig(s.metric.metric_name().unwrap_or(""), &s.metric);
            match right.get(&key) {
                Some(e) if e.f > s.f => {}
                Some(e) if e.f == s.f => {
                    return exec_err(format!(
                        "found duplicate series for info metric: existing {} @ {}, new {} @ {}",
                        crate::value::labels_string(&e.metric),
                        e.f as i64,
                        crate::value::labels_string(&s.metric),
                        s.f as i64
                    ));
                }
                _ => {
                    right.insert(key, s);
                }
            }
        }
        let mut out = Vec::with_capacity(v[0].len());
        for bs in &v[0] {
            if ignore.contains(&*bs.metric) {
                out.push(Sample { metric: bs.metric.clone(), t: bs.t, f: bs.f, drop_name: false });
                continue;
            }
            let mut add: Vec<(String, String)> = Vec::new();
            let mut seen = 0usize;
            for name in &info_names {
                let Some(is) = right.get(&sig(name, &bs.metric)) else { continue };
                for l in is.metric.iter() {
                    if l.name == METRIC_NAME || (!data_names.is_empty() && !data_names.contains(&l.name)) {
                        continue;
                    }
                    if let Some((_, v)) = add.iter().find(|(n, _)| *n == l.name) {
                        if *v != l.value {
                            return exec_err(format!("conflicting label: {}", l.name));
                        }
                        continue;
                    }
                    if bs.metric.get(&l.name).is_some() {
                        continue;
                    }
                    add.push((l.name.clone(), l.value.clone()));
                }
                seen += 1;
            }
            if seen == 0 && !all_match_empty {
                continue;
            }
            let metric = if add.is_empty() {
                bs.metric.clone()
            } else {
                let mut b = bs.metric.builder();
                for (n, v) in add {
                    b.set(n, v);
                }
                Arc::new(b.build())
            };
            out.push(Sample { metric, t: bs.t, f: bs.f, drop_name: false });
        }
        Ok(out)
    })
}

fn label_replace(ev: &mut Evaluator<'_>, args: &[&Expr], r: Range) -> Result<Matrix, PromqlError> {
    if args.len() != 5 {
        return exec_err("label_replace needs 5 arguments");
    }
    let dst = string_arg(args[1])?;
    let repl = string_arg(args[2])?;
    let src = string_arg(args[3])?;
    let regex_str = string_arg(args[4])?;
    let Ok(re) = Regex::new(&format!("^(?s:{regex_str})$")) else {
        return exec_err(format!("invalid regular expression in label_replace(): {regex_str}"));
    };
    if dst.is_empty() || ev.non_utf8.go_bytes(&dst).is_some() {
        return exec_err(format!("invalid destination label name in label_replace(): {dst}"));
    }
    let mut m = ev.eval_matrix(args[0], r)?;
    for s in &mut m {
        let src_val = s.metric.get(&src).unwrap_or("");
        if let Some(caps) = re.captures(src_val) {
            let mut res = String::new();
            caps.expand(&repl, &mut res);
            let mut b = s.metric.builder();
            b.set(dst.clone(), res);
            s.metric = Arc::new(b.build());
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
    }
    merge_same_labelset(m)
}

fn label_join(ev: &mut Evaluator<'_>, args: &[&Expr], r: Range) -> Result<Matrix, PromqlError> {
    if args.len() < 3 {
        return exec_err("label_join needs at least 3 arguments");
    }
    let dst = string_arg(args[1])?;
    let sep = string_arg(args[2])?;
    let mut srcs = Vec::new();
    for a in &args[3..] {
        let s = string_arg(a)?;
        if s.is_empty() || ev.non_utf8.go_bytes(&s).is_some() {
            return exec_err(format!("invalid source label name in label_join(): {s}"));
        }
        srcs.push(s);
    }
    if dst.is_empty() || ev.non_utf8.go_bytes(&dst).is_some() {
        return exec_err(format!("invalid destination label name in label_join(): {dst}"));
    }
    let mut m = ev.eval_matrix(args[0], r)?;
    for s in &mut m {
        let joined = srcs.iter().map(|l| s.metric.get(l).unwrap_or("")).collect::<Vec<_>>().join(&sep);
        let mut b = s.metric.builder();
        b.set(dst.clone(), joined);
        s.metric = Arc::new(b.build());
        if dst == METRIC_NAME {
            s.drop_name = false;
        }
    }
    merge_same_labelset(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_g_matches_go() {
        assert_eq!(format_g(1.1), "1.1");
        assert_eq!(format_g(-1.0), "-1");
        assert_eq!(format_g(123456.0), "123456");
        assert_eq!(format_g(1e6), "1e+06");
        assert_eq!(format_g(-1.5e-5), "-1.5e-05");
        assert_eq!(format_g(0.0001), "0.0001");
        assert_eq!(format_g(1e100), "1e+100");
        assert_eq!(format_g(f64::INFINITY), "+Inf");
        assert_eq!(format_g(f64::NAN), "NaN");
    }

    #[test]
    fn quantile_interpolates() {
        let mut v = vec![4.0, 1.0, 2.0, 3.0];
        assert_eq!(quantile(0.5, &mut v), 2.5);
        assert_eq!(quantile(0.0, &mut v), 1.0);
        assert!(quantile(f64::NAN, &mut v).is_nan());
    }

    #[test]
    fn dates() {
        // 2023-03-15T13:45:00Z
        let t = 1_678_887_900;
        assert_eq!(date_fn("year", t), 2023.0);
        assert_eq!(date_fn("month", t), 3.0);
        assert_eq!(date_fn("day_of_month", t), 15.0);
        assert_eq!(date_fn("hour", t), 13.0);
        assert_eq!(date_fn("minute", t), 45.0);
        assert_eq!(date_fn("day_of_week", t), 3.0);
        assert_eq!(date_fn("day_of_year", t), 74.0);
        assert_eq!(date_fn("days_in_month", t), 31.0);
        assert_eq!(date_fn("days_in_month", 1_709_251_200 - 86_400), 29.0);
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // 0, 10, 20, ... every 10s over a 60s window ending at 60s.
        let w: Vec<Point> = (1..=6).map(|i| Point { t: i * 10_000, f: (i * 10) as f64 }).collect();
        let ctx = RangeCtx { ts: 60_000, range_start: 0, range_end: 60_000, range_ms: 60_000 };
        let r = extrapolated_rate(&w, &ctx, true, true).expect("rate");
        assert!((r - 1.0).abs() < 1e-9, "{r}");
    }

    proptest::proptest! {
        /// Visiting only the resets gives the full loop's sum, bit for bit.
        #[test]
        fn counter_rate_equals_the_full_loop(
            vals in proptest::collection::vec(proptest::prop_oneof![0.0..1e6f64, proptest::strategy::Just(f64::NAN)], 2..60),
            lo in 0usize..60,
            len in 0usize..60,
        ) {
            let pts: Vec<Point> = vals.iter().enumerate().map(|(i, &f)| Point { t: i as i64 * 15_000 + 3, f }).collect();
            let lo = lo.min(pts.len());
            let hi = (lo + len).min(pts.len());
            let resets: Vec<usize> = (1..pts.len()).filter(|&j| pts[j].f < pts[j - 1].f).collect();
            let ctx = RangeCtx { ts: 900_000, range_start: lo as i64 * 15_000, range_end: hi as i64 * 15_000 + 10, range_ms: 300_000 };
            for is_rate in [true, false] {
                let want = extrapolated_rate(&pts[lo..hi], &ctx, true, is_rate).map(f64::to_bits);
                let got = counter_rate(&pts, lo, hi, &resets, &ctx, is_rate).map(f64::to_bits);
                proptest::prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn bucket_quantile_basic() {
        let mut b = vec![(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)];
        let (v, forced) = bucket_quantile(0.5, &mut b);
        assert_eq!(v, 1.0);
        assert!(!forced);
    }

    #[test]
    fn natural_sort() {
        assert!(natural_less("a2", "a10"));
        assert!(!natural_less("a10", "a2"));
    }
}
