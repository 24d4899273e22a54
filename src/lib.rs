//! `netrev`'s command line as a library: the binary (`main.rs`) parses it and runs
//! [`cli::run`]; tests build the service's configuration from the very same flags and defaults
//! ([`cli::serve_config`]) to run it in their own process.

pub mod cli;
mod commands;
mod devtools;
mod process;
