//! Before evaluation: find every selector of a query, work out the time
//! range it needs (widened by lookback, ranges, offsets, subqueries and
//! `@`), and fetch its series once (all but the selectors of streamed
//! nodes, which `stream` reads batch by batch).

use std::collections::HashMap;

use promql_parser::label::{MatchOp as PMatchOp, Matcher as PMatcher};
use promql_parser::parser::{Call, Expr, VectorSelector};
use strata_model::{METRIC_NAME, MatchOp, Matcher, Select, SelectError, SelectHints, Series};

use crate::eval::{SelectorData, dur_ms, offset_ms, selector_key, system_time_ms};
use crate::value::PromqlError;

/// A selector to fetch and the time range it needs.
pub(crate) struct Fetch<'e> {
    /// The node.
    pub vs: &'e VectorSelector,
    /// Earliest sample time needed, ms.
    pub mint: i64,
    /// Latest sample time needed, ms.
    pub maxt: i64,
    /// Whether the selector is read as a range (`x[5m]`) rather than an instant vector.
    pub range: bool,
}

#[derive(Clone, Copy)]
struct PathState {
    subq_offset: i64,
    subq_range: i64,
    subq_at: Option<i64>,
}

/// The query's bounds and settings needed to size the fetches.
pub(crate) struct PlanCtx {
    /// Query start, ms.
    pub start: i64,
    /// Query end, ms.
    pub end: i64,
    /// Lookback delta, ms.
    pub lookback: i64,
}

fn at_of(at: Option<&promql_parser::parser::AtModifier>, ctx: &PlanCtx) -> Option<i64> {
    use promql_parser::parser::AtModifier;
    at.map(|a| match a {
        AtModifier::Start => ctx.start,
        AtModifier::End => ctx.end,
        AtModifier::At(t) => system_time_ms(*t),
    })
}

/// Lists the selectors of `e` with their time ranges.
pub(crate) fn collect<'e>(e: &'e Expr, ctx: &PlanCtx) -> Vec<Fetch<'e>> {
    let mut out = Vec::new();
    walk(e, ctx, PathState { subq_offset: 0, subq_range: 0, subq_at: None }, 0, &mut out);
    out
}

fn walk<'e>(e: &'e Expr, ctx: &PlanCtx, st: PathState, eval_range: i64, out: &mut Vec<Fetch<'e>>) {
    match e {
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, ctx, st, 0, out);
            }
            walk(&a.expr, ctx, st, 0, out);
        }
        Expr::Unary(u) => walk(&u.expr, ctx, st, 0, out),
        Expr::Binary(b) => {
            walk(&b.lhs, ctx, st, 0, out);
            walk(&b.rhs, ctx, st, 0, out);
        }
        Expr::Paren(p) => walk(&p.expr, ctx, st, eval_range, out),
        Expr::Subquery(sq) => {
            let off = offset_ms(sq.offset.as_ref());
            let range = dur_ms(sq.range);
            let next = match at_of(sq.at.as_ref(), ctx) {
                Some(at) => PathState { subq_offset: off, subq_range: range, subq_at: Some(at) },
                None => PathState {
                    subq_offset: st.subq_offset + off,
                    subq_range: st.subq_range + range,
                    subq_at: st.subq_at,
                },
            };
            walk(&sq.expr, ctx, next, 0, out);
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        Expr::VectorSelector(vs) => out.push(fetch_for(vs, ctx, st, eval_range)),
        Expr::MatrixSelector(ms) => out.push(fetch_for(&ms.vs, ctx, st, dur_ms(ms.range))),
        Expr::Call(c) => {
            // `info`'s second argument selects info series (see `collect_info`).
            let n = if c.func.name == "info" { 1 } else { c.args.args.len() };
            for a in c.args.args.iter().take(n) {
                walk(a, ctx, st, 0, out);
            }
        }
    }
}

/// The info series an `info()` call needs and their time range.
pub(crate) struct InfoFetch<'e> {
    /// The call.
    pub call: &'e Call,
    /// Earliest sample time needed, ms.
    pub mint: i64,
    /// Latest sample time needed, ms.
    pub maxt: i64,
}

/// The key of an `info()` call's info series in the fetched data.
pub(crate) fn info_key(call: &Call) -> usize {
    std::ptr::from_ref(call) as usize
}

/// Lists the `info()` calls of `e`. Like Prometheus, their info series are
/// read over the query's range (or the `@` time of the first selector of the
/// first argument), widened by the lookback delta and shifted by that
/// selector's offset.
pub(crate) fn collect_info<'e>(e: &'e Expr, ctx: &PlanCtx, out: &mut Vec<InfoFetch<'e>>) {
    match e {
        Expr::Call(c) => {
            if c.func.name == "info" {
                let first = c.args.args.first().and_then(|a| first_selector(a));
                let (mut start, mut end) = (ctx.start, ctx.end);
                if let Some(at) = first.and_then(|vs| at_of(vs.at.as_ref(), ctx)) {
                    (start, end) = (at, at);
                }
                let off = first.map_or(0, |vs| offset_ms(vs.offset.as_ref()));
                out.push(InfoFetch { call: c, mint: start - (ctx.lookback - 1) - off, maxt: end - off });
            }
            for a in &c.args.args {
                collect_info(a, ctx, out);
            }
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                collect_info(p, ctx, out);
            }
            collect_info(&a.expr, ctx, out);
        }
        Expr::Unary(u) => collect_info(&u.expr, ctx, out),
        Expr::Binary(b) => {
            collect_info(&b.lhs, ctx, out);
            collect_info(&b.rhs, ctx, out);
        }
        Expr::Paren(p) => collect_info(&p.expr, ctx, out),
        Expr::Subquery(sq) => collect_info(&sq.expr, ctx, out),
        _ => {}
    }
}

/// The first selector of `e` in evaluation order.
fn first_selector(e: &Expr) -> Option<&VectorSelector> {
    match e {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        Expr::Call(c) => c.args.args.iter().find_map(|a| first_selector(a)),
        Expr::Aggregate(a) => a.param.as_deref().and_then(first_selector).or_else(|| first_selector(&a.expr)),
        Expr::Unary(u) => first_selector(&u.expr),
        Expr::Binary(b) => first_selector(&b.lhs).or_else(|| first_selector(&b.rhs)),
        Expr::Paren(p) => first_selector(&p.expr),
        Expr::Subquery(sq) => first_selector(&sq.expr),
        _ => None,
    }
}

/// The data-label matchers of an `info()` call: its second argument's.
pub(crate) fn info_data_matchers(call: &Call) -> Result<Vec<Matcher>, PromqlError> {
    match call.args.args.get(1).map(|a| crate::eval::unwrap_parens(a)) {
        Some(Expr::VectorSelector(vs)) => Ok(matcher_sets(vs)?.into_iter().next().unwrap_or_default()),
        Some(_) => Err(PromqlError::Execution("info: expected a label selector".into())),
        None => Ok(Vec::new()),
    }
}

/// The `__name__` matchers that pick an `info()` call's info metrics
/// (Prometheus' `effectiveInfoNameMatchers`): the call's own when one of
/// them is positive; with negated ones only, those and `__name__=~".+_info"`;
/// with none, `__name__="target_info"`.
pub(crate) fn info_name_matchers(data_matchers: &[Matcher]) -> Vec<Matcher> {
    let mut ms: Vec<Matcher> = data_matchers.iter().filter(|m| m.name == METRIC_NAME).cloned().collect();
    if ms.is_empty() {
        return vec![Matcher::equal(METRIC_NAME, "target_info")];
    }
    if !ms.iter().any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Regex))
        && let Ok(info) = Matcher::new(MatchOp::Regex, METRIC_NAME, ".+_info")
    {
        ms.insert(0, info);
    }
    ms
}

/// Reads the info series of `info()` calls (the [`info_name_matchers`] and
/// the other data-label matchers) into `data`, taking their samples from
/// `left`.
pub(crate) async fn fetch_info(
    store: &dyn Select,
    tenant: &str,
    fetches: &[InfoFetch<'_>],
    data: &mut HashMap<usize, SelectorData>,
    left: &mut usize,
) -> Result<(), PromqlError> {
    for f in fetches {
        let data_ms = info_data_matchers(f.call)?;
        let mut ms = info_name_matchers(&data_ms);
        ms.extend(data_ms.into_iter().filter(|m| m.name != METRIC_NAME));
        let hints = SelectHints { max_samples: *left };
        let got = store.select_with(tenant, &ms, f.mint, f.maxt, hints).await.map_err(|e| match e {
            SelectError::Limit(_) => PromqlError::TooManySamples,
            SelectError::Storage(_) => PromqlError::Storage(e.to_string()),
        })?;
        let loaded: usize = got.iter().map(|s| s.samples.len()).sum();
        *left = left.checked_sub(loaded).ok_or(PromqlError::TooManySamples)?;
        data.insert(info_key(f.call), SelectorData::new(got, false));
    }
    Ok(())
}

fn fetch_for<'e>(vs: &'e VectorSelector, ctx: &PlanCtx, st: PathState, eval_range: i64) -> Fetch<'e> {
    let (mut start, mut end) = match st.subq_at {
        Some(at) => (at, at),
        None => (ctx.start, ctx.end),
    };
    if let Some(at) = at_of(vs.at.as_ref(), ctx) {
        start = at;
        end = at;
    } else {
        start = start - st.subq_offset - st.subq_range;
        end -= st.subq_offset;
    }
    if eval_range == 0 {
        start -= ctx.lookback - 1;
    } else {
        start -= eval_range - 1;
    }
    let off = offset_ms(vs.offset.as_ref());
    Fetch { vs, mint: start - off, maxt: end - off, range: eval_range != 0 }
}

fn convert_matcher(m: &PMatcher) -> Result<Matcher, PromqlError> {
    let op = match m.op {
        PMatchOp::Equal => MatchOp::Equal,
        PMatchOp::NotEqual => MatchOp::NotEqual,
        PMatchOp::Re(_) => MatchOp::Regex,
        PMatchOp::NotRe(_) => MatchOp::NotRegex,
    };
    Matcher::new(op, m.name.clone(), m.value.clone()).map_err(|e| PromqlError::Parse(e.to_string()))
}

/// The matcher sets of a selector: one per `or` alternative.
pub(crate) fn matcher_sets(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, PromqlError> {
    let name = vs.name.as_ref().map(|n| Matcher::equal(METRIC_NAME, n.clone()));
    let mut groups: Vec<&[PMatcher]> = Vec::new();
    if vs.matchers.or_matchers.is_empty() {
        groups.push(&vs.matchers.matchers);
    } else {
        groups.extend(vs.matchers.or_matchers.iter().map(Vec::as_slice));
        if !vs.matchers.matchers.is_empty() {
            groups.push(&vs.matchers.matchers);
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let mut ms: Vec<Matcher> = name.iter().cloned().collect();
            for m in g {
                ms.push(convert_matcher(m)?);
            }
            Ok(ms)
        })
        .collect()
}

/// Fetches every selector's series but those in `skip` (by
/// [`selector_key`]), loading at most `max_samples` samples in all: storage
/// stops reading once over, and the query fails with
/// [`PromqlError::TooManySamples`] before memory runs out. Returns the data
/// and how many samples are left.
pub(crate) async fn fetch_all<V>(
    store: &dyn Select,
    tenant: &str,
    fetches: &[Fetch<'_>],
    skip: &HashMap<usize, V>,
    max_samples: usize,
) -> Result<(HashMap<usize, SelectorData>, usize), PromqlError> {
    let mut data = HashMap::with_capacity(fetches.len());
    let mut left = max_samples;
    for f in fetches.iter().filter(|f| !skip.contains_key(&selector_key(f.vs))) {
        let sets = matcher_sets(f.vs)?;
        let mut series: Vec<Series> = Vec::new();
        for set in &sets {
            let hints = SelectHints { max_samples: left };
            let got = store.select_with(tenant, set, f.mint, f.maxt, hints).await.map_err(|e| match e {
                SelectError::Limit(_) => PromqlError::TooManySamples,
                SelectError::Storage(_) => PromqlError::Storage(e.to_string()),
            })?;
            let loaded: usize = got.iter().map(|s| s.samples.len()).sum();
            left = left.checked_sub(loaded).ok_or(PromqlError::TooManySamples)?;
            series.extend(got);
        }
        if sets.len() > 1 {
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            series.dedup_by(|a, b| a.labels == b.labels);
        }
        data.insert(selector_key(f.vs), SelectorData::new(series, f.range));
    }
    Ok((data, left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_account_for_lookback_range_and_offset() {
        let e = promql_parser::parser::parse("rate(a[5m] offset 1m) + b").expect("parses");
        let ctx = PlanCtx { start: 1_000_000, end: 2_000_000, lookback: 300_000 };
        let f = collect(&e, &ctx);
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].mint, f[0].maxt), (1_000_000 - 300_000 + 1 - 60_000, 2_000_000 - 60_000));
        assert_eq!((f[1].mint, f[1].maxt), (1_000_000 - 300_000 + 1, 2_000_000));
    }

    #[test]
    fn fetch_stops_at_the_sample_budget() {
        let st = crate::memstore::MemStore::new();
        for name in ["a", "b"] {
            let l = strata_model::Labels::from_pairs([("__name__", name)]).expect("labels");
            st.add("t", l, (0..10).map(|t| strata_model::Sample::new(t, 1.0)));
        }
        let e = promql_parser::parser::parse("a + b").expect("parses");
        let ctx = PlanCtx { start: 9, end: 9, lookback: 300_000 };
        let f = collect(&e, &ctx);
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let none = HashMap::<usize, ()>::new();
        assert!(rt.block_on(fetch_all(&st, "t", &f, &none, 20)).is_ok());
        let err = rt.block_on(fetch_all(&st, "t", &f, &none, 19)).expect_err("a and b hold 20 samples");
        assert_eq!(err, PromqlError::TooManySamples);
    }

    #[test]
    fn subquery_widens_range() {
        let e = promql_parser::parser::parse("max_over_time(a[10m:1m] offset 1m)").expect("parses");
        let ctx = PlanCtx { start: 1_000_000, end: 1_000_000, lookback: 300_000 };
        let f = collect(&e, &ctx);
        assert_eq!(f[0].mint, 1_000_000 - 60_000 - 600_000 - 300_000 + 1);
        assert_eq!(f[0].maxt, 1_000_000 - 60_000);
    }
}
