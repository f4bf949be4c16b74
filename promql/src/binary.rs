//! Binary operators: arithmetic, comparisons (with and without `bool`),
//! set operators, vector matching (`on`/`ignoring`, `group_left`/`group_right`,
//! `fill*`), and scalar/vector combinations.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD, T_MUL, T_NEQ, T_POW,
    T_SUB, TokenId,
};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use strata_model::{Labels, METRIC_NAME};

use crate::eval::{Evaluator, Range, is_metadata_label};
use crate::value::{Matrix, Metric, PromqlError, Sample, exec_err, labels_string};

/// How two vectors are matched.
#[derive(Debug, Clone)]
pub(crate) struct Matching {
    /// `on(...)` (true) or `ignoring(...)` (false).
    pub on: bool,
    /// The listed labels, sorted.
    pub labels: Vec<String>,
    /// Cardinality.
    pub card: Card,
    /// `group_x(...)` labels taken from the "one" side.
    pub include: Vec<String>,
    /// Fill value for a missing left-hand side.
    pub fill_lhs: Option<f64>,
    /// Fill value for a missing right-hand side.
    pub fill_rhs: Option<f64>,
}

/// Matching cardinality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Card {
    /// One-to-one.
    OneToOne,
    /// `group_left`.
    ManyToOne,
    /// `group_right`.
    OneToMany,
    /// Set operators.
    ManyToMany,
}

impl Matching {
    fn from_expr(b: &BinaryExpr) -> Self {
        let set_op = matches!(b.op.id(), T_LAND | T_LOR | T_LUNLESS);
        let mut m = Matching {
            on: false,
            labels: Vec::new(),
            card: if set_op { Card::ManyToMany } else { Card::OneToOne },
            include: Vec::new(),
            fill_lhs: None,
            fill_rhs: None,
        };
        if let Some(modifier) = &b.modifier {
            if let Some(lm) = &modifier.matching {
                m.on = matches!(lm, LabelModifier::Include(_));
                m.labels = lm.labels().labels.clone();
                m.labels.sort();
            }
            match &modifier.card {
                VectorMatchCardinality::OneToOne => {}
                VectorMatchCardinality::ManyToMany => m.card = Card::ManyToMany,
                VectorMatchCardinality::ManyToOne(l) => {
                    m.card = Card::ManyToOne;
                    m.include = l.labels.clone();
                }
                VectorMatchCardinality::OneToMany(l) => {
                    m.card = Card::OneToMany;
                    m.include = l.labels.clone();
                }
            }
            m.fill_lhs = modifier.fill_values.lhs;
            m.fill_rhs = modifier.fill_values.rhs;
        }
        m
    }

    /// The join signature of a label set.
    pub fn signature(&self, l: &Labels) -> Vec<(String, String)> {
        if self.on {
            l.iter()
                .filter(|x| self.labels.binary_search(&x.name).is_ok())
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect()
        } else {
            l.iter()
                .filter(|x| x.name != METRIC_NAME && self.labels.binary_search(&x.name).is_err())
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect()
        }
    }

    /// The labels a signature is made of (for fill values and messages).
    fn match_labels(&self, l: &Labels) -> Labels {
        let mut b = l.builder();
        if self.on {
            b.retain(|x| self.labels.binary_search(&x.name).is_ok());
        } else {
            b.retain(|x| x.name != METRIC_NAME && self.labels.binary_search(&x.name).is_err());
        }
        b.build()
    }
}

/// Join signatures interned to ids, cached by label-set address (the input
/// series' labels stay alive, so their addresses are stable while a node is
/// evaluated), and result labels cached by input pair.
#[derive(Default)]
pub(crate) struct SigCache {
    by_ptr: HashMap<usize, u64>,
    ids: HashMap<Vec<(String, String)>, u64>,
    results: HashMap<(usize, usize), Metric>,
}

impl SigCache {
    fn id(&mut self, m: &Matching, metric: &Metric) -> u64 {
        let ptr = Arc::as_ptr(metric) as usize;
        if let Some(&id) = self.by_ptr.get(&ptr) {
            return id;
        }
        let n = self.ids.len() as u64;
        let id = *self.ids.entry(m.signature(metric)).or_insert(n);
        self.by_ptr.insert(ptr, id);
        id
    }
}

/// Whether the operator is a comparison.
pub(crate) fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Whether the operator changes what the metric means (and so drops its name).
fn changes_metric_schema(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_POW | T_MOD | T_ATAN2)
}

/// Go's `math.Mod`.
fn go_mod(x: f64, y: f64) -> f64 {
    x % y
}

/// Scalar-scalar operations (comparisons yield 0/1).
pub(crate) fn scalar_binop(op: TokenId, l: f64, r: f64) -> f64 {
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    match op {
        T_ADD => l + r,
        T_SUB => l - r,
        T_MUL => l * r,
        T_DIV => l / r,
        T_POW => l.powf(r),
        T_MOD => go_mod(l, r),
        T_EQLC => b(l == r),
        T_NEQ => b(l != r),
        T_GTR => b(l > r),
        T_LSS => b(l < r),
        T_GTE => b(l >= r),
        T_LTE => b(l <= r),
        T_ATAN2 => l.atan2(r),
        _ => f64::NAN,
    }
}

/// Element-wise vector operation: the value and whether to keep it.
fn elem_binop(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (scalar_binop(op, l, r), true),
    }
}

/// Evaluates a binary expression.
pub(crate) fn eval_binary(ev: &mut Evaluator<'_>, b: &BinaryExpr, r: Range) -> Result<Matrix, PromqlError> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lt = b.lhs.value_type();
    let rt = b.rhs.value_type();
    let lhs = ev.eval_matrix(&b.lhs, r)?;
    let rhs = ev.eval_matrix(&b.rhs, r)?;
    let args = [lhs, rhs];
    match (lt, rt) {
        (ValueType::Scalar, ValueType::Scalar) => ev.range_eval(r, &args, |_, v, _| {
            let (Some(l), Some(rr)) = (v[0].first(), v[1].first()) else {
                return Ok(Vec::new());
            };
            Ok(vec![Sample::new(Arc::new(Labels::empty()), scalar_binop(op, l.f, rr.f))])
        }),
        (ValueType::Vector, ValueType::Vector) => {
            let matching = Matching::from_expr(b);
            let mut cache = SigCache::default();
            match op {
                T_LAND => ev.range_eval(r, &args, |_, v, _| Ok(vector_and(&v[0], &v[1], &matching, &mut cache))),
                T_LOR => ev.range_eval(r, &args, |_, v, _| Ok(vector_or(&v[0], &v[1], &matching, &mut cache))),
                T_LUNLESS => ev.range_eval(r, &args, |_, v, _| Ok(vector_unless(&v[0], &v[1], &matching, &mut cache))),
                _ => ev
                    .range_eval(r, &args, |_, v, _| vector_binop(op, &v[0], &v[1], &matching, return_bool, &mut cache)),
            }
        }
        (ValueType::Vector, ValueType::Scalar) => ev.range_eval(r, &args, |_, v, _| {
            let Some(s) = v[1].first() else {
                return Ok(Vec::new());
            };
            Ok(vector_scalar_binop(op, &v[0], s.f, false, return_bool))
        }),
        (ValueType::Scalar, ValueType::Vector) => ev.range_eval(r, &args, |_, v, _| {
            let Some(s) = v[0].first() else {
                return Ok(Vec::new());
            };
            Ok(vector_scalar_binop(op, &v[1], s.f, true, return_bool))
        }),
        _ => exec_err("binary expression must contain only scalar and instant vector types"),
    }
}

fn vector_and(lhs: &[Sample], rhs: &[Sample], m: &Matching, c: &mut SigCache) -> Vec<Sample> {
    if lhs.is_empty() || rhs.is_empty() {
        return Vec::new();
    }
    let right: HashSet<u64> = rhs.iter().map(|s| c.id(m, &s.metric)).collect();
    lhs.iter().filter(|s| right.contains(&c.id(m, &s.metric))).cloned().collect()
}

fn vector_or(lhs: &[Sample], rhs: &[Sample], m: &Matching, c: &mut SigCache) -> Vec<Sample> {
    if lhs.is_empty() {
        return rhs.to_vec();
    }
    if rhs.is_empty() {
        return lhs.to_vec();
    }
    let left: HashSet<u64> = lhs.iter().map(|s| c.id(m, &s.metric)).collect();
    let mut out = lhs.to_vec();
    out.extend(rhs.iter().filter(|s| !left.contains(&c.id(m, &s.metric))).cloned());
    out
}

fn vector_unless(lhs: &[Sample], rhs: &[Sample], m: &Matching, c: &mut SigCache) -> Vec<Sample> {
    if lhs.is_empty() || rhs.is_empty() {
        return lhs.to_vec();
    }
    let right: HashSet<u64> = rhs.iter().map(|s| c.id(m, &s.metric)).collect();
    lhs.iter().filter(|s| !right.contains(&c.id(m, &s.metric))).cloned().collect()
}

/// The labels of a vector-vector result element.
fn result_metric(lhs: &Labels, rhs: &Labels, op: TokenId, m: &Matching) -> Labels {
    let mut b = lhs.builder();
    if changes_metric_schema(op) {
        b.retain(|x| !is_metadata_label(&x.name));
    }
    if m.card == Card::OneToOne {
        if m.on {
            b.retain(|x| m.labels.binary_search(&x.name).is_ok());
        } else {
            b.retain(|x| m.labels.binary_search(&x.name).is_err());
        }
    }
    for ln in &m.include {
        match rhs.get(ln) {
            Some(v) if !v.is_empty() => {
                b.set(ln.clone(), v.to_owned());
            }
            _ => {
                b.del(ln);
            }
        }
    }
    b.build()
}

fn vector_binop(
    op: TokenId,
    lhs: &[Sample],
    rhs: &[Sample],
    m: &Matching,
    return_bool: bool,
    cache: &mut SigCache,
) -> Result<Vec<Sample>, PromqlError> {
    if (lhs.is_empty() && rhs.is_empty())
        || ((lhs.is_empty() || rhs.is_empty()) && m.fill_lhs.is_none() && m.fill_rhs.is_none())
    {
        return Ok(Vec::new());
    }
    let swapped = m.card == Card::OneToMany;
    // As in Prometheus, the fill values keep their sides when swapping.
    let (lhs, rhs) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let (fill_l, fill_r) = (m.fill_lhs, m.fill_rhs);
    // The right side is the "one" side: its signatures must be unique.
    let mut right: HashMap<u64, usize> = HashMap::with_capacity(rhs.len());
    let mut right_order: Vec<u64> = Vec::with_capacity(rhs.len());
    for (i, rs) in rhs.iter().enumerate() {
        let sig = cache.id(m, &rs.metric);
        if let Some(&j) = right.get(&sig) {
            let side = if swapped { "left" } else { "right" };
            return exec_err(format!(
                "found duplicate series for the match group {} on the {} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                labels_string(&m.match_labels(&rs.metric)),
                side,
                labels_string(&rs.metric),
                labels_string(&rhs[j].metric)
            ));
        }
        right_order.push(sig);
        right.insert(sig, i);
    }
    let mut st = OpState { matched: HashMap::new(), out: Vec::new() };
    let ctx = OpCtx { op, m, swapped, return_bool };
    for ls in lhs {
        let sig = cache.id(m, &ls.metric);
        match right.get(&sig) {
            Some(&i) => do_op(&ctx, &mut st, Some(cache), ls, &rhs[i], sig)?,
            None => {
                let Some(fill) = fill_r else { continue };
                let rs = Sample { metric: Arc::new(m.match_labels(&ls.metric)), t: ls.t, f: fill, drop_name: false };
                do_op(&ctx, &mut st, None, ls, &rs, sig)?;
            }
        }
    }
    if let Some(fill) = fill_l {
        for &sig in &right_order {
            if st.matched.contains_key(&sig) {
                continue;
            }
            let Some(&i) = right.get(&sig) else { continue };
            let rs = &rhs[i];
            let ls = Sample { metric: Arc::new(m.match_labels(&rs.metric)), t: rs.t, f: fill, drop_name: false };
            do_op(&ctx, &mut st, None, &ls, rs, sig)?;
        }
    }
    Ok(st.out)
}

struct OpCtx<'m> {
    op: TokenId,
    m: &'m Matching,
    swapped: bool,
    return_bool: bool,
}

struct OpState {
    matched: HashMap<u64, Option<HashSet<Metric>>>,
    out: Vec<Sample>,
}

/// One element operation; `cache` is given when both samples are inputs
/// (whose label sets stay alive), so their result labels may be cached.
fn do_op(
    c: &OpCtx<'_>,
    st: &mut OpState,
    cache: Option<&mut SigCache>,
    ls: &Sample,
    rs: &Sample,
    sig: u64,
) -> Result<(), PromqlError> {
    let (op, m, swapped, return_bool) = (c.op, c.m, c.swapped, c.return_bool);
    let (fl, fr) = if swapped { (rs.f, ls.f) } else { (ls.f, rs.f) };
    let (mut value, keep) = elem_binop(op, fl, fr);
    if return_bool {
        value = if keep { 1.0 } else { 0.0 };
    }
    let metric = match cache {
        Some(cache) => {
            let key = (Arc::as_ptr(&ls.metric) as usize, Arc::as_ptr(&rs.metric) as usize);
            cache.results.entry(key).or_insert_with(|| Arc::new(result_metric(&ls.metric, &rs.metric, op, m))).clone()
        }
        None => Arc::new(result_metric(&ls.metric, &rs.metric, op, m)),
    };
    match m.card {
        Card::OneToOne => {
            if st.matched.contains_key(&sig) {
                return exec_err(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                );
            }
            st.matched.insert(sig, None);
        }
        _ => {
            let set = st.matched.entry(sig).or_insert_with(|| Some(HashSet::new()));
            if let Some(set) = set {
                if set.contains(&metric) {
                    return exec_err("multiple matches for labels: grouping labels must ensure unique matches");
                }
                set.insert(metric.clone());
            }
        }
    }
    if !keep && !return_bool {
        return Ok(());
    }
    st.out.push(Sample { metric, t: ls.t, f: value, drop_name: return_bool });
    Ok(())
}

fn vector_scalar_binop(op: TokenId, lhs: &[Sample], scalar: f64, swap: bool, return_bool: bool) -> Vec<Sample> {
    let mut out = Vec::with_capacity(lhs.len());
    for s in lhs {
        let (lf, rf) = if swap { (scalar, s.f) } else { (s.f, scalar) };
        let (mut value, mut keep) = elem_binop(op, lf, rf);
        if is_comparison(op) && swap {
            value = rf;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            let mut o = s.clone();
            o.f = value;
            if changes_metric_schema(op) || return_bool {
                o.drop_name = true;
            }
            out.push(o);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smp(pairs: &[(&str, &str)], f: f64) -> Sample {
        Sample::new(Arc::new(Labels::from_pairs(pairs.iter().copied()).expect("labels")), f)
    }

    #[test]
    fn one_to_one_arithmetic_drops_name() {
        let m = Matching {
            on: false,
            labels: vec![],
            card: Card::OneToOne,
            include: vec![],
            fill_lhs: None,
            fill_rhs: None,
        };
        let l = [smp(&[("__name__", "a"), ("x", "1")], 2.0)];
        let r = [smp(&[("__name__", "b"), ("x", "1")], 3.0)];
        let out = vector_binop(T_ADD, &l, &r, &m, false, &mut SigCache::default()).expect("ok");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].f, 5.0);
        assert_eq!(out[0].metric.get("__name__"), None);
    }

    #[test]
    fn comparison_with_scalar_keeps_vector_value() {
        let v = [smp(&[("x", "1")], 2.0), smp(&[("x", "2")], 5.0)];
        let out = vector_scalar_binop(T_LSS, &v, 3.0, true, false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].f, 5.0);
    }
}
