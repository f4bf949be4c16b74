//! API errors, classified once into Prometheus' `errorType` and HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use strata_promql::PromqlError;

/// An error answered as `{"status":"error","errorType":...,"error":...}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter or the query is malformed: `bad_data`, 400.
    #[error("{0}")]
    BadData(String),
    /// The query failed while running: `execution`, 422.
    #[error("{0}")]
    Execution(String),
    /// The query ran out of time: `timeout`, 503.
    #[error("{0}")]
    Timeout(String),
    /// The query was canceled: `canceled`, 503.
    #[error("{0}")]
    Canceled(String),
    /// Storage failed: `internal`, 500.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// Prometheus' `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::BadData(_) => "bad_data",
            Self::Execution(_) => "execution",
            Self::Timeout(_) => "timeout",
            Self::Canceled(_) => "canceled",
            Self::Internal(_) => "internal",
        }
    }

    /// The HTTP status Prometheus answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadData(_) => StatusCode::BAD_REQUEST,
            Self::Execution(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Timeout(_) | Self::Canceled(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<PromqlError> for ApiError {
    fn from(e: PromqlError) -> Self {
        let msg = e.to_string();
        match e.error_type() {
            "bad_data" => Self::BadData(msg),
            "execution" => Self::Execution(msg),
            "timeout" => Self::Timeout(msg),
            "canceled" => Self::Canceled(msg),
            _ => Self::Internal(msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = crate::json::error_body(self.error_type(), &self.to_string());
        (self.status(), [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}
