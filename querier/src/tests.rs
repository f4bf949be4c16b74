//! The router over HTTP: every endpoint answered by a real server on a
//! 127.0.0.1 port, requested with raw HTTP/1.1, bodies compared byte for
//! byte with what Prometheus sends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata_common::{ManualClock, Telemetry};
use strata_model::{Labels, Sample, Select};
use strata_promql::memstore::MemStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{QuerierDeps, QuerierSettings, api_router};

fn store() -> MemStore {
    let st = MemStore::new();
    let add = |pairs: &[(&str, &str)], ts: &[i64]| {
        let l = Labels::from_pairs(pairs.iter().copied()).expect("labels");
        st.add("anonymous", l, ts.iter().map(|&t| Sample::new(t, t as f64)));
    };
    add(&[("__name__", "up"), ("job", "node"), ("instance", "a")], &[0, 15_000, 30_000]);
    add(&[("__name__", "up"), ("job", "node"), ("instance", "b")], &[0, 15_000]);
    add(&[("__name__", "up"), ("job", "api"), ("instance", "c")], &[100_000]);
    add(&[("__name__", "http_requests_total"), ("job", "api"), ("code", "200")], &[0, 15_000, 30_000]);
    st
}

/// Serves the router over `st` with `max_samples`; returns its address.
async fn serve(st: MemStore, max_samples: usize) -> std::net::SocketAddr {
    let mut flags = BTreeMap::new();
    flags.insert("query.max-samples".to_owned(), max_samples.to_string());
    flags.insert("web.listen-address".to_owned(), "127.0.0.1:9090".to_owned());
    let deps = QuerierDeps {
        storage: Arc::new(st) as Arc<dyn Select>,
        telemetry: Telemetry::empty(),
        clock: Arc::new(ManualClock::new(60_000)),
        settings: QuerierSettings { max_samples, ..QuerierSettings::default() },
        flags,
        completeness: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, api_router(deps)).await });
    addr
}

/// One request; returns the status code and the body.
async fn request(addr: std::net::SocketAddr, method: &str, target: &str, form: Option<&str>) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(body) = form {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut raw)).await.expect("in time").expect("read");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a full response");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    (status, body.to_owned())
}

async fn get(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
    request(addr, "GET", target, None).await
}

#[tokio::test]
async fn series_endpoint() {
    let addr = serve(store(), 1000).await;
    assert_eq!(
        get(addr, "/api/v1/series?match[]=up{job=%22node%22}").await,
        (
            200,
            r#"{"status":"success","data":[{"__name__":"up","instance":"a","job":"node"},{"__name__":"up","instance":"b","job":"node"}]}"#
                .into()
        )
    );
    // Two selectors, overlapping: union, sorted, no duplicates; time range; limit.
    let (s, b) = get(addr, "/api/v1/series?match[]=up&match[]={job=%22api%22}&start=20&end=200&limit=2").await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        r#"{"status":"success","data":[{"__name__":"http_requests_total","code":"200","job":"api"},{"__name__":"up","instance":"a","job":"node"}],"warnings":["results truncated due to limit"]}"#
    );
    let (s, b) = request(addr, "POST", "/api/v1/series", Some("match%5B%5D=http_requests_total&end=10")).await;
    assert_eq!(
        (s, b.as_str()),
        (200, r#"{"status":"success","data":[{"__name__":"http_requests_total","code":"200","job":"api"}]}"#)
    );
    assert_eq!(
        get(addr, "/api/v1/series").await,
        (400, r#"{"status":"error","errorType":"bad_data","error":"no match[] parameter provided"}"#.into())
    );
    assert_eq!(
        get(addr, "/api/v1/series?match[]={job=~%22.*%22}").await,
        (
            400,
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"match[]\": match[] must contain at least one non-empty matcher"}"#
                .into()
        )
    );
    let (s, b) = get(addr, "/api/v1/series?match[]=up&start=yesterday").await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"start\": Invalid time value for 'start': cannot parse \"yesterday\" to a valid timestamp"}"#
    );
}

#[tokio::test]
async fn labels_and_label_values() {
    let addr = serve(store(), 1000).await;
    assert_eq!(
        get(addr, "/api/v1/labels").await.1,
        r#"{"status":"success","data":["__name__","code","instance","job"]}"#
    );
    assert_eq!(
        get(addr, "/api/v1/labels?match[]=up").await.1,
        r#"{"status":"success","data":["__name__","instance","job"]}"#
    );
    assert_eq!(
        get(addr, "/api/v1/labels?limit=2").await.1,
        r#"{"status":"success","data":["__name__","code"],"warnings":["results truncated due to limit"]}"#
    );
    assert_eq!(
        request(addr, "POST", "/api/v1/labels", Some("match[]=http_requests_total")).await.1,
        r#"{"status":"success","data":["__name__","code","job"]}"#
    );
    assert_eq!(get(addr, "/api/v1/label/job/values").await.1, r#"{"status":"success","data":["api","node"]}"#);
    assert_eq!(
        get(addr, "/api/v1/label/__name__/values?start=90&end=120").await.1,
        r#"{"status":"success","data":["up"]}"#
    );
    assert_eq!(
        get(addr, "/api/v1/label/instance/values?match[]=up{job=%22node%22}&limit=5").await.1,
        r#"{"status":"success","data":["a","b"]}"#
    );
    assert_eq!(get(addr, "/api/v1/label/nope/values").await.1, r#"{"status":"success","data":[]}"#);
    assert_eq!(
        get(addr, "/api/v1/labels?limit=x").await,
        (
            400,
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"limit\": strconv.Atoi: parsing \"x\": invalid syntax"}"#
                .into()
        )
    );
    assert_eq!(get(addr, "/api/v1/labels?limit=-1").await.0, 400);
}

#[tokio::test]
async fn format_and_parse_query() {
    let addr = serve(store(), 1000).await;
    assert_eq!(
        get(addr, "/api/v1/format_query?query=sum%20by(job)(rate(x%5B5m%5D))").await,
        (200, r#"{"status":"success","data":"sum by (job) (rate(x[5m]))"}"#.into())
    );
    let (s, b) = get(addr, "/api/v1/format_query?query=sum(").await;
    assert_eq!(s, 400);
    assert!(b.starts_with(r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": "#), "{b}");
    assert_eq!(
        request(addr, "POST", "/api/v1/parse_query", Some("query=-1")).await.1,
        r#"{"status":"success","data":{"type":"numberLiteral","val":"-1"}}"#
    );
}

#[tokio::test]
async fn status_endpoints() {
    let addr = serve(store(), 1000).await;
    assert_eq!(
        get(addr, "/api/v1/status/flags").await.1,
        r#"{"status":"success","data":{"query.max-samples":"1000","web.listen-address":"127.0.0.1:9090"}}"#
    );
    let (s, b) = get(addr, "/api/v1/status/buildinfo").await;
    assert_eq!(s, 200);
    assert!(b.starts_with(r#"{"status":"success","data":{"version":""#), "{b}");
}

#[tokio::test]
async fn sample_limit_is_an_execution_error() {
    // 3 + 2 samples of `up{job="node"}` within the last 5 minutes at t=60s.
    let addr = serve(store(), 4).await;
    let (s, b) = get(addr, "/api/v1/query?query=count(up%7Bjob%3D%22node%22%7D)&time=60").await;
    assert_eq!(s, 422);
    assert_eq!(
        b,
        r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory in query execution"}"#
    );
    let addr = serve(store(), 1000).await;
    let (s, b) = get(addr, "/api/v1/query?query=count(up%7Bjob%3D%22node%22%7D)&time=60").await;
    assert_eq!(
        (s, b.as_str()),
        (200, r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[60,"2"]}]}}"#)
    );
}
