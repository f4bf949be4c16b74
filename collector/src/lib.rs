//! Strata collector: finds targets, scrapes them and ships the samples.
//!
//! - [`config`]: Prometheus' `global` and `scrape_configs`, validated.
//! - [`exposition`]: the text and OpenMetrics page parser.
//! - [`scrape`]: one loop per target; samples go to an [`strata_model::Append`].

pub mod config;
pub mod exposition;
pub mod scrape;
