//! The block crate's error type.

/// Why a block could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Parquet encoding or decoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed while building or reading batches.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// `meta.json` is unreadable.
    #[error("block meta {path}: {reason}")]
    Meta {
        /// The object path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file does not have the schema this version writes.
    #[error("block {block}: {reason}")]
    Corrupt {
        /// The block's id.
        block: String,
        /// What is wrong.
        reason: String,
    },
    /// The object store settings cannot be used.
    #[error("object store config: {0}")]
    Config(String),
    /// A read would return more samples than its budget allows.
    #[error("{}", strata_model::TOO_MANY_SAMPLES)]
    TooManySamples,
}

impl From<BlockError> for strata_model::SelectError {
    fn from(e: BlockError) -> Self {
        match e {
            BlockError::TooManySamples => strata_model::SelectError::too_many_samples(),
            other => strata_model::SelectError::Storage(other.to_string()),
        }
    }
}
