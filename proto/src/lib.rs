//! Protobuf wire types shared by Strata's roles.
//!
//! The `.proto` sources live beside this crate (`proto/strata/...`) and are
//! compiled at build time with `protox`, so no system `protoc` is needed.
//! [`ingest::v1`] holds the ingest-log records; conversions to and from the
//! in-memory [`strata_model::WriteBatch`] are here so every role shares them.

/// `strata.ingest.v1`: ingest records.
pub mod ingest {
    /// Version 1 of the ingest records.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/strata.ingest.v1.rs"));
    }
}

/// `strata.store.v1`: the gRPC APIs between roles (`Store`, `Ingest`).
pub mod store {
    /// Version 1 of the store API.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/strata.store.v1.rs"));
    }
}

pub mod remote_write;
pub mod store_api;

use strata_model::{Labels, ModelError, Sample, TimeSeries, WriteBatch};

impl From<&WriteBatch> for ingest::v1::WriteBatch {
    fn from(b: &WriteBatch) -> Self {
        Self {
            tenant: b.tenant.clone(),
            series: b
                .series
                .iter()
                .map(|s| ingest::v1::TimeSeries {
                    labels: s
                        .labels
                        .iter()
                        .map(|l| ingest::v1::Label { name: l.name.clone(), value: l.value.clone() })
                        .collect(),
                    samples: s.samples.iter().map(|p| ingest::v1::Sample { timestamp_ms: p.t, value: p.v }).collect(),
                })
                .collect(),
        }
    }
}

impl TryFrom<ingest::v1::WriteBatch> for WriteBatch {
    type Error = ModelError;

    /// Rebuilds a batch, re-checking label sets (records come from disk or the network).
    fn try_from(b: ingest::v1::WriteBatch) -> Result<Self, ModelError> {
        let series = b
            .series
            .into_iter()
            .map(|s| {
                let labels = Labels::from_pairs(s.labels.into_iter().map(|l| (l.name, l.value)))?;
                let samples = s.samples.into_iter().map(|p| Sample::new(p.timestamp_ms, p.value)).collect();
                Ok(TimeSeries { labels, samples })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(WriteBatch { tenant: b.tenant, series })
    }
}

/// Encodes a batch as `strata.ingest.v1.WriteBatch` bytes.
pub fn encode_batch(batch: &WriteBatch) -> Vec<u8> {
    use prost::Message;
    ingest::v1::WriteBatch::from(batch).encode_to_vec()
}

/// Decodes `strata.ingest.v1.WriteBatch` bytes.
pub fn decode_batch(bytes: &[u8]) -> Result<WriteBatch, DecodeError> {
    use prost::Message;
    let pb = ingest::v1::WriteBatch::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    WriteBatch::try_from(pb).map_err(DecodeError::Model)
}

/// Why bytes could not be decoded into a batch.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not valid protobuf for the message.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// Valid protobuf, invalid content.
    #[error("invalid batch: {0}")]
    Model(ModelError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch_strategy() -> impl Strategy<Value = WriteBatch> {
        let series = (
            prop::collection::btree_map("[a-z_][a-z0-9_]{0,8}", "[ -~]{1,12}", 0..6),
            prop::collection::vec((any::<i64>(), any::<f64>()), 0..8),
        )
            .prop_map(|(labels, samples)| TimeSeries {
                labels: Labels::from_pairs(labels).unwrap_or_default(),
                samples: samples.into_iter().map(|(t, v)| Sample::new(t, v)).collect(),
            });
        ("[a-z]{0,8}", prop::collection::vec(series, 0..5)).prop_map(|(tenant, series)| WriteBatch { tenant, series })
    }

    proptest! {
        #[test]
        fn batch_roundtrips(batch in batch_strategy()) {
            let back = decode_batch(&encode_batch(&batch)).expect("decodes");
            prop_assert_eq!(back.tenant, batch.tenant);
            prop_assert_eq!(back.series.len(), batch.series.len());
            for (a, b) in back.series.iter().zip(&batch.series) {
                prop_assert_eq!(&a.labels, &b.labels);
                prop_assert_eq!(a.samples.len(), b.samples.len());
                for (x, y) in a.samples.iter().zip(&b.samples) {
                    prop_assert_eq!(x.t, y.t);
                    // proto3 drops a zero double, so -0.0 comes back as 0.0 (equal in PromQL);
                    // every other value, NaN payloads (staleness markers) included, keeps its bits.
                    if y.v != 0.0 {
                        prop_assert_eq!(x.v.to_bits(), y.v.to_bits());
                    } else {
                        prop_assert_eq!(x.v, 0.0);
                    }
                }
            }
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_batch(&bytes);
        }
    }
}
