//! Relabeling exactly as Prometheus does it (`model/relabel/relabel.go`).
//!
//! [`RawRelabelConfig`] is one `relabel_configs` / `metric_relabel_configs`
//! entry as written; [`RawRelabelConfig::validate`] applies Prometheus'
//! defaults (separator `;`, regex `(.*)`, replacement `$1`, action `replace`)
//! and its validation rules, giving a [`RelabelConfig`]. [`process`] runs a
//! list of them over a label set, returning `None` when a rule drops it.
//!
//! Regular expressions are fully anchored and `.` matches newlines, as in
//! Prometheus 3 (`^(?s:<regex>)$`); Go's ASCII-only `\d`, `\w`, `\s` and `\b`
//! are kept ASCII-only. Replacements expand `$1`, `${1}`, `$name` and `$$`
//! exactly as Go's `Regexp.Expand`.

use std::fmt;

use md5::{Digest, Md5};
use regex::Regex;
use serde::Deserialize;
use strata_model::labels::is_valid_label_name;
use strata_model::{Labels, LabelsBuilder};

/// Prometheus' default `separator`.
pub const DEFAULT_SEPARATOR: &str = ";";
/// Prometheus' default `regex`.
pub const DEFAULT_REGEX: &str = "(.*)";
/// Prometheus' default `replacement`.
pub const DEFAULT_REPLACEMENT: &str = "$1";

/// A relabeling action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Sets `target_label` to the expanded `replacement` when `regex` matches.
    Replace,
    /// Drops the set unless `regex` matches the joined source labels.
    Keep,
    /// Drops the set when `regex` matches the joined source labels.
    Drop,
    /// Drops the set unless the joined source labels equal `target_label`'s value.
    KeepEqual,
    /// Drops the set when the joined source labels equal `target_label`'s value.
    DropEqual,
    /// Sets `target_label` to the md5 of the joined source labels modulo `modulus`.
    HashMod,
    /// Copies labels whose names match `regex` to the expanded `replacement`.
    LabelMap,
    /// Removes labels whose names match `regex`.
    LabelDrop,
    /// Removes labels whose names do not match `regex`.
    LabelKeep,
    /// Sets `target_label` to the joined source labels in lower case.
    Lowercase,
    /// Sets `target_label` to the joined source labels in upper case.
    Uppercase,
}

impl Action {
    /// Parses an action name case-insensitively, as Prometheus does.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_lowercase().as_str() {
            "replace" => Self::Replace,
            "keep" => Self::Keep,
            "drop" => Self::Drop,
            "keepequal" => Self::KeepEqual,
            "dropequal" => Self::DropEqual,
            "hashmod" => Self::HashMod,
            "labelmap" => Self::LabelMap,
            "labeldrop" => Self::LabelDrop,
            "labelkeep" => Self::LabelKeep,
            "lowercase" => Self::Lowercase,
            "uppercase" => Self::Uppercase,
            _ => return None,
        })
    }

    /// The name as Prometheus writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Keep => "keep",
            Self::Drop => "drop",
            Self::KeepEqual => "keepequal",
            Self::DropEqual => "dropequal",
            Self::HashMod => "hashmod",
            Self::LabelMap => "labelmap",
            Self::LabelDrop => "labeldrop",
            Self::LabelKeep => "labelkeep",
            Self::Lowercase => "lowercase",
            Self::Uppercase => "uppercase",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One relabeling rule as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelabelConfig {
    /// Labels whose values are joined with `separator`.
    pub source_labels: Option<Vec<String>>,
    /// Joins the source values (default `;`).
    pub separator: Option<String>,
    /// Anchored regular expression (default `(.*)`).
    pub regex: Option<String>,
    /// Modulus for `hashmod`.
    pub modulus: Option<u64>,
    /// The label written by `replace`, `hashmod`, `lowercase`, `uppercase`.
    pub target_label: Option<String>,
    /// Template expanded with the regex's groups (default `$1`).
    pub replacement: Option<String>,
    /// The action (default `replace`).
    pub action: Option<String>,
}

/// A validated relabeling rule.
#[derive(Debug, Clone)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator`.
    pub source_labels: Vec<String>,
    /// Joins the source values.
    pub separator: String,
    /// The regular expression as written (unanchored).
    pub regex_source: String,
    regex: Regex,
    /// Modulus for `hashmod`.
    pub modulus: u64,
    /// The label written.
    pub target_label: String,
    /// Template expanded with the regex's groups.
    pub replacement: String,
    /// The action.
    pub action: Action,
}

/// `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`: a label name that may hold `$` references.
fn is_relabel_target(s: &str) -> bool {
    // Hand-written equivalent of Prometheus' `relabelTarget`: a sequence of
    // name characters and `$name` / `${name}` references, not starting with a digit.
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    let mut first = true;
    while i < b.len() {
        if b[i] == b'$' {
            i += 1;
            if i < b.len() && b[i] == b'{' {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && word(b[j]) {
                    j += 1;
                }
                if j == start || j >= b.len() || b[j] != b'}' {
                    return false;
                }
                i = j + 1;
            } else {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                if i == start {
                    return false;
                }
            }
        } else if first && b[i].is_ascii_digit() {
            return false;
        } else if word(b[i]) {
            i += 1;
        } else {
            return false;
        }
        first = false;
    }
    true
}

/// Compiles a relabel regex as Prometheus 3 does: `^(?s:<regex>)$`, with Go's
/// ASCII-only Perl classes.
pub fn compile_regex(expr: &str) -> Result<Regex, String> {
    let translated = go_perl_classes(expr);
    regex::RegexBuilder::new(&format!("^(?s:{translated})$"))
        .size_limit(1 << 22)
        .build()
        .map_err(|e| format!("error parsing regexp: {}", e.to_string().lines().last().unwrap_or_default().trim()))
}

/// Rewrites `\d \D \w \W \s \S \b \B` to the ASCII classes they are in Go's RE2.
fn go_perl_classes(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut chars = expr.chars();
    let mut class_depth = 0u8;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(n) = chars.next() else {
                    out.push('\\');
                    break;
                };
                let ascii = match n {
                    'd' | 'D' | 'w' | 'W' | 's' | 'S' => true,
                    'b' | 'B' => class_depth == 0,
                    _ => false,
                };
                if ascii && class_depth > 0 {
                    // `(?-u:..)` is not allowed inside a class: the explicit (nested) set.
                    out.push_str(match n {
                        'd' => "0-9",
                        'D' => "[^0-9]",
                        'w' => "0-9A-Za-z_",
                        'W' => "[^0-9A-Za-z_]",
                        's' => "\\t\\n\\x0C\\r ",
                        _ => "[^\\t\\n\\x0C\\r ]",
                    });
                } else if ascii {
                    out.push_str("(?-u:\\");
                    out.push(n);
                    out.push(')');
                } else {
                    out.push('\\');
                    out.push(n);
                }
            }
            '[' if class_depth > 0 => {
                // Go has no nested classes: `[` is literal unless it opens `[:alpha:]`.
                let rest = chars.as_str();
                if rest.starts_with(':')
                    && let Some(end) = rest.find(":]")
                {
                    out.push('[');
                    out.push_str(&rest[..end + 2]);
                    for _ in 0..rest[..end + 2].chars().count() {
                        chars.next();
                    }
                } else {
                    out.push_str("\\[");
                }
            }
            '[' => {
                out.push('[');
                class_depth = 1;
                // `[]a]` and `[^]a]`: a leading `]` is literal.
                let rest = chars.as_str();
                let skip = if rest.starts_with("^]") {
                    2
                } else if rest.starts_with(']') || rest.starts_with('^') {
                    1
                } else {
                    0
                };
                for _ in 0..skip {
                    if let Some(x) = chars.next() {
                        if x == ']' {
                            out.push_str("\\]");
                        } else {
                            out.push(x);
                        }
                    }
                }
            }
            ']' if class_depth > 0 => {
                class_depth = 0;
                out.push(']');
            }
            // Set operators in Rust's classes, literals in Go's.
            '&' | '~' if class_depth > 0 => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

impl RawRelabelConfig {
    /// Applies Prometheus' defaults and validation rules.
    pub fn validate(&self) -> Result<RelabelConfig, String> {
        let action_name = self.action.as_deref().unwrap_or("replace");
        if action_name.is_empty() {
            return Err("relabel action cannot be empty".into());
        }
        let action = Action::parse(action_name).ok_or_else(|| format!("unknown relabel action {action_name:?}"))?;
        let source_labels = self.source_labels.clone().unwrap_or_default();
        for name in &source_labels {
            if !is_valid_label_name(name) {
                return Err(format!("{name:?} is not a valid label name"));
            }
        }
        let separator = self.separator.clone().unwrap_or_else(|| DEFAULT_SEPARATOR.to_owned());
        let regex_source = self.regex.clone().unwrap_or_else(|| DEFAULT_REGEX.to_owned());
        let regex = compile_regex(&regex_source)?;
        let modulus = self.modulus.unwrap_or(0);
        let target_label = self.target_label.clone().unwrap_or_default();
        let replacement = self.replacement.clone().unwrap_or_else(|| DEFAULT_REPLACEMENT.to_owned());

        use Action::*;
        if modulus == 0 && action == HashMod {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        if matches!(action, Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual)
            && target_label.is_empty()
        {
            return Err(format!("relabel configuration for {action} action requires 'target_label' value"));
        }
        let invalid_target = || format!("{target_label:?} is invalid 'target_label' for {action} action");
        if action == Replace {
            let ok = if target_label.contains('$') {
                is_relabel_target(&target_label)
            } else {
                is_valid_label_name(&target_label)
            };
            if !ok {
                return Err(invalid_target());
            }
        }
        let one_label = matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual);
        if one_label && !is_valid_label_name(&target_label) {
            return Err(invalid_target());
        }
        if one_label && replacement != DEFAULT_REPLACEMENT {
            return Err(format!("'replacement' can not be set for {action} action"));
        }
        if action == LabelMap && !is_relabel_target(&replacement) {
            return Err(format!("{replacement:?} is invalid 'replacement' for {action} action"));
        }
        if action == HashMod && !is_valid_label_name(&target_label) {
            return Err(invalid_target());
        }
        if matches!(action, KeepEqual | DropEqual)
            && (self.regex.is_some()
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{action} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(action, LabelDrop | LabelKeep)
            && (self.source_labels.is_some()
                || !target_label.is_empty()
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!("{action} action requires only 'regex', and no other fields"));
        }
        Ok(RelabelConfig { source_labels, separator, regex_source, regex, modulus, target_label, replacement, action })
    }
}

/// Equal when written the same (the compiled regex follows its source).
impl PartialEq for RelabelConfig {
    fn eq(&self, o: &Self) -> bool {
        self.source_labels == o.source_labels
            && self.separator == o.separator
            && self.regex_source == o.regex_source
            && self.modulus == o.modulus
            && self.target_label == o.target_label
            && self.replacement == o.replacement
            && self.action == o.action
    }
}

impl RelabelConfig {
    /// Whether the anchored regex matches `s`.
    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

/// Runs `cfgs` in order over `labels`; `None` when a rule dropped the set
/// (or nothing is left of it).
pub fn process(labels: &Labels, cfgs: &[RelabelConfig]) -> Option<Labels> {
    let mut b = labels.builder();
    if !process_builder(&mut b, cfgs) {
        return None;
    }
    Some(b.build())
}

/// Runs `cfgs` in order over the labels in `b`; false when one dropped them.
pub fn process_builder(b: &mut LabelsBuilder, cfgs: &[RelabelConfig]) -> bool {
    cfgs.iter().all(|c| relabel(c, b))
}

fn relabel(cfg: &RelabelConfig, b: &mut LabelsBuilder) -> bool {
    let mut val = String::new();
    for (i, name) in cfg.source_labels.iter().enumerate() {
        if i > 0 {
            val.push_str(&cfg.separator);
        }
        val.push_str(b.get(name).unwrap_or(""));
    }
    match cfg.action {
        Action::Drop => return !cfg.regex.is_match(&val),
        Action::Keep => return cfg.regex.is_match(&val),
        Action::DropEqual => return b.get(&cfg.target_label).unwrap_or("") != val,
        Action::KeepEqual => return b.get(&cfg.target_label).unwrap_or("") == val,
        Action::Replace => {
            let Some(caps) = cfg.regex.captures(&val) else { return true };
            let target = expand(&cfg.regex, &cfg.target_label, &caps);
            if !is_valid_label_name(&target) {
                return true;
            }
            let res = expand(&cfg.regex, &cfg.replacement, &caps);
            b.set(target, res);
        }
        Action::Lowercase => {
            b.set(cfg.target_label.clone(), val.to_lowercase());
        }
        Action::Uppercase => {
            b.set(cfg.target_label.clone(), val.to_uppercase());
        }
        Action::HashMod => {
            b.set(cfg.target_label.clone(), hashmod(&val, cfg.modulus).to_string());
        }
        Action::LabelMap => {
            // Over a snapshot: labels added by this rule are not mapped again.
            let snapshot = b.clone().build();
            for l in &snapshot {
                if let Some(caps) = cfg.regex.captures(&l.name) {
                    let res = expand(&cfg.regex, &cfg.replacement, &caps);
                    // Prometheus would add a label with an empty name here; such a
                    // label can never be stored, so it is skipped.
                    if !res.is_empty() {
                        b.set(res, l.value.clone());
                    }
                }
            }
        }
        Action::LabelDrop => {
            b.retain(|l| !cfg.regex.is_match(&l.name));
        }
        Action::LabelKeep => {
            b.retain(|l| cfg.regex.is_match(&l.name));
        }
    }
    true
}

/// `hashmod`: the last 8 bytes of the md5 of `val`, big-endian, modulo `modulus`.
pub fn hashmod(val: &str, modulus: u64) -> u64 {
    let sum = Md5::digest(val.as_bytes());
    let mut last = [0u8; 8];
    last.copy_from_slice(&sum[8..16]);
    u64::from_be_bytes(last) % modulus.max(1)
}

/// Go's `Regexp.Expand` with string input: `$1`, `${1}`, `$name`, `${name}`,
/// `$$`; names as long as possible; unknown or unmatched groups expand to "".
pub fn expand(re: &Regex, template: &str, caps: &regex::Captures<'_>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let Some((name, num, after)) = extract(rest) else {
            out.push('$');
            continue;
        };
        rest = after;
        let group = match num {
            Some(n) => caps.get(n),
            None => re.capture_names().position(|n| n == Some(name)).and_then(|i| caps.get(i)),
        };
        if let Some(m) = group {
            out.push_str(m.as_str());
        }
    }
    out.push_str(rest);
    out
}

/// Go's `extract`: the name after a `$`, its number if purely numeric, and the rest.
fn extract(s: &str) -> Option<(&str, Option<usize>, &str)> {
    let (brace, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|(_, c)| !(c.is_alphabetic() || c.is_numeric() || *c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    let mut rest = &body[end..];
    if brace {
        rest = rest.strip_prefix('}')?;
    }
    let mut num: Option<usize> = Some(0);
    for c in name.bytes() {
        num = match num {
            Some(n) if c.is_ascii_digit() && n < 100_000_000 => Some(n * 10 + usize::from(c - b'0')),
            _ => None,
        };
    }
    if name.len() > 1 && name.starts_with('0') {
        num = None;
    }
    Some((name, num, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(yaml: &str) -> RelabelConfig {
        let raw: RawRelabelConfig = serde_saphyr::from_str(yaml).expect("yaml");
        raw.validate().expect("valid")
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).expect("labels")
    }

    /// (rules, input, expected output or None when dropped) — cases from Prometheus' relabel_test.go.
    #[test]
    fn table_of_actions() {
        type Pairs = Vec<(&'static str, &'static str)>;
        let cases: Vec<(&str, Pairs, Option<Pairs>)> = vec![
            (
                "[{source_labels: [a], regex: 'f(.*)', target_label: d, separator: ';', replacement: 'ch${1}-ch${1}'}]",
                vec![("a", "foo"), ("b", "bar"), ("c", "baz")],
                Some(vec![("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")]),
            ),
            (
                "[{source_labels: [a, b], regex: 'f(.*);(.*)r', target_label: a, replacement: 'b${1}${2}m'}, {source_labels: [c, a], regex: '(b).*b(.*)ba(.*)', target_label: d, replacement: '$1$2$2$3'}]",
                vec![("a", "foo"), ("b", "bar"), ("c", "baz")],
                Some(vec![("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")]),
            ),
            ("[{source_labels: [a], regex: '.*o.*', action: drop}]", vec![("a", "foo")], None),
            ("[{source_labels: [a], regex: '.*o.*', action: keep}]", vec![("a", "foo")], Some(vec![("a", "foo")])),
            ("[{source_labels: [a], regex: 'f', action: keep}]", vec![("a", "foo")], None),
            // Anchored: 'o' alone does not match 'foo'.
            ("[{source_labels: [a], regex: 'o', action: drop}]", vec![("a", "foo")], Some(vec![("a", "foo")])),
            // No match: nothing replaced.
            ("[{source_labels: [a], regex: 'f(.*)', target_label: d}]", vec![("a", "boo")], Some(vec![("a", "boo")])),
            // An empty replacement deletes the target.
            (
                "[{source_labels: [a], regex: '(.*)', target_label: b, replacement: ''}]",
                vec![("a", "x"), ("b", "y")],
                Some(vec![("a", "x")]),
            ),
            // Defaults: source value copied to target.
            ("[{source_labels: [a], target_label: b}]", vec![("a", "x")], Some(vec![("a", "x"), ("b", "x")])),
            // Target label from a group; an invalid expanded target is skipped.
            (
                "[{source_labels: [a], regex: '(.*)', target_label: 'x_${1}', replacement: v}]",
                vec![("a", "k")],
                Some(vec![("a", "k"), ("x_k", "v")]),
            ),
            (
                "[{source_labels: [a], regex: '(.*)', target_label: '${1}', replacement: v}]",
                vec![("a", "1x")],
                Some(vec![("a", "1x")]),
            ),
            // Missing source labels are empty values.
            (
                "[{source_labels: [a, b], regex: 'x;', target_label: c, replacement: yes}]",
                vec![("a", "x")],
                Some(vec![("a", "x"), ("c", "yes")]),
            ),
            (
                "[{source_labels: [c], target_label: d, action: hashmod, modulus: 1000}]",
                vec![("c", "baz")],
                Some(vec![("c", "baz"), ("d", "976")]),
            ),
            (
                "[{source_labels: [c], target_label: d, action: hashmod, modulus: 1000}]",
                vec![("c", "foo")],
                Some(vec![("c", "foo"), ("d", "696")]),
            ),
            (
                "[{regex: 'meta_(.+)', action: labelmap, replacement: '${1}'}]",
                vec![("a", "1"), ("meta_x", "2"), ("meta_b", "3")],
                Some(vec![("a", "1"), ("b", "3"), ("meta_b", "3"), ("meta_x", "2"), ("x", "2")]),
            ),
            ("[{regex: 'a.*', action: labeldrop}]", vec![("a", "1"), ("ab", "2"), ("b", "3")], Some(vec![("b", "3")])),
            (
                "[{regex: 'a.*', action: labelkeep}]",
                vec![("a", "1"), ("ab", "2"), ("b", "3")],
                Some(vec![("a", "1"), ("ab", "2")]),
            ),
            (
                "[{source_labels: [a], target_label: b, action: lowercase}]",
                vec![("a", "AbC")],
                Some(vec![("a", "AbC"), ("b", "abc")]),
            ),
            (
                "[{source_labels: [a, c], target_label: b, action: uppercase}]",
                vec![("a", "AbC"), ("c", "d")],
                Some(vec![("a", "AbC"), ("b", "ABC;D"), ("c", "d")]),
            ),
            (
                "[{source_labels: [a], target_label: b, action: keepequal}]",
                vec![("a", "x"), ("b", "x")],
                Some(vec![("a", "x"), ("b", "x")]),
            ),
            ("[{source_labels: [a], target_label: b, action: keepequal}]", vec![("a", "x"), ("b", "y")], None),
            ("[{source_labels: [a], target_label: b, action: dropequal}]", vec![("a", "x"), ("b", "x")], None),
            ("[{source_labels: [a], target_label: b, action: dropequal}]", vec![("a", "x")], Some(vec![("a", "x")])),
            // Action names are case-insensitive.
            ("[{source_labels: [a], regex: x, action: DROP}]", vec![("a", "x")], None),
            // `.` matches newlines (Prometheus 3).
            ("[{source_labels: [a], regex: 'a.b', action: keep}]", vec![("a", "a\nb")], Some(vec![("a", "a\nb")])),
            // `\d` is ASCII only, as in Go.
            ("[{source_labels: [a], regex: '\\d+', action: keep}]", vec![("a", "١٢")], None),
            ("[{source_labels: [a], regex: '[\\d]+', action: keep}]", vec![("a", "12")], Some(vec![("a", "12")])),
            // Named groups and `$$`.
            (
                "[{source_labels: [a], regex: '(?P<h>[^:]+):(?P<p>\\d+)', target_label: b, replacement: '$p$$-${h}x'}]",
                vec![("a", "h:80")],
                Some(vec![("a", "h:80"), ("b", "80$-hx")]),
            ),
            // `$1x` is the group named `1x`, which does not exist.
            (
                "[{source_labels: [a], regex: '(.*)', target_label: b, replacement: '$1x-'}]",
                vec![("a", "v")],
                Some(vec![("a", "v"), ("b", "-")]),
            ),
        ];
        for (i, (rules, input, want)) in cases.into_iter().enumerate() {
            let raws: Vec<RawRelabelConfig> = serde_saphyr::from_str(rules).expect("yaml");
            let cfgs: Vec<RelabelConfig> = raws.iter().map(|r| r.validate().expect("valid")).collect();
            let got = process(&labels(&input), &cfgs);
            assert_eq!(got, want.map(|w| labels(&w)), "case {i}: {rules}");
        }
    }

    #[test]
    fn validation_errors_are_prometheus_messages() {
        let cases = [
            ("{action: hashmod, source_labels: [a], target_label: b}", "requires non-zero modulus"),
            ("{action: replace}", "requires 'target_label' value"),
            ("{target_label: '1a'}", "\"1a\" is invalid 'target_label' for replace action"),
            ("{target_label: 'a$'}", "is invalid 'target_label'"),
            (
                "{action: lowercase, target_label: b, replacement: x}",
                "'replacement' can not be set for lowercase action",
            ),
            ("{action: labelmap, replacement: '-x'}", "is invalid 'replacement' for labelmap action"),
            ("{action: keepequal, source_labels: [a], target_label: b, regex: x}", "requires only 'source_labels'"),
            ("{action: labeldrop, regex: x, source_labels: [a]}", "requires only 'regex'"),
            ("{action: bogus}", "unknown relabel action \"bogus\""),
            ("{action: keep, regex: '('}", "error parsing regexp"),
            ("{source_labels: ['a-b'], target_label: x}", "not a valid label name"),
        ];
        for (yaml, want) in cases {
            let raw: RawRelabelConfig = serde_saphyr::from_str(yaml).expect("yaml");
            let err = raw.validate().expect_err(yaml);
            assert!(err.contains(want), "{yaml}: {err}");
        }
        // `$` references are allowed in replace targets.
        cfg("{target_label: 'a_${1}_$x'}");
        cfg("{action: labelmap, replacement: 'k8s_${1}'}");
    }

    #[test]
    fn expand_matches_go() {
        let re = compile_regex("(a)(?P<n>b)?(c)").expect("regex");
        let caps = re.captures("ac").expect("match");
        for (tpl, want) in [
            ("$1", "a"),
            ("${1}", "a"),
            ("$2", ""),
            ("$n", ""),
            ("$3", "c"),
            ("$10", ""),
            ("${1}0", "a0"),
            ("$", "$"),
            ("$$1", "$1"),
            ("${1", "${1"),
            ("$-", "$-"),
            ("x$01y", "x"),
            ("$0", "ac"),
        ] {
            assert_eq!(expand(&re, tpl, &caps), want, "{tpl}");
        }
    }

    #[test]
    fn relabel_target_pattern() {
        for ok in ["a", "_a", "a1", "$1", "${1}", "a_${1}", "$a$b", "${x}y"] {
            assert!(is_relabel_target(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "$", "${}", "${1", "a$"] {
            assert!(!is_relabel_target(bad), "{bad}");
        }
    }

    fn arb_rule() -> impl Strategy<Value = RawRelabelConfig> {
        let name = prop::sample::select(vec!["a", "b", "__name__", "c_d"]);
        (
            prop::option::of(prop::collection::vec(name.clone().prop_map(String::from), 0..3)),
            prop::option::of(prop::sample::select(vec![";", "", "-"]).prop_map(String::from)),
            prop::option::of("[a-c.*()|$\\\\?+\\[\\]^{}0-9]{0,8}"),
            prop::option::of(0u64..5),
            prop::option::of(prop::sample::select(vec!["a", "b", "$1", "${1}x", "1"]).prop_map(String::from)),
            prop::option::of("[a-c$1{}_]{0,6}"),
            prop::option::of(
                prop::sample::select(vec![
                    "replace",
                    "keep",
                    "drop",
                    "keepequal",
                    "dropequal",
                    "hashmod",
                    "labelmap",
                    "labeldrop",
                    "labelkeep",
                    "lowercase",
                    "uppercase",
                ])
                .prop_map(String::from),
            ),
        )
            .prop_map(|(source_labels, separator, regex, modulus, target_label, replacement, action)| {
                RawRelabelConfig { source_labels, separator, regex, modulus, target_label, replacement, action }
            })
    }

    proptest! {
        #[test]
        fn relabel_never_panics(
            rules in prop::collection::vec(arb_rule(), 0..5),
            pairs in prop::collection::vec(("[a-c_]{1,3}", "\\PC{0,6}"), 0..6),
        ) {
            let cfgs: Vec<RelabelConfig> = rules.iter().filter_map(|r| r.validate().ok()).collect();
            let mut b = LabelsBuilder::new();
            for (n, v) in pairs {
                b.set(n, v);
            }
            let input = b.build();
            if let Some(out) = process(&input, &cfgs) {
                // Every output label has a non-empty value.
                prop_assert!(out.iter().all(|l| !l.value.is_empty()));
            }
        }

        #[test]
        fn keep_and_drop_partition(v in "\\PC{0,8}", re in "[a-c.*|]{0,5}") {
            let keep = RawRelabelConfig { source_labels: Some(vec!["a".into()]), regex: Some(re.clone()), action: Some("keep".into()), ..Default::default() };
            let drop = RawRelabelConfig { action: Some("drop".into()), ..keep.clone() };
            let (Ok(keep), Ok(drop)) = (keep.validate(), drop.validate()) else { return Ok(()) };
            let l = Labels::from_pairs([("a", v.as_str())]).expect("labels");
            prop_assert_ne!(process(&l, &[keep]).is_some(), process(&l, &[drop]).is_some());
        }

        #[test]
        fn hashmod_is_below_modulus(v in "\\PC{0,16}", m in 1u64..10_000) {
            prop_assert!(hashmod(&v, m) < m);
        }
    }
}
