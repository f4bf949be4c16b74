//! Strata's distributed ingest log on NATS JetStream.
//!
//! Series hash to a fixed number of logical shards ([`shard`]); each shard is
//! one subject (`<prefix>.<shard>`) of one JetStream stream with file
//! storage ([`stream`]). Writers publish a [`strata_model::WriteBatch`] per
//! shard and acknowledge their caller only after JetStream acknowledged every
//! part ([`publisher::JetStreamAppender`], itself an [`strata_model::Append`]).
//! Aggregators read their shards through durable pull consumers and hand
//! each batch to their own `Append` before acknowledging the message
//! ([`consumer`]), so a restarted aggregator resumes where it left off and
//! nothing acknowledged is lost. [`kv`] holds small shared state (the
//! elected replica of each HA pair) in a JetStream key-value bucket.
//! [`buffer`] is a collector's on-disk queue in front of the log, so a
//! NATS outage delays samples instead of losing them.

pub mod assign;
pub mod buffer;
pub mod config;
pub mod consumer;
pub mod error;
pub mod kv;
pub mod publisher;
pub mod shard;
pub mod stream;

pub use assign::Assignment;
pub use config::{NatsConfig, NatsSettings};
pub use consumer::{ConsumerStats, ShardConsumer};
pub use error::IngestError;
pub use publisher::JetStreamAppender;
pub use shard::{shard_of, split_by_shard};
