use std::path::PathBuf;

/// Failures of the storage layer, classified by whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object store failed (timeout, refused, permission). External; often retryable.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A local file operation failed (disk full, permission). External; retryable once fixed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A Parquet file could not be written or read. Internal or a damaged file; not retryable.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// An Arrow batch did not have the expected shape. Internal bug; not retryable.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The data root is not usable as given. The operator's to fix.
    #[error("data root {0:?}: {1}")]
    DataRoot(String, String),
    /// Stored data does not match the contract (a damaged or foreign file). Not retryable.
    #[error("corrupt data in {path}: {what}")]
    Corrupt { path: String, what: String },
}

impl Error {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::ObjectStore(_) | Error::Io { .. })
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
