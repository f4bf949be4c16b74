//! Strata collector: finds targets, scrapes them and ships the samples.
//!
//! - [`config`]: Prometheus' `global` and `scrape_configs`, validated.
//! - [`discovery`]: where targets come from (static lists, files).
//! - [`target`]: discovered labels → relabeled scrape targets.
//! - [`status`]: target health, served as `/api/v1/targets`.
//! - [`exposition`]: the text and OpenMetrics page parser.
//! - [`relabel`]: `relabel_configs` and `metric_relabel_configs`, as Prometheus.
//! - [`scrape`]: one loop per target; samples go to an [`strata_model::Append`].

pub mod config;
pub mod discovery;
pub mod exposition;
pub mod relabel;
pub mod scrape;
pub mod status;
pub mod target;
