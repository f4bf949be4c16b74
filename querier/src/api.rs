//! `/api/v1/query` and `/api/v1/query_range`, as Prometheus serves them:
//! GET or POST (form body), the same parameters, errors and JSON.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use strata_common::{Clock, Telemetry};
use strata_model::{DEFAULT_TENANT, Select};
use strata_promql::{Engine, EngineOptions, PromqlError};

use crate::ApiError;
use crate::params::{parse_duration_ms, parse_time};

/// Prometheus' limit on points per series in a range query.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Query limits.
#[derive(Debug, Clone)]
pub struct QuerierSettings {
    /// How far back an instant selector looks (`--query.lookback-delta`, 5m).
    pub lookback_delta: Duration,
    /// Samples a query may hold at once (`--query.max-samples`).
    pub max_samples: usize,
    /// Longest a query may run (`--query.timeout`, 2m).
    pub timeout: Duration,
}

impl Default for QuerierSettings {
    fn default() -> Self {
        Self { lookback_delta: Duration::from_secs(300), max_samples: 50_000_000, timeout: Duration::from_secs(120) }
    }
}

/// What the query API needs.
#[derive(Clone)]
pub struct QuerierDeps {
    /// Where series are read from.
    pub storage: Arc<dyn Select>,
    /// The metric registry.
    pub telemetry: Telemetry,
    /// The clock (the default query time).
    pub clock: Arc<dyn Clock>,
    /// Limits.
    pub settings: QuerierSettings,
}

#[derive(Clone)]
struct ApiState {
    deps: QuerierDeps,
    engine: Arc<Engine>,
    queries: Counter,
    failed: Counter,
}

/// The `/api/v1` routes.
pub fn api_router(deps: QuerierDeps) -> Router {
    let engine = Arc::new(Engine::new(EngineOptions {
        lookback_delta_ms: i64::try_from(deps.settings.lookback_delta.as_millis()).unwrap_or(i64::MAX),
        max_samples: deps.settings.max_samples,
        timeout: deps.settings.timeout,
    }));
    let queries = Counter::default();
    let failed = Counter::default();
    deps.telemetry.register("strata_api_queries", "Queries received by the query API", queries.clone());
    deps.telemetry.register("strata_api_query_failures", "Queries answered with an error", failed.clone());
    let state = ApiState { deps, engine, queries, failed };
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .with_state(state)
}

/// Request parameters: the URL query, then (for POST) the form body, as Go's `r.FormValue`.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(method: &Method, headers: &HeaderMap, raw_query: Option<&str>, body: &[u8]) -> Self {
        let mut v: Vec<(String, String)> = Vec::new();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if *method == Method::POST && is_form {
            v.extend(form_urlencoded::parse(body).into_owned());
        }
        if let Some(q) = raw_query {
            v.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Self(v)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn tenant(headers: &HeaderMap) -> String {
    headers
        .get("X-Scope-OrgID")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_TENANT)
        .to_owned()
}

fn query_error(e: PromqlError) -> ApiError {
    match e {
        PromqlError::Parse(msg) => ApiError::BadData(format!("invalid parameter \"query\": {msg}")),
        other => ApiError::from(other),
    }
}

fn respond(state: &ApiState, result: Result<String, ApiError>) -> Response {
    match result {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            state.failed.inc();
            e.into_response()
        }
    }
}

async fn query(
    State(state): State<ApiState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    state.queries.inc();
    let p = Params::parse(&method, &headers, raw.as_deref(), &body);
    let result = async {
        let q = p.get("query").unwrap_or_default();
        let t = match p.get("time") {
            Some(t) if !t.is_empty() => parse_time("time", t)?,
            _ => state.deps.clock.now_ms(),
        };
        let tenant = tenant(&headers);
        let fut = state.engine.instant_query(state.deps.storage.as_ref(), &tenant, q, t);
        let r = with_timeout(&state, &p, fut).await?;
        Ok(crate::json::query_body(&r.value, &r.warnings, &r.infos))
    }
    .await;
    respond(&state, result)
}

async fn query_range(
    State(state): State<ApiState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    state.queries.inc();
    let p = Params::parse(&method, &headers, raw.as_deref(), &body);
    let result = async {
        let start = parse_time("start", p.get("start").unwrap_or_default())?;
        let end = parse_time("end", p.get("end").unwrap_or_default())?;
        if end < start {
            return Err(ApiError::BadData("end timestamp must not be before start time".into()));
        }
        let step = parse_duration_ms("step", p.get("step").unwrap_or_default())?;
        if step <= 0 {
            return Err(ApiError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if (end - start) / step > MAX_POINTS_PER_SERIES {
            return Err(ApiError::BadData(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
                    .into(),
            ));
        }
        let q = p.get("query").unwrap_or_default();
        let tenant = tenant(&headers);
        let fut = state.engine.range_query(state.deps.storage.as_ref(), &tenant, q, start, end, step);
        let r = with_timeout(&state, &p, fut).await?;
        Ok(crate::json::query_body(&r.value, &r.warnings, &r.infos))
    }
    .await;
    respond(&state, result)
}

async fn with_timeout<T>(
    state: &ApiState,
    p: &Params,
    fut: impl Future<Output = Result<T, PromqlError>>,
) -> Result<T, ApiError> {
    let mut timeout = state.deps.settings.timeout;
    if let Some(t) = p.get("timeout").filter(|t| !t.is_empty()) {
        let ms = parse_duration_ms("timeout", t)?;
        timeout = timeout.min(Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0)));
    }
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(query_error),
        Err(_) => Err(ApiError::Timeout("query timed out in expression evaluation".into())),
    }
}
