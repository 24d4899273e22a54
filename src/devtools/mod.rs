//! Tools for development and benchmarks, not for running the service: `netrev generate` (a
//! synthetic history, in bulk or replayed against a server), `netrev bench-live` and
//! `netrev bench-incremental`.

pub mod bench_incremental;
pub mod bench_live;
pub mod generate;
