//! # netrev-server: the service
//!
//! **In:** a [`ServeConfig`]. **Out:** the running service ([`startup`]): the postback routes
//! (`netrev_ingest::http`), the query API ([`api`]), the dashboard, the webhooks' delivery
//! and the live state, behind one HTTP server with its limits ([`http_server`]), until
//! SIGINT/SIGTERM; then everything acknowledged is flushed.
//!
//! **Guarantees:** postbacks are served on their own threads, apart from analysts' queries;
//! every limit of a connection or request is a setting; every error answer of the API and the
//! dashboard is chosen in one place ([`api::ApiError`]).
//!
//! Layout: [`serve`] (wiring: opens the data root, the ingestor, the live state, the
//! webhooks; health) → [`http_server`] (hyper with timeouts and connection limits) → `guard`
//! (Host and JSON rules), `rate_limit`, [`api`], [`links`] (the tracking links' visits),
//! `dashboard`.

pub mod api;
mod dashboard;
mod guard;
pub mod http_server;
pub mod links;
mod rate_limit;
pub mod serve;

pub use serve::{InProcess, LinksConfig, ServeConfig, SqlConfig, run_bare, spawn, startup};

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting cannot be used; the message says which and what to do.
    #[error("{0}")]
    Config(String),
    /// A part of the service failed to start (`what`), or the final flush failed.
    #[error("{what}: {source}")]
    Start {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `r` with its error as [`Error::Start`] of `what`.
pub(crate) fn starting<T, E>(r: std::result::Result<T, E>, what: impl Into<String>) -> Result<T>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    r.map_err(|e| Error::Start {
        what: what.into(),
        source: e.into(),
    })
}
