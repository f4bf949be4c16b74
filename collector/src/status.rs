//! Scrape status: `/api/v1/targets` and `/api/v1/targets/metadata` in
//! Prometheus' exact JSON.
//!
//! The scrape manager publishes each pool's active targets (with a shared
//! [`Health`] cell their loop updates after every scrape) and dropped
//! targets into a [`ScrapeStatus`]; [`status_router`] serves it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use strata_common::format_duration;
use strata_model::{Labels, MatchOp, Matcher};

use crate::target::{DroppedTarget, SCRAPE_INTERVAL_LABEL, SCRAPE_TIMEOUT_LABEL, Target};

/// A target's health, as Prometheus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthState {
    /// Not scraped yet.
    #[default]
    Unknown,
    /// The last scrape succeeded.
    Up,
    /// The last scrape failed.
    Down,
}

impl HealthState {
    /// `up`, `down` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// What the last scrape of a target found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// Up, down or unknown.
    pub state: HealthState,
    /// Why the last scrape failed ("" when it did not).
    pub last_error: String,
    /// When the last scrape started, in Unix milliseconds.
    pub last_scrape_ms: Option<i64>,
    /// How long it took, in seconds.
    pub last_duration: f64,
    /// Metric metadata of the last successful scrape, by metric family name.
    pub metadata: Arc<BTreeMap<String, MetricMetadata>>,
}

/// What a page's `# TYPE`, `# HELP` and `# UNIT` lines say about one metric family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricMetadata {
    /// `counter`, `gauge`, ..., `unknown`.
    pub kind: &'static str,
    /// The help text.
    pub help: String,
    /// The unit (OpenMetrics).
    pub unit: String,
}

impl MetricMetadata {
    /// A family with no `TYPE` (yet): `unknown`, no help, no unit.
    pub fn unknown() -> Self {
        Self { kind: "unknown", help: String::new(), unit: String::new() }
    }
}

/// A health cell shared by a target's loop and the status API.
pub type SharedHealth = Arc<Mutex<Health>>;

/// One active target and its health.
#[derive(Debug, Clone)]
pub struct ActiveTarget {
    /// The target.
    pub target: Target,
    /// Its last scrape.
    pub health: SharedHealth,
}

/// The targets of one scrape pool (job).
#[derive(Debug, Clone, Default)]
pub struct PoolStatus {
    /// Targets being scraped.
    pub active: Vec<ActiveTarget>,
    /// Targets relabeling dropped.
    pub dropped: Vec<DroppedTarget>,
}

/// All pools, shared between the scrape manager and the status API.
#[derive(Debug, Clone, Default)]
pub struct ScrapeStatus {
    pools: Arc<RwLock<BTreeMap<String, PoolStatus>>>,
}

impl ScrapeStatus {
    /// Empty status.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the status of one pool.
    pub fn set_pool(&self, pool: &str, status: PoolStatus) {
        if let Ok(mut p) = self.pools.write() {
            p.insert(pool.to_owned(), status);
        }
    }

    /// Forgets a pool (its job was removed).
    pub fn remove_pool(&self, pool: &str) {
        if let Ok(mut p) = self.pools.write() {
            p.remove(pool);
        }
    }

    /// A copy of every pool's status.
    pub fn snapshot(&self) -> BTreeMap<String, PoolStatus> {
        self.pools.read().map(|p| p.clone()).unwrap_or_default()
    }
}

/// How the status API rewrites loopback scrape URLs into `globalUrl`
/// (Prometheus' `GlobalURLOptions`, from its external URL).
#[derive(Debug, Clone)]
pub struct GlobalUrlOptions {
    /// The port this process listens on.
    pub listen_port: u16,
    /// The externally reachable scheme.
    pub scheme: String,
    /// The externally reachable `host:port`.
    pub host: String,
}

impl GlobalUrlOptions {
    /// This host's name and the port of `listen`, over plain HTTP.
    pub fn for_listen(listen: std::net::SocketAddr) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        Self { listen_port: listen.port(), scheme: "http".into(), host: format!("{host}:{}", listen.port()) }
    }
}

#[derive(Clone)]
struct ApiState {
    status: ScrapeStatus,
    global: GlobalUrlOptions,
}

/// `/api/v1/targets` and `/api/v1/targets/metadata`.
pub fn status_router(status: ScrapeStatus, global: GlobalUrlOptions) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/targets", axum::routing::get(targets))
        .route("/api/v1/targets/metadata", axum::routing::get(targets_metadata))
        .with_state(ApiState { status, global })
}

async fn targets(State(st): State<ApiState>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let state = q.get("state").map_or("any", String::as_str).to_ascii_lowercase();
    let pool_filter = q.get("scrapePool").filter(|p| !p.is_empty());
    let (show_active, show_dropped) = match state.as_str() {
        "active" => (true, false),
        "dropped" => (false, true),
        _ => (true, true),
    };
    let body =
        targets_json(&st.status.snapshot(), &st.global, show_active, show_dropped, pool_filter.map(String::as_str));
    json_response(json!({"status": "success", "data": body}))
}

/// `/api/v1/targets/metadata`: `match_target` (a selector over target
/// labels), `metric`, `limit` (number of targets), as Prometheus serves it.
async fn targets_metadata(State(st): State<ApiState>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let bad = |msg: String| api_error(axum::http::StatusCode::BAD_REQUEST, "bad_data", &msg);
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        None => None,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            Ok(_) => None,
            Err(_) => return bad("limit must be a number".into()),
        },
    };
    let matchers = match q.get("match_target").filter(|m| !m.is_empty()) {
        None => Vec::new(),
        Some(m) => match parse_target_selector(m) {
            Ok(ms) => ms,
            Err(e) => return bad(e),
        },
    };
    let metric = q.get("metric").map(String::as_str).unwrap_or("");
    let data = metadata_json(&st.status.snapshot(), &matchers, metric, limit);
    if data.is_empty() {
        return api_error(axum::http::StatusCode::NOT_FOUND, "not_found", "specified metadata not found");
    }
    json_response(json!({"status": "success", "data": data}))
}

/// The entries of `/api/v1/targets/metadata`.
pub fn metadata_json(
    pools: &BTreeMap<String, PoolStatus>,
    matchers: &[Matcher],
    metric: &str,
    limit: Option<usize>,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut targets = 0usize;
    for st in pools.values() {
        for a in &st.active {
            if limit.is_some_and(|l| targets >= l) {
                return out;
            }
            if !matchers.iter().all(|m| m.matches_labels(&a.target.labels)) {
                continue;
            }
            targets += 1;
            let md = a.health.lock().map(|h| Arc::clone(&h.metadata)).unwrap_or_default();
            let target = label_map(&a.target.labels);
            if metric.is_empty() {
                for (name, m) in md.iter() {
                    out.push(json!({"target": target, "metric": name, "type": m.kind, "help": m.help, "unit": m.unit}));
                }
            } else if let Some(m) = md.get(metric) {
                out.push(json!({"target": target, "type": m.kind, "help": m.help, "unit": m.unit}));
            }
        }
    }
    out
}

/// A label selector such as `{job="node", instance=~".*:9100"}`.
fn parse_target_selector(s: &str) -> Result<Vec<Matcher>, String> {
    use promql_parser::label::MatchOp as P;
    let expr = promql_parser::parser::parse(s)?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!("invalid parameter \"match_target\": {s:?} is not a label selector"));
    };
    let mut out = Vec::new();
    if let Some(name) = &vs.name {
        out.push(Matcher::equal(strata_model::METRIC_NAME, name.clone()));
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            P::Equal => MatchOp::Equal,
            P::NotEqual => MatchOp::NotEqual,
            P::Re(_) => MatchOp::Regex,
            P::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(Matcher::new(op, m.name.clone(), m.value.clone()).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn json_response(v: Value) -> Response {
    let mut resp = axum::Json(v).into_response();
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    resp
}

fn api_error(status: axum::http::StatusCode, kind: &str, msg: &str) -> Response {
    let mut resp = json_response(json!({"status": "error", "errorType": kind, "error": msg}));
    *resp.status_mut() = status;
    resp
}

/// The `data` object of `/api/v1/targets`.
pub fn targets_json(
    pools: &BTreeMap<String, PoolStatus>,
    global: &GlobalUrlOptions,
    show_active: bool,
    show_dropped: bool,
    pool_filter: Option<&str>,
) -> Value {
    let mut active = Vec::new();
    let mut dropped = Vec::new();
    let mut dropped_counts = Map::new();
    for (pool, st) in pools {
        dropped_counts.insert(pool.clone(), json!(st.dropped.len()));
        if pool_filter.is_some_and(|f| f != pool) {
            continue;
        }
        if show_active {
            for a in &st.active {
                let h = a.health.lock().map(|h| h.clone()).unwrap_or_default();
                active.push(json!({
                    "discoveredLabels": label_map(&a.target.discovered),
                    "labels": label_map(&a.target.labels),
                    "scrapePool": pool,
                    "scrapeUrl": a.target.url,
                    "globalUrl": global_url(&a.target.url, global),
                    "lastError": h.last_error,
                    "lastScrape": h.last_scrape_ms.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339_nano),
                    "lastScrapeDuration": h.last_duration,
                    "health": h.state.as_str(),
                    // As written in the labels (`1500ms` stays `1500ms`), as Prometheus shows them.
                    "scrapeInterval": a.target.all_labels.get(SCRAPE_INTERVAL_LABEL).map_or_else(|| format_duration(a.target.interval), str::to_owned),
                    "scrapeTimeout": a.target.all_labels.get(SCRAPE_TIMEOUT_LABEL).map_or_else(|| format_duration(a.target.timeout), str::to_owned),
                }));
            }
        }
        if show_dropped {
            for d in &st.dropped {
                dropped.push(json!({"discoveredLabels": label_map(&d.discovered), "scrapePool": pool}));
            }
        }
    }
    json!({"activeTargets": active, "droppedTargets": dropped, "droppedTargetCounts": dropped_counts})
}

fn label_map(l: &Labels) -> Value {
    Value::Object(l.iter().map(|l| (l.name.clone(), Value::String(l.value.clone()))).collect())
}

/// Prometheus' `getGlobalURL`: a loopback host becomes the external host.
pub fn global_url(url: &str, opts: &GlobalUrlOptions) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (hostport, tail) = rest.find(['/', '?']).map_or((rest, ""), |i| rest.split_at(i));
    let Some((host, port)) = hostport.rsplit_once(':') else { return url.to_owned() };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return url.to_owned();
    }
    if port == opts.listen_port.to_string() {
        return format!("{}://{}{tail}", opts.scheme, opts.host);
    }
    let ext_host = opts.host.rsplit_once(':').map_or(opts.host.as_str(), |(h, _)| h);
    format!("{scheme}://{ext_host}:{port}{tail}")
}

/// Go's `time.Time` JSON in UTC: RFC 3339 with trailing zeros of the fraction trimmed.
pub fn rfc3339_nano(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let frac_ms = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", sod / 3600, sod % 3600 / 60, sod % 60);
    if frac_ms > 0 {
        let f = format!("{frac_ms:03}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::config::ScrapeJob;
    use crate::target::labels_of;

    #[test]
    fn times_are_go_rfc3339() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(1_700_000_000_120), "2023-11-14T22:13:20.12Z");
        assert_eq!(rfc3339_nano(951_782_400_001), "2000-02-29T00:00:00.001Z");
    }

    #[test]
    fn global_url_replaces_loopback_hosts() {
        let o = GlobalUrlOptions { listen_port: 9090, scheme: "http".into(), host: "box:9090".into() };
        assert_eq!(global_url("http://127.0.0.1:9100/metrics", &o), "http://box:9100/metrics");
        assert_eq!(global_url("https://localhost:9090/metrics?a=b", &o), "http://box:9090/metrics?a=b");
        assert_eq!(global_url("http://node:9100/metrics", &o), "http://node:9100/metrics");
    }

    #[tokio::test]
    async fn targets_endpoint_filters_by_state() {
        let job = ScrapeJob::new("j", Duration::from_secs(15), Duration::from_secs(10));
        let t = Target::from_labels(&job, &labels_of(&[("__address__", "h:1")])).expect("target");
        let status = ScrapeStatus::new();
        let health = Arc::new(Mutex::new(Health {
            state: HealthState::Down,
            last_error: "boom".into(),
            last_scrape_ms: Some(1000),
            last_duration: 0.5,
            ..Default::default()
        }));
        status.set_pool(
            "j",
            PoolStatus {
                active: vec![ActiveTarget { target: t, health }],
                dropped: vec![DroppedTarget { discovered: labels_of(&[("__address__", "x:1")]) }],
            },
        );
        let o = GlobalUrlOptions { listen_port: 1, scheme: "http".into(), host: "box:1".into() };
        let all = targets_json(&status.snapshot(), &o, true, true, None);
        let a = &all["activeTargets"][0];
        assert_eq!(a["labels"], json!({"instance": "h:1", "job": "j"}));
        assert_eq!(a["discoveredLabels"]["__scrape_interval__"], "15s");
        assert_eq!(a["health"], "down");
        assert_eq!(a["lastError"], "boom");
        assert_eq!(a["lastScrape"], "1970-01-01T00:00:01Z");
        assert_eq!(a["scrapeUrl"], "http://h:1/metrics");
        assert_eq!(a["scrapeTimeout"], "10s");
        assert_eq!(all["droppedTargets"][0]["discoveredLabels"], json!({"__address__": "x:1"}));
        assert_eq!(all["droppedTargetCounts"], json!({"j": 1}));
        let active_only = targets_json(&status.snapshot(), &o, true, false, None);
        assert_eq!(active_only["droppedTargets"], json!([]));
        let other_pool = targets_json(&status.snapshot(), &o, true, true, Some("x"));
        assert_eq!(other_pool["activeTargets"], json!([]));

        // Metadata of the target's last scrape.
        if let Some(a) = status.snapshot().get("j").and_then(|p| p.active.first().cloned())
            && let Ok(mut h) = a.health.lock()
        {
            let mut md = BTreeMap::new();
            md.insert("m".to_owned(), MetricMetadata { kind: "counter", help: "Help.".into(), unit: String::new() });
            md.insert("g".to_owned(), MetricMetadata::unknown());
            h.metadata = Arc::new(md);
        }
        let all = metadata_json(&status.snapshot(), &[], "", None);
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[1],
            json!({"target": {"instance": "h:1", "job": "j"}, "metric": "m", "type": "counter", "help": "Help.", "unit": ""})
        );
        let one = metadata_json(&status.snapshot(), &parse_target_selector("{job=~\"j|k\"}").expect("sel"), "m", None);
        assert_eq!(
            one,
            [json!({"target": {"instance": "h:1", "job": "j"}, "type": "counter", "help": "Help.", "unit": ""})]
        );
        assert!(
            metadata_json(&status.snapshot(), &parse_target_selector("{job=\"x\"}").expect("sel"), "", None).is_empty()
        );
        assert!(metadata_json(&status.snapshot(), &[], "", Some(0)).is_empty());
        assert!(parse_target_selector("1 + 1").is_err());

        // Through the router.
        let app = status_router(status, o);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let bytes = reqwest::get(format!("http://{addr}/api/v1/targets?state=dropped"))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        let body: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body["status"], "success");
        assert_eq!(body["data"]["activeTargets"], json!([]));
        assert_eq!(body["data"]["droppedTargets"].as_array().map(Vec::len), Some(1));
        let resp = reqwest::get(format!("http://{addr}/api/v1/targets/metadata?metric=nope")).await.expect("get");
        assert_eq!(resp.status().as_u16(), 404);
        let body: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
        assert_eq!(body["errorType"], "not_found");
        let resp = reqwest::get(format!("http://{addr}/api/v1/targets/metadata?match_target=%7Bjob%3D%22j%22%7D"))
            .await
            .expect("get");
        assert_eq!(resp.status().as_u16(), 200);
    }
}
