//! The ruler's HTTP API: Prometheus' `/api/v1/rules` (filters `type`,
//! `rule_name[]`, `rule_group[]`, `file[]`) and `/api/v1/alerts` with
//! Prometheus' JSON, and the per-tenant management API (`X-Scope-OrgID`):
//! `GET|POST|DELETE /api/v1/rules/{namespace}`, `GET|DELETE
//! /api/v1/rules/{namespace}/{group}`. Posted groups are validated (400 with
//! the reason, nothing changed), stored, and applied at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use strata_common::tenant_of;

use crate::gofmt::{ZERO_TIME, format_e, rfc3339};
use crate::group::{AlertState, Group, lock};
use crate::rulefile::{RuleKind, parse_single_group};
use crate::{Ruler, RulerError};

/// The ruler's routes.
pub fn router(ruler: Arc<Ruler>) -> Router {
    Router::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/rules/{namespace}", get(get_namespace).post(post_group).delete(delete_namespace))
        .route("/api/v1/rules/{namespace}/{group}", get(get_group).delete(delete_group))
        .with_state(ruler)
}

#[derive(Serialize)]
struct ApiAlert {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    state: &'static str,
    #[serde(rename = "activeAt", skip_serializing_if = "Option::is_none")]
    active_at: Option<String>,
    #[serde(rename = "keepFiringSince", skip_serializing_if = "Option::is_none")]
    keep_firing_since: Option<String>,
    value: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ApiRule {
    Alerting {
        state: &'static str,
        name: String,
        query: String,
        #[serde(serialize_with = "go_float")]
        duration: f64,
        #[serde(rename = "keepFiringFor", serialize_with = "go_float")]
        keep_firing_for: f64,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        alerts: Vec<ApiAlert>,
        health: &'static str,
        #[serde(rename = "lastError", skip_serializing_if = "String::is_empty")]
        last_error: String,
        #[serde(rename = "evaluationTime", serialize_with = "go_float")]
        evaluation_time: f64,
        #[serde(rename = "lastEvaluation")]
        last_evaluation: String,
        #[serde(rename = "type")]
        kind: &'static str,
    },
    Recording {
        name: String,
        query: String,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
        health: &'static str,
        #[serde(rename = "lastError", skip_serializing_if = "String::is_empty")]
        last_error: String,
        #[serde(rename = "evaluationTime", serialize_with = "go_float")]
        evaluation_time: f64,
        #[serde(rename = "lastEvaluation")]
        last_evaluation: String,
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

#[derive(Serialize)]
struct ApiGroup {
    name: String,
    file: String,
    rules: Vec<ApiRule>,
    #[serde(serialize_with = "go_float")]
    interval: f64,
    limit: usize,
    #[serde(rename = "evaluationTime", serialize_with = "go_float")]
    evaluation_time: f64,
    #[serde(rename = "lastEvaluation")]
    last_evaluation: String,
}

/// Serializes a float as Go's `encoding/json` does: integral values without `.0`.
fn go_float<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 { s.serialize_i64(*v as i64) } else { s.serialize_f64(*v) }
}

fn time_or_zero(ms: i64) -> String {
    if ms == 0 { ZERO_TIME.to_owned() } else { rfc3339(ms) }
}

fn labels_map(l: &strata_model::Labels) -> BTreeMap<String, String> {
    l.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
}

fn api_alerts(r: &crate::group::RuleState) -> Vec<ApiAlert> {
    let mut v: Vec<&crate::group::Alert> = r.active.values().filter(|a| a.state != AlertState::Inactive).collect();
    v.sort_by(|a, b| a.labels.cmp(&b.labels));
    v.into_iter()
        .map(|a| ApiAlert {
            labels: labels_map(&a.labels),
            annotations: a.annotations.clone(),
            state: a.state.as_str(),
            active_at: Some(rfc3339(a.active_at)),
            keep_firing_since: (a.keep_firing_since != 0).then(|| rfc3339(a.keep_firing_since)),
            value: format_e(a.value),
        })
        .collect()
}

fn json_ok(data: &serde_json::Value) -> Response {
    let body = serde_json::json!({"status": "success", "data": data});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn json_err(status: StatusCode, kind: &str, msg: &str) -> Response {
    let body = serde_json::json!({"status": "error", "errorType": kind, "error": msg});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error_response(e: &RulerError) -> Response {
    match e {
        RulerError::Invalid(_) | RulerError::BadRequest(_) => {
            json_err(StatusCode::BAD_REQUEST, "bad_data", &e.to_string())
        }
        RulerError::NotFound(_) => json_err(StatusCode::NOT_FOUND, "not_found", &e.to_string()),
        RulerError::Store(_) => json_err(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()),
    }
}

fn params(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

async fn rules(State(ruler): State<Arc<Ruler>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let tenant = tenant_of(&headers, &ruler.settings().default_tenant);
    let ps = params(q.as_deref());
    let all = |k: &str| -> Vec<String> { ps.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect() };
    let typ = ps.iter().find(|(k, _)| k == "type").map(|(_, v)| v.to_lowercase()).unwrap_or_default();
    if !typ.is_empty() && typ != "alert" && typ != "record" {
        ruler.count_rejected();
        return json_err(StatusCode::BAD_REQUEST, "bad_data", &format!("not supported value {typ:?}"));
    }
    let (names, groups_f, files) = (all("rule_name[]"), all("rule_group[]"), all("file[]"));
    let filtered = !typ.is_empty() || !names.is_empty() || !groups_f.is_empty() || !files.is_empty();
    let mut out = Vec::new();
    for g in ruler.groups(&tenant).await {
        if (!groups_f.is_empty() && !groups_f.contains(&g.def.name))
            || (!files.is_empty() && !files.contains(&g.def.file))
        {
            continue;
        }
        let api = api_group(&g, &typ, &names);
        if filtered && api.rules.is_empty() {
            continue;
        }
        out.push(api);
    }
    json_ok(&serde_json::json!({ "groups": out }))
}

fn api_group(g: &Group, typ: &str, names: &[String]) -> ApiGroup {
    let st = lock(&g.state);
    let mut rules = Vec::new();
    for (r, rs) in g.def.rules.iter().zip(&st.rules) {
        if !names.is_empty() && !names.contains(&r.name) {
            continue;
        }
        match &r.kind {
            RuleKind::Alerting { hold, annotations, keep_firing_for } => {
                if typ == "record" {
                    continue;
                }
                let alerts = api_alerts(rs);
                let state = rs.active.values().map(|a| a.state).max().map_or("inactive", AlertState::as_str);
                rules.push(ApiRule::Alerting {
                    state,
                    name: r.name.clone(),
                    query: r.expr.clone(),
                    duration: hold.as_secs_f64(),
                    keep_firing_for: keep_firing_for.as_secs_f64(),
                    labels: r.labels.clone(),
                    annotations: annotations.clone(),
                    alerts,
                    health: rs.health.as_str(),
                    last_error: rs.last_error.clone(),
                    evaluation_time: rs.eval_seconds,
                    last_evaluation: time_or_zero(rs.last_eval_ms),
                    kind: "alerting",
                });
            }
            RuleKind::Recording => {
                if typ == "alert" {
                    continue;
                }
                rules.push(ApiRule::Recording {
                    name: r.name.clone(),
                    query: r.expr.clone(),
                    labels: r.labels.clone(),
                    health: rs.health.as_str(),
                    last_error: rs.last_error.clone(),
                    evaluation_time: rs.eval_seconds,
                    last_evaluation: time_or_zero(rs.last_eval_ms),
                    kind: "recording",
                });
            }
        }
    }
    ApiGroup {
        name: g.def.name.clone(),
        file: g.def.file.clone(),
        rules,
        interval: g.def.interval.as_secs_f64(),
        limit: g.def.limit,
        evaluation_time: st.eval_seconds,
        last_evaluation: time_or_zero(st.last_eval_ms),
    }
}

async fn alerts(State(ruler): State<Arc<Ruler>>, headers: HeaderMap) -> Response {
    let tenant = tenant_of(&headers, &ruler.settings().default_tenant);
    let mut out = Vec::new();
    for g in ruler.groups(&tenant).await {
        let st = lock(&g.state);
        for (r, rs) in g.def.rules.iter().zip(&st.rules) {
            if r.is_alerting() {
                out.extend(api_alerts(rs));
            }
        }
    }
    json_ok(&serde_json::json!({ "alerts": out }))
}

/// A namespace's groups as YAML: `<namespace>:\n- <group>...`.
fn namespace_yaml(namespace: &str, groups: &[String]) -> String {
    let mut out = format!("{}:\n", serde_json::Value::String(namespace.to_owned()));
    for g in groups {
        out.push_str(&indent_group(g));
    }
    out
}

fn indent_group(g: &str) -> String {
    let mut out = String::new();
    for (i, line) in g.trim_end().lines().enumerate() {
        out.push_str(if i == 0 { "- " } else { "  " });
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn yaml_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], text).into_response()
}

async fn get_namespace(State(ruler): State<Arc<Ruler>>, headers: HeaderMap, Path(ns): Path<String>) -> Response {
    let tenant = tenant_of(&headers, &ruler.settings().default_tenant);
    match ruler.store().get(&tenant, &ns).await {
        Ok(Some(groups)) => yaml_response(namespace_yaml(&ns, &groups)),
        Ok(None) => error_response(&RulerError::NotFound("no rule groups found".into())),
        Err(e) => error_response(&e),
    }
}

fn group_name(ruler: &Ruler, ns: &str, text: &str) -> Option<String> {
    parse_single_group(ns, text, ruler.default_interval()).ok().map(|g| g.name)
}

async fn get_group(
    State(ruler): State<Arc<Ruler>>,
    headers: HeaderMap,
    Path((ns, group)): Path<(String, String)>,
) -> Response {
    let tenant = tenant_of(&headers, &ruler.settings().default_tenant);
    match ruler.store().get(&tenant, &ns).await {
        Ok(Some(groups)) => match groups.iter().find(|g| group_name(&ruler, &ns, g).as_deref() == Some(&group)) {
            Some(g) => yaml_response(format!("{}\n", g.trim_end())),
            None => error_response(&RulerError::NotFound("group does not exist".into())),
        },
        Ok(None) => error_response(&RulerError::NotFound("group does not exist".into())),
        Err(e) => error_response(&e),
    }
}

async fn post_group(
    State(ruler): State<Arc<Ruler>>,
    headers: HeaderMap,
    Path(ns): Path<String>,
    body: String,
) -> Response {
    let tenant = tenant_of(&headers, &ruler.settings().default_tenant);
    let group = match parse_single_group(&ns, &body, ruler.default_interval()) {
        Ok(g) => g,
        Err(e) => {
            ruler.count_rejected();
            return error_response(&RulerError::Invalid(e));
        }
    };
    if group.name.is_empty() {
        ruler.count_rejected();
        return error_response(&RulerError::BadRequest("invalid rule group: Groupname must not be empty".into()));
    }
    let mut groups = match ruler.store().get(&tenant, &ns).await {
        Ok(g) => g.unwrap_or_default(),
        Err(e) => return error_response(&e),
    };
    let text = body.trim_end().to_owned() + "\n";
    match groups.iter().position(|g| group_name(&ruler, &ns, g).as_deref() == Some(&group.name)) {
        Some(i) => groups[i] = text,
        None => groups.push(text),
    }
    if let Err(e) = ruler.store().put(&tenant, &ns, &groups).await {
        return error_response(&e);
    }
    if let Err(e) = ruler.sync().await {
        return error_response(&e);
    }
    (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], r#"{"status":"success","data":null}"#)
        .into_response()
}

async fn delete_namespace(State(ruler): State<Arc<Ruler>>, headers: HeaderMap, Path(ns): Path<String>) -> Response {
    let tenant = tenant_of(&headers, &ruler.settings().default_tenant);
    match ruler.store().get(&tenant, &ns).await {
        Ok(Some(_)) => {}
        Ok(None) => return error_response(&RulerError::NotFound("no rule groups found".into())),
        Err(e) => return error_response(&e),
    }
    if let Err(e) = ruler.store().delete(&tenant, &ns).await {
        return error_response(&e);
    }
    if let Err(e) = ruler.sync().await {
        return error_response(&e);
    }
    (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], r#"{"status":"success","data":null}"#)
        .into_response()
}

async fn delete_group(
    State(ruler): State<Arc<Ruler>>,
    headers: HeaderMap,
    Path((ns, group)): Path<(String, String)>,
) -> Response {
    let tenant = tenant_of(&headers, &ruler.settings().default_tenant);
    let mut groups = match ruler.store().get(&tenant, &ns).await {
        Ok(Some(g)) => g,
        Ok(None) => return error_response(&RulerError::NotFound("group does not exist".into())),
        Err(e) => return error_response(&e),
    };
    let before = groups.len();
    groups.retain(|g| group_name(&ruler, &ns, g).as_deref() != Some(&group));
    if groups.len() == before {
        return error_response(&RulerError::NotFound("group does not exist".into()));
    }
    if let Err(e) = ruler.store().put(&tenant, &ns, &groups).await {
        return error_response(&e);
    }
    if let Err(e) = ruler.sync().await {
        return error_response(&e);
    }
    (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], r#"{"status":"success","data":null}"#)
        .into_response()
}
