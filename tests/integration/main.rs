//! Integration tests: one binary of modules, so DataFusion and friends are linked once.
//! Each test starts the real `netrev` binary on 127.0.0.1:0 and speaks HTTP to it.

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
mod live;
mod model;
mod postbacks;
mod s3;
mod storage;
mod webhooks;
