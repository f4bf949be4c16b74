//! Strata's shared test datasets and benchmarks.
//!
//! - [`dataset`]: a deterministic dataset shaped like what node exporter
//!   and kube-prometheus expose (counters with resets, gauges, classic
//!   histograms), as Strata series and as OpenMetrics text for
//!   `promtool tsdb create-blocks-from openmetrics`.

pub mod dataset;
