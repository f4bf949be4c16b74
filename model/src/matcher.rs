//! Label matchers: how storage is asked for series.
//!
//! Regular expressions are fully anchored, as in Prometheus: `a.*` matches
//! `abc` but not `xabc`; and `.` matches newlines (Prometheus 3).

use regex::Regex;

use crate::{Labels, ModelError};

/// The four matcher operators of PromQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

/// One matcher, e.g. `job=~"node|api"`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The operator.
    pub op: MatchOp,
    /// The value or the (unanchored) regular expression as written.
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// Builds a matcher; regular expressions are compiled anchored.
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self, ModelError> {
        let (name, value) = (name.into(), value.into());
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(compile_anchored(&value)?),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Self { name, op, value, regex })
    }

    /// `name="value"`.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: name.into(), op: MatchOp::Equal, value: value.into(), regex: None }
    }

    /// Whether a label value (empty when the label is absent) matches.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => self.value == value,
            (MatchOp::NotEqual, _) => self.value != value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether the matcher accepts the empty value (so also series without the label).
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// Whether a label set passes this matcher.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

/// Whether a label set passes every matcher.
pub fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches_labels(labels))
}

fn compile_anchored(expr: &str) -> Result<Regex, ModelError> {
    regex::RegexBuilder::new(&format!("^(?:{expr})$"))
        .dot_matches_new_line(true)
        .build()
        .map_err(|e| ModelError::InvalidRegex { regex: expr.to_owned(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored() {
        let m = Matcher::new(MatchOp::Regex, "job", "no.*").expect("valid");
        assert!(m.matches("node"));
        assert!(!m.matches("xnode"));
        let m = Matcher::new(MatchOp::Regex, "job", "a|b").expect("valid");
        assert!(m.matches("a") && m.matches("b") && !m.matches("ab"));
    }

    #[test]
    fn absent_label_is_empty_value() {
        let labels = Labels::from_pairs([("job", "x")]).expect("valid");
        assert!(Matcher::new(MatchOp::Equal, "env", "").expect("ok").matches_labels(&labels));
        assert!(Matcher::new(MatchOp::NotEqual, "env", "prod").expect("ok").matches_labels(&labels));
        assert!(!Matcher::new(MatchOp::Regex, "env", ".+").expect("ok").matches_labels(&labels));
    }

    #[test]
    fn bad_regex_is_an_error() {
        assert!(Matcher::new(MatchOp::Regex, "a", "(").is_err());
    }
}
