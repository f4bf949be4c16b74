//! The endpoints every Strata process serves: `/-/healthy`, `/-/ready`, `/metrics`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::Telemetry;

/// Whether the process is ready to serve; flipped once startup (log replay,
/// first discovery) is done.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Not ready yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the process ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
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
        (StatusCode::OK, "Strata is Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
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
