//! Prometheus remote write wire types, written by hand with `prost` derives
//! (the upstream `.proto` files import gogoproto, which we do not need).
//!
//! - [`v1`]: `prometheus.WriteRequest`, remote write 1.0.
//! - [`v2`]: `io.prometheus.write.v2.Request`, remote write 2.0 (interned
//!   label strings in `symbols`).
//!
//! Native histograms are decoded only far enough to be counted: their
//! fields are skipped as unknown fields.

/// Remote write 1.0 (`prometheus.WriteRequest`).
pub mod v1 {
    /// A write request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// The series with their samples.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        /// Metric metadata (type, help, unit).
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    /// One series.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Labels, `__name__` included.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Float samples in time order.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        /// Exemplars.
        #[prost(message, repeated, tag = "3")]
        pub exemplars: Vec<Exemplar>,
        /// Native histogram samples (counted, not decoded).
        #[prost(message, repeated, tag = "4")]
        pub histograms: Vec<super::HistogramStub>,
    }

    /// A label pair.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// Name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// A float sample.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Sample {
        /// Value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// An exemplar.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        /// Exemplar labels (e.g. `trace_id`).
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Value.
        #[prost(double, tag = "2")]
        pub value: f64,
        /// Milliseconds since the epoch.
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    /// Metric metadata.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        /// Metric type (counter = 1, gauge = 2, ...).
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        /// Family name.
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        /// Help text.
        #[prost(string, tag = "4")]
        pub help: String,
        /// Unit.
        #[prost(string, tag = "5")]
        pub unit: String,
    }
}

/// Remote write 2.0 (`io.prometheus.write.v2.Request`).
pub mod v2 {
    /// A write request; every string is an index into `symbols`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        /// Interned strings; `symbols[0]` is the empty string.
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        /// The series.
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// One series.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Pairs of symbol references: name, value, name, value, ...
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        /// Float samples in time order.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<super::v1::Sample>,
        /// Native histogram samples (counted, not decoded).
        #[prost(message, repeated, tag = "3")]
        pub histograms: Vec<super::HistogramStub>,
        /// Exemplars.
        #[prost(message, repeated, tag = "4")]
        pub exemplars: Vec<Exemplar>,
        /// Metadata.
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
        /// Created timestamp of counters and histograms, ms (0: unknown).
        #[prost(int64, tag = "6")]
        pub created_timestamp: i64,
    }

    /// An exemplar.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        /// Pairs of symbol references.
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        /// Value.
        #[prost(double, tag = "2")]
        pub value: f64,
        /// Milliseconds since the epoch.
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    /// Series metadata.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        /// Metric type.
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        /// Symbol reference of the help text.
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        /// Symbol reference of the unit.
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }
}

/// A native histogram sample, skipped field by field: only counted.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct HistogramStub {}
