//! Shared runtime pieces for Strata's roles.
//!
//! - [`clock`]: the [`Clock`] every time-dependent component is given.
//! - [`duration`]: Prometheus' duration syntax (`1h30m`, `15s`, `2d`).
//! - [`telemetry`]: the metric registry passed to every component, and the
//!   process metrics every Strata process exports.
//! - [`tenant`]: the tenant of a request (`X-Scope-OrgID`).
//! - [`admin`]: `/-/healthy`, `/-/ready` and `/metrics`, served by every role.

pub mod admin;
pub mod clock;
pub mod duration;
pub mod telemetry;
pub mod tenant;

pub use admin::{Readiness, admin_router, serve_http};
pub use clock::{Clock, ManualClock, SystemClock};
pub use duration::{PromDuration, format_duration, parse_duration};
pub use telemetry::Telemetry;
pub use tenant::{TENANT_HEADER, tenant_of};
