//! The ingest crate's error type.

/// Why talking to JetStream failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Could not connect to NATS.
    #[error("connecting to NATS at {url}: {reason}")]
    Connect {
        /// The server URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Creating or reading the stream failed.
    #[error("JetStream stream {stream}: {reason}")]
    Stream {
        /// The stream name.
        stream: String,
        /// What went wrong.
        reason: String,
    },
    /// Creating or reading a consumer failed.
    #[error("JetStream consumer {consumer}: {reason}")]
    Consumer {
        /// The durable consumer name.
        consumer: String,
        /// What went wrong.
        reason: String,
    },
}
