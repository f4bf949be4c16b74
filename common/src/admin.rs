//! The endpoints every Strata process serves: `/-/healthy`, `/-/ready`, `/metrics`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::Telemetry;

/// Whether the process is ready to serve: flipped once startup (log replay,
/// first discovery) is done, and not while a component reports a degraded
/// condition (for example block uploads failing).
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    /// Degraded conditions by component, with the reason.
    degraded: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Readiness {
    /// Not ready yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the process ready (startup is done).
    pub fn set_ready(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    /// Reports `component` degraded for `reason`: not ready until cleared.
    pub fn set_degraded(&self, component: &str, reason: String) {
        self.conditions().insert(component.to_owned(), reason);
    }

    /// Clears a condition reported by [`Readiness::set_degraded`].
    pub fn clear_degraded(&self, component: &str) {
        self.conditions().remove(component);
    }

    fn conditions(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.degraded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The degraded conditions, `component: reason`.
    pub fn degraded(&self) -> Vec<String> {
        self.conditions().iter().map(|(c, r)| format!("{c}: {r}")).collect()
    }

    /// Whether the process is ready: started and nothing degraded.
    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::SeqCst) && self.conditions().is_empty()
    }
}

#[derive(Clone)]
struct AdminState {
    telemetry: Telemetry,
    readiness: Readiness,
}

/// The admin routes, to be merged into a role's router.
pub fn admin_router(telemetry: Telemetry, readiness: Readiness) -> Router {
    Router::new()
        .route("/-/healthy", get(|| async { "Strata is Healthy.\n" }).head(|| async {}))
        .route("/-/ready", get(ready).head(ready))
        .route("/metrics", get(metrics))
        .with_state(AdminState { telemetry, readiness })
}

async fn ready(State(s): State<AdminState>) -> Response {
    if s.readiness.is_ready() {
        return (StatusCode::OK, "Strata is Ready.\n").into_response();
    }
    let degraded = s.readiness.degraded();
    if degraded.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("Service Unavailable: {}\n", degraded.join("; "))).into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.telemetry.encode())
        .into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
