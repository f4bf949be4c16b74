//! Query results, errors, and the internal value types the evaluator moves
//! between nodes.

use std::sync::Arc;

use strata_model::{Labels, Series};

/// The value of an evaluated expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A single number at the evaluation time.
    Scalar {
        /// Evaluation time, ms.
        t: i64,
        /// The value.
        v: f64,
    },
    /// A string literal.
    String {
        /// Evaluation time, ms.
        t: i64,
        /// The string.
        s: String,
    },
    /// An instant vector: one sample per series.
    Vector(Vec<InstantSample>),
    /// A range vector (or the result of a range query).
    Matrix(Vec<Series>),
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    /// The series' labels.
    pub labels: Labels,
    /// Evaluation time, ms.
    pub t: i64,
    /// The value.
    pub v: f64,
}

/// The result of a query with its annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The value.
    pub value: Value,
    /// Warnings ("PromQL warning: ...").
    pub warnings: Vec<String>,
    /// Informational notes ("PromQL info: ...").
    pub infos: Vec<String>,
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromqlError {
    /// The query does not parse or is not valid for this kind of query.
    #[error("{0}")]
    Parse(String),
    /// Evaluation failed (e.g. duplicate label sets, many-to-many matching).
    #[error("{0}")]
    Execution(String),
    /// Reading from storage failed.
    #[error("{0}")]
    Storage(String),
    /// The query would hold too many samples in memory.
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// The query ran longer than the configured timeout.
    #[error("query timed out in expression evaluation")]
    Timeout,
    /// The query was canceled.
    #[error("query was canceled in expression evaluation")]
    Canceled,
}

impl PromqlError {
    /// The `errorType` Prometheus' HTTP API reports for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            PromqlError::Parse(_) => "bad_data",
            PromqlError::Execution(_) | PromqlError::TooManySamples => "execution",
            PromqlError::Storage(_) => "internal",
            PromqlError::Timeout => "timeout",
            PromqlError::Canceled => "canceled",
        }
    }
}

/// Shorthand for execution errors.
/// A label set as Prometheus prints it in messages (`labels.Labels.String()`):
/// `{__name__="up", job="node"}`, values quoted as Go's `strconv.Quote` does.
pub(crate) fn labels_string(l: &Labels) -> String {
    let mut out = String::from("{");
    for (i, x) in l.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&x.name);
        out.push('=');
        go_quote(&mut out, &x.value);
    }
    out.push('}');
    out
}

/// Appends `s` quoted like Go's `strconv.Quote`.
fn go_quote(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(crate) fn exec_err<T>(msg: impl Into<String>) -> Result<T, PromqlError> {
    Err(PromqlError::Execution(msg.into()))
}

/// A shared label set.
pub(crate) type Metric = Arc<Labels>;

/// One float point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    /// Time, ms.
    pub t: i64,
    /// Value.
    pub f: f64,
}

/// One element of an instant vector during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Labels.
    pub metric: Metric,
    /// Sample time (only meaningful for `timestamp()`), ms.
    pub t: i64,
    /// Value.
    pub f: f64,
    /// Whether `__name__` is to be dropped from the final result.
    pub drop_name: bool,
}

impl Sample {
    /// A sample without a name-drop mark.
    pub fn new(metric: Metric, f: f64) -> Self {
        Self { metric, t: 0, f, drop_name: false }
    }
}

/// One series during evaluation: points at evaluation steps (or raw points
/// for range vectors).
#[derive(Debug, Clone)]
pub(crate) struct RSeries {
    /// Labels.
    pub metric: Metric,
    /// Points in time order.
    pub points: Vec<Point>,
    /// Whether `__name__` is to be dropped from the final result.
    pub drop_name: bool,
}

/// A set of series.
pub(crate) type Matrix = Vec<RSeries>;

/// What evaluating a node yields.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    /// Vectors and scalars over the steps, or a range vector.
    Matrix(Matrix),
    /// A string.
    String(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_print_like_prometheus() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b\u{1}")]).expect("labels");
        assert_eq!(labels_string(&l), r#"{__name__="up", job="a\"b\x01"}"#);
        assert_eq!(labels_string(&Labels::empty()), "{}");
    }

    #[test]
    fn error_types_follow_prometheus_api() {
        assert_eq!(PromqlError::Parse("x".into()).error_type(), "bad_data");
        assert_eq!(PromqlError::Execution("x".into()).error_type(), "execution");
        assert_eq!(PromqlError::Storage("x".into()).error_type(), "internal");
        assert_eq!(PromqlError::TooManySamples.error_type(), "execution");
        assert_eq!(PromqlError::Timeout.error_type(), "timeout");
        assert_eq!(PromqlError::Canceled.error_type(), "canceled");
    }
}
