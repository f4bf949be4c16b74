//! The aggregator's gRPC `Store` service (`strata.store.v1`): what queriers
//! read. It answers from any [`Select`] (the aggregator's heads and local
//! blocks) and says which shards it holds, so a querier can tell whether a
//! fan-out covered all data.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use strata_model::{Select, SelectError, SelectHints};
use strata_proto::store::v1 as pb;
use strata_proto::store::v1::store_server::{Store, StoreServer};
use strata_proto::store_api::{labels_to_pb, matchers_from_pb, series_to_pb};
use tonic::{Request, Response, Status};

/// Samples per streamed `SelectResponse` chunk (about 1 MiB on the wire).
const CHUNK_SAMPLES: usize = 64 * 1024;
/// Label sets per streamed `SeriesResponse` chunk.
const CHUNK_SERIES: usize = 4096;
/// Largest message the service decodes or encodes.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// What an instance tells queriers about the data it holds.
#[derive(Debug, Clone, Default)]
pub struct StoreInfo {
    /// The instance's name, e.g. `aggregator-0`.
    pub instance: String,
    /// The logical shards it keeps a head for; empty when unsharded.
    pub shards: Vec<u32>,
    /// The number of logical shards in the cluster; 0 when unsharded.
    pub shard_count: u32,
}

/// The `Store` service over a [`Select`].
pub struct StoreService {
    select: Arc<dyn Select>,
    info: StoreInfo,
}

impl StoreService {
    /// A service answering from `select`.
    pub fn new(select: Arc<dyn Select>, info: StoreInfo) -> Self {
        Self { select, info }
    }

    /// The service as axum routes under `/strata.store.v1.Store/`, to serve
    /// gRPC beside HTTP on one port (other paths keep their HTTP 404).
    pub fn into_router(self) -> axum::Router {
        use tonic::server::NamedService;
        use tower::ServiceExt;
        let svc = StoreServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let path = format!("/{}/{{*rest}}", StoreServer::<Self>::NAME);
        axum::Router::new().route_service(
            &path,
            svc.map_request(|req: http::Request<axum::body::Body>| req.map(tonic::body::Body::new)),
        )
    }
}

/// The gRPC status of a failed read: limits are the caller's problem,
/// storage failures are retryable elsewhere (another replica).
pub fn status_of(e: &SelectError) -> Status {
    match e {
        SelectError::Limit(m) => Status::resource_exhausted(m.clone()),
        SelectError::Storage(m) => Status::unavailable(m.clone()),
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Store for StoreService {
    type SelectStream = BoxStream<pb::SelectResponse>;
    type SeriesStream = BoxStream<pb::SeriesResponse>;

    async fn select(&self, request: Request<pb::SelectRequest>) -> Result<Response<Self::SelectStream>, Status> {
        let r = request.into_inner();
        let matchers = matchers_from_pb(r.matchers).map_err(invalid)?;
        let max_samples =
            if r.max_samples == 0 { usize::MAX } else { usize::try_from(r.max_samples).unwrap_or(usize::MAX) };
        let series = self
            .select
            .select_with(&r.tenant, &matchers, r.min_time_ms, r.max_time_ms, SelectHints { max_samples })
            .await
            .map_err(|e| status_of(&e))?;
        let mut chunks = Vec::new();
        let mut chunk = pb::SelectResponse::default();
        let mut samples = 0;
        for s in &series {
            samples += s.samples.len().max(1);
            chunk.series.push(series_to_pb(s));
            if samples >= CHUNK_SAMPLES {
                chunks.push(Ok(std::mem::take(&mut chunk)));
                samples = 0;
            }
        }
        if !chunk.series.is_empty() {
            chunks.push(Ok(chunk));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn series(&self, request: Request<pb::SeriesRequest>) -> Result<Response<Self::SeriesStream>, Status> {
        let r = request.into_inner();
        let matchers = matchers_from_pb(r.matchers).map_err(invalid)?;
        let sets =
            self.select.series(&r.tenant, &matchers, r.min_time_ms, r.max_time_ms).await.map_err(|e| status_of(&e))?;
        let chunks: Vec<Result<pb::SeriesResponse, Status>> = sets
            .chunks(CHUNK_SERIES)
            .map(|c| {
                Ok(pb::SeriesResponse { series: c.iter().map(|l| pb::LabelSet { labels: labels_to_pb(l) }).collect() })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn label_names(&self, request: Request<pb::SeriesRequest>) -> Result<Response<pb::StringsResponse>, Status> {
        let r = request.into_inner();
        let matchers = matchers_from_pb(r.matchers).map_err(invalid)?;
        let values = self
            .select
            .label_names(&r.tenant, &matchers, r.min_time_ms, r.max_time_ms)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::StringsResponse { values }))
    }

    async fn label_values(
        &self,
        request: Request<pb::LabelValuesRequest>,
    ) -> Result<Response<pb::StringsResponse>, Status> {
        let r = request.into_inner();
        let series = r.series.unwrap_or_default();
        let matchers = matchers_from_pb(series.matchers).map_err(invalid)?;
        let values = self
            .select
            .label_values(&series.tenant, &r.name, &matchers, series.min_time_ms, series.max_time_ms)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::StringsResponse { values }))
    }

    async fn info(&self, _request: Request<pb::InfoRequest>) -> Result<Response<pb::InfoResponse>, Status> {
        Ok(Response::new(pb::InfoResponse {
            instance: self.info.instance.clone(),
            shards: self.info.shards.clone(),
            shard_count: self.info.shard_count,
        }))
    }
}
