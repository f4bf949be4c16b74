//! [`JetStreamAppender`]: an [`Append`] that writes to the ingest stream and
//! acknowledges only once JetStream has acknowledged every shard's part.

use std::sync::Arc;

use async_nats::jetstream::Context;
use futures::future::try_join_all;
use prometheus_client::metrics::counter::Counter;
use strata_common::Telemetry;
use strata_model::{Append, AppendError, AppendSummary, BoxFuture, WriteBatch};

use crate::{NatsSettings, split_by_shard};

#[derive(Debug, Clone)]
struct Metrics {
    published: Counter,
    failures: Counter,
}

/// Publishes batches to the ingest stream, one message per shard.
#[derive(Clone)]
pub struct JetStreamAppender {
    js: Context,
    settings: Arc<NatsSettings>,
    metrics: Metrics,
}

impl std::fmt::Debug for JetStreamAppender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamAppender").field("stream", &self.settings.stream).finish_non_exhaustive()
    }
}

impl JetStreamAppender {
    /// An appender over an existing stream (see [`crate::stream::ensure_stream`]).
    pub fn new(js: Context, settings: NatsSettings, telemetry: &Telemetry) -> Self {
        let metrics = Metrics { published: Counter::default(), failures: Counter::default() };
        telemetry.register(
            "strata_ingest_published_messages",
            "Shard messages acknowledged by JetStream",
            metrics.published.clone(),
        );
        telemetry.register(
            "strata_ingest_publish_failures",
            "Batches not acknowledged because a shard publish failed",
            metrics.failures.clone(),
        );
        Self { js, settings: Arc::new(settings), metrics }
    }

    async fn publish(&self, batch: WriteBatch) -> Result<AppendSummary, AppendError> {
        let samples = batch.sample_count();
        let parts = split_by_shard(batch, self.settings.shards);
        let acks = parts.into_iter().map(|(shard, part)| {
            let subject = self.settings.subject(shard);
            let payload = strata_proto::encode_batch(&part);
            async move {
                let ack = self.js.publish(subject, payload.into()).await.map_err(|e| e.to_string())?;
                ack.await.map_err(|e| e.to_string())
            }
        });
        match try_join_all(acks).await {
            Ok(done) => {
                self.metrics.published.inc_by(done.len() as u64);
                Ok(AppendSummary { accepted: samples, ..AppendSummary::default() })
            }
            Err(e) => {
                // Shards already acknowledged may be sent again on retry; the
                // head drops a sample it already holds with the same value.
                self.metrics.failures.inc();
                Err(AppendError::Unavailable(format!("JetStream publish: {e}")))
            }
        }
    }
}

impl Append for JetStreamAppender {
    fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
        Box::pin(self.publish(batch))
    }
}
