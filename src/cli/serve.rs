//! `netrev serve`: its flags, one group per component, each turned into that component's
//! configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{DataArgs, parse_size};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address and port to listen on.
    #[arg(long, env = "NETREV_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
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
    /// Serve the postback routes only (an extra ingest node on a shared S3 data root): no
    /// live stats, query routes, dashboard, webhooks or scheduled recompute.
    #[arg(long, env = "NETREV_INGEST_ONLY")]
    ingest_only: bool,
    /// Benchmarks only: run the service's clock this many times as fast as real time (event
    /// times, days and flush times; 1440 makes a day a minute).
    #[arg(long, hide = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    clock_speed: u32,
    #[command(flatten)]
    ingest: IngestArgs,
    #[command(flatten)]
    postbacks: PostbackArgs,
    #[command(flatten)]
    live: LiveArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    sql: AnalystArgs,
    #[command(flatten)]
    webhooks: WebhookArgs,
    #[command(flatten)]
    links: LinkArgs,
}

/// Tracking links (`/r/{slug}`).
#[derive(Debug, Args)]
struct LinkArgs {
    /// Most tracking links kept (all are held in memory and in `meta/links.json`, rewritten
    /// whole on each change).
    #[arg(long, env = "NETREV_LINKS_MAX", default_value_t = netrev_server::links::LINKS_MAX)]
    links_max: usize,
    /// Most one click of a tracking link may cost: the link's `cost`, and a visit's own
    /// `cost=` (anyone's to choose: more is 400 and records nothing).
    #[arg(long, env = "NETREV_LINKS_MAX_CLICK_COST", default_value_t = netrev_server::links::MAX_CLICK_COST, value_parser = parse_money)]
    links_max_click_cost: rust_decimal::Decimal,
    /// A request header a trusted proxy sets to the visitor's two-letter country, such as
    /// `CF-IPCountry`; believed whenever present, so set it only behind such a proxy.
    #[arg(long, env = "NETREV_GEOIP_HEADER")]
    geoip_header: Option<String>,
    /// A MaxMind-format database (GeoLite2-Country, GeoIP2-City…) giving the visitor's
    /// country from its address, when the header gives none. Read whole at start.
    #[arg(long, env = "NETREV_GEOIP_DB")]
    geoip_db: Option<PathBuf>,
}

/// The ingest buffer and its write-ahead log.
#[derive(Debug, Args)]
struct IngestArgs {
    /// Directory of this node's write-ahead log (a local disk). Default: `<data>/wal`.
    #[arg(long, env = "NETREV_WAL_DIR")]
    wal_dir: Option<PathBuf>,
    /// This node's ID in raw file names. Default: generated once and kept in the WAL directory.
    #[arg(long, env = "NETREV_NODE_ID")]
    node_id: Option<String>,
    /// Milliseconds between flushes of the ingest buffer to Parquet files, at multiples of it
    /// since midnight UTC: 30 minutes gives a raw table at most 48 files a day. Queries of
    /// netrev (`/api/sql`, `netrev sql`, the recompute) read the buffer as well; outside
    /// readers of the Parquet files see an event once it is flushed.
    #[arg(long, env = "NETREV_FLUSH_INTERVAL_MS", default_value_t = 1_800_000)]
    flush_interval_ms: u64,
    /// Buffered events that trigger an early flush.
    #[arg(long, env = "NETREV_FLUSH_ROWS", default_value_t = 100_000)]
    flush_rows: usize,
    /// Events accepted but not yet in Parquet beyond which postbacks get 503 + Retry-After.
    #[arg(long, env = "NETREV_MAX_BUFFERED", default_value_t = 1_000_000)]
    max_buffered: usize,
}

/// The postback and IPN routes: their token, secrets and body limit.
#[derive(Debug, Args)]
struct PostbackArgs {
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
    /// Largest postback body in bytes (larger: 413).
    #[arg(long, env = "NETREV_BODY_LIMIT", default_value_t = 64 * 1024)]
    body_limit: usize,
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
}

/// The live state and the recompute schedule that rebases it.
#[derive(Debug, Args)]
struct LiveArgs {
    /// Seconds between scheduled recomputes of the derived tables: by difference after the
    /// first (full, rebuilding the live stats, when one cannot be); the closed days' raw
    /// files are compacted after each on a local root (0: only the one at start).
    #[arg(long, env = "NETREV_RECOMPUTE_INTERVAL_SECS", default_value_t = 900)]
    recompute_interval_secs: u64,
    /// UTC days of clicks (today included) the live stats hold in memory; events for older
    /// clicks look them up in that day's Parquet files.
    #[arg(long, env = "NETREV_LIVE_DAYS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    live_days: u32,
    /// Milliseconds between rewrites of the stats_hourly partitions the live stats changed.
    #[arg(long, env = "NETREV_LIVE_PERSIST_MS", default_value_t = 2000)]
    live_persist_ms: u64,
    /// Seconds between checkpoints of the live state (beside the write-ahead log) while events
    /// arrive; one is also written after each recompute and at a stop. A start restores the
    /// state from it instead of recomputing in full (0: no checkpoints).
    #[arg(long, env = "NETREV_LIVE_CHECKPOINT_SECS", default_value_t = 300)]
    live_checkpoint_secs: u64,
    /// MiB of memory (estimated) the conversions and refunds waiting for a click not known yet
    /// may take; beyond it they are left to the raw files, and read back from them if their
    /// click arrives from another node or an import (0: none held).
    #[arg(long, env = "NETREV_LIVE_PENDING_MAX_MIB", default_value_t = netrev_live::runner::PENDING_MAX_MIB)]
    live_pending_max_mib: usize,
}

/// The HTTP server's timeouts, connection limits and rate limit.
#[derive(Debug, Args)]
struct HttpArgs {
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
    /// Postbacks per second per client address (an IPv6 client: its /64; 0: no limit); more
    /// get 429 + Retry-After.
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
}

/// Analysts' queries: their threads and limits.
#[derive(Debug, Args)]
struct AnalystArgs {
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
}

/// Webhook deliveries.
#[derive(Debug, Args)]
struct WebhookArgs {
    /// Let webhook endpoints target private, loopback and link-local addresses (development).
    #[arg(long, env = "NETREV_WEBHOOKS_ALLOW_PRIVATE")]
    webhooks_allow_private: bool,
    /// Webhook attempts: seconds to wait before each, comma-separated (the first counts from
    /// the event; each next one from the previous failure). Jittered by ±20%.
    #[arg(long, env = "NETREV_WEBHOOKS_RETRY_SCHEDULE", default_value = "0,5,300,1800,7200,18000,36000,36000", value_parser = netrev_webhooks::deliver::parse_schedule)]
    webhooks_retry_schedule: std::vec::Vec<std::time::Duration>,
    /// Webhook deliveries attempted at once (a slow receiver holds one slot at most 15 s).
    #[arg(long, env = "NETREV_WEBHOOKS_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    webhooks_concurrency: u32,
}

impl ServeArgs {
    pub fn into_config(self) -> anyhow::Result<netrev_server::ServeConfig> {
        if self.ingest.flush_rows >= self.ingest.max_buffered {
            // A buffer that refuses postbacks before it asks for a flush would refuse them
            // until the next flush time.
            anyhow::bail!(
                "--flush-rows ({}) must be below --max-buffered ({})",
                self.ingest.flush_rows,
                self.ingest.max_buffered
            );
        }
        let http = self.http;
        Ok(netrev_server::ServeConfig {
            ingest: self.ingest.into_config(&self.data.data),
            postbacks: self.postbacks.try_into()?,
            live: self.live.into(),
            rate_limit: (
                http.rate_limit_per_ip,
                http.rate_limit_burst,
                http.trusted_proxies.clone(),
            ),
            http: http.into(),
            sql: self.sql.into(),
            webhooks: self.webhooks.into(),
            links: netrev_server::LinksConfig {
                max: self.links.links_max,
                max_click_cost: self.links.links_max_click_cost,
                geoip_header: self.links.geoip_header,
                geoip_db: self.links.geoip_db,
            },
            data: self.data.data,
            listen: self.listen,
            api_key: secret(self.api_key, self.api_key_file)?,
            allowed_hosts: self
                .allowed_hosts
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            ingest_only: self.ingest_only,
            clock_speed: self.clock_speed,
        })
    }
}

impl IngestArgs {
    fn into_config(self, data: &str) -> netrev_ingest::IngestConfig {
        // A remote data root has no local directory to hold the log: it must be given.
        let wal_dir = self.wal_dir.unwrap_or_else(|| {
            if data.contains("://") {
                PathBuf::new()
            } else {
                PathBuf::from(data).join("wal")
            }
        });
        netrev_ingest::IngestConfig {
            wal_dir,
            node_id: self.node_id,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            flush_rows: self.flush_rows,
            max_buffered: self.max_buffered,
            ..Default::default()
        }
    }
}

impl TryFrom<PostbackArgs> for netrev_ingest::http::PostbackConfig {
    type Error = anyhow::Error;

    fn try_from(a: PostbackArgs) -> anyhow::Result<Self> {
        Ok(netrev_ingest::http::PostbackConfig {
            token: secret(a.postback_token, a.postback_token_file)?,
            body_limit: a.body_limit,
            ipn: netrev_ingest::ipn::IpnSecrets {
                clickbank: secret(a.ipn_clickbank_secret, a.ipn_clickbank_secret_file)?,
                jvzoo: secret(a.ipn_jvzoo_secret, a.ipn_jvzoo_secret_file)?,
                warriorplus: secret(a.ipn_warriorplus_secret, a.ipn_warriorplus_secret_file)?,
                digistore24: secret(a.ipn_digistore24_secret, a.ipn_digistore24_secret_file)?,
            },
        })
    }
}

impl From<LiveArgs> for netrev_live::LiveConfig {
    fn from(a: LiveArgs) -> Self {
        netrev_live::LiveConfig {
            days: a.live_days,
            persist_every: Duration::from_millis(a.live_persist_ms),
            rebase_every: (a.recompute_interval_secs > 0)
                .then(|| Duration::from_secs(a.recompute_interval_secs)),
            checkpoint_every: (a.live_checkpoint_secs > 0)
                .then(|| Duration::from_secs(a.live_checkpoint_secs)),
            pending_max: a.live_pending_max_mib.saturating_mul(1 << 20),
        }
    }
}

impl From<HttpArgs> for netrev_server::http_server::Limits {
    fn from(a: HttpArgs) -> Self {
        netrev_server::http_server::Limits {
            header_read_timeout: Duration::from_millis(a.header_read_timeout_ms),
            max_connections: a.max_connections,
            max_connections_per_ip: a.max_connections_per_ip,
            idle_timeout: Duration::from_secs(a.idle_timeout_secs),
            body_timeout: Duration::from_secs(a.body_timeout_secs),
            http2_keep_alive: Duration::from_secs(a.http2_keep_alive_secs),
            http2_max_streams: a.http2_max_streams,
            exempt: a.trusted_proxies,
        }
    }
}

impl From<AnalystArgs> for netrev_server::SqlConfig {
    fn from(a: AnalystArgs) -> Self {
        netrev_server::SqlConfig {
            limits: netrev_pipeline::query::Limits {
                max_rows: a.sql_max_rows,
                timeout: Duration::from_secs(a.sql_timeout_secs),
                max_sql_bytes: a.sql_max_bytes,
                max_depth: a.sql_max_depth.into(),
                max_tables: a.sql_max_tables,
                max_memory: a.sql_query_max_memory,
            },
            max_memory: a.sql_max_memory,
            threads: a
                .sql_threads
                .map(usize::from)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() / 2)),
        }
    }
}

impl From<WebhookArgs> for netrev_webhooks::deliver::DeliveryConfig {
    fn from(a: WebhookArgs) -> Self {
        netrev_webhooks::deliver::DeliveryConfig {
            schedule: a.webhooks_retry_schedule,
            concurrency: a.webhooks_concurrency as usize,
            allow_private: a.webhooks_allow_private,
            ..Default::default()
        }
    }
}

/// A secret given as a value, or read from `file` when one is given.
fn secret(value: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    match file {
        Some(path) => read_secret(&path).map(Some),
        None => Ok(value),
    }
}

/// A secret read from `path`, without the line break an editor leaves at its end.
pub(super) fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
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

/// An amount of money, exact (`netrev_storage::money`).
fn parse_money(text: &str) -> Result<rust_decimal::Decimal, String> {
    netrev_storage::money::parse(text).map_err(|e| e.to_string())
}
