//! A JetStream key-value bucket, for small shared state such as the elected
//! replica of each HA pair.
//!
//! Debian's `nats-server` 2.9.10 answers `create_key_value` in a form the
//! client cannot parse, so the bucket's stream (`KV_<bucket>`) is created
//! here by hand with the settings a KV bucket has, and then opened with
//! `get_key_value`, which works.

use async_nats::jetstream::{Context, kv, stream};
use bytes::Bytes;

use crate::IngestError;

/// One key-value bucket.
#[derive(Clone)]
pub struct Bucket {
    name: String,
    store: kv::Store,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("name", &self.name).finish()
    }
}

/// A value and its revision (for compare-and-set).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// Its revision; updates name it to win only if nobody wrote since.
    pub revision: u64,
}

fn kv_error(bucket: &str, e: impl std::fmt::Display) -> IngestError {
    IngestError::Stream { stream: format!("KV_{bucket}"), reason: e.to_string() }
}

impl Bucket {
    /// Opens bucket `name`, creating its stream if needed (file storage,
    /// one value per key).
    pub async fn open(js: &Context, name: &str, replicas: usize) -> Result<Self, IngestError> {
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        })
        .await
        .map_err(|e| kv_error(name, e))?;
        let store = js.get_key_value(name).await.map_err(|e| kv_error(name, e))?;
        Ok(Self { name: name.to_owned(), store })
    }

    /// The current value of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, IngestError> {
        let entry = self.store.entry(key).await.map_err(|e| kv_error(&self.name, e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| Versioned { value: e.value, revision: e.revision }))
    }

    /// Writes `value` if `key` is still at `revision` (`None`: if it does
    /// not exist). `Ok(None)` when someone else wrote first.
    pub async fn compare_and_set(
        &self,
        key: &str,
        value: Bytes,
        revision: Option<u64>,
    ) -> Result<Option<u64>, IngestError> {
        let result = match revision {
            None => self.store.create(key, value).await.map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => None,
                _ => Some(kv_error(&self.name, e)),
            }),
            Some(rev) => self.store.update(key, value, rev).await.map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => None,
                _ => Some(kv_error(&self.name, e)),
            }),
        };
        match result {
            Ok(rev) => Ok(Some(rev)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }
}
