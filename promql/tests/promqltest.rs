//! Runs Prometheus' PromQL conformance suite (`../shared/promqltest/*.test`)
//! against the engine, with an in-memory store.
//!
//! Cases listed in `promqltest.skip` (`file:line  reason`) may fail; any
//! other failing case fails the run. With `PROMQLTEST_WRITE_SKIP=1` the skip
//! file is rewritten from the failures of this run (reasons are guessed and
//! should be reviewed). `PROMQLTEST_VERBOSE=1` prints every failure,
//! `PROMQLTEST_FILE=name.test` runs one file.
//!
//! As Prometheus' runner does, every successful instant case is also run as
//! a range query from t-1m to t+1m and its middle step compared (except for
//! ordered cases and queries using step()/range()/start()/end(), whose value
//! depends on the query's own range).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use strata_model::{Labels, Sample, stale_nan};
use strata_promql::memstore::MemStore;
use strata_promql::{Engine, EngineOptions, PromqlError, QueryResult, Value};

const TENANT: &str = "test";

/// Files that test experimental features, with what they test.
const EXPERIMENTAL: &[(&str, &str)] = &[
    ("duration_expression.test", "experimental duration expressions"),
    ("fill-modifier.test", "experimental fill modifiers"),
    ("extended_vectors.test", "experimental anchored/smoothed selectors"),
    ("info.test", "experimental info()"),
    ("limit.test", "experimental limitk/limit_ratio"),
    ("start_timestamps.test", "experimental start timestamps"),
    ("type_and_unit.test", "experimental type-and-unit labels"),
];

// ---------------------------------------------------------------------------
// Lexing helpers.

/// Parses a Prometheus duration (`1h5m`, `30s`, `500ms`) or plain seconds, in ms.
fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(f) = s.parse::<f64>() {
        return Some((f * 1000.0).round() as i64);
    }
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    if b.is_empty() {
        return None;
    }
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return None;
        }
        let n: i64 = s[start..i].parse().ok()?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total += n * mult;
    }
    Some(if neg { -total } else { total })
}

/// Parses a float the way the test language writes them.
fn parse_float(s: &str) -> Option<f64> {
    let (neg, t) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let v = match t.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => f64::INFINITY,
        "nan" => f64::NAN,
        lt if lt.starts_with("0x") => i64::from_str_radix(&lt[2..], 16).ok()? as f64,
        _ => {
            if !t.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+' | b'_')) {
                return None;
            }
            t.replace('_', "").parse::<f64>().ok()?
        }
    };
    Some(if neg { -v } else { v })
}

/// Reads a quoted string at the start of `s`; returns it and the rest.
fn read_quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    let (_, q) = chars.next()?;
    if !matches!(q, '"' | '\'' | '`') {
        return None;
    }
    let mut out = String::new();
    let mut esc = false;
    for (i, c) in chars {
        if esc {
            out.push(match c {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                other => other,
            });
            esc = false;
        } else if c == '\\' && q != '`' {
            esc = true;
        } else if c == q {
            return Some((out, &s[i + c.len_utf8()..]));
        } else {
            out.push(c);
        }
    }
    None
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses `name{a="b", ...}` at the start of `s`; returns labels and the rest.
fn parse_series_desc(s: &str) -> Option<(Labels, &str)> {
    let s = s.trim_start();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let name_end = s.find(|c: char| !is_ident_char(c)).unwrap_or(s.len());
    if name_end > 0 {
        pairs.push(("__name__".into(), s[..name_end].to_owned()));
    }
    let mut rest = &s[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
                continue;
            }
            let (lname, r) = if let Some((q, r)) = read_quoted(rest) {
                (q, r)
            } else {
                let end = rest.find(|c: char| !is_ident_char(c)).unwrap_or(rest.len());
                if end == 0 {
                    return None;
                }
                (rest[..end].to_owned(), &rest[end..])
            };
            let r = r.trim_start();
            if let Some(r) = r.strip_prefix('=') {
                let (val, r) = read_quoted(r.trim_start())?;
                pairs.push((lname, val));
                rest = r;
            } else {
                pairs.push(("__name__".into(), lname));
                rest = r;
            }
        }
    } else if name_end == 0 {
        return None;
    }
    let labels = Labels::from_pairs(pairs).ok()?;
    Some((labels, rest))
}

/// One expanded value: a float, a missing step, or a native histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SeqVal {
    Float(f64),
    Omitted,
    Histogram,
}

/// Splits a values string into tokens, keeping `{{...}}` together.
fn tokenize_values(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' && chars.get(i + 1) == Some(&'{') {
            depth += 1;
            cur.push_str("{{");
            i += 2;
            continue;
        }
        if c == '}' && chars.get(i + 1) == Some(&'}') && depth > 0 {
            depth -= 1;
            cur.push_str("}}");
            i += 2;
            continue;
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        i += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Splits a leading number off `s`.
fn split_number(s: &str) -> Option<(f64, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let lower = s[i..].to_ascii_lowercase();
    for word in ["infinity", "inf", "nan"] {
        if lower.starts_with(word) {
            let end = i + word.len();
            return Some((parse_float(&s[..end])?, &s[end..]));
        }
    }
    let start = i;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'_') {
        i += 1;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    if i == start {
        return None;
    }
    Some((parse_float(&s[..i])?, &s[i..]))
}

/// Expands the point notation (`1+2x3`, `_x2`, `stale`, `{{...}}x4`).
fn expand_values(tokens: &[String]) -> Option<Vec<SeqVal>> {
    let mut out = Vec::new();
    for t in tokens {
        if t.starts_with("{{") {
            // Native histogram(s): only their count matters here.
            let last = t.rfind("}}")?;
            let tail = &t[last + 2..];
            let n = match tail.strip_prefix('x') {
                Some(n) => n.parse::<usize>().ok()? + 1,
                None => 1,
            };
            out.extend(std::iter::repeat_n(SeqVal::Histogram, n));
            continue;
        }
        if t == "_" {
            out.push(SeqVal::Omitted);
            continue;
        }
        if let Some(n) = t.strip_prefix("_x") {
            out.extend(std::iter::repeat_n(SeqVal::Omitted, n.parse::<usize>().ok()?));
            continue;
        }
        if t == "stale" {
            out.push(SeqVal::Float(stale_nan()));
            continue;
        }
        let (a, rest) = split_number(t)?;
        if rest.is_empty() {
            out.push(SeqVal::Float(a));
            continue;
        }
        if let Some(n) = rest.strip_prefix('x') {
            let n: usize = n.parse().ok()?;
            out.extend(std::iter::repeat_n(SeqVal::Float(a), n + 1));
            continue;
        }
        let (sign, rest) = match rest.as_bytes().first() {
            Some(b'+') => (1.0, &rest[1..]),
            Some(b'-') => (-1.0, &rest[1..]),
            _ => return None,
        };
        let (b, rest) = split_number(rest)?;
        let n: usize = rest.strip_prefix('x')?.parse().ok()?;
        let mut v = a;
        for _ in 0..=n {
            out.push(SeqVal::Float(v));
            v += sign * b;
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Script model.

#[derive(Debug, Clone)]
enum Kind {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

#[derive(Debug, Clone)]
enum MsgMatch {
    Any,
    Exact(String),
    Regex(String),
}

impl MsgMatch {
    fn matches(&self, s: &str) -> bool {
        match self {
            MsgMatch::Any => true,
            MsgMatch::Exact(m) => m == s,
            MsgMatch::Regex(r) => regex::Regex::new(r).map(|re| re.is_match(s)).unwrap_or(false),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Expect {
    fail: Option<MsgMatch>,
    warn: Vec<MsgMatch>,
    info: Vec<MsgMatch>,
    no_warn: bool,
    no_info: bool,
    ordered: bool,
    string: Option<String>,
    range_vector: Option<(i64, i64, i64)>,
    scalar: Option<f64>,
    series: Vec<(Labels, Vec<SeqVal>)>,
    histogram: bool,
    unreadable: bool,
}

#[derive(Debug, Clone)]
struct Case {
    line: usize,
    kind: Kind,
    query: String,
    expect: Expect,
}

enum Cmd {
    Load { interval: i64, series: Vec<(Labels, Vec<SeqVal>)>, hist_names: Vec<String> },
    Clear,
    Eval(Case),
}

fn parse_msg(rest: &str) -> MsgMatch {
    let rest = rest.trim();
    if let Some(m) = rest.strip_prefix("msg:") {
        MsgMatch::Exact(m.trim().to_owned())
    } else if let Some(r) = rest.strip_prefix("regex:") {
        MsgMatch::Regex(r.trim().to_owned())
    } else {
        MsgMatch::Any
    }
}

fn parse_script(text: &str) -> Result<Vec<Cmd>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    let is_body = |l: &str| !l.trim().is_empty() && l.starts_with([' ', '\t']) && !l.trim_start().starts_with('#');
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || line.starts_with([' ', '\t']) {
            i += 1;
            continue;
        }
        let lineno = i + 1;
        i += 1;
        let mut body = Vec::new();
        while i < lines.len()
            && (is_body(lines[i]) || lines[i].trim_start().starts_with('#') && !lines[i].trim().is_empty())
        {
            if is_body(lines[i]) {
                body.push(lines[i].trim());
            }
            i += 1;
        }
        let mut words = trimmed.splitn(2, char::is_whitespace);
        let cmd = words.next().unwrap_or("");
        let rest = words.next().unwrap_or("").trim();
        match cmd {
            "clear" => cmds.push(Cmd::Clear),
            "load" | "load_with_nhcb" => {
                let interval = parse_time(rest).ok_or_else(|| format!("line {lineno}: bad interval"))?;
                let mut series = Vec::new();
                let mut hist_names = Vec::new();
                for b in body {
                    // A series the runner cannot read (e.g. with start timestamps)
                    // is left out; the cases that need it fail.
                    let Some((labels, vals)) = parse_series_desc(b) else {
                        continue;
                    };
                    let Some(vals) = expand_values(&tokenize_values(vals)) else {
                        continue;
                    };
                    let nhcb = cmd == "load_with_nhcb";
                    if let Some(n) = labels.metric_name().filter(|_| nhcb || vals.contains(&SeqVal::Histogram)) {
                        hist_names.push(n.to_owned());
                        if let Some(base) = n.strip_suffix("_bucket").filter(|_| nhcb) {
                            hist_names.push(base.to_owned());
                        }
                    }
                    series.push((labels, vals));
                }
                cmds.push(Cmd::Load { interval, series, hist_names });
            }
            c if c.starts_with("eval") => {
                let mut expect = Expect::default();
                match c {
                    "eval" => {}
                    "eval_fail" => expect.fail = Some(MsgMatch::Any),
                    "eval_warn" => expect.warn.push(MsgMatch::Any),
                    "eval_info" => expect.info.push(MsgMatch::Any),
                    "eval_ordered" => expect.ordered = true,
                    _ => return Err(format!("line {lineno}: unknown command {c}")),
                }
                let (kind, query) = if let Some(r) = rest.strip_prefix("instant at ") {
                    let (t, q) = r.split_once(char::is_whitespace).ok_or("missing query")?;
                    (Kind::Instant(parse_time(t).ok_or_else(|| format!("line {lineno}: bad time"))?), q.trim())
                } else if let Some(r) = rest.strip_prefix("range from ") {
                    let parts: Vec<&str> = r.splitn(6, char::is_whitespace).collect();
                    if parts.len() < 6 || parts[1] != "to" || parts[3] != "step" {
                        return Err(format!("line {lineno}: bad range eval"));
                    }
                    let start = parse_time(parts[0]).ok_or("bad start")?;
                    let end = parse_time(parts[2]).ok_or("bad end")?;
                    let step = parse_time(parts[4]).ok_or("bad step")?;
                    (Kind::Range { start, end, step }, parts[5].trim())
                } else {
                    return Err(format!("line {lineno}: bad eval"));
                };
                for b in body {
                    if let Some(e) = b.strip_prefix("expect ") {
                        let e = e.trim();
                        let (word, r) = e.split_once(char::is_whitespace).unwrap_or((e, ""));
                        match word {
                            "fail" => expect.fail = Some(parse_msg(r)),
                            "warn" => expect.warn.push(parse_msg(r)),
                            "info" => expect.info.push(parse_msg(r)),
                            "no_warn" => expect.no_warn = true,
                            "no_info" => expect.no_info = true,
                            "ordered" => expect.ordered = true,
                            "string" => {
                                let (s, _) = read_quoted(r.trim()).ok_or("bad string")?;
                                expect.string = Some(s);
                            }
                            "range" => {
                                let p: Vec<&str> = r.split_whitespace().collect();
                                if p.len() != 7 {
                                    return Err(format!("line {lineno}: bad expect range"));
                                }
                                expect.range_vector = Some((
                                    parse_time(p[2]).ok_or("bad")?,
                                    parse_time(p[4]).ok_or("bad")?,
                                    parse_time(p[6]).ok_or("bad")?,
                                ));
                            }
                            _ => return Err(format!("line {lineno}: unknown expect {word}")),
                        }
                        continue;
                    }
                    if b.contains("{{") {
                        expect.histogram = true;
                    }
                    if let Some(v) = parse_float(b) {
                        expect.scalar = Some(v);
                        continue;
                    }
                    let (labels, vals) =
                        parse_series_desc(b).ok_or_else(|| format!("line {lineno}: bad result {b:?}"))?;
                    let vals = expand_values(&tokenize_values(vals))
                        .ok_or_else(|| format!("line {lineno}: bad result values {b:?}"))?;
                    expect.series.push((labels, vals));
                }
                cmds.push(Cmd::Eval(Case { line: lineno, kind, query: query.to_owned(), expect }));
            }
            other => return Err(format!("line {lineno}: unknown command {other}")),
        }
    }
    Ok(cmds)
}

// ---------------------------------------------------------------------------
// Checking.

fn almost_equal(a: f64, b: f64) -> bool {
    const EPS: f64 = 1e-6;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < EPS * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < EPS
}

fn check_annotations(exp: &Expect, res: &QueryResult) -> Result<(), String> {
    for (kind, wanted, none, got) in
        [("warning", &exp.warn, exp.no_warn, &res.warnings), ("info", &exp.info, exp.no_info, &res.infos)]
    {
        if none && !got.is_empty() {
            return Err(format!("unexpected {kind} annotations: {got:?}"));
        }
        if wanted.is_empty() {
            continue;
        }
        if got.is_empty() {
            return Err(format!("expected {kind} annotations but got none"));
        }
        let specific: Vec<&MsgMatch> = wanted.iter().filter(|m| !matches!(m, MsgMatch::Any)).collect();
        if !specific.is_empty() {
            for g in got {
                if !specific.iter().any(|m| m.matches(g)) {
                    return Err(format!("unexpected {kind} annotation {g:?}, expected {specific:?}"));
                }
            }
        }
    }
    Ok(())
}

/// Expected points as (t, v) for a range of steps.
fn expected_points(vals: &[SeqVal], start: i64, step: i64) -> Vec<(i64, f64)> {
    vals.iter()
        .enumerate()
        .filter_map(|(i, v)| match v {
            SeqVal::Float(f) => Some((start + i as i64 * step, *f)),
            _ => None,
        })
        .collect()
}

fn compare_matrix(exp: &Expect, got: &[strata_model::Series], start: i64, step: i64) -> Result<(), String> {
    let mut expected: HashMap<&Labels, Vec<(i64, f64)>> = HashMap::new();
    for (l, vals) in &exp.series {
        let pts = expected_points(vals, start, step);
        if !pts.is_empty() {
            expected.insert(l, pts);
        }
    }
    for s in got {
        let Some(e) = expected.get(&s.labels) else {
            return Err(format!("unexpected series {} in result", s.labels));
        };
        if e.len() != s.samples.len() {
            return Err(format!("series {}: expected {} points {:?}, got {:?}", s.labels, e.len(), e, s.samples));
        }
        for (x, y) in e.iter().zip(&s.samples) {
            if x.0 != y.t || !almost_equal(x.1, y.v) {
                return Err(format!("series {}: expected {:?}, got {:?}", s.labels, e, s.samples));
            }
        }
    }
    if expected.len() != got.len() {
        return Err(format!("expected {} series, got {}", expected.len(), got.len()));
    }
    Ok(())
}

fn compare_vector(exp: &Expect, got: &[(Labels, f64)]) -> Result<(), String> {
    let mut expected: HashMap<&Labels, (usize, f64)> = HashMap::new();
    for (i, (l, vals)) in exp.series.iter().enumerate() {
        let v = match vals.first() {
            Some(SeqVal::Float(f)) => *f,
            _ => return Err("unsupported expected value".into()),
        };
        expected.insert(l, (i, v));
    }
    for (pos, (l, v)) in got.iter().enumerate() {
        let Some((i, ev)) = expected.get(l) else {
            return Err(format!("unexpected metric {l} in result, value {v}"));
        };
        if exp.ordered && *i != pos {
            return Err(format!("expected metric {l} with value {ev} at position {i}, got position {pos}"));
        }
        if !almost_equal(*ev, *v) {
            return Err(format!("expected {ev} for {l} but got {v}"));
        }
    }
    if expected.len() != got.len() {
        return Err(format!("expected {} samples, got {}: {:?}", expected.len(), got.len(), got));
    }
    Ok(())
}

fn check_value(case: &Case, value: &Value) -> Result<(), String> {
    let exp = &case.expect;
    match value {
        Value::String { s, .. } => match &exp.string {
            Some(e) if e == s => Ok(()),
            _ => Err(format!("unexpected string result {s:?}")),
        },
        Value::Scalar { v, .. } => match exp.scalar {
            Some(e) if almost_equal(e, *v) => Ok(()),
            Some(e) => Err(format!("expected scalar {e} but got {v}")),
            None => Err(format!("unexpected scalar result {v}")),
        },
        Value::Vector(vec) => {
            if exp.scalar.is_some() || exp.string.is_some() || exp.range_vector.is_some() {
                return Err("expected a different value type, got a vector".into());
            }
            let got: Vec<(Labels, f64)> = vec.iter().map(|s| (s.labels.clone(), s.v)).collect();
            compare_vector(exp, &got)
        }
        Value::Matrix(m) => match (&case.kind, exp.range_vector) {
            (Kind::Range { start, step, .. }, _) => compare_matrix(exp, m, *start, *step),
            (Kind::Instant(_), Some((start, _end, step))) => {
                // Raw points: compare by their own timestamps.
                compare_matrix(exp, m, start, step)
            }
            (Kind::Instant(_), None) => Err("unexpected range vector result".into()),
        },
    }
}

struct Runner {
    rt: tokio::runtime::Runtime,
    engine: Engine,
    store: MemStore,
    hist_names: HashSet<String>,
}

impl Runner {
    fn run_case(&self, case: &Case) -> Result<(), String> {
        if case.expect.histogram {
            return Err("expects native histograms".into());
        }
        if case.expect.unreadable {
            return Err("the runner cannot read the expected result".into());
        }
        let res: Result<QueryResult, PromqlError> = self.rt.block_on(async {
            match case.kind {
                Kind::Instant(t) => self.engine.instant_query(&self.store, TENANT, &case.query, t).await,
                Kind::Range { start, end, step } => {
                    self.engine.range_query(&self.store, TENANT, &case.query, start, end, step).await
                }
            }
        });
        match (&case.expect.fail, res) {
            (Some(m), Err(e)) => {
                if m.matches(&e.to_string()) {
                    Ok(())
                } else {
                    Err(format!("expected error matching {m:?}, got {e:?}"))
                }
            }
            (Some(_), Ok(r)) => Err(format!("expected an error, got {:?}", r.value)),
            (None, Err(e)) => Err(format!("unexpected error: {e}")),
            (None, Ok(r)) => {
                check_annotations(&case.expect, &r)?;
                check_value(case, &r.value)?;
                if let Kind::Instant(t) = case.kind {
                    // step(), range(), start() and end() describe the query
                    // itself, so they legitimately differ between the modes.
                    let q = case.query.replace("@ start()", "").replace("@ end()", "");
                    let query_level = ["step()", "range()", "start()", "end()"].iter().any(|f| q.contains(f));
                    if !case.expect.ordered
                        && !query_level
                        && matches!(r.value, Value::Vector(_) | Value::Scalar { .. })
                    {
                        self.check_range_mode(case, t)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Prometheus also runs instant cases as a range query around the
    /// evaluation time and checks the middle step.
    fn check_range_mode(&self, case: &Case, t: i64) -> Result<(), String> {
        let res = self
            .rt
            .block_on(self.engine.range_query(&self.store, TENANT, &case.query, t - 60_000, t + 60_000, 60_000))
            .map_err(|e| format!("range mode: unexpected error: {e}"))?;
        let Value::Matrix(m) = res.value else {
            return Err("range mode: not a matrix".into());
        };
        let got: Vec<(Labels, f64)> =
            m.iter().filter_map(|s| s.samples.iter().find(|p| p.t == t).map(|p| (s.labels.clone(), p.v))).collect();
        if let Some(e) = case.expect.scalar {
            return match got.first() {
                Some((_, v)) if almost_equal(e, *v) => Ok(()),
                other => Err(format!("range mode: expected scalar {e}, got {other:?}")),
            };
        }
        compare_vector(&case.expect, &got).map_err(|e| format!("range mode: {e}"))
    }

    fn mentions_histogram(&self, case: &Case) -> bool {
        case.expect.histogram || self.hist_names.iter().any(|n| case.query.contains(n.as_str()))
    }
}

fn guess_reason(file: &str, runner: &Runner, case: &Case, err: &str) -> String {
    if file == "native_histograms.test" || runner.mentions_histogram(case) {
        return "native histograms".into();
    }
    if let Some((_, what)) = EXPERIMENTAL.iter().find(|(f, _)| *f == file) {
        return (*what).into();
    }
    let mut e: String = err.chars().take(100).collect();
    e = e.replace('\n', " ");
    e
}

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/promqltest")
}

fn skip_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/promqltest.skip")
}

fn load_skips() -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(skip_path()) else {
        return HashMap::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, r) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (k.trim().to_owned(), r.trim().to_owned())
        })
        .collect()
}

fn main() {
    let dir = suite_dir();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "test")).collect()
        }
        Err(e) => {
            eprintln!("promqltest: cannot read {}: {e}", dir.display());
            std::process::exit(1);
        }
    };
    files.sort();
    let skips = load_skips();
    let write_skip = std::env::var("PROMQLTEST_WRITE_SKIP").is_ok_and(|v| v == "1");
    let verbose = std::env::var("PROMQLTEST_VERBOSE").is_ok_and(|v| v == "1");
    let only = std::env::var("PROMQLTEST_FILE").ok();
    let (mut tp, mut tf, mut ts) = (0usize, 0usize, 0usize);
    let mut new_skips: BTreeMap<(String, usize), String> = BTreeMap::new();
    let mut unexpected_pass = Vec::new();
    let mut seen_keys = HashSet::new();
    for path in &files {
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("?").to_owned();
        if only.as_deref().is_some_and(|o| o != file) {
            continue;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{file}: cannot read: {e}");
                tf += 1;
                continue;
            }
        };
        let cmds = match parse_script(&text) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{file}: cannot parse script: {e}");
                tf += 1;
                continue;
            }
        };
        let rt = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("promqltest: cannot start a runtime: {e}");
                std::process::exit(1);
            }
        };
        let mut runner = Runner {
            rt,
            engine: Engine::new(EngineOptions::default()),
            store: MemStore::new(),
            hist_names: HashSet::new(),
        };
        let (mut p, mut f, mut s) = (0usize, 0usize, 0usize);
        for cmd in cmds {
            match cmd {
                Cmd::Clear => {
                    runner.store.clear();
                    runner.hist_names.clear();
                }
                Cmd::Load { interval, series, hist_names } => {
                    runner.hist_names.extend(hist_names);
                    for (labels, vals) in series {
                        let samples: Vec<Sample> = vals
                            .iter()
                            .enumerate()
                            .filter_map(|(i, v)| match v {
                                SeqVal::Float(f) => Some(Sample::new(i as i64 * interval, *f)),
                                _ => None,
                            })
                            .collect();
                        runner.store.add(TENANT, labels, samples);
                    }
                }
                Cmd::Eval(case) => {
                    let key = format!("{file}:{}", case.line);
                    seen_keys.insert(key.clone());
                    let outcome = runner.run_case(&case);
                    let skipped = skips.contains_key(&key);
                    match (&outcome, skipped) {
                        (Ok(()), false) => p += 1,
                        (Ok(()), true) => {
                            s += 1;
                            unexpected_pass.push(key.clone());
                        }
                        (Err(_), true) => s += 1,
                        (Err(e), false) => {
                            f += 1;
                            if verbose || !write_skip {
                                eprintln!("FAIL {key}: {}\n    {e}", case.query);
                            }
                        }
                    }
                    if let Err(e) = &outcome {
                        let reason = skips
                            .get(&key)
                            .cloned()
                            .filter(|r| !r.is_empty())
                            .unwrap_or_else(|| guess_reason(&file, &runner, &case, e));
                        new_skips.insert((file.clone(), case.line), reason);
                        if verbose && skipped {
                            eprintln!("SKIP {key}: {}\n    {e}", case.query);
                        }
                    }
                }
            }
        }
        println!("{file}: {p} passed, {f} failed, {s} skipped");
        tp += p;
        tf += f;
        ts += s;
    }
    if !unexpected_pass.is_empty() {
        println!(
            "note: {} skipped cases now pass (remove them from the skip file): {}",
            unexpected_pass.len(),
            unexpected_pass.join(" ")
        );
    }
    let stale: Vec<&String> = skips.keys().filter(|k| !seen_keys.contains(*k)).collect();
    if only.is_none() && !stale.is_empty() {
        println!("note: skip file names cases that do not exist: {stale:?}");
    }
    if write_skip && only.is_none() {
        let mut out = String::from(
            "# Cases of ../shared/promqltest the engine does not pass, with the reason.\n# Format: file:line  reason. Regenerate with PROMQLTEST_WRITE_SKIP=1 and review.\n",
        );
        for ((file, line), reason) in &new_skips {
            out.push_str(&format!("{file}:{line}  {reason}\n"));
        }
        if let Err(e) = std::fs::write(skip_path(), out) {
            eprintln!("cannot write skip file: {e}");
        }
    }
    println!("promqltest: {tp} passed, {tf} failed, {ts} skipped");
    if tf > 0 && !write_skip {
        std::process::exit(1);
    }
}
