//! Tools for development and benchmarks, not for running the service: `netrev generate` (a
//! synthetic history, in bulk or replayed against a server) and `netrev bench-live`.

pub mod bench_live;
pub mod generate;
