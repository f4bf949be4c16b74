//! The Prometheus remote write receiver, `POST /api/v1/write`.
//!
//! Accepts remote write 1.0 (`prometheus.WriteRequest`) and 2.0
//! (`io.prometheus.write.v2.Request`), snappy-compressed, and appends the
//! float samples through any [`Append`], answering as the spec asks:
//! 204 once the samples are durable; 400 for data that will never be
//! accepted (malformed body, invalid labels, out-of-order samples, native
//! histograms until they are supported), so senders do not retry it;
//! 415 for an unknown content type or encoding; 429 when the tenant is over
//! a limit (see [`crate::limits`]); 503 when the ingest log is unavailable
//! (retryable). Remote write 2.0 responses carry the
//! `X-Prometheus-Remote-Write-{Samples,Histograms,Exemplars}-Written` headers.
//! Samples of a non-elected HA replica ([`crate::ha`]) are answered 202, as
//! Mimir answers them.
//! Exemplars and metadata are counted and dropped for now.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use strata_common::Telemetry;
use strata_model::{Append, AppendError, DEFAULT_TENANT, Labels, Sample, TimeSeries, WriteBatch};
use strata_proto::remote_write::{v1, v2};

/// Receiver limits.
#[derive(Debug, Clone, Copy)]
pub struct RemoteWriteLimits {
    /// Largest compressed body accepted, bytes.
    pub max_body_bytes: usize,
    /// Largest decompressed message accepted, bytes.
    pub max_message_bytes: usize,
}

impl Default for RemoteWriteLimits {
    fn default() -> Self {
        Self { max_body_bytes: 64 << 20, max_message_bytes: 256 << 20 }
    }
}

#[derive(Clone)]
struct Metrics {
    requests: Counter,
    refused: Counter,
    samples: Counter,
    exemplars_dropped: Counter,
    histograms_refused: Counter,
    metadata_dropped: Counter,
}

#[derive(Clone)]
struct RwState {
    appender: Arc<dyn Append>,
    limits: RemoteWriteLimits,
    metrics: Metrics,
}

/// What sits between the receiver and the write path: HA-pair
/// deduplication first (deduplicated samples count against no limit), then
/// the tenant limits.
pub struct ReceiverChain {
    /// HA deduplication, when enabled: settings and where elections live.
    pub ha: Option<(crate::ha::HaConfig, Arc<dyn crate::ha::HaStore>)>,
    /// Tenant limits.
    pub limits: crate::limits::Limits,
}

impl ReceiverChain {
    /// `write_path` behind the chain's decorators.
    pub fn wrap(
        self,
        write_path: Arc<dyn Append>,
        clock: &Arc<dyn strata_common::Clock>,
        telemetry: &Telemetry,
    ) -> Arc<dyn Append> {
        let limited: Arc<dyn Append> = if self.limits.is_unlimited() {
            write_path
        } else {
            Arc::new(crate::limits::LimitedAppend::new(write_path, self.limits, Arc::clone(clock), telemetry))
        };
        match self.ha {
            None => limited,
            Some((config, store)) => {
                Arc::new(crate::ha::HaDedup::new(limited, store, config, Arc::clone(clock), telemetry))
            }
        }
    }
}

/// The `/api/v1/write` route.
pub fn remote_write_router(appender: Arc<dyn Append>, limits: RemoteWriteLimits, telemetry: &Telemetry) -> Router {
    let metrics = Metrics {
        requests: Counter::default(),
        refused: Counter::default(),
        samples: Counter::default(),
        exemplars_dropped: Counter::default(),
        histograms_refused: Counter::default(),
        metadata_dropped: Counter::default(),
    };
    telemetry.register("strata_remote_write_requests", "Remote write requests received", metrics.requests.clone());
    telemetry.register(
        "strata_remote_write_refused_requests",
        "Remote write requests answered with a 4xx or 5xx status",
        metrics.refused.clone(),
    );
    telemetry.register(
        "strata_remote_write_samples",
        "Float samples received by remote write",
        metrics.samples.clone(),
    );
    telemetry.register(
        "strata_remote_write_exemplars_dropped",
        "Exemplars received and dropped (not stored yet)",
        metrics.exemplars_dropped.clone(),
    );
    telemetry.register(
        "strata_remote_write_histograms_refused",
        "Native histogram samples refused (not supported yet)",
        metrics.histograms_refused.clone(),
    );
    telemetry.register(
        "strata_remote_write_metadata_dropped",
        "Metadata entries received and dropped",
        metrics.metadata_dropped.clone(),
    );
    Router::new().route("/api/v1/write", post(write)).with_state(RwState { appender, limits, metrics })
}

/// The remote write protocol a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

/// Picks the protocol from `Content-Type`, as the spec defines it.
pub fn protocol_of(content_type: Option<&str>) -> Result<Protocol, String> {
    let Some(ct) = content_type else { return Ok(Protocol::V1) };
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(format!("unsupported content type {ct:?}: expected application/x-protobuf"));
    }
    for p in parts {
        if let Some(proto) = p.strip_prefix("proto=") {
            return match proto {
                "prometheus.WriteRequest" => Ok(Protocol::V1),
                "io.prometheus.write.v2.Request" => Ok(Protocol::V2),
                other => Err(format!("unknown remote write protobuf message {other:?}")),
            };
        }
    }
    Ok(Protocol::V1)
}

/// What one request carried besides float samples.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Extras {
    /// Exemplars (dropped).
    pub exemplars: usize,
    /// Native histogram samples (refused).
    pub histograms: usize,
    /// Metadata entries (dropped).
    pub metadata: usize,
}

/// Why a request body is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not snappy, or too large once decompressed.
    #[error("{0}")]
    Snappy(String),
    /// Not the protobuf message the content type names.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// Valid protobuf with invalid content (labels, symbol references).
    #[error("{0}")]
    Invalid(String),
}

/// Decompresses and decodes a body into a batch for `tenant`.
pub fn decode(
    body: &[u8],
    protocol: Protocol,
    tenant: &str,
    limits: RemoteWriteLimits,
) -> Result<(WriteBatch, Extras), DecodeError> {
    let len = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(format!("invalid snappy body: {e}")))?;
    if len > limits.max_message_bytes {
        return Err(DecodeError::Snappy(format!(
            "decompressed message of {len} bytes is larger than the limit of {} bytes",
            limits.max_message_bytes
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(format!("invalid snappy body: {e}")))?;
    match protocol {
        Protocol::V1 => {
            let req = v1::WriteRequest::decode(raw.as_slice()).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
            from_v1(req, tenant)
        }
        Protocol::V2 => {
            let req = v2::Request::decode(raw.as_slice()).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
            from_v2(req, tenant)
        }
    }
}

fn labels_of(pairs: Vec<(String, String)>) -> Result<Labels, DecodeError> {
    let labels = Labels::from_pairs(pairs).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    labels.validate().map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if labels.metric_name().is_none() {
        return Err(DecodeError::Invalid(format!("series {labels} has no metric name")));
    }
    Ok(labels)
}

fn from_v1(req: v1::WriteRequest, tenant: &str) -> Result<(WriteBatch, Extras), DecodeError> {
    let mut extras = Extras { metadata: req.metadata.len(), ..Extras::default() };
    let mut batch = WriteBatch::new(tenant);
    for ts in req.timeseries {
        extras.exemplars += ts.exemplars.len();
        extras.histograms += ts.histograms.len();
        let labels = labels_of(ts.labels.into_iter().map(|l| (l.name, l.value)).collect())?;
        let samples: Vec<Sample> = ts.samples.iter().map(|s| Sample::new(s.timestamp, s.value)).collect();
        if !samples.is_empty() {
            batch.series.push(TimeSeries { labels, samples });
        }
    }
    Ok((batch, extras))
}

fn from_v2(req: v2::Request, tenant: &str) -> Result<(WriteBatch, Extras), DecodeError> {
    let symbols = &req.symbols;
    let sym = |r: u32| -> Result<&str, DecodeError> {
        symbols.get(r as usize).map(String::as_str).ok_or_else(|| {
            DecodeError::Invalid(format!("symbol reference {r} out of range ({} symbols)", symbols.len()))
        })
    };
    let mut extras = Extras::default();
    let mut batch = WriteBatch::new(tenant);
    for ts in req.timeseries {
        extras.exemplars += ts.exemplars.len();
        extras.histograms += ts.histograms.len();
        extras.metadata += usize::from(ts.metadata.is_some());
        if ts.labels_refs.len() % 2 != 0 {
            return Err(DecodeError::Invalid("labels_refs holds an odd number of references".into()));
        }
        let pairs = ts
            .labels_refs
            .chunks_exact(2)
            .map(|p| Ok((sym(p[0])?.to_owned(), sym(p[1])?.to_owned())))
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let labels = labels_of(pairs)?;
        let samples: Vec<Sample> = ts.samples.iter().map(|s| Sample::new(s.timestamp, s.value)).collect();
        if !samples.is_empty() {
            batch.series.push(TimeSeries { labels, samples });
        }
    }
    Ok((batch, extras))
}

fn tenant_of(headers: &HeaderMap) -> String {
    strata_common::tenant_of(headers, DEFAULT_TENANT)
}

fn refuse(state: &RwState, status: StatusCode, msg: String) -> Response {
    state.metrics.refused.inc();
    tracing::debug!(%status, error = %msg, "remote write refused");
    (status, msg).into_response()
}

async fn write(State(state): State<RwState>, headers: HeaderMap, body: Body) -> Response {
    state.metrics.requests.inc();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let protocol = match protocol_of(content_type) {
        Ok(p) => p,
        Err(msg) => return refuse(&state, StatusCode::UNSUPPORTED_MEDIA_TYPE, msg),
    };
    if let Some(enc) = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok())
        && !enc.eq_ignore_ascii_case("snappy")
    {
        return refuse(
            &state,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content encoding {enc:?}: expected snappy"),
        );
    }
    let body = match axum::body::to_bytes(body, state.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                &state,
                StatusCode::BAD_REQUEST,
                format!("reading body (limit {} bytes): {e}", state.limits.max_body_bytes),
            );
        }
    };
    let (batch, extras) = match decode(&body, protocol, &tenant_of(&headers), state.limits) {
        Ok(v) => v,
        Err(e) => return refuse(&state, StatusCode::BAD_REQUEST, e.to_string()),
    };
    let m = &state.metrics;
    m.exemplars_dropped.inc_by(extras.exemplars as u64);
    m.metadata_dropped.inc_by(extras.metadata as u64);
    m.histograms_refused.inc_by(extras.histograms as u64);
    let received = batch.sample_count();
    m.samples.inc_by(received as u64);
    let summary = match state.appender.append(batch).await {
        Ok(s) => s,
        Err(AppendError::Invalid(msg)) => return refuse(&state, StatusCode::BAD_REQUEST, msg),
        Err(AppendError::LimitExceeded(msg)) => return refuse(&state, StatusCode::TOO_MANY_REQUESTS, msg),
        Err(e @ (AppendError::Unavailable(_) | AppendError::ShuttingDown)) => {
            return refuse(&state, StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
    };
    let mut problems = Vec::new();
    if summary.out_of_order > 0 {
        problems.push(format!("{} samples out of order or duplicate with another value", summary.out_of_order));
    }
    if summary.out_of_bounds > 0 {
        problems.push(format!("{} samples too old (out of bounds)", summary.out_of_bounds));
    }
    if extras.histograms > 0 {
        problems.push(format!("{} native histogram samples refused: not supported yet", extras.histograms));
    }
    let mut resp = if problems.is_empty() && summary.deduplicated > 0 {
        // Mimir's answer for samples of a non-elected HA replica: accepted, not stored.
        (StatusCode::ACCEPTED, "samples from a non-elected HA replica were deduplicated").into_response()
    } else if problems.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        // The accepted samples are stored; the rest would fail again, so no retry.
        refuse(
            &state,
            StatusCode::BAD_REQUEST,
            format!("{} of {received} samples stored; {}", summary.accepted, problems.join("; ")),
        )
    };
    if protocol == Protocol::V2 {
        let h = resp.headers_mut();
        for (name, n) in [
            ("X-Prometheus-Remote-Write-Samples-Written", summary.accepted),
            ("X-Prometheus-Remote-Write-Histograms-Written", 0),
            ("X-Prometheus-Remote-Write-Exemplars-Written", 0),
        ] {
            h.insert(name, HeaderValue::from(n));
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use axum::http::Request;
    use strata_model::{AppendSummary, BoxFuture};
    use tower::ServiceExt;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<WriteBatch>>);

    impl Append for Recorder {
        fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
            let n = batch.sample_count();
            self.0.lock().expect("lock").push(batch);
            Box::pin(async move { Ok(AppendSummary { accepted: n, ..AppendSummary::default() }) })
        }
    }

    fn v1_body() -> Vec<u8> {
        let req = v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: vec![
                    v1::Label { name: "job".into(), value: "x".into() },
                    v1::Label { name: "__name__".into(), value: "up".into() },
                ],
                samples: vec![v1::Sample { value: 1.0, timestamp: 1000 }, v1::Sample { value: 0.0, timestamp: 2000 }],
                exemplars: vec![],
                histograms: vec![],
            }],
            metadata: vec![],
        };
        snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).expect("snappy")
    }

    fn v2_body() -> Vec<u8> {
        let req = v2::Request {
            symbols: vec!["".into(), "__name__".into(), "up".into(), "job".into(), "y".into()],
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![v1::Sample { value: 5.0, timestamp: 3000 }],
                histograms: vec![],
                exemplars: vec![v2::Exemplar { labels_refs: vec![], value: 1.0, timestamp: 3000 }],
                metadata: None,
                created_timestamp: 0,
            }],
        };
        snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).expect("snappy")
    }

    async fn send(recorder: Arc<Recorder>, ct: &str, body: Vec<u8>) -> Response {
        let router = remote_write_router(recorder, RemoteWriteLimits::default(), &Telemetry::empty());
        let req = Request::post("/api/v1/write")
            .header(header::CONTENT_TYPE, ct)
            .header(header::CONTENT_ENCODING, "snappy")
            .header("X-Scope-OrgID", "team-a")
            .body(Body::from(body))
            .expect("request");
        router.oneshot(req).await.expect("response")
    }

    #[tokio::test]
    async fn v1_request_is_stored() {
        let rec = Arc::new(Recorder::default());
        let resp = send(rec.clone(), "application/x-protobuf", v1_body()).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let batches = rec.0.lock().expect("lock");
        assert_eq!(batches[0].tenant, "team-a");
        assert_eq!(batches[0].series[0].labels.to_string(), r#"up{job="x"}"#);
        assert_eq!(batches[0].series[0].samples, vec![Sample::new(1000, 1.0), Sample::new(2000, 0.0)]);
    }

    #[tokio::test]
    async fn v2_request_resolves_symbols_and_reports_written() {
        let rec = Arc::new(Recorder::default());
        let resp = send(rec.clone(), "application/x-protobuf;proto=io.prometheus.write.v2.Request", v2_body()).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(resp.headers()["X-Prometheus-Remote-Write-Samples-Written"], "1");
        assert_eq!(resp.headers()["X-Prometheus-Remote-Write-Exemplars-Written"], "0");
        let batches = rec.0.lock().expect("lock");
        assert_eq!(batches[0].series[0].labels.to_string(), r#"up{job="y"}"#);
    }

    #[tokio::test]
    async fn bad_bodies_are_refused_with_400_and_nothing_stored() {
        let rec = Arc::new(Recorder::default());
        let good = v1_body();
        let truncated = good[..good.len() / 2].to_vec();
        let not_protobuf = snap::raw::Encoder::new().compress_vec(b"\xff\xff\xff\xff garbage").expect("snappy");
        let bad_symbol = {
            let req = v2::Request {
                symbols: vec!["".into()],
                timeseries: vec![v2::TimeSeries { labels_refs: vec![1, 2], ..Default::default() }],
            };
            snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).expect("snappy")
        };
        for (name, ct, body) in [
            ("truncated", "application/x-protobuf", truncated),
            ("not snappy", "application/x-protobuf", b"plain text".to_vec()),
            ("not protobuf", "application/x-protobuf", not_protobuf),
            ("bad symbol", "application/x-protobuf;proto=io.prometheus.write.v2.Request", bad_symbol),
        ] {
            let resp = send(rec.clone(), ct, body).await;
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{name}");
        }
        assert!(rec.0.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn unknown_content_type_is_415() {
        let rec = Arc::new(Recorder::default());
        assert_eq!(send(rec.clone(), "application/json", v1_body()).await.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            send(rec, "application/x-protobuf;proto=foo.Bar", v1_body()).await.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn oversized_message_is_refused_before_allocating() {
        let limits = RemoteWriteLimits { max_body_bytes: 1 << 20, max_message_bytes: 10 };
        let err = decode(&v1_body(), Protocol::V1, "t", limits).expect_err("too large");
        assert!(matches!(err, DecodeError::Snappy(_)), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&body, Protocol::V1, "t", RemoteWriteLimits::default());
            let _ = decode(&body, Protocol::V2, "t", RemoteWriteLimits::default());
        }
    }
}
