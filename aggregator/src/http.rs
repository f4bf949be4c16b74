//! The aggregator's bulk HTTP endpoints, merged into the server's router:
//!
//! - `POST /api/v1/import/openmetrics`: the body is an OpenMetrics document
//!   with a timestamp on every sample ([`crate::import`]); the tenant comes
//!   from `X-Scope-OrgID` (default `anonymous`). Answers Prometheus-style
//!   JSON: `{"status":"success","data":{"samples":…}}`, or status 400 with
//!   `errorType` `bad_data` and the offending line.
//! - `GET /api/v1/export?match[]=…&start=…&end=…`: the matching series as
//!   OpenMetrics text with timestamps ([`crate::export`]); `start` and `end`
//!   are Unix seconds (default: everything).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::Expr;
use strata_model::{DEFAULT_TENANT, METRIC_NAME, MatchOp, Matcher, Select, merge_series_sets};

use crate::{AggregatorError, LocalStorage, export, import};

/// Largest import body accepted, bytes.
pub const IMPORT_MAX_BYTES: usize = 512 << 20;

/// The import and export routes over `storage`.
pub fn router(storage: LocalStorage) -> Router {
    Router::new()
        .route("/api/v1/import/openmetrics", post(import_handler).layer(DefaultBodyLimit::max(IMPORT_MAX_BYTES)))
        .route("/api/v1/export", get(export_handler))
        .with_state(storage)
}

fn tenant(headers: &HeaderMap) -> String {
    strata_common::tenant_of(headers, DEFAULT_TENANT)
}

/// Prometheus' response envelope, fields in Prometheus' order.
#[derive(serde::Serialize)]
struct Envelope<'a, T: serde::Serialize> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
    #[serde(rename = "errorType", skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &Envelope<'_, T>) -> Response {
    let text = serde_json::to_string(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response::<()>(status, &Envelope { status: "error", data: None, error_type: Some(kind), error: Some(message) })
}

async fn import_handler(State(storage): State<LocalStorage>, headers: HeaderMap, body: Bytes) -> Response {
    let tenant = tenant(&headers);
    let parsed = tokio::task::spawn_blocking(move || import::parse(&body, &mut |_| {})).await;
    let parsed = match parsed {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, "bad_data", &e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()),
    };
    let range = storage.settings().block_duration_ms;
    match import::write(storage.blocks(), &tenant, parsed, range, &mut |_| {}).await {
        Ok(s) => {
            tracing::info!(tenant, "{s}");
            let data = serde_json::json!({
                "samples": s.samples, "series": s.series, "blocks": s.blocks, "bytes": s.bytes,
                "duplicates": s.duplicates,
            });
            json_response(
                StatusCode::OK,
                &Envelope { status: "success", data: Some(data), error_type: None, error: None },
            )
        }
        Err(e @ AggregatorError::Import { .. }) => error(StatusCode::BAD_REQUEST, "bad_data", &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()),
    }
}

/// The matcher sets of a series selector (`up{job="a"}`), one per `or` group.
pub fn parse_selector(s: &str) -> Result<Vec<Vec<Matcher>>, String> {
    let Expr::VectorSelector(vs) = promql_parser::parser::parse(s)? else {
        return Err(format!("{s:?} is not a series selector"));
    };
    let name = vs.name.as_ref().map(|n| Matcher::equal(METRIC_NAME, n.clone()));
    let mut groups: Vec<&[promql_parser::label::Matcher]> = Vec::new();
    if vs.matchers.or_matchers.is_empty() {
        groups.push(&vs.matchers.matchers);
    } else {
        groups.extend(vs.matchers.or_matchers.iter().map(Vec::as_slice));
    }
    groups
        .into_iter()
        .map(|g| {
            let mut out: Vec<Matcher> = name.iter().cloned().collect();
            for m in g {
                let op = match m.op {
                    PMatchOp::Equal => MatchOp::Equal,
                    PMatchOp::NotEqual => MatchOp::NotEqual,
                    PMatchOp::Re(_) => MatchOp::Regex,
                    PMatchOp::NotRe(_) => MatchOp::NotRegex,
                };
                out.push(Matcher::new(op, m.name.clone(), m.value.clone()).map_err(|e| e.to_string())?);
            }
            Ok(out)
        })
        .collect()
}

fn parse_time(name: &str, v: &str) -> Result<i64, String> {
    let secs: f64 = v.parse().map_err(|_| format!("invalid parameter {name:?}: {v:?} is not Unix seconds"))?;
    if !secs.is_finite() {
        return Err(format!("invalid parameter {name:?}: {v:?}"));
    }
    Ok((secs * 1000.0).round() as i64)
}

async fn export_handler(
    State(storage): State<LocalStorage>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let tenant = tenant(&headers);
    let (mut mint, mut maxt) = (i64::MIN, i64::MAX);
    let mut sets = Vec::new();
    for (k, v) in &params {
        let r = match k.as_str() {
            "match[]" => parse_selector(v).map(|s| sets.extend(s)),
            "start" => parse_time(k, v).map(|t| mint = t),
            "end" => parse_time(k, v).map(|t| maxt = t),
            _ => Ok(()),
        };
        if let Err(e) = r {
            return error(StatusCode::BAD_REQUEST, "bad_data", &e);
        }
    }
    if sets.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_data", "no match[] parameter provided");
    }
    let mut results = Vec::with_capacity(sets.len());
    for m in &sets {
        match storage.select(&tenant, m, mint, maxt).await {
            Ok(s) => results.push(s),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()),
        }
    }
    let text = export::to_openmetrics(&merge_series_sets(results));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_into_matcher_sets() {
        let sets = parse_selector(r#"up{job=~"a|b", x!="1"}"#).expect("parse");
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].len(), 3);
        assert!(parse_selector("rate(up[5m])").is_err());
        assert!(parse_selector("up{").is_err());
        assert_eq!(parse_time("start", "1.5"), Ok(1500));
        assert!(parse_time("start", "x").is_err());
    }
}
