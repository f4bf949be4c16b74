//! Connecting and making sure the ingest stream exists.

use async_nats::jetstream::{self, Context, stream};

use crate::{IngestError, NatsSettings};

/// Connects to NATS and returns a JetStream context.
pub async fn connect(settings: &NatsSettings) -> Result<Context, IngestError> {
    let client = async_nats::ConnectOptions::new()
        .name("strata")
        .connect(settings.url.as_str())
        .await
        .map_err(|e| IngestError::Connect { url: settings.url.clone(), reason: e.to_string() })?;
    Ok(jetstream::new(client))
}

/// Creates the ingest stream if it does not exist (file storage, limits
/// retention: every aggregator replica reads the same messages).
pub async fn ensure_stream(js: &Context, settings: &NatsSettings) -> Result<stream::Stream, IngestError> {
    js.get_or_create_stream(stream::Config {
        name: settings.stream.clone(),
        subjects: vec![format!("{}.>", settings.subject_prefix)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: settings.max_age,
        num_replicas: settings.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| IngestError::Stream { stream: settings.stream.clone(), reason: e.to_string() })
}
