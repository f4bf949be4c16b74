//! The `/api/v1` router and the query endpoints, as Prometheus serves them:
//! `query`, `query_range`, `format_query` and `parse_query`, GET or POST
//! (form body), with the same parameters, errors and JSON. The series and
//! label endpoints are in [`crate::metadata`], the status ones in
//! [`crate::status`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use strata_common::{Clock, Telemetry};
use strata_model::{DEFAULT_TENANT, Select};
use strata_promql::{Engine, EngineOptions, PromqlError};

use crate::ApiError;
use crate::params::{parse_duration_ms, parse_time, time_param};

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
    /// The flags the process was started with, by name without dashes
    /// (`/api/v1/status/flags`).
    pub flags: BTreeMap<String, String>,
    /// Whether `storage` may be missing data (a fan-out with aggregators
    /// down); said in each query's warnings. `None` for local storage.
    pub completeness: Option<Arc<dyn crate::remote::Completeness>>,
}

impl QuerierDeps {
    /// `warnings` plus the storage's partial-data warning, if any.
    fn with_partial_warning(&self, mut warnings: Vec<String>) -> Vec<String> {
        if let Some(w) = self.completeness.as_ref().and_then(|c| c.partial_warning()) {
            warnings.push(w);
        }
        warnings
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct ApiState {
    /// The querier's dependencies.
    pub deps: QuerierDeps,
    engine: Arc<Engine>,
    queries: Counter,
    failed: Counter,
    /// Object store GETs caused by queries.
    io_gets: Counter,
    /// Bytes those GETs fetched.
    io_bytes: Counter,
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
    let (io_gets, io_bytes) = (Counter::default(), Counter::default());
    deps.telemetry.register(
        "strata_query_object_store_get_requests",
        "Object store GET requests made by queries (per query in the debug log)",
        io_gets.clone(),
    );
    deps.telemetry.register(
        "strata_query_object_store_get_bytes",
        "Bytes fetched from the object store by queries",
        io_bytes.clone(),
    );
    let state = ApiState { deps, engine, queries, failed, io_gets, io_bytes };
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/parse_query", get(parse_query).post(parse_query))
        .route("/api/v1/series", get(crate::metadata::series).post(crate::metadata::series))
        .route("/api/v1/labels", get(crate::metadata::labels).post(crate::metadata::labels))
        .route("/api/v1/label/{name}/values", get(crate::metadata::label_values))
        .route("/api/v1/status/buildinfo", get(crate::status::buildinfo))
        .route("/api/v1/status/flags", get(crate::status::flags))
        .with_state(state)
}

/// Request parameters: the URL query, then (for POST) the form body, as Go's `r.FormValue`.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Collects the parameters of a request.
    pub fn parse(method: &Method, headers: &HeaderMap, raw_query: Option<&str>, body: &[u8]) -> Self {
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

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (`match[]` may repeat), body first as Go's `r.Form`.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Params {
    type Rejection = Response;

    /// The URL query and, for a form POST, the body: what every API handler reads.
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let raw_query = parts.uri.query().map(str::to_owned);
        let (method, headers) = (parts.method.clone(), parts.headers.clone());
        let body = Bytes::from_request(axum::extract::Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self::parse(&method, &headers, raw_query.as_deref(), &body))
    }
}

/// The tenant a request reads (`X-Scope-OrgID`, else the default tenant).
pub(crate) fn tenant(headers: &HeaderMap) -> String {
    strata_common::tenant_of(headers, DEFAULT_TENANT)
}

fn query_error(e: PromqlError) -> ApiError {
    match e {
        PromqlError::Parse(msg) => ApiError::BadData(format!("invalid parameter \"query\": {msg}")),
        other => ApiError::from(other),
    }
}

/// Answers with a JSON body, or the error (counted as a failed query).
pub(crate) fn respond(state: &ApiState, result: Result<String, ApiError>) -> Response {
    match result {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            state.failed.inc();
            e.into_response()
        }
    }
}

async fn query(State(state): State<ApiState>, headers: HeaderMap, p: Params) -> Response {
    state.queries.inc();
    let result = async {
        let q = p.get("query").unwrap_or_default();
        let t = time_param("time", p.get("time"), state.deps.clock.now_ms())?;
        let tenant = tenant(&headers);
        let fut = state.engine.instant_query(state.deps.storage.as_ref(), &tenant, q, t);
        let r = with_timeout(&state, &p, fut).await?;
        let warnings = state.deps.with_partial_warning(r.warnings);
        Ok(crate::json::query_body(&r.value, &warnings, &r.infos))
    }
    .await;
    respond(&state, result)
}

async fn query_range(State(state): State<ApiState>, headers: HeaderMap, p: Params) -> Response {
    state.queries.inc();
    let result = async {
        let start = parse_time("start", p.get("start").unwrap_or_default())?;
        let end = parse_time("end", p.get("end").unwrap_or_default())?;
        if end < start {
            return Err(ApiError::BadData(
                "invalid parameter \"end\": end timestamp must not be before start time".into(),
            ));
        }
        let step = parse_duration_ms("step", p.get("step").unwrap_or_default())?;
        if step <= 0 {
            return Err(ApiError::BadData(
                "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer"
                    .into(),
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
        let warnings = state.deps.with_partial_warning(r.warnings);
        Ok(crate::json::query_body(&r.value, &warnings, &r.infos))
    }
    .await;
    respond(&state, result)
}

/// `/api/v1/format_query`: the query, pretty-printed as Prometheus does.
async fn format_query(State(state): State<ApiState>, p: Params) -> Response {
    let result = parse_query_param(&p).map(|expr| {
        let mut data = String::new();
        crate::json::write_str(&mut data, &expr.prettify());
        crate::json::success_body(&data, &[], &[])
    });
    respond(&state, result)
}

/// `/api/v1/parse_query`: the query's syntax tree as JSON.
async fn parse_query(State(state): State<ApiState>, p: Params) -> Response {
    let result = parse_query_param(&p).map(|expr| crate::json::success_body(&crate::ast::ast_json(&expr), &[], &[]));
    respond(&state, result)
}

fn parse_query_param(p: &Params) -> Result<promql_parser::parser::Expr, ApiError> {
    promql_parser::parser::parse(p.get("query").unwrap_or_default())
        .map_err(|msg| ApiError::BadData(format!("invalid parameter \"query\": {msg}")))
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
    let started = std::time::Instant::now();
    let (r, io) = strata_block::counting::measure(tokio::time::timeout(timeout, fut)).await;
    state.io_gets.inc_by(io.gets);
    state.io_bytes.inc_by(io.bytes);
    tracing::debug!(
        query = p.get("query").unwrap_or_default(),
        object_store_gets = io.gets,
        object_store_bytes = io.bytes,
        elapsed = ?started.elapsed(),
        "query done"
    );
    match r {
        Ok(r) => r.map_err(query_error),
        Err(_) => Err(ApiError::Timeout("query timed out in expression evaluation".into())),
    }
}
