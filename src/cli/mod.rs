//! The command line: `netrev serve` and the tools beside it (`recompute`, `sql`, `import`,
//! `generate` and the benchmarks' helpers). Only this module knows clap and the environment
//! variables; each command turns its flags into the configuration of the crate it runs.

mod serve;

use crate::commands;
use crate::devtools::{bench_incremental, bench_live, generate};
use crate::process::{keep_freed_memory, no_huge_pages};

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// netrev: the revenue core of an affiliate click tracker.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the postback service.
    Serve(Box<serve::ServeArgs>),
    /// Rebuild the derived tables (stats_hourly, cohort_ltv, cohort_sources, visitors,
    /// refund_links) from the raw events by running the SQL jobs of sql/.
    Recompute(RecomputeArgs),
    /// Run a read-only SQL query over the raw and derived tables and print the result.
    Sql(SqlArgs),
    /// Load clicks, conversions or refunds with their own times from a CSV or Parquet file.
    Import(ImportArgs),
    /// Rewrite the raw tables' many small files (a data root written by versions that flushed
    /// every second) as few large ones, in place; `serve` must be stopped.
    Compact(CompactArgs),
    /// Write a realistic synthetic history (clicks, conversions, refunds) into an empty data
    /// root's raw tables.
    Generate(GenerateArgs),
    /// Benchmark: the cost of one micro-batch of the live stats against this history.
    #[command(hide = true)]
    BenchLive {
        #[command(flatten)]
        data: DataArgs,
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        #[arg(long, default_value_t = 3)]
        live_days: u32,
    },
    /// Benchmark: a scheduled recompute by difference after the newest day of this history,
    /// against a full recompute.
    #[command(hide = true)]
    BenchIncremental {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Test aid: a Ballista scheduler and executor in this process, for `recompute --engine
    /// df://…`; prints the scheduler's address and runs until stopped.
    #[cfg(feature = "ballista")]
    #[command(hide = true)]
    BallistaCluster {
        /// Task slots of the executor.
        #[arg(long, default_value_t = 2)]
        vcores: usize,
        /// Start the scheduler alone, without an executor.
        #[arg(long)]
        no_executor: bool,
    },
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

/// The write-ahead log of a server on the same data root: the events it acknowledged and has
/// not yet written to Parquet (up to one flush interval of them) are read from it too.
#[derive(Debug, Args)]
struct LogArgs {
    /// The server's write-ahead-log directory (`serve --wal-dir`). Default: `<data>/wal` when
    /// it exists; without a log only the raw Parquet files are read.
    #[arg(long, env = "NETREV_WAL_DIR")]
    wal_dir: Option<PathBuf>,
}

impl LogArgs {
    fn dir(&self, data: &str) -> Option<PathBuf> {
        self.wal_dir
            .clone()
            .or_else(|| (!data.contains("://")).then(|| PathBuf::from(data).join("wal")))
    }
}

#[derive(Debug, Args)]
struct RecomputeArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    log: LogArgs,
    /// First click day of stats_hourly to rebuild (YYYY-MM-DD); default: the first.
    #[arg(long, value_parser = parse_date)]
    from: Option<chrono::NaiveDate>,
    /// Last click day of stats_hourly to rebuild (YYYY-MM-DD); default: the last.
    #[arg(long, value_parser = parse_date)]
    to: Option<chrono::NaiveDate>,
    /// Where the SQL jobs run: local (DataFusion in this process), ballista (a Ballista
    /// scheduler and executor in this process) or df://host:port (a Ballista cluster's
    /// scheduler; its executors must reach the data root by the same path or s3:// URL).
    #[arg(long, env = "NETREV_ENGINE", default_value = "local")]
    engine: netrev_pipeline::engine::Engine,
    /// Give up after this many seconds (0: never). A Ballista cluster without executors
    /// queues the jobs instead of failing them.
    #[arg(long, default_value_t = 0)]
    timeout_secs: u64,
}

#[derive(Debug, Args)]
struct SqlArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    log: LogArgs,
    /// The query, e.g. "select source, sum(clicks) from stats_hourly group by source".
    query: String,
    /// Output: table, csv or json.
    #[arg(long, default_value = "table")]
    format: netrev_pipeline::output::Format,
}

#[derive(Debug, Args)]
struct CompactArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Rows per file written.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    rows_per_file: u64,
}

#[derive(Debug, Args)]
struct ImportArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The table to load: clicks, conversions or refunds.
    #[arg(long, value_parser = parse_table)]
    table: netrev_storage::Table,
    /// A .csv file with a header row, or a .parquet file, with the table's columns and `ts`.
    file: PathBuf,
}

fn parse_table(s: &str) -> Result<netrev_storage::Table, String> {
    netrev_storage::Table::from_name(s)
        .ok_or_else(|| format!("{s:?} is not a table (clicks, conversions or refunds)"))
}

/// A size in bytes: a number, optionally followed by KiB, MiB or GiB.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "K" | "k" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        _ => return Err(format!("{s:?} is not a size like 1GiB, 512MiB or 65536")),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size like 1GiB, 512MiB or 65536"))
}

fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
    netrev_storage::model::parse_day(s)
        .ok_or_else(|| format!("{s:?} is not a date like 2026-11-27"))
}

#[derive(Debug, Args)]
struct GenerateArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Clicks to generate.
    #[arg(long)]
    clicks: u64,
    /// UTC days the history spans, ending yesterday.
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Seed of the generator: the same seed and sizes give the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instead of writing files, send the history as postbacks to this running server
    /// (e.g. http://127.0.0.1:8080), in event order.
    #[arg(long, value_name = "URL")]
    replay: Option<String>,
    /// With --replay: postbacks per second at most.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// With --replay: postbacks in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// With --replay: the server's postback token, if it requires one.
    #[arg(long, env = "NETREV_POSTBACK_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Cli {
    /// Whether the command is a recompute on the local engine, whose blocking threads are
    /// sized to the cores (see `main`).
    pub fn is_local_recompute(&self) -> bool {
        matches!(&self.command, Command::Recompute(a)
            if a.engine == netrev_pipeline::engine::Engine::Local)
    }
}

/// The configuration `netrev serve ARGS…` runs with: the same flags, environment variables and
/// defaults, for tests that run the service in their own process ([`netrev_server::spawn`]).
pub fn serve_config<S: AsRef<str>>(args: &[S]) -> anyhow::Result<netrev_server::ServeConfig> {
    let words = ["netrev", "serve"]
        .into_iter()
        .chain(args.iter().map(AsRef::as_ref));
    match Cli::try_parse_from(words)?.command {
        Command::Serve(args) => args.into_config(),
        _ => unreachable!("parsed as `serve`"),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            // Its start restores the live state from the checkpoint: a gigabyte or more of
            // maps built at once (see `no_huge_pages`).
            no_huge_pages();
            Ok(netrev_server::startup((*args).into_config()?).await?)
        }
        Command::Recompute(args) => {
            keep_freed_memory();
            no_huge_pages();
            let range = netrev_pipeline::recompute::DateRange {
                from: args.from,
                to: args.to,
            };
            let log = args.log.dir(&args.data.data);
            commands::recompute(&args.data.data, log, range, &args.engine, args.timeout_secs).await
        }
        Command::Sql(args) => {
            let log = args.log.dir(&args.data.data);
            commands::sql(&args.data.data, log, &args.query, args.format).await
        }
        Command::Import(args) => commands::import(&args.data.data, args.table, &args.file).await,
        Command::Compact(args) => {
            let config = netrev_pipeline::compact::CompactConfig {
                rows_per_file: usize::try_from(args.rows_per_file).unwrap_or(usize::MAX),
            };
            commands::compact(&args.data.data, &config).await
        }
        Command::Generate(args) if args.replay.is_some() => {
            let url = args.replay.as_deref().expect("checked");
            let r = generate::replay(
                url,
                args.token.as_deref(),
                args.clicks,
                args.days,
                args.seed,
                args.rate,
                args.concurrency,
            )
            .await?;
            let refused: u64 = r.refused.values().sum();
            eprintln!(
                "replayed {} clicks, {} conversions, {} refunds ({} retried twice): {} postbacks in {:.1}s ({:.0}/s), ack p50 {:.2} ms, p99 {:.2} ms, {} not answered 200 {:?}",
                r.summary.clicks,
                r.summary.conversions,
                r.summary.refunds,
                r.summary.duplicates,
                r.sent,
                r.secs,
                r.sent as f64 / r.secs.max(1e-9),
                r.p50_ms,
                r.p99_ms,
                refused,
                r.refused
            );
            anyhow::ensure!(refused == 0, "some postbacks were refused");
            Ok(())
        }
        Command::Generate(args) => {
            let store = netrev_storage::Store::open(&args.data.data)?;
            let started = std::time::Instant::now();
            let s = generate::generate(&store, args.clicks, args.days, args.seed).await?;
            eprintln!(
                "generated {} clicks, {} conversions, {} refunds ({} retried twice) in {} files, {:.1}s",
                s.clicks,
                s.conversions,
                s.refunds,
                s.duplicates,
                s.files,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::BenchLive {
            data,
            batch,
            live_days,
        } => bench_live::run(&data.data, batch, live_days).await,
        Command::BenchIncremental { data } => bench_incremental::run(&data.data).await,
        Command::BenchBare { listen } => Ok(netrev_server::run_bare(listen).await?),
        #[cfg(feature = "ballista")]
        Command::BallistaCluster {
            vcores,
            no_executor,
        } => {
            let url = netrev_pipeline::engine::start_cluster(vcores, !no_executor).await?;
            println!("{url}");
            std::future::pending::<anyhow::Result<()>>().await
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_with_binary_units_and_refuse_the_rest() {
        use super::parse_size;
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size(" 64 KiB "), Ok(64 << 10));
        assert_eq!(parse_size("65536"), Ok(65536));
        for bad in [
            "",
            "0",
            "1TB",
            "-1GiB",
            "1.5GiB",
            "GiB",
            "99999999999999999999G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_secret_file_loses_its_line_break_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "s3cret \r\n").unwrap();
        assert_eq!(super::serve::read_secret(&file).unwrap(), "s3cret ");
        std::fs::write(&file, "\n").unwrap();
        assert!(super::serve::read_secret(&file).is_err());
        assert!(super::serve::read_secret(&dir.path().join("missing")).is_err());
    }
}
