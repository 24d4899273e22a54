//! # netrev-storage: the event model and the object store it lives in
//!
//! **In:** validated events ([`Click`], [`Conversion`], [`Refund`]) and Arrow record batches of
//! them; a data root (a local directory, later an S3-compatible URL).
//!
//! **Out:** Parquet files in the Hive layout of the product contract (docs/design.md §7):
//!
//! ```text
//! events/clicks/date=YYYY-MM-DD/*.parquet      (also conversions, refunds)
//! tables/<derived table>/…
//! ```
//!
//! with exactly the public column names and types (`Decimal128(18,4)` money,
//! `Timestamp(Microsecond, "UTC")` times), readable by DataFusion, DuckDB or pandas.
//!
//! **Guarantees:**
//! - money is exact: [`money`] parses decimals without floats and refuses anything that does not
//!   fit `Decimal128(18,4)`;
//! - a file is visible whole or not at all ([`Store::put_durable`] writes a temporary file,
//!   fsyncs it, renames it into place and fsyncs the directory on the local backend);
//! - click IDs ([`clickid`]) sort by click time, carry that time, and carry a MAC that rejects
//!   forged or mistyped IDs.
//!
//! This crate knows nothing of HTTP, write-ahead logs or SQL jobs.

pub mod buffer;
pub mod clickid;
pub mod clock;
pub mod csv;
mod error;
pub mod failpoint;
pub mod model;
pub mod money;
pub mod sealed;
pub mod settings;
pub mod store;

pub use clock::Clock;
pub use error::{Error, Result};
pub use model::{Click, Conversion, Event, Refund, RefundType, Table};
pub use store::Store;
