//! Acknowledged events that are not in a raw Parquet file yet, for readers that must see them.
//!
//! Ingest makes an event durable in its write-ahead log within milliseconds, but writes raw
//! Parquet files only every few minutes (docs/design.md §7: few, large files). A reader of
//! the raw tables inside `serve` (`POST /api/sql`, the scheduled recompute) or beside it
//! (`netrev sql`) adds these rows to what the files hold. A store carries the [`Buffer`] of
//! the process that writes it ([`crate::Store::attach_buffer`]).
//!
//! Each row keeps its sequence number, so a reader that lists the files *after* taking the
//! rows drops exactly those a file it lists already holds (a file named
//! `<node>-<first>-<last>.parquet` holds every row of its partition that node numbered in
//! `first..=last`): a flush between the two steps shows a row once, never twice or not at all.

use std::sync::Arc;

use arrow::array::RecordBatch;
use chrono::NaiveDate;

use crate::model::Table;

/// Rows of one raw partition from one ingest node, with the sequence number of each.
#[derive(Debug, Clone)]
pub struct Unpersisted {
    pub node: Arc<str>,
    pub table: Table,
    pub date: NaiveDate,
    /// The sequence number of each row of `batch`, in order.
    pub seqs: Arc<[u64]>,
    /// Rows in the table's file schema ([`Table::schema`]).
    pub batch: RecordBatch,
}

/// Where the not-yet-persisted rows come from: the ingest buffer of a running server, or a
/// write-ahead log read from beside it.
pub trait Buffer: Send + Sync + std::fmt::Debug {
    /// The rows acknowledged so far and not yet in a raw file, as of this call. Cheap: the
    /// batches are shared, not copied.
    fn unpersisted(&self) -> Vec<Unpersisted>;
}

/// A fixed set of rows (read once from a write-ahead log).
#[derive(Debug, Default)]
pub struct Frozen(pub Vec<Unpersisted>);

impl Buffer for Frozen {
    fn unpersisted(&self) -> Vec<Unpersisted> {
        self.0.clone()
    }
}
