//! [`ShardConsumer`]: reads one shard through a durable pull consumer and
//! hands each batch to an [`Append`] before acknowledging the message.
//!
//! A message is acknowledged only after the sink has made its batch durable;
//! if the sink fails, the message is negatively acknowledged with a delay and
//! delivered again. A message that cannot be decoded is terminated (never
//! redelivered) and counted, so one bad message never blocks a shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Context};
use futures::StreamExt;
use strata_model::Append;
use tokio::sync::watch;

use crate::{IngestError, NatsSettings};

/// Counts of what a consumer did.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Messages appended and acknowledged.
    pub acked: AtomicU64,
    /// Messages the sink refused for now (redelivered later).
    pub retried: AtomicU64,
    /// Messages that could not be decoded (terminated).
    pub poison: AtomicU64,
}

/// One shard's durable consumer.
pub struct ShardConsumer {
    consumer: PullConsumer,
    name: String,
    sink: Arc<dyn Append>,
    stats: Arc<ConsumerStats>,
    batch: usize,
}

impl std::fmt::Debug for ShardConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardConsumer").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ShardConsumer {
    /// Creates (or reopens) the durable consumer `<instance>-shard-<shard>`
    /// on the ingest stream, delivering to `sink`.
    pub async fn open(
        js: &Context,
        settings: &NatsSettings,
        instance: &str,
        shard: u32,
        sink: Arc<dyn Append>,
    ) -> Result<Self, IngestError> {
        let name = format!("{instance}-shard-{shard}");
        let err = |e: &dyn std::fmt::Display| IngestError::Consumer { consumer: name.clone(), reason: e.to_string() };
        let stream = js
            .get_stream(&settings.stream)
            .await
            .map_err(|e| IngestError::Stream { stream: settings.stream.clone(), reason: e.to_string() })?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: settings.subject(shard),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| err(&e))?;
        Ok(Self { consumer, name, sink, stats: Arc::new(ConsumerStats::default()), batch: 256 })
    }

    /// What this consumer has done so far.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        Arc::clone(&self.stats)
    }

    /// Consumes until `stop` turns true. Errors talking to the server are
    /// logged and retried after a pause; they never end the loop.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let fetched = self.consumer.fetch().max_messages(self.batch).expires(Duration::from_millis(500)).messages();
            let mut messages = match fetched.await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(consumer = %self.name, error = %e, "fetch failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            while let Some(msg) = messages.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(consumer = %self.name, error = %e, "receiving a message failed");
                        break;
                    }
                };
                let result = match strata_proto::decode_batch(&msg.payload) {
                    Err(e) => {
                        self.stats.poison.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(consumer = %self.name, error = %e, "undecodable ingest message terminated");
                        msg.ack_with(AckKind::Term).await
                    }
                    Ok(batch) => match self.sink.append(batch).await {
                        Ok(_) => {
                            self.stats.acked.fetch_add(1, Ordering::Relaxed);
                            msg.ack().await
                        }
                        Err(e) => {
                            self.stats.retried.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(consumer = %self.name, error = %e, "sink refused a batch; redelivering");
                            msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await
                        }
                    },
                };
                if let Err(e) = result {
                    tracing::warn!(consumer = %self.name, error = %e, "acknowledging failed; the message will be redelivered");
                }
            }
        }
    }
}

/// Runs one consumer per shard in `shards` (named after `instance`) into
/// `sink` until `stop` turns true.
pub async fn run_shards(
    js: &Context,
    settings: &NatsSettings,
    instance: &str,
    shards: &[u32],
    sink: Arc<dyn Append>,
    stop: watch::Receiver<bool>,
) -> Result<(), IngestError> {
    let mut tasks = tokio::task::JoinSet::new();
    for &shard in shards {
        let consumer = ShardConsumer::open(js, settings, instance, shard, Arc::clone(&sink)).await?;
        tasks.spawn(consumer.run(stop.clone()));
    }
    tracing::info!(instance, shards = shards.len(), "consuming ingest shards");
    while tasks.join_next().await.is_some() {}
    Ok(())
}
