//! `netrev`: the binary. Parses the command line and environment, then hands over to the
//! library crates: [`serve`] wires ingest and storage into one HTTP service.

mod api;
mod bench_live;
mod commands;
mod dashboard;
mod generate;
mod guard;
mod http_server;
mod rate_limit;
mod serve;

/// mimalloc instead of glibc's allocator: the ingest path allocates small, short-lived
/// buffers on every worker thread, where glibc's arenas showed up as a tenth of the CPU time
/// in profiles of the ingest benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h`; libmimalloc-sys names no constant
/// for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps the memory the allocator frees for reuse instead of handing it back to the OS a
/// second later (mimalloc's default), unless `MIMALLOC_PURGE_DELAY` says otherwise. For a
/// one-shot `recompute`: its stages free and allocate gigabytes one after another, and memory
/// handed back is zeroed again by the kernel when touched anew (a quarter of a recompute's CPU
/// time in profiles). `serve` keeps the default, so it shrinks back after its recomputes.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide option that mimalloc reads whenever it would purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

/// Turns off transparent huge pages for this process, unless `MIMALLOC_ALLOW_THP` says
/// otherwise. For a one-shot `recompute`: mimalloc asks the kernel for 2 MiB pages, each zeroed
/// whole when first touched, and on this project's VM those faults cost more than the fewer
/// TLB misses save. Measured on the benchmark history (10M clicks), seven runs each, taking
/// turns, two of them right after another process had used and freed 2.7 GiB (as DuckDB does
/// in the benchmark): 8.8–9.4 s (1.6–2.3 s of system time) without them, 9.0–11.9 s (2.5–8.1 s)
/// with them.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn no_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: sets a flag of this process that the kernel reads on page faults; passes no
        // memory.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

#[cfg(not(target_os = "linux"))]
fn no_huge_pages() {}

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
    Serve(Box<ServeArgs>),
    /// Rebuild the derived tables (stats_hourly, cohort_ltv, visitors, refund_links) from the
    /// raw events by running the SQL jobs of sql/.
    Recompute(RecomputeArgs),
    /// Run a read-only SQL query over the raw and derived tables and print the result.
    Sql(SqlArgs),
    /// Load clicks, conversions or refunds with their own times from a CSV or Parquet file.
    Import(ImportArgs),
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

#[derive(Debug, Args)]
struct RecomputeArgs {
    #[command(flatten)]
    data: DataArgs,
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
    /// The query, e.g. "select source, sum(clicks) from stats_hourly group by source".
    query: String,
    /// Output: table, csv or json.
    #[arg(long, default_value = "table")]
    format: netrev_pipeline::output::Format,
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
    /// File holding the postback token (instead of --postback-token; kept out of `ps` and the
    /// environment).
    #[arg(
        long,
        env = "NETREV_POSTBACK_TOKEN_FILE",
        conflicts_with = "postback_token"
    )]
    postback_token_file: Option<PathBuf>,
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
    /// Seconds between scheduled recomputes of the derived tables, which also rebuild the
    /// live stats from the raw tables (0: only the one at start).
    #[arg(long, env = "NETREV_RECOMPUTE_INTERVAL_SECS", default_value_t = 900)]
    recompute_interval_secs: u64,
    /// UTC days of clicks (today included) the live stats hold in memory; events for older
    /// clicks look them up in that day's Parquet files.
    #[arg(long, env = "NETREV_LIVE_DAYS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    live_days: u32,
    /// Milliseconds between rewrites of the stats_hourly partitions the live stats changed.
    #[arg(long, env = "NETREV_LIVE_PERSIST_MS", default_value_t = 2000)]
    live_persist_ms: u64,
    /// API key of the query routes (`Authorization: Bearer KEY`); required to listen on an
    /// address other than loopback.
    #[arg(long, env = "NETREV_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// File holding the API key (instead of --api-key).
    #[arg(long, env = "NETREV_API_KEY_FILE", conflicts_with = "api_key")]
    api_key_file: Option<PathBuf>,
    /// Without an API key, a host name the API and dashboard answer besides localhost and
    /// loopback addresses (repeatable); requests naming another `Host` get 403 (DNS rebinding).
    #[arg(
        long = "allowed-host",
        env = "NETREV_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// Most rows a `POST /api/sql` answer holds (more are cut, header x-netrev-truncated).
    #[arg(long, env = "NETREV_SQL_MAX_ROWS", default_value_t = 100_000)]
    sql_max_rows: usize,
    /// Seconds an analyst's query (`POST /api/sql`, the cohort, visitor and refund routes)
    /// may take, planning included; then it is stopped.
    #[arg(long, env = "NETREV_SQL_TIMEOUT_SECS", default_value_t = 30)]
    sql_timeout_secs: u64,
    /// Longest SQL text `POST /api/sql` takes, in bytes (longer: 400).
    #[arg(long, env = "NETREV_SQL_MAX_BYTES", default_value_t = 64 << 10)]
    sql_max_bytes: usize,
    /// Deepest nesting of expressions (a chain `a OR b OR …` counts each operator) and
    /// subqueries in a query (deeper: 400).
    /// At most 1,000: DataFusion plans a chain recursively, and 3,000 terms overflowed its
    /// 16 MiB stack (a debug build), which aborts the process.
    #[arg(long, env = "NETREV_SQL_MAX_DEPTH", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    sql_max_depth: u16,
    /// Most tables a query reads, a common table expression counting as the tables it reads
    /// each time it is named (more: 400).
    #[arg(long, env = "NETREV_SQL_MAX_TABLES", default_value_t = 64)]
    sql_max_tables: usize,
    /// Memory all analysts' queries together may use (e.g. 1GiB, 512MiB); a query that needs
    /// more gets 422.
    #[arg(long, env = "NETREV_SQL_MAX_MEMORY", default_value = "1GiB", value_parser = parse_size)]
    sql_max_memory: usize,
    /// Memory one analyst's query may use (at most --sql-max-memory).
    #[arg(long, env = "NETREV_SQL_QUERY_MAX_MEMORY", default_value = "512MiB", value_parser = parse_size)]
    sql_query_max_memory: usize,
    /// Threads that run analysts' queries, apart from those serving postbacks. Default: half
    /// the cores, at least one.
    #[arg(long, env = "NETREV_SQL_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    sql_threads: Option<u16>,
    /// Let webhook endpoints target private, loopback and link-local addresses (development).
    #[arg(long, env = "NETREV_WEBHOOKS_ALLOW_PRIVATE")]
    webhooks_allow_private: bool,
    /// Webhook attempts: seconds to wait before each, comma-separated (the first counts from
    /// the event; each next one from the previous failure). Jittered by ±20%.
    #[arg(long, env = "NETREV_WEBHOOKS_RETRY_SCHEDULE", default_value = "0,5,300,1800,7200,18000,36000,36000", value_parser = netrev_webhooks::deliver::parse_schedule)]
    webhooks_retry_schedule: std::vec::Vec<std::time::Duration>,
    /// Milliseconds a client has to send its request headers before it is disconnected.
    #[arg(long, env = "NETREV_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    header_read_timeout_ms: u64,
    /// Open connections at most; beyond it new connections are closed at once.
    #[arg(long, env = "NETREV_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Open connections from one client address (an IPv6 client: its /64) at most; trusted
    /// proxies are exempt.
    #[arg(long, env = "NETREV_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    max_connections_per_ip: usize,
    /// Seconds a connection may stay open with nothing happening: no request being worked on,
    /// no piece of an answer taken by the client.
    #[arg(long, env = "NETREV_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,
    /// Seconds a request's body may take to arrive after its headers (later: 408).
    #[arg(long, env = "NETREV_BODY_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_secs: u64,
    /// Seconds between HTTP/2 pings; a client that does not answer one within as long is
    /// disconnected.
    #[arg(long, env = "NETREV_HTTP2_KEEP_ALIVE_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    http2_keep_alive_secs: u64,
    /// Requests in flight at once on one HTTP/2 connection.
    #[arg(long, env = "NETREV_HTTP2_MAX_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_streams: u32,
    /// Postbacks per second per client address (0: no limit); more get 429 + Retry-After.
    #[arg(long, env = "NETREV_RATE_LIMIT_PER_IP", default_value_t = 1000.0)]
    rate_limit_per_ip: f64,
    /// Burst of postbacks a client may send above the rate.
    #[arg(long, env = "NETREV_RATE_LIMIT_BURST", default_value_t = 2000.0)]
    rate_limit_burst: f64,
    /// Address of a reverse proxy whose X-Forwarded-For is believed (repeatable).
    #[arg(
        long = "trusted-proxy",
        env = "NETREV_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// ClickBank secret key (Vendor Settings → My Site → Secret Key): enables
    /// `POST /api/ipn/clickbank` for INS 6.0 or later.
    #[arg(long, env = "NETREV_IPN_CLICKBANK_SECRET", hide_env_values = true)]
    ipn_clickbank_secret: Option<String>,
    /// File holding the clickbank IPN secret (instead of --ipn-clickbank-secret).
    #[arg(
        long,
        env = "NETREV_IPN_CLICKBANK_SECRET_FILE",
        conflicts_with = "ipn_clickbank_secret"
    )]
    ipn_clickbank_secret_file: Option<PathBuf>,
    /// JVZoo secret key (My Account → JVZIPN Secret Key): enables `POST /api/ipn/jvzoo`.
    #[arg(long, env = "NETREV_IPN_JVZOO_SECRET", hide_env_values = true)]
    ipn_jvzoo_secret: Option<String>,
    /// File holding the jvzoo IPN secret (instead of --ipn-jvzoo-secret).
    #[arg(
        long,
        env = "NETREV_IPN_JVZOO_SECRET_FILE",
        conflicts_with = "ipn_jvzoo_secret"
    )]
    ipn_jvzoo_secret_file: Option<PathBuf>,
    /// WarriorPlus security key (Account → API/IPN settings): enables
    /// `POST /api/ipn/warriorplus`.
    #[arg(long, env = "NETREV_IPN_WARRIORPLUS_SECRET", hide_env_values = true)]
    ipn_warriorplus_secret: Option<String>,
    /// File holding the warriorplus IPN secret (instead of --ipn-warriorplus-secret).
    #[arg(
        long,
        env = "NETREV_IPN_WARRIORPLUS_SECRET_FILE",
        conflicts_with = "ipn_warriorplus_secret"
    )]
    ipn_warriorplus_secret_file: Option<PathBuf>,
    /// Digistore24 IPN passphrase (Settings → Integrations (IPN)): enables
    /// `POST /api/ipn/digistore24`.
    #[arg(long, env = "NETREV_IPN_DIGISTORE24_SECRET", hide_env_values = true)]
    ipn_digistore24_secret: Option<String>,
    /// File holding the digistore24 IPN secret (instead of --ipn-digistore24-secret).
    #[arg(
        long,
        env = "NETREV_IPN_DIGISTORE24_SECRET_FILE",
        conflicts_with = "ipn_digistore24_secret"
    )]
    ipn_digistore24_secret_file: Option<PathBuf>,
    /// Serve the postback routes only (an extra ingest node on a shared S3 data root): no
    /// live stats, query routes, dashboard, webhooks or scheduled recompute.
    #[arg(long, env = "NETREV_INGEST_ONLY")]
    ingest_only: bool,
    /// Webhook deliveries attempted at once (a slow receiver holds one slot at most 15 s).
    #[arg(long, env = "NETREV_WEBHOOKS_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    webhooks_concurrency: u32,
}

/// Logging without `NETREV_LOG`: netrev at info; Ballista (which logs every task at info and
/// some harmless metric mismatches as errors) only at warn.
const DEFAULT_LOG: &str = "info,ballista=warn,ballista_core=warn,ballista_executor=warn,\
                           ballista_scheduler=warn,ballista_scheduler::display=off";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETREV_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Deep query plans are walked recursively (Ballista encodes and decodes each plan it ships):
    // more room than tokio's 2 MiB workers and the main thread's 8 MiB, for the workers and
    // for the thread that drives the command.
    const STACK: usize = 16 << 20;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Recompute(args) = &cli.command
        && args.engine == netrev_pipeline::engine::Engine::Local
    {
        // The blocking threads of a local recompute read local files and encode Parquet:
        // work for the cores, not for hundreds of threads. Each thread that ever allocated
        // keeps memory of its own in the allocator; with tokio's 512 (41 were started), peak
        // RSS was 3.5–4.1 GiB, with one per core 3.1–3.5 GiB, and no slower.
        builder.max_blocking_threads(std::thread::available_parallelism().map_or(2, |n| n.get()));
    }
    let runtime = builder.enable_all().thread_stack_size(STACK).build()?;
    std::thread::Builder::new()
        .name("netrev-main".into())
        .stack_size(STACK)
        .spawn(move || runtime.block_on(run(cli)))?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run((*args).into_config()?).await,
        Command::Recompute(args) => {
            keep_freed_memory();
            no_huge_pages();
            let range = netrev_pipeline::recompute::DateRange {
                from: args.from,
                to: args.to,
            };
            commands::recompute(&args.data.data, range, &args.engine, args.timeout_secs).await
        }
        Command::Sql(args) => commands::sql(&args.data.data, &args.query, args.format).await,
        Command::Import(args) => commands::import(&args.data.data, args.table, &args.file).await,
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
        Command::BenchBare { listen } => serve::run_bare(listen).await,
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

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<serve::ServeConfig> {
        // A remote data root has no local directory to hold the log: it must be given.
        let wal_dir = self.wal_dir.unwrap_or_else(|| {
            if self.data.data.contains("://") {
                PathBuf::new()
            } else {
                PathBuf::from(&self.data.data).join("wal")
            }
        });
        let secret = |value: Option<String>, file: Option<PathBuf>| match file {
            Some(path) => read_secret(&path).map(Some),
            None => Ok(value),
        };
        Ok(serve::ServeConfig {
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
                token: secret(self.postback_token, self.postback_token_file)?,
                body_limit: self.body_limit,
                ipn: netrev_ingest::ipn::IpnSecrets {
                    clickbank: secret(self.ipn_clickbank_secret, self.ipn_clickbank_secret_file)?,
                    jvzoo: secret(self.ipn_jvzoo_secret, self.ipn_jvzoo_secret_file)?,
                    warriorplus: secret(
                        self.ipn_warriorplus_secret,
                        self.ipn_warriorplus_secret_file,
                    )?,
                    digistore24: secret(
                        self.ipn_digistore24_secret,
                        self.ipn_digistore24_secret_file,
                    )?,
                },
            },
            live: netrev_live::LiveConfig {
                days: self.live_days,
                persist_every: std::time::Duration::from_millis(self.live_persist_ms),
                rebase_every: (self.recompute_interval_secs > 0)
                    .then(|| std::time::Duration::from_secs(self.recompute_interval_secs)),
            },
            http: crate::http_server::Limits {
                header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms),
                max_connections: self.max_connections,
                max_connections_per_ip: self.max_connections_per_ip,
                idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
                body_timeout: std::time::Duration::from_secs(self.body_timeout_secs),
                http2_keep_alive: std::time::Duration::from_secs(self.http2_keep_alive_secs),
                http2_max_streams: self.http2_max_streams,
                exempt: self.trusted_proxies.clone(),
            },
            rate_limit: (
                self.rate_limit_per_ip,
                self.rate_limit_burst,
                self.trusted_proxies,
            ),
            api_key: secret(self.api_key, self.api_key_file)?,
            allowed_hosts: self
                .allowed_hosts
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            webhooks: netrev_webhooks::deliver::DeliveryConfig {
                schedule: self.webhooks_retry_schedule,
                concurrency: self.webhooks_concurrency as usize,
                allow_private: self.webhooks_allow_private,
                ..Default::default()
            },
            ingest_only: self.ingest_only,
            sql: serve::SqlConfig {
                limits: netrev_pipeline::query::Limits {
                    max_rows: self.sql_max_rows,
                    timeout: std::time::Duration::from_secs(self.sql_timeout_secs),
                    max_sql_bytes: self.sql_max_bytes,
                    max_depth: self.sql_max_depth.into(),
                    max_tables: self.sql_max_tables,
                    max_memory: self.sql_query_max_memory,
                },
                max_memory: self.sql_max_memory,
                threads: self.sql_threads.map(usize::from).unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, |n| n.get() / 2)
                }),
            },
        })
    }
}

/// A secret read from `path`, without the line break an editor leaves at its end.
fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the secret file {}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(
        !secret.is_empty(),
        "the secret file {} is empty",
        path.display()
    );
    Ok(secret)
}

#[cfg(test)]
mod tests {
    /// The option set by `keep_freed_memory` is mimalloc's purge delay: the only option whose
    /// default is 1000 (milliseconds). A mimalloc that renumbered its options fails here.
    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_option_is_the_one_that_defaults_to_a_second() {
        // SAFETY: reads a process-wide option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)]
    fn no_huge_pages_sets_the_process_flag() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return; // the variable leaves the flag as it is
        }
        super::no_huge_pages();
        // SAFETY: reads a flag of this process.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }

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
        assert_eq!(super::read_secret(&file).unwrap(), "s3cret ");
        std::fs::write(&file, "\n").unwrap();
        assert!(super::read_secret(&file).is_err());
        assert!(super::read_secret(&dir.path().join("missing")).is_err());
    }
}
