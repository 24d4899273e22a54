//! # netrev-live: every durable event, applied within milliseconds
//!
//! **In:** each event as the ingest log makes it durable (this crate's [`Feed`] is the
//! ingestor's [`netrev_ingest::DurableSink`]), the state's checkpoint at start, and a batch
//! recompute of the raw tables on a schedule (the *rebase*; at start too without a usable
//! checkpoint). **Out:** the live rows of `stats_hourly` that `/api/stats` reads ([`Live`]),
//! the changed `stats_hourly` partitions rewritten every few seconds, a checkpoint of the
//! state beside the write-ahead log, and each conversion or refund attributed to its click,
//! handed to an [`AttributionSink`] (the webhooks).
//!
//! **Guarantees:** the live rows equal a batch recompute over the same events, to the cent
//! (the rules are the SQL jobs', [`state`]); nothing counts twice across a rebase or a
//! restart ([`runner`] explains how); an attribution reaches the sink at least once, the log
//! being held until it has ([`netrev_ingest::Held`]).
//!
//! Layout: [`state`] (windows, the click state machine, the `stats_hourly` codec) ←
//! [`click_lookup`] (old clicks found in Parquet), [`checkpoint`] (the state on disk) ←
//! [`runner`] (the live thread, rebases, persistence).

pub mod checkpoint;
pub mod click_lookup;
pub mod runner;
pub mod spill;
pub mod state;

pub use runner::{Feed, FeedReceiver, Live, LiveConfig, feed, start};
pub use state::{Attributed, AttributionSink, LiveStats, Measures, WindowKey};

/// What can go wrong in the live state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A table does not hold what netrev writes (a damaged or foreign file).
    #[error("data root: {0}")]
    DataRoot(String),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// The recompute of a rebase, or writing a `stats_hourly` partition, failed.
    #[error(transparent)]
    Pipeline(#[from] netrev_pipeline::Error),
    /// Reading a stored table failed.
    #[error(transparent)]
    Storage(#[from] netrev_storage::Error),
    /// A thread of the live state could not start.
    #[error("starting a live thread: {0}")]
    Thread(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
