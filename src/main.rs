//! `netrev`: the binary. Parses the command line and environment, then hands over to the
//! library crates: [`serve`] wires ingest and storage into one HTTP service.

mod serve;

/// mimalloc instead of glibc's allocator: the ingest path allocates small, short-lived
/// buffers on every worker thread, where glibc's arenas showed up as a tenth of the CPU time
/// in profiles of the ingest benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// netrev: the revenue core of an affiliate click tracker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the postback service.
    Serve(ServeArgs),
    /// Benchmark baseline: a bare HTTP server whose postback routes only answer {"ok":true}.
    #[command(hide = true)]
    BenchBare {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
    },
}

/// Where the data lives; shared by every subcommand.
#[derive(Debug, Args)]
struct DataArgs {
    /// Data root: a directory (created when missing).
    #[arg(long = "data", env = "NETREV_DATA", default_value = "./data")]
    data: String,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address and port to listen on.
    #[arg(long, env = "NETREV_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Token every postback must carry (`token` parameter or `X-Postback-Token` header).
    #[arg(long, env = "NETREV_POSTBACK_TOKEN", hide_env_values = true)]
    postback_token: Option<String>,
    /// Directory of this node's write-ahead log (a local disk). Default: `<data>/wal`.
    #[arg(long, env = "NETREV_WAL_DIR")]
    wal_dir: Option<PathBuf>,
    /// This node's ID in raw file names. Default: generated once and kept in the WAL directory.
    #[arg(long, env = "NETREV_NODE_ID")]
    node_id: Option<String>,
    /// Milliseconds between flushes of the ingest buffer to Parquet.
    #[arg(long, env = "NETREV_FLUSH_INTERVAL_MS", default_value_t = 1000)]
    flush_interval_ms: u64,
    /// Buffered events that trigger an early flush.
    #[arg(long, env = "NETREV_FLUSH_ROWS", default_value_t = 100_000)]
    flush_rows: usize,
    /// Events accepted but not yet in Parquet beyond which postbacks get 503 + Retry-After.
    #[arg(long, env = "NETREV_MAX_BUFFERED", default_value_t = 1_000_000)]
    max_buffered: usize,
    /// Largest postback body in bytes (larger: 413).
    #[arg(long, env = "NETREV_BODY_LIMIT", default_value_t = 64 * 1024)]
    body_limit: usize,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETREV_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args.into_config()).await,
            Command::BenchBare { listen } => serve::run_bare(listen).await,
        }
    })
}

impl ServeArgs {
    fn into_config(self) -> serve::ServeConfig {
        let wal_dir = self
            .wal_dir
            .unwrap_or_else(|| PathBuf::from(&self.data.data).join("wal"));
        serve::ServeConfig {
            data: self.data.data,
            listen: self.listen,
            ingest: netrev_ingest::IngestConfig {
                wal_dir,
                node_id: self.node_id,
                flush_interval: std::time::Duration::from_millis(self.flush_interval_ms),
                flush_rows: self.flush_rows,
                max_buffered: self.max_buffered,
                ..Default::default()
            },
            postbacks: netrev_ingest::http::PostbackConfig {
                token: self.postback_token,
                body_limit: self.body_limit,
            },
        }
    }
}
