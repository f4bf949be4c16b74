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
    /// Reading one block's files failed.
    #[error("block {block} (samples {min_time} to {max_time}) is unreadable: {reason}")]
    Unreadable {
        /// `<tenant>/<ulid>`.
        block: String,
        /// The block's first sample, milliseconds.
        min_time: i64,
        /// The block's last sample, milliseconds.
        max_time: i64,
        /// What failed.
        reason: String,
    },
    /// A read would return more samples than its budget allows.
    #[error("{}", strata_model::TOO_MANY_SAMPLES)]
    TooManySamples,
}

impl BlockError {
    /// This error as a failed read of the block `meta` names (budget errors stay as they are).
    pub fn in_block(self, meta: &crate::BlockMeta) -> Self {
        match self {
            Self::TooManySamples | Self::Unreadable { .. } => self,
            other => Self::Unreadable {
                block: meta.dir(),
                min_time: meta.min_time,
                max_time: meta.max_time,
                reason: other.to_string(),
            },
        }
    }
}

impl From<BlockError> for strata_model::SelectError {
    fn from(e: BlockError) -> Self {
        match e {
            BlockError::TooManySamples => strata_model::SelectError::too_many_samples(),
            other => strata_model::SelectError::Storage(other.to_string()),
        }
    }
}
