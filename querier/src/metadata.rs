//! `/api/v1/series`, `/api/v1/labels` and `/api/v1/label/<name>/values`,
//! as Prometheus 3 serves them: `match[]` (repeatable; required for
//! `series`), `start` and `end` (all time when missing), and `limit` (0 or
//! missing: no limit; a truncated answer carries the warning "results
//! truncated due to limit").

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use strata_model::{Labels, Matcher, merge_label_sets};

use crate::ApiError;
use crate::api::{ApiState, Params, respond, tenant};
use crate::json::{success_body, write_labels, write_str_array};
use crate::params::time_param;

/// The warning of an answer cut short by `limit`.
pub const TRUNCATED_WARNING: &str = "results truncated due to limit";

/// The parameters every metadata endpoint takes.
#[derive(Debug)]
struct MetaParams {
    /// One matcher set per `match[]`; empty when none was given.
    sets: Vec<Vec<Matcher>>,
    start: i64,
    end: i64,
    /// 0: no limit.
    limit: usize,
}

/// `limit` as Go's `strconv.Atoi` reads it; negative values are refused.
fn limit_param(p: &Params) -> Result<usize, ApiError> {
    let s = match p.get("limit") {
        None | Some("") => return Ok(0),
        Some(s) => s,
    };
    let bad = |why: &str| ApiError::BadData(format!("invalid parameter \"limit\": {why}"));
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(&format!("strconv.Atoi: parsing {s:?}: invalid syntax")));
    }
    let n: i64 = s.parse().map_err(|_| bad(&format!("strconv.Atoi: parsing {s:?}: value out of range")))?;
    if n < 0 {
        return Err(bad("limit must be non-negative"));
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// `match[]` values as matcher sets; each must have a matcher that does not
/// match the empty string.
fn match_param(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let all_empty = || {
        ApiError::BadData("invalid parameter \"match[]\": match[] must contain at least one non-empty matcher".into())
    };
    let mut sets = Vec::new();
    for s in p.get_all("match[]") {
        let parsed = strata_promql::parse_selector(s).map_err(|e| {
            // The parser checks this itself; answer with Prometheus' words.
            let msg = e.to_string();
            if msg.contains("must contain at least one non-empty matcher") {
                all_empty()
            } else {
                ApiError::BadData(format!("invalid parameter \"match[]\": {msg}"))
            }
        })?;
        for set in parsed {
            if !set.iter().any(|m| !m.matches_empty()) {
                return Err(all_empty());
            }
            sets.push(set);
        }
    }
    Ok(sets)
}

fn meta_params(p: &Params) -> Result<MetaParams, ApiError> {
    let start = time_param("start", p.get("start"), i64::MIN)?;
    let end = time_param("end", p.get("end"), i64::MAX)?;
    let sets = match_param(p)?;
    let limit = limit_param(p)?;
    Ok(MetaParams { sets, start, end, limit })
}

/// Cuts `items` to `limit`, returning the warnings to send.
fn truncate<T>(items: &mut Vec<T>, limit: usize) -> Vec<String> {
    if limit > 0 && items.len() > limit {
        items.truncate(limit);
        vec![TRUNCATED_WARNING.to_owned()]
    } else {
        Vec::new()
    }
}

fn storage_error(e: strata_model::SelectError) -> ApiError {
    match e {
        strata_model::SelectError::Limit(msg) => ApiError::Execution(msg),
        other => ApiError::Internal(other.to_string()),
    }
}

/// `GET/POST /api/v1/series`.
pub(crate) async fn series(State(state): State<ApiState>, headers: HeaderMap, p: Params) -> Response {
    let result = async {
        if p.get_all("match[]").is_empty() {
            return Err(ApiError::BadData("no match[] parameter provided".into()));
        }
        let mp = meta_params(&p)?;
        let tenant = tenant(&headers);
        let storage = state.deps.storage.as_ref();
        let mut sets: Vec<Vec<Labels>> = Vec::with_capacity(mp.sets.len());
        for set in &mp.sets {
            sets.push(storage.series(&tenant, set, mp.start, mp.end).await.map_err(storage_error)?);
        }
        let mut all = merge_label_sets(sets);
        let warnings = truncate(&mut all, mp.limit);
        let mut data = String::with_capacity(64 * all.len() + 2);
        data.push('[');
        for (i, l) in all.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            write_labels(&mut data, l);
        }
        data.push(']');
        Ok(success_body(&data, &warnings, &[]))
    }
    .await;
    respond(&state, result)
}

/// `GET/POST /api/v1/labels`.
pub(crate) async fn labels(State(state): State<ApiState>, headers: HeaderMap, p: Params) -> Response {
    let result = async {
        let mp = meta_params(&p)?;
        let tenant = tenant(&headers);
        let storage = state.deps.storage.as_ref();
        let mut names: BTreeSet<String> = BTreeSet::new();
        if mp.sets.is_empty() {
            names.extend(storage.label_names(&tenant, &[], mp.start, mp.end).await.map_err(storage_error)?);
        }
        for set in &mp.sets {
            names.extend(storage.label_names(&tenant, set, mp.start, mp.end).await.map_err(storage_error)?);
        }
        let mut names: Vec<String> = names.into_iter().collect();
        let warnings = truncate(&mut names, mp.limit);
        let mut data = String::new();
        write_str_array(&mut data, &names);
        Ok(success_body(&data, &warnings, &[]))
    }
    .await;
    respond(&state, result)
}

/// `GET /api/v1/label/<name>/values`.
pub(crate) async fn label_values(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let result = async {
        if name.is_empty() {
            return Err(ApiError::BadData(format!("invalid label name: {name:?}")));
        }
        let mp = meta_params(&p)?;
        let tenant = tenant(&headers);
        let storage = state.deps.storage.as_ref();
        let mut values: BTreeSet<String> = BTreeSet::new();
        if mp.sets.is_empty() {
            values.extend(storage.label_values(&tenant, &name, &[], mp.start, mp.end).await.map_err(storage_error)?);
        }
        for set in &mp.sets {
            values.extend(storage.label_values(&tenant, &name, set, mp.start, mp.end).await.map_err(storage_error)?);
        }
        let mut values: Vec<String> = values.into_iter().collect();
        let warnings = truncate(&mut values, mp.limit);
        let mut data = String::new();
        write_str_array(&mut data, &values);
        Ok(success_body(&data, &warnings, &[]))
    }
    .await;
    respond(&state, result)
}
