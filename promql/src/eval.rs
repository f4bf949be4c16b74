//! The evaluator: walks the AST over a range of evaluation steps, the way
//! Prometheus' engine does (`rangeEval`), producing one [`Matrix`] per node.
//!
//! Series data is fetched before evaluation (see [`crate::plan`]), so the
//! evaluation itself is synchronous.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use promql_parser::parser::{AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector};
use strata_model::{Labels, Sample as RawSample, Series, is_stale_nan};

use crate::gostr::NonUtf8Literals;
use crate::value::{Matrix, Metric, Point, PromqlError, RSeries, Sample, Val, exec_err};

/// The step used by subqueries that name none (Prometheus' default
/// evaluation interval).
pub(crate) const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

/// The evaluation steps of one node: `start..=end` every `interval` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    /// First step, ms.
    pub start: i64,
    /// Last step, ms.
    pub end: i64,
    /// Step width, ms (1 for instant evaluation).
    pub interval: i64,
}

impl Range {
    /// Number of steps.
    pub fn num_steps(&self) -> usize {
        if self.end < self.start {
            return 0;
        }
        usize::try_from((self.end - self.start) / self.interval + 1).unwrap_or(0)
    }

    /// The step timestamps.
    pub fn steps(&self) -> impl Iterator<Item = i64> + use<> {
        let (start, interval) = (self.start, self.interval);
        (0..self.num_steps()).map(move |i| start + i as i64 * interval)
    }

    /// Whether this is a single evaluation.
    pub fn is_instant(&self) -> bool {
        self.start == self.end
    }
}

/// Warnings and infos collected during evaluation, deduplicated.
#[derive(Debug, Default, Clone)]
pub(crate) struct Annotations {
    /// "PromQL warning: ..." lines.
    pub warnings: Vec<String>,
    /// "PromQL info: ..." lines.
    pub infos: Vec<String>,
}

impl Annotations {
    /// Adds a warning (the "PromQL warning: " prefix is added here).
    pub fn warn(&mut self, msg: impl AsRef<str>) {
        let m = format!("PromQL warning: {}", msg.as_ref());
        if !self.warnings.contains(&m) {
            self.warnings.push(m);
        }
    }

    /// Adds an info note (the "PromQL info: " prefix is added here).
    pub fn info(&mut self, msg: impl AsRef<str>) {
        let m = format!("PromQL info: {}", msg.as_ref());
        if !self.infos.contains(&m) {
            self.infos.push(m);
        }
    }
}

/// The series of one selector, in the form its node reads them: raw
/// samples (staleness markers included) for an instant selector, points
/// without staleness markers for a range selector (what windows see). Only
/// one form is kept, so a query holds each loaded sample once.
#[derive(Debug)]
pub(crate) struct SelectorData {
    /// Instant selectors: series as read, staleness markers included.
    pub raw: Vec<Series>,
    /// Range selectors: per series, the points without staleness markers.
    pub clean: Vec<Vec<Point>>,
    /// Per series, shared labels.
    pub metrics: Vec<Metric>,
}

impl SelectorData {
    /// Wraps series read from storage for an instant (`range == false`) or
    /// a range selector.
    pub fn new(raw: Vec<Series>, range: bool) -> Self {
        let metrics = raw.iter().map(|s| Arc::new(s.labels.clone())).collect();
        if !range {
            return Self { raw, clean: Vec::new(), metrics };
        }
        // `Sample` and `Point` have the same layout: the collect reuses each
        // series' allocation in place rather than copying it.
        let clean = raw
            .into_iter()
            .map(|s| s.samples.into_iter().filter(|p| !is_stale_nan(p.v)).map(|p| Point { t: p.t, f: p.v }).collect())
            .collect();
        Self { raw: Vec::new(), clean, metrics }
    }
}

/// The identity of a selector node in the AST (its address; the AST is not
/// moved while a query runs).
pub(crate) fn selector_key(vs: &VectorSelector) -> usize {
    std::ptr::from_ref(vs) as usize
}

/// Milliseconds of a duration.
pub(crate) fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds of an optional offset (negative offsets allowed).
pub(crate) fn offset_ms(o: Option<&Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => dur_ms(*d),
        Some(Offset::Neg(d)) => -dur_ms(*d),
    }
}

/// Milliseconds since the epoch of a point in time (also before the epoch).
pub(crate) fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => dur_ms(d),
        Err(e) => -dur_ms(e.duration()),
    }
}

/// Strips parentheses.
pub(crate) fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

/// An instant selector over one series (`samples`, staleness markers
/// included) at every step of `r`: into `points` (cleared first) the latest
/// sample within the lookback window before each step (`@`-pinned to `at`,
/// shifted by `off`), its timestamp in seconds with `timestamps`; whether
/// there is any.
pub(crate) fn vector_points(
    samples: &[RawSample],
    r: Range,
    at: Option<i64>,
    off: i64,
    lookback: i64,
    timestamps: bool,
    points: &mut Vec<Point>,
) -> bool {
    points.clear();
    // Steps only move forward: the candidate sample's index does too.
    let mut idx = 0usize;
    for ts in r.steps() {
        let ref_t = at.unwrap_or(ts) - off;
        if at.is_some() {
            idx = samples.partition_point(|s| s.t <= ref_t);
        } else {
            while idx < samples.len() && samples[idx].t <= ref_t {
                idx += 1;
            }
        }
        if idx == 0 {
            continue;
        }
        let s = samples[idx - 1];
        if s.t <= ref_t - lookback || is_stale_nan(s.v) {
            continue;
        }
        let f = if timestamps { s.t as f64 / 1000.0 } else { s.v };
        points.push(Point { t: ts, f });
    }
    !points.is_empty()
}

/// The points of `pts` in the left-open window `(mint, maxt]`.
pub(crate) fn window(pts: &[Point], mint: i64, maxt: i64) -> &[Point] {
    let lo = pts.partition_point(|p| p.t <= mint);
    let hi = pts.partition_point(|p| p.t <= maxt);
    if lo >= hi { &[] } else { &pts[lo..hi] }
}

/// The evaluator's state for one query.
pub(crate) struct Evaluator<'a> {
    /// Fetched series by selector key.
    pub data: &'a HashMap<usize, SelectorData>,
    /// Lookback delta, ms.
    pub lookback: i64,
    /// Maximum samples in flight.
    pub max_samples: usize,
    /// Samples currently held.
    pub cur_samples: usize,
    /// When to give up.
    pub deadline: Instant,
    /// The query's start (for `@ start()`), ms.
    pub query_start: i64,
    /// The query's end (for `@ end()`), ms.
    pub query_end: i64,
    /// The query's step (0 for instant queries), ms.
    pub query_step: i64,
    /// Collected annotations.
    pub annos: Annotations,
    /// The query's string literals that Go would decode to non-UTF-8 bytes.
    pub non_utf8: NonUtf8Literals,
    /// Results of nodes evaluated before the walk (see [`crate::stream`]),
    /// by node address; each is taken when the walk reaches its node.
    pub precomputed: HashMap<usize, Matrix>,
}

impl Evaluator<'_> {
    /// Fails once the deadline has passed.
    pub fn check_deadline(&self) -> Result<(), PromqlError> {
        if Instant::now() > self.deadline { Err(PromqlError::Timeout) } else { Ok(()) }
    }

    /// Accounts `n` more samples in flight.
    pub fn account(&mut self, n: usize) -> Result<(), PromqlError> {
        self.cur_samples = self.cur_samples.saturating_add(n);
        if self.cur_samples > self.max_samples {
            return Err(PromqlError::TooManySamples);
        }
        Ok(())
    }

    /// Releases `n` samples.
    pub fn release(&mut self, n: usize) {
        self.cur_samples = self.cur_samples.saturating_sub(n);
    }

    /// Fails if `n` more samples would exceed the limit (transient use).
    pub fn check_transient(&self, n: usize) -> Result<(), PromqlError> {
        if self.cur_samples.saturating_add(n) > self.max_samples {
            return Err(PromqlError::TooManySamples);
        }
        Ok(())
    }

    /// The time an `@` modifier pins evaluation to.
    pub fn at_ms(&self, at: Option<&AtModifier>) -> Option<i64> {
        at.map(|a| match a {
            AtModifier::Start => self.query_start,
            AtModifier::End => self.query_end,
            AtModifier::At(t) => system_time_ms(*t),
        })
    }

    /// The fetched data of a selector.
    pub fn selector_data(&self, vs: &VectorSelector) -> Result<&SelectorData, PromqlError> {
        match self.data.get(&selector_key(vs)) {
            Some(d) => Ok(d),
            None => exec_err("internal error: selector was not fetched"),
        }
    }

    /// Evaluates `e` into a matrix (fails on strings).
    pub fn eval_matrix(&mut self, e: &Expr, r: Range) -> Result<Matrix, PromqlError> {
        match self.eval(e, r)? {
            Val::Matrix(m) => Ok(m),
            Val::String(_) => exec_err("unexpected string expression"),
        }
    }

    /// Evaluates an expression over the steps of `r`.
    pub fn eval(&mut self, e: &Expr, r: Range) -> Result<Val, PromqlError> {
        self.check_deadline()?;
        if r.end < r.start {
            return Ok(Val::Matrix(Vec::new()));
        }
        if !self.precomputed.is_empty()
            && let Some(m) = self.precomputed.remove(&crate::stream::node_key(e))
        {
            return Ok(Val::Matrix(m));
        }
        match e {
            Expr::Aggregate(a) => crate::aggregate::eval_aggregate(self, a, r).map(Val::Matrix),
            Expr::Unary(u) => {
                let mut m = self.eval_matrix(&u.expr, r)?;
                for s in &mut m {
                    s.drop_name = true;
                    for p in &mut s.points {
                        p.f = -p.f;
                    }
                }
                Ok(Val::Matrix(m))
            }
            Expr::Binary(b) => crate::binary::eval_binary(self, b, r).map(Val::Matrix),
            Expr::Paren(p) => self.eval(&p.expr, r),
            Expr::Subquery(sq) => self.eval_subquery(sq, r).map(|(m, _)| Val::Matrix(m)),
            Expr::NumberLiteral(n) => {
                let points: Vec<Point> = r.steps().map(|t| Point { t, f: n.val }).collect();
                self.account(points.len())?;
                Ok(Val::Matrix(vec![RSeries { metric: Arc::new(Labels::empty()), points, drop_name: false }]))
            }
            Expr::StringLiteral(s) => Ok(Val::String(s.val.clone())),
            Expr::VectorSelector(vs) => self.eval_vector_selector(vs, r, false).map(Val::Matrix),
            Expr::MatrixSelector(ms) => {
                if !r.is_instant() {
                    return exec_err("cannot do range evaluation of matrix selector");
                }
                self.eval_matrix_selector(ms, r.start).map(Val::Matrix)
            }
            Expr::Call(c) => crate::functions::eval_call(self, c, r),
            Expr::Extension(_) => exec_err("unsupported expression extension"),
        }
    }

    /// Evaluates a vector selector at every step. With `timestamps`, values
    /// are the samples' timestamps in seconds (for `timestamp()`).
    pub fn eval_vector_selector(
        &mut self,
        vs: &VectorSelector,
        r: Range,
        timestamps: bool,
    ) -> Result<Matrix, PromqlError> {
        let off = offset_ms(vs.offset.as_ref());
        let at = self.at_ms(vs.at.as_ref());
        let lookback = self.lookback;
        let data = self.selector_data(vs)?;
        let mut out = Vec::with_capacity(data.raw.len());
        let mut total = 0usize;
        let mut points = Vec::new();
        for (s, metric) in data.raw.iter().zip(&data.metrics) {
            if vector_points(&s.samples, r, at, off, lookback, timestamps, &mut points) {
                total += points.len();
                out.push(RSeries { metric: metric.clone(), points: points.clone(), drop_name: timestamps });
            }
        }
        self.account(total)?;
        Ok(out)
    }

    /// A matrix selector evaluated at one time: raw points in the window.
    fn eval_matrix_selector(&mut self, ms: &MatrixSelector, ts: i64) -> Result<Matrix, PromqlError> {
        let off = offset_ms(ms.vs.offset.as_ref());
        let at = self.at_ms(ms.vs.at.as_ref());
        let maxt = at.unwrap_or(ts) - off;
        let mint = maxt - dur_ms(ms.range);
        let data = self.selector_data(&ms.vs)?;
        let mut out = Vec::new();
        let mut total = 0usize;
        for (pts, metric) in data.clean.iter().zip(&data.metrics) {
            let w = window(pts, mint, maxt);
            if !w.is_empty() {
                total += w.len();
                out.push(RSeries { metric: metric.clone(), points: w.to_vec(), drop_name: false });
            }
        }
        self.account(total)?;
        Ok(out)
    }

    /// Evaluates a subquery for the steps of `r`: the inner expression at
    /// its own steps. Returns the matrix and the time the outer steps are
    /// pinned to by `@`, if any.
    pub fn eval_subquery(&mut self, sq: &SubqueryExpr, r: Range) -> Result<(Matrix, Option<i64>), PromqlError> {
        let at = self.at_ms(sq.at.as_ref());
        let m = self.eval_matrix(&sq.expr, subquery_range(sq, r, at))?;
        Ok((m, at))
    }

    /// Collects the per-step input vectors of `args` and calls `f` at each
    /// step; assembles the output vectors into series (Prometheus' `rangeEval`).
    pub fn range_eval<F>(&mut self, r: Range, args: &[Matrix], mut f: F) -> Result<Matrix, PromqlError>
    where
        F: FnMut(&mut Self, &[Vec<Sample>], i64) -> Result<Vec<Sample>, PromqlError>,
    {
        let mut cursors: Vec<Vec<usize>> = args.iter().map(|m| vec![0; m.len()]).collect();
        let mut vectors: Vec<Vec<Sample>> = args.iter().map(|m| Vec::with_capacity(m.len())).collect();
        let mut out: Matrix = Vec::new();
        let mut index: HashMap<Metric, usize> = HashMap::new();
        let mut by_ptr: HashMap<usize, usize> = HashMap::new();
        let mut last_ts: Vec<i64> = Vec::new();
        let num_steps = r.num_steps();
        for ts in r.steps() {
            self.check_deadline()?;
            for (i, m) in args.iter().enumerate() {
                let vec = &mut vectors[i];
                vec.clear();
                for (j, s) in m.iter().enumerate() {
                    let c = &mut cursors[i][j];
                    while *c < s.points.len() && s.points[*c].t < ts {
                        *c += 1;
                    }
                    if *c < s.points.len() && s.points[*c].t == ts {
                        vec.push(Sample { metric: s.metric.clone(), t: ts, f: s.points[*c].f, drop_name: s.drop_name });
                        *c += 1;
                    }
                }
            }
            let result = f(self, &vectors, ts)?;
            self.account(result.len())?;
            if r.is_instant() {
                out = result
                    .into_iter()
                    .map(|s| RSeries {
                        metric: s.metric,
                        points: vec![Point { t: ts, f: s.f }],
                        drop_name: s.drop_name,
                    })
                    .collect();
                break;
            }
            for s in result {
                let ptr = Arc::as_ptr(&s.metric) as usize;
                let found = match by_ptr.get(&ptr) {
                    Some(&i) => Some(i),
                    None => index.get(&s.metric).copied(),
                };
                match found.map(|i| (i, &mut last_ts[i])) {
                    Some((idx, last)) => {
                        if *last == ts {
                            return exec_err("vector cannot contain metrics with the same labelset");
                        }
                        *last = ts;
                        out[idx].points.push(Point { t: ts, f: s.f });
                    }
                    None => {
                        // Only the label set kept in `out` stays alive, so only
                        // its address may serve as a key.
                        by_ptr.insert(ptr, out.len());
                        index.insert(s.metric.clone(), out.len());
                        last_ts.push(ts);
                        let mut points = Vec::with_capacity(num_steps.min(1024));
                        points.push(Point { t: ts, f: s.f });
                        out.push(RSeries { metric: s.metric, points, drop_name: s.drop_name });
                    }
                }
            }
        }
        self.release(args.iter().flatten().map(|s| s.points.len()).sum());
        Ok(out)
    }
}

/// The steps a subquery evaluates its inner expression at, for the outer
/// steps `r` and the subquery's `@` time `at`.
pub(crate) fn subquery_range(sq: &SubqueryExpr, r: Range, at: Option<i64>) -> Range {
    let off = offset_ms(sq.offset.as_ref());
    let range = dur_ms(sq.range);
    let step = match sq.step {
        Some(s) if dur_ms(s) > 0 => dur_ms(s),
        _ => DEFAULT_SUBQUERY_STEP_MS,
    };
    let (base_start, base_end) = match at {
        Some(a) => (a, a),
        None => (r.start, r.end),
    };
    let lower = base_start - off - range;
    let mut start = step * (lower / step);
    if start <= lower {
        start += step;
    }
    Range { start, end: base_end - off, interval: step }
}

/// Whether a label is metric metadata (`__name__`, `__type__`, `__unit__`),
/// dropped together whenever the metric name is.
pub(crate) fn is_metadata_label(name: &str) -> bool {
    matches!(name, "__name__" | "__type__" | "__unit__")
}

/// The value of a scalar matrix at each step of `r` (NaN where missing).
pub(crate) fn scalar_per_step(m: &Matrix, r: Range) -> Vec<f64> {
    let mut vals = vec![f64::NAN; r.num_steps()];
    if let Some(s) = m.first() {
        for p in &s.points {
            if let Some(v) = usize::try_from((p.t - r.start) / r.interval).ok().and_then(|i| vals.get_mut(i)) {
                *v = p.f;
            }
        }
    }
    vals
}

/// Removes `__name__` where marked and merges series that became identical,
/// failing when they overlap in time (Prometheus' delayed name removal).
pub(crate) fn cleanup_metric_labels(m: Matrix) -> Result<Matrix, PromqlError> {
    let m: Matrix = m
        .into_iter()
        .map(|mut s| {
            if s.drop_name && s.metric.iter().any(|l| is_metadata_label(&l.name)) {
                let mut b = s.metric.builder();
                b.retain(|l| !is_metadata_label(&l.name));
                s.metric = Arc::new(b.build());
            }
            s.drop_name = false;
            s
        })
        .collect();
    merge_same_labelset(m)
}

/// Merges series with the same labels; fails on overlapping timestamps.
pub(crate) fn merge_same_labelset(m: Matrix) -> Result<Matrix, PromqlError> {
    if m.len() <= 1 {
        return Ok(m);
    }
    let mut index: HashMap<Metric, usize> = HashMap::with_capacity(m.len());
    let mut out: Matrix = Vec::with_capacity(m.len());
    let mut merged_any = false;
    for s in m {
        match index.get(&s.metric) {
            Some(&i) => {
                merged_any = true;
                out[i].points.extend(s.points);
                out[i].drop_name |= s.drop_name;
            }
            None => {
                index.insert(s.metric.clone(), out.len());
                out.push(s);
            }
        }
    }
    if merged_any {
        for s in &mut out {
            s.points.sort_by_key(|p| p.t);
            if s.points.windows(2).any(|w| w[0].t == w[1].t) {
                return exec_err("vector cannot contain metrics with the same labelset");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_steps() {
        let r = Range { start: 0, end: 100, interval: 30 };
        assert_eq!(r.steps().collect::<Vec<_>>(), vec![0, 30, 60, 90]);
        assert_eq!(Range { start: 5, end: 5, interval: 1 }.num_steps(), 1);
        assert_eq!(Range { start: 5, end: 4, interval: 1 }.num_steps(), 0);
    }

    #[test]
    fn vector_points_respect_lookback_and_staleness() {
        let s = vec![RawSample::new(0, 1.0), RawSample::new(10, 2.0), RawSample::new(20, strata_model::stale_nan())];
        let mut p = Vec::new();
        let at = |t: i64| Range { start: t, end: t, interval: 1 };
        let one = |p: &Vec<Point>| p.iter().map(|x| x.f).collect::<Vec<_>>();
        assert!(vector_points(&s, at(15), None, 0, 100, false, &mut p));
        assert_eq!(one(&p), [2.0]);
        assert!(!vector_points(&s, at(25), None, 0, 100, false, &mut p));
        assert!(!vector_points(&s, at(15), None, 0, 5, false, &mut p));
        assert!(!vector_points(&s, at(-1), None, 0, 5, false, &mut p));
        // Steps 0, 5, ..., 30 with lookback 8: the marker at 20 ends the series.
        assert!(vector_points(&s, Range { start: 0, end: 30, interval: 5 }, None, 0, 8, false, &mut p));
        assert_eq!(p.iter().map(|x| (x.t, x.f)).collect::<Vec<_>>(), [(0, 1.0), (5, 1.0), (10, 2.0), (15, 2.0)]);
        // Offset and `@`, timestamps in seconds.
        assert!(vector_points(&s, Range { start: 0, end: 30, interval: 5 }, Some(12), 2, 100, true, &mut p));
        assert_eq!(p.len(), 7);
        assert!(p.iter().all(|x| x.f == 0.01));
    }

    #[test]
    fn window_is_left_open() {
        let pts: Vec<Point> = (0..5).map(|i| Point { t: i * 10, f: i as f64 }).collect();
        let w = window(&pts, 10, 30);
        assert_eq!(w.iter().map(|p| p.t).collect::<Vec<_>>(), vec![20, 30]);
    }
}
