//! # netrev-ingest: postbacks in, durable deduplicated events out
//!
//! **In:** HTTP postbacks on `/api/click`, `/api/conversion` and `/api/conversion/refund`
//! (GET query strings, POST forms or JSON; docs/design.md §3), and networks' own
//! notifications on `/api/ipn/{network}` ([`ipn`]).
//!
//! **Out:** rows in the raw Parquet tables `events/{clicks,conversions,refunds}/date=…/` of a
//! [`netrev_storage::Store`], about once a second.
//!
//! **Guarantees:**
//! - `{"ok":true}` is answered only once the event is fsynced in the write-ahead log ([`wal`]);
//!   many concurrent postbacks share one fsync (group commit);
//! - an acknowledged event reaches Parquet exactly once, across crashes at any point
//!   ([`ingestor`] explains how file names make flushing idempotent);
//! - a retried conversion or refund is stored once, also across restarts ([`dedup`]);
//! - bad input is refused with `400 {"ok":false,"error","field"}` and records nothing
//!   ([`postback`], [`params`]); a full buffer answers 503 with `Retry-After`, never queues
//!   without bound.
//!
//! Layout: [`params`] (request → parameter map) → [`postback`] (parameters → event) →
//! [`ingestor`] (dedup, log, buffer, flush) with [`wal`] (segment files) underneath; [`http`]
//! wires the routes. This crate knows nothing of SQL jobs or derived tables.

pub mod dedup;
pub mod http;
pub mod import;
pub mod ingestor;
pub mod ipn;
pub mod params;
pub mod postback;
pub mod secret;
pub mod wal;

pub use ingestor::{DurableSink, Held, IngestConfig, IngestStats, Ingestor, Outcome, Rejected};
pub use secret::Secret;

use std::path::PathBuf;

/// Failures of the ingest layer outside a single request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The write-ahead log is damaged or its disk failed.
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// The data root failed.
    #[error(transparent)]
    Storage(#[from] netrev_storage::Error),
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A setting is unusable. The operator's to fix.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
