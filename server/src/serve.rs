//! The service's wiring (`netrev serve`): opens the data root, recovers the ingest buffer and serves HTTP until
//! SIGINT/SIGTERM, then flushes everything acknowledged before exiting.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::net::TcpListener;

use netrev_ingest::Ingestor;
use netrev_ingest::http::PostbackConfig;
use netrev_storage::Store;

use crate::{Error, Result, starting};

#[derive(Debug)]
pub struct ServeConfig {
    pub data: String,
    pub listen: SocketAddr,
    pub ingest: netrev_ingest::IngestConfig,
    pub postbacks: PostbackConfig,
    /// The live stats and the recompute schedule that rebuilds them.
    pub live: netrev_live::LiveConfig,
    /// Key the query routes require (`Authorization: Bearer …`); needed on a non-loopback
    /// address.
    pub api_key: Option<String>,
    /// Analysts' queries: their threads and limits.
    pub sql: SqlConfig,
    /// Webhook delivery: schedule, concurrency, timeout, private targets.
    pub webhooks: netrev_webhooks::deliver::DeliveryConfig,
    /// Timeouts (header, body, idle, HTTP/2 keep-alive) and connection limits.
    pub http: crate::http_server::Limits,
    /// Tracking links: how many, and where a visit's country comes from.
    pub links: LinksConfig,
    /// Postbacks per second and burst per client address, and the trusted proxies.
    pub rate_limit: (f64, f64, Vec<std::net::IpAddr>),
    /// Host names the API and dashboard answer besides the loopback ones when there is no
    /// API key (DNS rebinding), lowercase.
    pub allowed_hosts: Vec<String>,
    /// Serve the postback routes only: no live stats, query routes, dashboard, webhooks or
    /// scheduled recompute (an extra ingest node beside a full one on a shared store).
    pub ingest_only: bool,
    /// For benchmarks: the service's clock runs this many times as fast as real time (event
    /// times, days, flush times); 1 in production.
    pub clock_speed: u32,
}

/// Tracking links' settings.
#[derive(Debug)]
pub struct LinksConfig {
    /// Most links kept (`--links-max`).
    pub max: usize,
    /// Most one click of a link may cost, the link's or a visit's (`--links-max-click-cost`).
    pub max_click_cost: rust_decimal::Decimal,
    /// A header a trusted proxy sets to the visitor's country (`CF-IPCountry`).
    pub geoip_header: Option<String>,
    /// A MaxMind-format country or city database.
    pub geoip_db: Option<std::path::PathBuf>,
}

impl Default for LinksConfig {
    fn default() -> Self {
        LinksConfig {
            max: crate::links::LINKS_MAX,
            max_click_cost: crate::links::MAX_CLICK_COST,
            geoip_header: None,
            geoip_db: None,
        }
    }
}

/// Where analysts' queries run and what bounds them ([`netrev_pipeline::analysts`]).
#[derive(Debug)]
pub struct SqlConfig {
    /// Rows, time, text size, depth and memory of one query.
    pub limits: netrev_pipeline::query::Limits,
    /// Memory of all queries together.
    pub max_memory: usize,
    /// Threads of their runtime.
    pub threads: usize,
}

/// Runs the service with `config` until SIGINT or SIGTERM.
pub async fn startup(config: ServeConfig) -> Result<()> {
    check(&config)?;
    let store = starting(
        Store::open(&config.data),
        format!("opening data root {}", config.data),
    )?;
    let store = match config.clock_speed {
        0 | 1 => store,
        speed => store.with_clock(netrev_storage::Clock::accelerated(speed)),
    };
    let listener = bind(config.listen).await?;
    serve(
        config,
        store,
        listener,
        Box::pin(shutdown_signal()),
        Ready::Print,
    )
    .await
}

/// How a service says it is wired and serving.
enum Ready {
    /// The "netrev listening on" line on stdout: tests and scripts read the bound port (e.g.
    /// with --listen 127.0.0.1:0) from it.
    Print,
    /// [`spawn`] waits for this.
    Signal(tokio::sync::oneshot::Sender<()>),
}

impl Ready {
    fn announce(self, addr: SocketAddr) {
        match self {
            Ready::Print => println!("netrev listening on http://{addr}"),
            Ready::Signal(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

/// The whole service running inside this process ([`spawn`]), until [`InProcess::stop`].
pub struct InProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl InProcess {
    /// Stops serving and flushes everything acknowledged, as SIGTERM does to `netrev serve`.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_else(|join| {
            Err(Error::Start {
                what: "the service's task".into(),
                source: join.to_string().into(),
            })
        })
    }
}

/// Starts the service of `config` in this process on `store` (e.g. an in-memory object store
/// with a manual clock, [`Store::with_clock`]); `config.data` only names it. The write-ahead
/// log and the webhook outbox still live in `config.ingest.wal_dir`. Returns once it listens.
pub async fn spawn(config: ServeConfig, store: Store) -> Result<InProcess> {
    check(&config)?;
    let listener = bind(config.listen).await?;
    let addr = starting(listener.local_addr(), "reading the bound address")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = Box::pin(async move {
        let _ = stopped.await;
    });
    let (ready, wired) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(serve(
        config,
        store,
        listener,
        shutdown,
        Ready::Signal(ready),
    ));
    let running = InProcess { addr, stop, task };
    if wired.await.is_err() {
        // It ended before serving: its error says why.
        running.stop().await?;
        return Err(Error::Config("the service ended before it served".into()));
    }
    Ok(running)
}

/// Refuses settings the service cannot run with.
fn check(config: &ServeConfig) -> Result<()> {
    if config.api_key.is_none() && !config.listen.ip().is_loopback() {
        return Err(Error::Config(format!(
            "refusing to listen on {} without an API key: the query routes would be open to the \
             network; set --api-key (NETREV_API_KEY) or listen on 127.0.0.1",
            config.listen
        )));
    }
    if config.ingest.wal_dir.as_os_str().is_empty() {
        return Err(Error::Config(format!(
            "the data root {} is not a local directory: give the write-ahead log a local one \
             with --wal-dir (NETREV_WAL_DIR), one per node",
            config.data
        )));
    }
    Ok(())
}

async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    starting(TcpListener::bind(listen).await, format!("binding {listen}"))
}

/// What ends serving: a signal, or [`InProcess::stop`].
type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Serves `config` on `store` and `listener` until `shutdown`, then flushes.
async fn serve(
    config: ServeConfig,
    store: Store,
    listener: TcpListener,
    shutdown: Shutdown,
    ready: Ready,
) -> Result<()> {
    if config.ingest_only {
        return run_ingest_only(config, store, listener, shutdown, ready).await;
    }
    // Held while we run: one server per data root, and stats_hourly is kept by our live stats
    // (`netrev recompute` leaves it alone meanwhile).
    let _live_lock = starting(
        netrev_pipeline::recompute::take_live_lock(&store),
        "taking the live lock",
    )?;
    // The webhook outbox is node-local durable state, like the write-ahead log beside it.
    let outbox_path = config.ingest.wal_dir.join("webhooks.outbox");
    // The live thread is fed every durable event, and hands conversions and refunds to the
    // webhooks: it holds the log.
    let (feed, feed_rx) = netrev_live::feed();
    let (ingestor, held) = starting(
        Ingestor::open_held(store.clone(), config.ingest, feed).await,
        "starting ingest",
    )?;
    let webhooks = Arc::new(starting(
        netrev_webhooks::Webhooks::open(store.clone(), config.webhooks.allow_private).await,
        "loading the webhook settings",
    )?);
    let outbox = Arc::new(starting(
        netrev_webhooks::outbox::Outbox::open(&outbox_path, config.webhooks.schedule[0]),
        format!("opening the webhook outbox {}", outbox_path.display()),
    )?);
    let hooks = Arc::new(netrev_webhooks::Hooks {
        webhooks: webhooks.clone(),
        outbox: outbox.clone(),
    });
    let delivering = starting(
        netrev_webhooks::deliver::start(outbox, webhooks, config.webhooks),
        "starting webhook deliveries",
    )?;
    let analysts = Arc::new(starting(
        netrev_pipeline::analysts::Analysts::start(
            config.sql.threads,
            config.sql.max_memory,
            config.sql.limits,
        ),
        "starting the threads of analysts' queries",
    )?);
    let live = starting(
        netrev_live::start(
            ingestor.clone(),
            held,
            feed_rx,
            store.clone(),
            config.live,
            hooks.clone(),
        ),
        "starting the live state",
    )?;
    let links = Arc::new(starting(
        crate::links::Links::open(store.clone(), config.links.max, config.links.max_click_cost)
            .await,
        "loading the tracking links",
    )?);
    let geo = Arc::new(
        crate::links::Geo::open(
            config.links.geoip_header.as_deref(),
            config.links.geoip_db.as_deref(),
        )
        .map_err(Error::Config)?,
    );
    let redirects = crate::links::router(links.clone(), ingestor.clone(), geo);
    let api_key = config.api_key.as_deref().map(netrev_ingest::Secret::new);
    let guard = Arc::new(crate::guard::Guard {
        check_host: api_key.is_none(),
        allowed_hosts: config.allowed_hosts.clone(),
    });
    let app = postback_routes(&ingestor, &config.postbacks, config.rate_limit, redirects)
        .merge(Router::new().route("/api/health", get(health)).with_state((
            ingestor.clone(),
            live.clone(),
            Arc::new(api_key.clone()),
        )))
        .merge(
            crate::dashboard::router()
                .merge(crate::api::router(
                    store,
                    live.clone(),
                    hooks,
                    links,
                    api_key,
                    analysts,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    guard,
                    crate::guard::check,
                )),
        );
    let at = (listener, config.data.as_str(), config.http, shutdown);
    let served = serve_until(at, app, &ingestor, ready, "netrev serving").await;
    // Nothing is left for them once the last events are flushed (`netrev serve` exits next;
    // a service stopped inside a program that goes on must not leave them running).
    // It waits for the live thread's last checkpoint: off the async workers.
    let stopping = live.clone();
    if tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .is_err()
    {
        tracing::error!("stopping the live state panicked");
    }
    delivering.stop();
    served
}

/// Serves `app` until `shutdown`, then flushes the ingest buffer.
async fn serve_until(
    (listener, data, http, shutdown): (TcpListener, &str, crate::http_server::Limits, Shutdown),
    app: Router,
    ingestor: &Ingestor,
    ready: Ready,
    what: &str,
) -> Result<()> {
    let addr = starting(listener.local_addr(), "reading the bound address")?;
    tracing::info!(%addr, %data, node = ingestor.node(), "{what}");
    ready.announce(addr);
    starting(
        crate::http_server::serve(listener, app, http, shutdown).await,
        "serving HTTP",
    )?;
    tracing::info!("shutting down: flushing the ingest buffer");
    starting(ingestor.shutdown().await, "final flush")?;
    Ok(())
}

/// The postback and IPN routes, and `more` (the tracking links' visits), behind the
/// per-client rate limit.
fn postback_routes(
    ingestor: &Arc<Ingestor>,
    postbacks: &PostbackConfig,
    (rate, burst, trusted): (f64, f64, Vec<std::net::IpAddr>),
    more: Router,
) -> Router {
    netrev_ingest::http::router(ingestor.clone(), postbacks)
        .merge(more)
        .layer(axum::middleware::from_fn_with_state(
            crate::rate_limit::RateLimit::new(rate, burst, trusted),
            crate::rate_limit::limit,
        ))
}

/// An extra ingest node: postbacks into its own write-ahead log and raw files named after its
/// node ID; everything computed from them is left to the full node's scheduled recompute.
async fn run_ingest_only(
    config: ServeConfig,
    store: Store,
    listener: TcpListener,
    shutdown: Shutdown,
    ready: Ready,
) -> Result<()> {
    let ingestor = starting(
        Ingestor::open(store, config.ingest).await,
        "starting ingest",
    )?;
    let api_key = Arc::new(config.api_key.as_deref().map(netrev_ingest::Secret::new));
    let app = postback_routes(
        &ingestor,
        &config.postbacks,
        config.rate_limit,
        Router::new(),
    )
    .merge(
        Router::new()
            .route("/api/health", get(ingest_health))
            .with_state((ingestor.clone(), api_key)),
    );
    let at = (listener, config.data.as_str(), config.http, shutdown);
    serve_until(at, app, &ingestor, ready, "netrev ingest-only node serving").await
}

/// The API key, when one is set (`/api/health` is open to all: the key only decides how much it
/// says).
type Key = Arc<Option<netrev_ingest::Secret>>;

/// The ingest counters of `/api/health`. A failure's text names the server's files, so with an
/// API key set it is given only to a caller that sends the key; others learn that something
/// fails and where to look.
fn ingest_stats(
    ingestor: &Ingestor,
    key: &Key,
    headers: &axum::http::HeaderMap,
) -> serde_json::Value {
    let mut stats = ingestor.stats();
    if let Some(key) = key.as_ref()
        && !key.matches(crate::api::bearer(headers))
    {
        let hidden = || "failing: the server's log says why (or send the API key)".to_string();
        stats.wal_error = stats.wal_error.map(|_| hidden());
        stats.flush_error = stats.flush_error.map(|_| hidden());
    }
    serde_json::to_value(stats).expect("counters serialize")
}

async fn ingest_health(
    State((ingestor, key)): State<(Arc<Ingestor>, Key)>,
    headers: axum::http::HeaderMap,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "ok": true,
        "node": ingestor.node(),
        "ingest_only": true,
        "ingest": ingest_stats(&ingestor, &key, &headers),
    }))
}

async fn health(
    State((ingestor, live, key)): State<(Arc<Ingestor>, Arc<netrev_live::Live>, Key)>,
    headers: axum::http::HeaderMap,
) -> axum::Json<serde_json::Value> {
    let stats = ingest_stats(&ingestor, &key, &headers);
    let sizes = live
        .state
        .read()
        .expect("live lock")
        .as_ref()
        .map(|s| s.sizes());
    axum::Json(serde_json::json!({
        "ok": true,
        "node": ingestor.node(),
        "ingest": stats,
        "live": {
            "ready": sizes.is_some(),
            "received_seq": live.received_seq.load(std::sync::atomic::Ordering::Acquire),
            "state": sizes,
        },
    }))
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so a signal right after the "listening" line is not lost.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .expect("install SIGINT handler");
    async move {
        #[cfg(unix)]
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The benchmark baseline: the same routes answering `{"ok":true}` (and `/r/{slug}` a fixed
/// `302`) without parsing, logging or storing anything, so the ingest and redirect benchmarks
/// can report durable throughput as a ratio.
pub async fn run_bare(listen: SocketAddr) -> Result<()> {
    async fn ok() -> impl axum::response::IntoResponse {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            r#"{"ok":true}"#,
        )
    }
    async fn found() -> impl axum::response::IntoResponse {
        (
            axum::http::StatusCode::FOUND,
            [(axum::http::header::LOCATION, "https://offer.example/?cid=x")],
        )
    }
    let app = Router::new()
        .route("/api/click", get(ok).post(ok))
        .route("/api/conversion", get(ok).post(ok))
        .route("/api/conversion/refund", get(ok).post(ok))
        .route("/r/{slug}", get(found));
    let listener = starting(
        tokio::net::TcpListener::bind(listen).await,
        format!("binding {listen}"),
    )?;
    let addr = starting(listener.local_addr(), "reading the bound address")?;
    println!("netrev bare handler listening on http://{addr}");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    starting(served, "serving HTTP")
}
