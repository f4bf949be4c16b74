//! Prometheus rule files: the raw YAML types and `promtool check rules`-grade
//! validation into [`RuleGroup`]s.
//!
//! Every problem is reported at once, each with its line and column, the
//! group and the rule (1-based index and name), worded as Prometheus'
//! `rulefmt` words them.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use strata_common::PromDuration;
use strata_model::labels::{is_valid_label_name, is_valid_metric_name};

use crate::template::Template;

/// A rule file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleFile {
    /// The rule groups.
    #[serde(default)]
    pub groups: Vec<Spanned<RawRuleGroup>>,
}

/// One group as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleGroup {
    /// The group's name, unique in its file.
    pub name: Spanned<String>,
    /// How often the group is evaluated (default: `global.evaluation_interval`).
    pub interval: Option<Spanned<PromDuration>>,
    /// Most series a recording rule or alerts an alerting rule may produce (0: no limit).
    #[serde(default)]
    pub limit: usize,
    /// How far back in time the group's queries look (evaluation time minus this).
    pub query_offset: Option<Spanned<PromDuration>>,
    /// The rules, evaluated in order.
    #[serde(default)]
    pub rules: Vec<Spanned<RawRule>>,
}

/// One rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// A recording rule's output metric name.
    pub record: Option<Spanned<String>>,
    /// An alerting rule's alert name.
    pub alert: Option<Spanned<String>>,
    /// The PromQL expression.
    pub expr: Option<Spanned<String>>,
    /// How long an alert is pending before it fires.
    #[serde(rename = "for")]
    pub for_: Option<Spanned<PromDuration>>,
    /// How long an alert keeps firing after its condition cleared.
    pub keep_firing_for: Option<Spanned<PromDuration>>,
    /// Labels added (templated for alerts).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations of alerts (templated).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// A recording rule.
    Recording,
    /// An alerting rule.
    Alerting {
        /// `for`.
        hold: Duration,
        /// `keep_firing_for`.
        keep_firing_for: Duration,
        /// Annotation templates.
        annotations: BTreeMap<String, String>,
    },
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The record or alert name.
    pub name: String,
    /// The expression as Prometheus prints it.
    pub expr: String,
    /// Label values (templates for alerts).
    pub labels: BTreeMap<String, String>,
    /// Recording or alerting.
    pub kind: RuleKind,
}

impl Rule {
    /// Whether this is an alerting rule.
    pub fn is_alerting(&self) -> bool {
        matches!(self.kind, RuleKind::Alerting { .. })
    }
}

/// A validated group.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleGroup {
    /// The group's name.
    pub name: String,
    /// The file (or API namespace) it came from.
    pub file: String,
    /// Evaluation interval.
    pub interval: Duration,
    /// Series/alert limit per rule (0: none).
    pub limit: usize,
    /// Query offset.
    pub query_offset: Duration,
    /// The rules in order.
    pub rules: Vec<Rule>,
}

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// What is wrong, with the group and rule it concerns.
    pub message: String,
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

/// Everything wrong with one rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFileError {
    /// The file (or namespace).
    pub file: String,
    /// The problems, in file order.
    pub problems: Vec<RuleProblem>,
}

impl fmt::Display for RuleFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "invalid rule file {:?} ({n} error{}):", self.file, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  {}:{p}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleFileError {}

fn at<T>(s: &Spanned<T>) -> (u64, u64) {
    (s.referenced.line(), s.referenced.column())
}

/// The location and first message line of a YAML error.
pub(crate) fn yaml_problem(e: &serde_saphyr::Error) -> RuleProblem {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let first = e.to_string().lines().next().unwrap_or_default().to_owned();
    let msg = first.strip_prefix("error: ").unwrap_or(&first);
    let msg = match msg.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((loc, tail)) if loc.split(" column ").all(|n| n.bytes().all(|b| b.is_ascii_digit())) => tail,
        _ => msg,
    };
    RuleProblem { line, column, message: msg.to_owned() }
}

/// Parses and validates a rule file's text. `file` names the groups' file;
/// `default_interval` is `global.evaluation_interval`.
pub fn parse_rule_file(file: &str, text: &str, default_interval: Duration) -> Result<Vec<RuleGroup>, RuleFileError> {
    let err = |problems| RuleFileError { file: file.to_owned(), problems };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: RawRuleFile = serde_saphyr::from_str(text).map_err(|e| err(vec![yaml_problem(&e)]))?;
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut groups = Vec::new();
    for g in &raw.groups {
        if !seen.insert(g.value.name.value.clone()) {
            let (line, column) = at(g);
            problems.push(RuleProblem {
                line,
                column,
                message: format!("groupname: \"{}\" is repeated in the same file", g.value.name.value),
            });
        }
        if let Some(group) = validate_group(file, &g.value, default_interval, &mut problems) {
            groups.push(group);
        }
    }
    if problems.is_empty() { Ok(groups) } else { Err(err(problems)) }
}

/// Parses and validates one group given alone (the rules API's POST body).
pub fn parse_single_group(namespace: &str, text: &str, default_interval: Duration) -> Result<RuleGroup, RuleFileError> {
    let err = |problems| RuleFileError { file: namespace.to_owned(), problems };
    let raw: RawRuleGroup = serde_saphyr::from_str(text).map_err(|e| err(vec![yaml_problem(&e)]))?;
    let mut problems = Vec::new();
    let group = validate_group(namespace, &raw, default_interval, &mut problems);
    match group {
        Some(g) if problems.is_empty() => Ok(g),
        _ => Err(err(problems)),
    }
}

/// Validates one group, adding problems; `None` when it has any.
pub fn validate_group(
    file: &str,
    g: &RawRuleGroup,
    default_interval: Duration,
    problems: &mut Vec<RuleProblem>,
) -> Option<RuleGroup> {
    let before = problems.len();
    let gname = &g.name.value;
    let (gl, gc) = at(&g.name);
    if gname.is_empty() {
        problems.push(RuleProblem { line: gl, column: gc, message: "Groupname must not be empty".into() });
    }
    let interval = match &g.interval {
        Some(i) if i.value.0.is_zero() => {
            let (line, column) = at(i);
            problems.push(RuleProblem {
                line,
                column,
                message: format!("group \"{gname}\": interval must be greater than 0"),
            });
            default_interval
        }
        Some(i) => i.value.0,
        None => default_interval,
    };
    let query_offset = g.query_offset.as_ref().map_or(Duration::ZERO, |q| q.value.0);
    let mut rules = Vec::new();
    for (i, r) in g.rules.iter().enumerate() {
        let idx = i + 1;
        let raw = &r.value;
        let name = raw.record.as_ref().or(raw.alert.as_ref()).map_or(String::new(), |n| n.value.clone());
        let (rl, rc) = at(r);
        let mut push = |pos: (u64, u64), msg: String| {
            problems.push(RuleProblem {
                line: pos.0,
                column: pos.1,
                message: format!("group \"{gname}\", rule {idx}, \"{name}\": {msg}"),
            });
        };
        match (&raw.record, &raw.alert) {
            (Some(rec), Some(_)) => push(at(rec), "only one of 'record' and 'alert' must be set".into()),
            (None, None) => push((rl, rc), "one of 'record' or 'alert' must be set".into()),
            _ => {}
        }
        let expr = match &raw.expr {
            Some(e) if !e.value.trim().is_empty() => match promql_parser::parser::parse(&e.value) {
                Ok(parsed) => Some(go_number_literals(&parsed.to_string())),
                Err(msg) => {
                    push(at(e), format!("could not parse expression: {msg}"));
                    None
                }
            },
            Some(e) => {
                push(at(e), "field 'expr' must be set in rule".into());
                None
            }
            None => {
                push((rl, rc), "field 'expr' must be set in rule".into());
                None
            }
        };
        if let Some(rec) = &raw.record {
            if !raw.annotations.is_empty() {
                push(at(rec), "invalid field 'annotations' in recording rule".into());
            }
            // promtool points at the record name for these.
            if raw.for_.is_some() {
                push(at(rec), "invalid field 'for' in recording rule".into());
            }
            if raw.keep_firing_for.is_some() {
                push(at(rec), "invalid field 'keep_firing_for' in recording rule".into());
            }
            if !is_valid_metric_name(&rec.value) {
                push(at(rec), format!("invalid recording rule name: {}", rec.value));
            }
        }
        if let Some(a) = &raw.alert
            && a.value.is_empty()
        {
            push(at(a), "one of 'record' or 'alert' must be set".into());
        }
        for (k, v) in &raw.labels {
            if !is_valid_label_name(k) || k == "__name__" {
                push((rl, rc), format!("invalid label name: {k}"));
            }
            if raw.alert.is_some()
                && let Err(e) = Template::parse(&format!("__alert_{name}"), v)
            {
                push((rl, rc), format!("label {k:?}: {e}"));
            }
        }
        for (k, v) in &raw.annotations {
            if !is_valid_label_name(k) {
                push((rl, rc), format!("invalid annotation name: {k}"));
            }
            if let Err(e) = Template::parse(&format!("__alert_{name}"), v) {
                push((rl, rc), format!("annotation {k:?}: {e}"));
            }
        }
        let Some(expr) = expr else { continue };
        let kind = if raw.alert.is_some() {
            RuleKind::Alerting {
                hold: raw.for_.as_ref().map_or(Duration::ZERO, |f| f.value.0),
                keep_firing_for: raw.keep_firing_for.as_ref().map_or(Duration::ZERO, |f| f.value.0),
                annotations: raw.annotations.clone(),
            }
        } else {
            RuleKind::Recording
        };
        rules.push(Rule { name, expr, labels: raw.labels.clone(), kind });
    }
    if problems.len() > before {
        return None;
    }
    Some(RuleGroup { name: gname.clone(), file: file.to_owned(), interval, limit: g.limit, query_offset, rules })
}

/// Prints the number literals of a printed expression as Prometheus prints
/// them (Go's `strconv.FormatFloat(v, 'g', -1, 64)`: `1.048576e+08`, not
/// `104857600`), leaving strings, names and durations alone.
pub fn go_number_literals(expr: &str) -> String {
    let b = expr.as_bytes();
    let mut out = String::with_capacity(expr.len());
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            out.push(char::from(c));
            if c == b'\\' && q != b'`' && i + 1 < b.len() {
                out.push(char::from(b[i + 1]));
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == b'"' || c == b'\'' || c == b'`' {
            quote = Some(c);
            out.push(char::from(c));
            i += 1;
            continue;
        }
        let prev_ident =
            i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b':' || b[i - 1] == b'.');
        if c.is_ascii_digit() && !prev_ident {
            let mut j = i;
            while j < b.len()
                && (b[j].is_ascii_digit()
                    || b[j] == b'.'
                    || ((b[j] == b'e' || b[j] == b'E')
                        && b.get(j + 1).is_some_and(|n| n.is_ascii_digit() || *n == b'+' || *n == b'-'))
                    || ((b[j] == b'+' || b[j] == b'-') && j > i && matches!(b[j - 1], b'e' | b'E')))
            {
                j += 1;
            }
            let followed_by_letter = b.get(j).is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_');
            let token = &expr[i..j];
            match token.parse::<f64>() {
                Ok(v) if !followed_by_letter => out.push_str(&crate::gofmt::format_g(v)),
                _ => out.push_str(token),
            }
            i = j;
            continue;
        }
        // Copy one whole UTF-8 character.
        let ch = expr[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Expands `rule_files` patterns (relative to `dir`) into sorted paths.
/// A pattern's last component may hold `*`, `?` and `[...]`; a pattern
/// without wildcards names one file (which must exist).
pub fn expand_globs(dir: &std::path::Path, patterns: &[String]) -> Result<Vec<std::path::PathBuf>, String> {
    let mut out = Vec::new();
    for p in patterns {
        let full = dir.join(p);
        let has_glob = |s: &str| s.contains(['*', '?', '[']);
        let Some(name) = full.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            return Err(format!("invalid rule file pattern {p:?}"));
        };
        let parent = full.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        if has_glob(&parent.to_string_lossy()) {
            return Err(format!("rule file pattern {p:?}: wildcards are supported in the file name only"));
        }
        if !has_glob(&name) {
            out.push(full);
            continue;
        }
        let entries = match std::fs::read_dir(&parent) {
            Ok(e) => e,
            Err(_) => continue,
        };
        let mut found: Vec<std::path::PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(|n| glob_match(&name, n)))
            .map(|e| e.path())
            .collect();
        found.sort();
        out.extend(found);
    }
    out.dedup();
    Ok(out)
}

/// Go's `filepath.Match` for one path component.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|&c| c == ']') else { return false };
                let Some(&c) = n.first() else { return false };
                let mut class = &p[1..end];
                let negate = class.first() == Some(&'^');
                if negate {
                    class = &class[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[end + 1..], &n[1..])
            }
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn parses_groups() {
        let text = "groups:\n- name: g\n  interval: 10s\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n  - alert: Down\n    expr: up == 0\n    for: 5m\n    labels: {severity: page}\n    annotations: {summary: '{{ $labels.instance }} down'}\n";
        let groups = parse_rule_file("r.yml", text, MIN).expect("valid");
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(g.interval, Duration::from_secs(10));
        assert_eq!(g.rules[0].expr, "sum by (job) (up)");
        assert!(matches!(&g.rules[1].kind, RuleKind::Alerting { hold, .. } if *hold == Duration::from_secs(300)));
    }

    #[test]
    fn reports_every_problem_with_lines() {
        let text = "groups:\n- name: g\n  rules:\n  - record: 'bad name'\n    expr: sum(\n  - alert: A\n    expr: up\n    annotations: {s: '{{ nosuch }}'}\n  - expr: up\n- name: g\n  rules: []\n";
        let err = parse_rule_file("r.yml", text, MIN).expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("r.yml:5:11: group \"g\", rule 1, \"bad name\": could not parse expression"), "{msg}");
        assert!(
            msg.contains("r.yml:4:13: group \"g\", rule 1, \"bad name\": invalid recording rule name: bad name"),
            "{msg}"
        );
        assert!(
            msg.contains(
                "group \"g\", rule 2, \"A\": annotation \"s\": template: __alert_A:1: function \"nosuch\" not defined"
            ),
            "{msg}"
        );
        assert!(msg.contains("group \"g\", rule 3, \"\": one of 'record' or 'alert' must be set"), "{msg}");
        assert!(msg.contains("r.yml:10:3: groupname: \"g\" is repeated in the same file"), "{msg}");
        assert_eq!(err.problems.len(), 5, "{msg}");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = parse_rule_file("r.yml", "groups:\n- name: g\n  bogus: 1\n", MIN).expect_err("invalid");
        assert!(err.to_string().contains("r.yml:3:"), "{err}");
    }

    #[test]
    fn number_literals_print_as_go() {
        assert_eq!(go_number_literals("x > 104857600"), "x > 1.048576e+08");
        assert_eq!(go_number_literals("rate(x[5m] offset 1h30m) > 0.5"), "rate(x[5m] offset 1h30m) > 0.5");
        assert_eq!(go_number_literals("x{a=\"104857600\"} * 4 * 60"), "x{a=\"104857600\"} * 4 * 60");
        assert_eq!(go_number_literals("node_cpu0 > 0.00001"), "node_cpu0 > 1e-05");
        assert_eq!(go_number_literals("x[15m:1m]"), "x[15m:1m]");
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.yml", "a.yml"));
        assert!(!glob_match("*.yml", "a.yaml"));
        assert!(glob_match("r[0-9].y?l", "r1.yml"));
    }
}
