//! Errors raised while building model values from untrusted input.

/// An invalid label, matcher or batch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// A label name that Prometheus would not accept.
    #[error("invalid label name {0:?}")]
    InvalidLabelName(String),
    /// A label set that names the same label twice.
    #[error("duplicate label name {0:?}")]
    DuplicateLabel(String),
    /// A series without a `__name__`.
    #[error("series has no metric name: {0}")]
    MissingMetricName(String),
    /// A regular expression in a matcher that does not compile.
    #[error("invalid regular expression {regex:?} in matcher: {reason}")]
    InvalidRegex {
        /// The expression as given.
        regex: String,
        /// Why it was refused.
        reason: String,
    },
}
