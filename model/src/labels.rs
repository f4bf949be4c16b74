//! Label sets: the identity of a series.
//!
//! A [`Labels`] is kept sorted by name with unique names, so equality, hashing
//! and ordering of label sets are those of the sorted pairs, as in Prometheus.

use std::fmt;

use crate::ModelError;

/// The label that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One `name="value"` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// The label name.
    pub name: String,
    /// The label value; never empty inside a [`Labels`] (an empty value means "absent").
    pub value: String,
}

impl Label {
    /// A label from anything string-like.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: name.into(), value: value.into() }
    }
}

/// A sorted set of labels with unique names and non-empty values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// The empty label set.
    pub const fn empty() -> Self {
        Self(Vec::new())
    }

    /// Builds a label set from pairs: sorts them, drops empty values and
    /// refuses duplicate names.
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Self, ModelError>
    where
        N: Into<String>,
        V: Into<String>,
    {
        let mut v: Vec<Label> =
            pairs.into_iter().map(|(n, v)| Label::new(n, v)).filter(|l| !l.value.is_empty()).collect();
        v.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = v.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(ModelError::DuplicateLabel(w[0].name.clone()));
        }
        Ok(Self(v))
    }

    /// Wraps labels that are already sorted by name, unique and non-empty.
    /// Debug builds check it.
    pub fn from_sorted_unchecked(v: Vec<Label>) -> Self {
        debug_assert!(v.windows(2).all(|w| w[0].name < w[1].name), "labels not sorted/unique");
        Self(v)
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|l| l.name.as_str().cmp(name)).ok().map(|i| self.0[i].value.as_str())
    }

    /// The metric name, if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// The labels, sorted by name.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels as a slice, sorted by name.
    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    /// Consumes the set into its sorted vector.
    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }

    /// A builder starting from these labels.
    pub fn builder(&self) -> LabelsBuilder {
        LabelsBuilder { labels: self.0.clone() }
    }

    /// The same labels without `__name__`.
    pub fn without_metric_name(&self) -> Labels {
        Labels(self.0.iter().filter(|l| l.name != METRIC_NAME).cloned().collect())
    }

    /// Checks that every name is a valid Prometheus label name.
    pub fn validate(&self) -> Result<(), ModelError> {
        for l in &self.0 {
            if !is_valid_label_name(&l.name) {
                return Err(ModelError::InvalidLabelName(l.name.clone()));
            }
        }
        Ok(())
    }

    /// Approximate heap size in bytes, for memory accounting.
    pub fn heap_size(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<Label>()
            + self.0.iter().map(|l| l.name.capacity() + l.value.capacity()).sum::<usize>()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Labels {
    /// Prometheus' notation: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for l in self.0.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

/// Edits a label set: set, delete, then [`LabelsBuilder::build`].
#[derive(Debug, Clone, Default)]
pub struct LabelsBuilder {
    labels: Vec<Label>,
}

impl LabelsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`; an empty value deletes the label.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let (name, value) = (name.into(), value.into());
        match self.labels.binary_search_by(|l| l.name.as_str().cmp(&name)) {
            Ok(i) if value.is_empty() => {
                self.labels.remove(i);
            }
            Ok(i) => self.labels[i].value = value,
            Err(_) if value.is_empty() => {}
            Err(i) => self.labels.insert(i, Label { name, value }),
        }
        self
    }

    /// Deletes `name` if present.
    pub fn del(&mut self, name: &str) -> &mut Self {
        if let Ok(i) = self.labels.binary_search_by(|l| l.name.as_str().cmp(name)) {
            self.labels.remove(i);
        }
        self
    }

    /// The value of `name` as currently set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels.binary_search_by(|l| l.name.as_str().cmp(name)).ok().map(|i| self.labels[i].value.as_str())
    }

    /// Keeps only the labels for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Label) -> bool) -> &mut Self {
        self.labels.retain(|l| keep(l));
        self
    }

    /// The finished label set.
    pub fn build(self) -> Labels {
        Labels(self.labels)
    }
}

/// Whether `name` matches `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `name` matches `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pairs_sorts_and_drops_empty_values() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", "")]).expect("valid");
        assert_eq!(l.len(), 2);
        assert_eq!(l.as_slice()[0].name, "a");
        assert_eq!(l.get("b"), Some("2"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn from_pairs_refuses_duplicates() {
        let err = Labels::from_pairs([("a", "1"), ("a", "2")]).expect_err("duplicate");
        assert_eq!(err, ModelError::DuplicateLabel("a".into()));
    }

    #[test]
    fn display_is_prometheus_notation() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "node"), ("instance", "x:1")]).expect("valid");
        assert_eq!(l.to_string(), r#"up{instance="x:1", job="node"}"#);
    }

    #[test]
    fn builder_sets_and_deletes() {
        let mut b = Labels::from_pairs([("a", "1")]).expect("valid").builder();
        b.set("c", "3").set("b", "2").set("a", "");
        let l = b.build();
        assert_eq!(l.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    }

    #[test]
    fn label_name_validity() {
        assert!(is_valid_label_name("job"));
        assert!(is_valid_label_name("_x9"));
        assert!(!is_valid_label_name("9x"));
        assert!(!is_valid_label_name("a:b"));
        assert!(is_valid_metric_name("a:b"));
        assert!(!is_valid_metric_name(""));
    }
}
