//! Conversions between the `strata.store.v1` messages and the model types,
//! shared by the gRPC server (aggregators) and its clients (queriers).

use strata_model::{Labels, MatchOp, Matcher, ModelError, Sample, Series};

use crate::ingest::v1 as ingest;
use crate::store::v1 as pb;

/// Matchers as sent on the wire.
pub fn matchers_to_pb(matchers: &[Matcher]) -> Vec<pb::Matcher> {
    matchers
        .iter()
        .map(|m| pb::Matcher {
            r#type: match m.op {
                MatchOp::Equal => pb::matcher::Type::Eq,
                MatchOp::NotEqual => pb::matcher::Type::Neq,
                MatchOp::Regex => pb::matcher::Type::Re,
                MatchOp::NotRegex => pb::matcher::Type::Nre,
            } as i32,
            name: m.name.clone(),
            value: m.value.clone(),
        })
        .collect()
}

/// Matchers received from the wire; an unknown type or a bad regular
/// expression is an error (the peer sent something invalid).
pub fn matchers_from_pb(matchers: Vec<pb::Matcher>) -> Result<Vec<Matcher>, ModelError> {
    matchers
        .into_iter()
        .map(|m| {
            let op = match pb::matcher::Type::try_from(m.r#type) {
                Ok(pb::matcher::Type::Eq) => MatchOp::Equal,
                Ok(pb::matcher::Type::Neq) => MatchOp::NotEqual,
                Ok(pb::matcher::Type::Re) => MatchOp::Regex,
                Ok(pb::matcher::Type::Nre) => MatchOp::NotRegex,
                Err(_) => {
                    return Err(ModelError::InvalidRegex {
                        regex: m.value,
                        reason: format!("unknown matcher type {}", m.r#type),
                    });
                }
            };
            Matcher::new(op, m.name, m.value)
        })
        .collect()
}

/// A label set as sent on the wire.
pub fn labels_to_pb(labels: &Labels) -> Vec<ingest::Label> {
    labels.iter().map(|l| ingest::Label { name: l.name.clone(), value: l.value.clone() }).collect()
}

/// A label set received from the wire, re-checked (sorted, unique, valid).
pub fn labels_from_pb(labels: Vec<ingest::Label>) -> Result<Labels, ModelError> {
    Labels::from_pairs(labels.into_iter().map(|l| (l.name, l.value)))
}

/// A series as sent on the wire.
pub fn series_to_pb(series: &Series) -> ingest::TimeSeries {
    ingest::TimeSeries {
        labels: labels_to_pb(&series.labels),
        samples: series.samples.iter().map(|s| ingest::Sample { timestamp_ms: s.t, value: s.v }).collect(),
    }
}

/// A series received from the wire.
pub fn series_from_pb(series: ingest::TimeSeries) -> Result<Series, ModelError> {
    Ok(Series {
        labels: labels_from_pb(series.labels)?,
        samples: series.samples.into_iter().map(|s| Sample::new(s.timestamp_ms, s.value)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_roundtrip() {
        let ms = vec![
            Matcher::equal("__name__", "up"),
            Matcher::new(MatchOp::NotEqual, "a", "b").expect("m"),
            Matcher::new(MatchOp::Regex, "job", "no.*").expect("m"),
            Matcher::new(MatchOp::NotRegex, "x", "").expect("m"),
        ];
        let back = matchers_from_pb(matchers_to_pb(&ms)).expect("valid");
        assert_eq!(back, ms);
        assert!(back[2].matches("node") && !back[2].matches("xnode"), "regex stays anchored");
    }

    #[test]
    fn bad_matchers_are_refused() {
        let bad = pb::Matcher { r#type: 9, name: "a".into(), value: "b".into() };
        assert!(matchers_from_pb(vec![bad]).is_err());
        let bad = pb::Matcher { r#type: pb::matcher::Type::Re as i32, name: "a".into(), value: "(".into() };
        assert!(matchers_from_pb(vec![bad]).is_err());
    }

    #[test]
    fn series_roundtrip() {
        let s = Series {
            labels: Labels::from_pairs([("__name__", "up"), ("job", "a")]).expect("labels"),
            samples: vec![Sample::new(1, 1.5), Sample::new(2, f64::NAN)],
        };
        let back = series_from_pb(series_to_pb(&s)).expect("valid");
        assert_eq!(back.labels, s.labels);
        assert_eq!(back.samples[0], s.samples[0]);
        assert!(back.samples[1].v.is_nan());
    }
}
