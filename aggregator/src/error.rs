//! The aggregator's error type.

use std::net::SocketAddr;

/// Why the aggregator could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The ingest log could not be opened or written.
    #[error("ingest log {path}: {source}")]
    IngestLog {
        /// The log directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Blocks could not be listed, read or written.
    #[error("blocks: {0}")]
    Block(#[from] strata_block::BlockError),
    /// The object store could not be set up.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// The listen address is taken or not allowed.
    #[error("listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// An import's input is malformed (nothing of it was written).
    #[error("line {line}: {message}")]
    Import {
        /// The 1-based line of the input.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The JetStream ingest log could not be reached or set up.
    #[error("ingest log: {0}")]
    Ingest(#[from] strata_ingest::IngestError),
    /// The HTTP server failed.
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}
