//! `netrev serve`: opens the data root, recovers the ingest buffer and serves HTTP until
//! SIGINT/SIGTERM, then flushes everything acknowledged before exiting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

use netrev_ingest::Ingestor;
use netrev_ingest::http::PostbackConfig;
use netrev_storage::Store;

#[derive(Debug)]
pub struct ServeConfig {
    pub data: String,
    pub listen: SocketAddr,
    pub ingest: netrev_ingest::IngestConfig,
    pub postbacks: PostbackConfig,
    /// How often the derived tables are recomputed in the background; `None`: never.
    pub recompute_interval: Option<Duration>,
}

pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let store =
        Store::open(&config.data).with_context(|| format!("opening data root {}", config.data))?;
    let ingestor = Ingestor::open(store.clone(), config.ingest)
        .await
        .context("starting ingest")?;
    if let Some(every) = config.recompute_interval {
        spawn_recompute_scheduler(store, every)?;
    }
    let app = netrev_ingest::http::router(ingestor.clone(), &config.postbacks).merge(
        Router::new()
            .route("/api/health", get(health))
            .with_state(ingestor.clone()),
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data = %config.data, node = ingestor.node(), "netrev serving");
    // Tests and scripts read the bound port (e.g. with --listen 127.0.0.1:0) from this line.
    println!("netrev listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("shutting down: flushing the ingest buffer");
    ingestor.shutdown().await.context("final flush")?;
    Ok(())
}

/// First retry after a failed scheduled recompute; doubled up to the interval.
const RECOMPUTE_RETRY: Duration = Duration::from_secs(30);

/// Recomputes the derived tables now and then every `every`, on a thread and runtime of its
/// own: the SQL jobs are CPU-heavy, and on the ingest runtime they would delay postbacks'
/// acknowledgements. A failed run is logged and retried sooner, with backoff.
fn spawn_recompute_scheduler(store: Store, every: Duration) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("netrev-recompute".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("recompute runtime");
            rt.block_on(async move {
                let mut retry = RECOMPUTE_RETRY;
                loop {
                    let started = std::time::Instant::now();
                    let range = netrev_pipeline::recompute::DateRange::default();
                    // A pass runs as a task of its own: a panic in it is a failed pass, not
                    // the end of scheduled recomputes.
                    let pass = {
                        let store = store.clone();
                        tokio::spawn(async move {
                            netrev_pipeline::recompute::recompute(&store, range, &mut |_| {}).await
                        })
                    };
                    let outcome = match pass.await {
                        Ok(result) => result.map_err(|e| e.to_string()),
                        Err(join) => Err(format!("the recompute panicked: {join}")),
                    };
                    match outcome {
                        Ok(report) => {
                            tracing::info!(tables = report.tables.len(), secs = started.elapsed().as_secs_f64(), "scheduled recompute done");
                            retry = RECOMPUTE_RETRY;
                            tokio::time::sleep(every).await;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, retry_in = ?retry, "scheduled recompute failed");
                            tokio::time::sleep(retry).await;
                            retry = (retry * 2).min(every);
                        }
                    }
                }
            });
        })
        .context("starting the recompute thread")?;
    Ok(())
}

async fn health(State(ingestor): State<Arc<Ingestor>>) -> axum::Json<serde_json::Value> {
    let stats = ingestor.stats();
    axum::Json(serde_json::json!({"ok": true, "node": ingestor.node(), "ingest": stats}))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The benchmark baseline: the same routes answering `{"ok":true}` without parsing, logging
/// or storing anything, so the ingest benchmark can report durable throughput as a ratio.
pub async fn run_bare(listen: SocketAddr) -> anyhow::Result<()> {
    async fn ok() -> impl axum::response::IntoResponse {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            r#"{"ok":true}"#,
        )
    }
    let app = Router::new()
        .route("/api/click", get(ok).post(ok))
        .route("/api/conversion", get(ok).post(ok))
        .route("/api/conversion/refund", get(ok).post(ok));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "netrev bare handler listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}
