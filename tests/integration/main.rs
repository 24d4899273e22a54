//! Integration tests: one binary of modules, so DataFusion and friends are linked once.
//! Each test speaks HTTP to the service on 127.0.0.1:0: the real `netrev` binary
//! ([`harness::Server`]) where a test needs a real disk, a kill -9, the command-line tools or a
//! process of its own (memory, latency); otherwise the whole service inside the test's process
//! ([`harness::Service`]) on an in-memory data root with a clock the test moves.

mod abuse;
mod api;
#[cfg(feature = "ballista")]
mod ballista;
mod crash;
mod faults;
mod fuzz;
mod generate;
mod golden;
mod hardening;
mod harness;
mod ipn;
mod jobs;
mod links;
mod live;
mod model;
mod persist;
mod postbacks;
mod s3;
mod storage;
mod webhooks;
