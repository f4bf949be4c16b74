//! Streamed evaluation: an instant selector, a range-vector function over a
//! selector (`rate(x[5m])`, `max_over_time(x[1h])`, ...), and a `sum`, `avg`,
//! `count`, `min`, `max`, `group`, `stddev` or `stdvar` over either,
//! evaluated while the selector's series stream out of storage in batches
//! ([`strata_model::Select::select_batches`]).
//!
//! Such a node needs one series' samples at a time: only the current batch
//! of raw samples and the node's output (series × steps, or groups × steps
//! for an aggregation) are in memory, instead of every sample of every
//! series. Before evaluation, [`find`] lists these nodes with the steps each
//! is evaluated at (the query's, or inside a subquery the subquery's, as
//! every node is evaluated once) and [`run`] evaluates each into the
//! evaluator's precomputed results, which [`Evaluator::eval`] then returns
//! for the node. The results equal the step-wise evaluation's bit for bit:
//! series arrive in the same (label) order, so every per-step sum adds the
//! same values in the same order.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::parser::token::{T_AVG, T_COUNT, T_GROUP, T_MAX, T_MIN, T_STDDEV, T_STDVAR, T_SUM};
use promql_parser::parser::{AggregateExpr, Call, Expr, MatrixSelector, VectorSelector};
use strata_model::{Select, SelectError, SelectHints, is_stale_nan};

use crate::aggregate::Grouping;
use crate::eval::{Evaluator, Range, dur_ms, offset_ms, subquery_range, unwrap_parens, vector_points};
use crate::functions::{RangeSpec, is_series_range_fn, kahan_inc, range_fn_drops_name, range_points};
use crate::value::{Matrix, Metric, Point, PromqlError, RSeries};

/// A node evaluated by streaming.
pub(crate) struct Streamed<'e> {
    /// The node's address ([`node_key`]), under which its result is kept.
    pub node: usize,
    /// The aggregation over the source, if any.
    pub agg: Option<&'e AggregateExpr>,
    /// What is evaluated per series.
    pub source: Source<'e>,
    /// The steps the node is evaluated at: the query's, or a subquery's.
    pub range: Range,
}

/// What a streamed node evaluates per series.
pub(crate) enum Source<'e> {
    /// A range-vector function call over a matrix selector.
    Range {
        /// The call.
        call: &'e Call,
        /// Its range argument.
        ms: &'e MatrixSelector,
        /// The position of the range argument.
        idx: usize,
    },
    /// An instant vector selector.
    Instant(&'e VectorSelector),
}

impl Streamed<'_> {
    /// The selector the node reads.
    pub fn selector(&self) -> &VectorSelector {
        match &self.source {
            Source::Range { ms, .. } => &ms.vs,
            Source::Instant(vs) => vs,
        }
    }
}

/// The identity of an expression node (its address; the AST does not move
/// while a query runs).
pub(crate) fn node_key(e: &Expr) -> usize {
    std::ptr::from_ref(e) as usize
}

/// The nodes of `e`, evaluated at the steps of `r` in a query from
/// `query_start` to `query_end` (for `@ start()` and `@ end()`), to evaluate
/// by streaming, each with the steps it is evaluated at.
pub(crate) fn find(e: &Expr, r: Range, query_start: i64, query_end: i64) -> Vec<Streamed<'_>> {
    let mut out = Vec::new();
    walk(e, &Walk { r, query_start, query_end }, &mut out);
    out
}

/// Where the walk is.
#[derive(Clone, Copy)]
struct Walk {
    /// The steps of the current node.
    r: Range,
    query_start: i64,
    query_end: i64,
}

fn walk<'e>(e: &'e Expr, w: &Walk, out: &mut Vec<Streamed<'e>>) {
    let r = w.r;
    match e {
        Expr::Aggregate(a) => {
            if streamable_agg(a)
                && let Some(source) = streamable_source(unwrap_parens(&a.expr))
            {
                out.push(Streamed { node: node_key(e), agg: Some(a), source, range: r });
                return;
            }
            if let Some(p) = &a.param {
                walk(p, w, out);
            }
            walk(&a.expr, w, out);
        }
        Expr::Call(c) => {
            if let Some((ms, idx)) = streamable_call(c) {
                out.push(Streamed {
                    node: node_key(e),
                    agg: None,
                    source: Source::Range { call: c, ms, idx },
                    range: r,
                });
                return;
            }
            // `timestamp(x)` reads its selector's samples itself.
            if c.func.name == "timestamp"
                && c.args.args.first().is_some_and(|a| matches!(unwrap_parens(a), Expr::VectorSelector(_)))
            {
                return;
            }
            // `info`'s second argument is a label selector, not evaluated.
            let n = if c.func.name == "info" { 1 } else { c.args.args.len() };
            for a in c.args.args.iter().take(n) {
                walk(a, w, out);
            }
        }
        Expr::Unary(u) => walk(&u.expr, w, out),
        Expr::Binary(b) => {
            walk(&b.lhs, w, out);
            walk(&b.rhs, w, out);
        }
        Expr::Paren(p) => walk(&p.expr, w, out),
        Expr::VectorSelector(_) => {
            if let Some(source) = streamable_source(e) {
                out.push(Streamed { node: node_key(e), agg: None, source, range: r });
            }
        }
        // A subquery evaluates its inner expression once, at its own steps.
        Expr::Subquery(sq) => {
            use promql_parser::parser::AtModifier;
            let at = sq.at.as_ref().map(|a| match a {
                AtModifier::Start => w.query_start,
                AtModifier::End => w.query_end,
                AtModifier::At(t) => crate::eval::system_time_ms(*t),
            });
            let inner = Walk { r: subquery_range(sq, r, at), ..*w };
            walk(&sq.expr, &inner, out);
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::MatrixSelector(_) | Expr::Extension(_) => {}
    }
}

/// A streamable call or instant selector.
fn streamable_source(e: &Expr) -> Option<Source<'_>> {
    match e {
        Expr::Call(c) => streamable_call(c).map(|(ms, idx)| Source::Range { call: c, ms, idx }),
        Expr::VectorSelector(vs) if vs.matchers.or_matchers.is_empty() => Some(Source::Instant(vs)),
        _ => None,
    }
}

/// Aggregations that fold series one at a time, without a parameter.
fn streamable_agg(a: &AggregateExpr) -> bool {
    a.param.is_none() && matches!(a.op.id(), T_SUM | T_AVG | T_COUNT | T_MIN | T_MAX | T_GROUP | T_STDDEV | T_STDVAR)
}

/// A per-series range function over a plain selector (one matcher set)
/// whose other arguments are number literals: its range argument.
fn streamable_call(c: &Call) -> Option<(&MatrixSelector, usize)> {
    if !is_series_range_fn(c.func.name) {
        return None;
    }
    let mut found = None;
    for (i, a) in c.args.args.iter().enumerate() {
        match unwrap_parens(a) {
            Expr::MatrixSelector(ms) if found.is_none() && ms.vs.matchers.or_matchers.is_empty() => {
                found = Some((ms, i));
            }
            Expr::NumberLiteral(_) => {}
            _ => return None,
        }
    }
    found
}

/// Evaluates `node` over the steps of `r`, reading its selector's series
/// in `[mint, maxt]` from `store` with at most `*left` samples (reduced by
/// what was read), and keeps the result in `ev` for [`Evaluator::eval`].
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    ev: &mut Evaluator<'_>,
    store: &dyn Select,
    tenant: &str,
    node: &Streamed<'_>,
    mint: i64,
    maxt: i64,
    left: &mut usize,
    r: Range,
) -> Result<(), PromqlError> {
    let matchers = crate::plan::matcher_sets(node.selector())?;
    let Some(matchers) = matchers.first() else {
        return Err(PromqlError::Execution("internal error: selector without matchers".into()));
    };
    let per_series = match &node.source {
        Source::Range { call, ms, idx } => {
            let scalars: Vec<Vec<f64>> = call
                .args
                .args
                .iter()
                .enumerate()
                .filter(|(i, _)| i != idx)
                .map(|(_, a)| match unwrap_parens(a) {
                    Expr::NumberLiteral(n) => vec![n.val; r.num_steps()],
                    _ => Vec::new(),
                })
                .collect();
            PerSeries::Range(RangeSpec {
                name: call.func.name,
                scalars,
                range_ms: dur_ms(ms.range),
                off: offset_ms(ms.vs.offset.as_ref()),
                at: ev.at_ms(ms.vs.at.as_ref()),
            })
        }
        Source::Instant(vs) => PerSeries::Instant { off: offset_ms(vs.offset.as_ref()), at: ev.at_ms(vs.at.as_ref()) },
    };
    let drop_name = match &per_series {
        PerSeries::Range(spec) => range_fn_drops_name(spec.name),
        PerSeries::Instant { .. } => false,
    };
    let mut agg = node.agg.map(|a| StreamAgg::new(a, r));
    let mut out: Matrix = Vec::new();
    let mut sargs = Vec::new();
    let mut points = Vec::with_capacity(r.num_steps().min(11_000));

    let hints = SelectHints { max_samples: *left };
    let mut batches = store.select_batches(tenant, matchers, mint, maxt, hints).await.map_err(|e| select_err(&e))?;
    while let Some(batch) = batches.next_batch().await.map_err(|e| select_err(&e))? {
        ev.check_deadline()?;
        let loaded: usize = batch.iter().map(|s| s.samples.len()).sum();
        *left = left.checked_sub(loaded).ok_or(PromqlError::TooManySamples)?;
        for s in batch {
            let metric = Arc::new(s.labels);
            let any = match &per_series {
                PerSeries::Range(spec) => {
                    // `Sample` and `Point` have the same layout: the collect
                    // reuses the allocation in place.
                    let pts: Vec<Point> = s
                        .samples
                        .into_iter()
                        .filter(|p| !is_stale_nan(p.v))
                        .map(|p| Point { t: p.t, f: p.v })
                        .collect();
                    range_points(ev, spec, &metric, &pts, r, &mut sargs, &mut points)?
                }
                &PerSeries::Instant { off, at } => {
                    vector_points(&s.samples, r, at, off, ev.lookback, false, &mut points)
                }
            };
            if !any {
                continue;
            }
            ev.check_transient(points.len())?;
            match agg.as_mut() {
                Some(a) => a.add(&metric, &points, drop_name, r),
                None => {
                    ev.account(points.len())?;
                    out.push(RSeries { metric, points: points.clone(), drop_name });
                }
            }
        }
    }
    if let Some(a) = agg {
        out = a.finish(r);
        ev.account(out.iter().map(|s| s.points.len()).sum())?;
    }
    ev.precomputed.insert(node.node, out);
    Ok(())
}

/// The per-series evaluation of a streamed node.
enum PerSeries<'a> {
    /// A range-vector function.
    Range(RangeSpec<'a>),
    /// An instant selector with its offset and `@` time.
    Instant { off: i64, at: Option<i64> },
}

fn select_err(e: &SelectError) -> PromqlError {
    match e {
        SelectError::Limit(_) => PromqlError::TooManySamples,
        SelectError::Storage(_) => PromqlError::Storage(e.to_string()),
    }
}

/// One group's state at one step (the fields of the step-wise `Group`
/// the streamed operators use).
#[derive(Clone, Copy, Default)]
struct Cell {
    value: f64,
    mean: f64,
    kahan_c: f64,
    count: f64,
}

const SEEN: u8 = 1;
const INCREMENTAL: u8 = 2;
const DROP_NAME: u8 = 4;

/// An aggregation folding series as they come: per group and step, the
/// same updates in the same order as the step-wise evaluation.
struct StreamAgg {
    op: u16,
    grouping: Grouping,
    index: HashMap<Vec<(String, String)>, usize>,
    groups: Vec<GroupCells>,
    steps: usize,
}

struct GroupCells {
    metric: Metric,
    cells: Vec<Cell>,
    flags: Vec<u8>,
}

impl StreamAgg {
    fn new(a: &AggregateExpr, r: Range) -> Self {
        Self {
            op: a.op.id(),
            grouping: Grouping::of(a.modifier.as_ref()),
            index: HashMap::new(),
            groups: Vec::new(),
            steps: r.num_steps(),
        }
    }

    fn add(&mut self, metric: &Metric, points: &[Point], drop_name: bool, r: Range) {
        let key = self.grouping.key(metric);
        let n = self.groups.len();
        let gi = *self.index.entry(key).or_insert(n);
        if gi == n {
            self.groups.push(GroupCells {
                metric: Arc::new(self.grouping.labels_of(metric)),
                cells: vec![Cell::default(); self.steps],
                flags: vec![0; self.steps],
            });
        }
        let op = self.op;
        let g = &mut self.groups[gi];
        for p in points {
            let Some(k) = usize::try_from((p.t - r.start) / r.interval).ok().filter(|&k| k < g.cells.len()) else {
                continue;
            };
            let (c, flags) = (&mut g.cells[k], &mut g.flags[k]);
            let f = p.f;
            if *flags & SEEN == 0 {
                *c = Cell { value: f, mean: f, kahan_c: 0.0, count: 1.0 };
                *flags = SEEN | if drop_name { DROP_NAME } else { 0 };
                match op {
                    T_STDDEV | T_STDVAR => c.value = if f.is_nan() || f.is_infinite() { f64::NAN } else { 0.0 },
                    T_GROUP => c.value = 1.0,
                    _ => {}
                }
                continue;
            }
            if drop_name {
                *flags |= DROP_NAME;
            }
            match op {
                T_SUM => (c.value, c.kahan_c) = kahan_inc(f, c.value, c.kahan_c),
                T_AVG => {
                    c.count += 1.0;
                    if *flags & INCREMENTAL == 0 {
                        let (nv, nc) = kahan_inc(f, c.value, c.kahan_c);
                        if !nv.is_infinite() {
                            c.value = nv;
                            c.kahan_c = nc;
                            continue;
                        }
                        *flags |= INCREMENTAL;
                        c.mean = c.value / (c.count - 1.0);
                        c.kahan_c /= c.count - 1.0;
                    }
                    let q = (c.count - 1.0) / c.count;
                    (c.mean, c.kahan_c) = kahan_inc(f / c.count, q * c.mean, q * c.kahan_c);
                }
                T_MAX if c.value < f || c.value.is_nan() => c.value = f,
                T_MIN if c.value > f || c.value.is_nan() => c.value = f,
                T_COUNT => c.count += 1.0,
                T_STDDEV | T_STDVAR => {
                    c.count += 1.0;
                    let delta = f - c.mean;
                    c.mean += delta / c.count;
                    c.value += delta * (f - c.mean);
                }
                // T_GROUP, and T_MAX and T_MIN keeping their value.
                _ => {}
            }
        }
    }

    fn finish(self, r: Range) -> Matrix {
        let op = self.op;
        let mut out = Vec::with_capacity(self.groups.len());
        for g in self.groups {
            let mut points = Vec::new();
            let mut drop_name = false;
            for (k, (c, &flags)) in g.cells.iter().zip(&g.flags).enumerate() {
                if flags & SEEN == 0 {
                    continue;
                }
                let v = match op {
                    T_AVG => {
                        if flags & INCREMENTAL != 0 {
                            c.mean + c.kahan_c
                        } else {
                            c.value / c.count + c.kahan_c / c.count
                        }
                    }
                    T_COUNT => c.count,
                    T_STDVAR => c.value / c.count,
                    T_STDDEV => (c.value / c.count).sqrt(),
                    T_SUM => c.value + c.kahan_c,
                    _ => c.value,
                };
                points.push(Point { t: r.start + k as i64 * r.interval, f: v });
                drop_name = flags & DROP_NAME != 0;
            }
            if !points.is_empty() {
                out.push(RSeries { metric: g.metric, points, drop_name });
            }
        }
        out
    }
}
