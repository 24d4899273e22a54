//! Where a recompute's SQL jobs run: DataFusion in this process, or a Ballista cluster
//! (distributed DataFusion). Both run the same `sql/` files over the same raw files; only the
//! session differs.
//!
//! - **Local**: the intermediate views that several tables read are computed once and held in
//!   memory ([`crate::jobs::create_materialized_views`]).
//! - **Ballista standalone**: a scheduler and an executor started in this process. They share
//!   this process's object stores, so they read the same frozen listing ([`crate::snapshot`])
//!   of a local or S3 data root.
//! - **Ballista cluster** (`df://host:port`): the scheduler plans and its executors read the
//!   data root by its own address (a path every executor sees, or `s3://bucket/prefix` with
//!   the executors' own AWS settings). Files are listed when each table's query is planned.
//!
//! Ballista ships plans, not in-memory tables: the intermediate views that the local engine
//! holds in memory are written by the cluster to Parquet in a scratch folder of the data root
//! (`tables/.work/<run>/`) and read from there, then removed.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use object_store::path::Path;

use netrev_storage::Store;

use crate::Result;

/// Where the SQL jobs run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Engine {
    /// DataFusion in this process.
    #[default]
    Local,
    /// A Ballista scheduler and executor started inside this process.
    BallistaStandalone,
    /// The Ballista scheduler at this `df://host:port` address.
    BallistaCluster(String),
}

impl FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let engine = match s {
            "local" => Engine::Local,
            "ballista" => Engine::BallistaStandalone,
            url if url.starts_with("df://") => {
                let parsed = url::Url::parse(url)
                    .map_err(|e| format!("{url:?} is not a scheduler address: {e}"))?;
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(format!("{url:?} names no host (df://host:port)"));
                }
                Engine::BallistaCluster(url.to_string())
            }
            other => {
                return Err(format!(
                    "{other:?} is not an engine: local, ballista (a cluster in this process) \
                     or df://host:port (a Ballista scheduler)"
                ));
            }
        };
        if engine != Engine::Local && !cfg!(feature = "ballista") {
            return Err("this netrev was built without the `ballista` feature".to_string());
        }
        Ok(engine)
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Local => f.write_str("local"),
            Engine::BallistaStandalone => f.write_str("ballista"),
            Engine::BallistaCluster(url) => f.write_str(url),
        }
    }
}

/// The files a session's snapshot holds, when it has one.
pub type SnapshotFiles = Option<Arc<HashSet<Path>>>;

/// A session on an engine with the raw tables and every job's view, for one recompute.
pub struct JobSession {
    pub ctx: SessionContext,
    /// The raw files the session reads, when it reads a frozen listing.
    pub files: SnapshotFiles,
    /// Where a Ballista session wrote its intermediate views (removed by [`Self::finish`]).
    scratch: Option<Path>,
}

impl JobSession {
    /// Removes what the session wrote besides the derived tables.
    pub async fn finish(self, store: &Store) -> Result<()> {
        if let Some(dir) = self.scratch {
            for meta in store.list(&dir).await? {
                store.delete(&meta.location).await?;
            }
            // A local root keeps empty folders: remove them too (the shared parent only
            // when no other recompute is using it).
            if let Some(root) = store.local_root() {
                let folder = root.join(dir.as_ref());
                let _ = std::fs::remove_dir_all(&folder);
                if let Some(parent) = folder.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
        Ok(())
    }
}

/// A session on `engine` with the raw tables and every job's view, for one recompute.
pub async fn job_session(store: &Store, engine: &Engine) -> Result<JobSession> {
    match engine {
        Engine::Local => {
            let (ctx, files) = crate::materialized_job_session_with_files(store).await?;
            Ok(JobSession {
                ctx,
                files: Some(files),
                scratch: None,
            })
        }
        #[cfg(feature = "ballista")]
        Engine::BallistaStandalone => {
            use ballista::prelude::SessionContextExt;
            // The scheduler and executor take this session's object stores, the snapshot's
            // among them; the tables are registered again in the Ballista session's catalog.
            let (local, files) = crate::snapshot_session(store).await?;
            let ctx = SessionContext::standalone_with_state(ballista_state(&local)).await?;
            let url_of = |rel: &str| crate::table_url(store, rel);
            let scratch = ballista_views(&ctx, store, &url_of).await?;
            Ok(JobSession {
                ctx,
                files: Some(files),
                scratch: Some(scratch),
            })
        }
        #[cfg(feature = "ballista")]
        Engine::BallistaCluster(url) => {
            use ballista::prelude::SessionContextExt;
            let local =
                SessionContext::new_with_config(datafusion::prelude::SessionConfig::from_env()?);
            let ctx = SessionContext::remote_with_state(url, ballista_state(&local)).await?;
            let root = cluster_root(store)?;
            let url_of = |rel: &str| format!("{root}/{rel}/");
            let scratch = ballista_views(&ctx, store, &url_of).await?;
            Ok(JobSession {
                ctx,
                files: None,
                scratch: Some(scratch),
            })
        }
        #[cfg(not(feature = "ballista"))]
        Engine::BallistaStandalone | Engine::BallistaCluster(_) => Err(crate::Error::DataRoot(
            "this netrev was built without the `ballista` feature".into(),
        )),
    }
}

/// Where Ballista sessions write their intermediate views, one folder per recompute.
#[cfg(feature = "ballista")]
const SCRATCH: &str = "tables/.work";

/// A folder older than this under [`SCRATCH`] is left from a recompute that did not finish.
#[cfg(feature = "ballista")]
const SCRATCH_STALE: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Registers the raw tables and creates every job's view in a Ballista session. Ballista
/// ships plans, not in-memory tables: each view marked [`crate::jobs::Job::materialize`] is
/// written by the cluster to Parquet under [`SCRATCH`] and read from there by the later jobs,
/// which also keeps every plan shallow enough to ship. `url_of` gives the listing URL of a
/// folder of the data root as the cluster reads it. Returns the scratch folder.
#[cfg(feature = "ballista")]
async fn ballista_views(
    ctx: &SessionContext,
    store: &Store,
    url_of: &(dyn Fn(&str) -> String + Sync),
) -> Result<Path> {
    use datafusion::dataframe::DataFrameWriteOptions;
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::ListingOptions;

    remove_stale_scratch(store).await?;
    let run = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        std::process::id()
    );
    let scratch = format!("{SCRATCH}/{run}");
    crate::register_raw_tables_with(ctx, url_of).await?;
    for job in crate::jobs::JOBS {
        ctx.sql(job.sql).await?.collect().await?;
        if !job.materialize {
            continue;
        }
        let started = std::time::Instant::now();
        let df = ctx.table(job.name).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let url = url_of(&format!("{scratch}/{}", job.name));
        df.write_parquet(&url, DataFrameWriteOptions::new(), None)
            .await?;
        ctx.deregister_table(job.name)?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        ctx.register_listing_table(job.name, url, options, Some(schema), None)
            .await?;
        tracing::info!(
            view = job.name,
            secs = started.elapsed().as_secs_f64(),
            "materialized on Ballista"
        );
    }
    Ok(Path::from(scratch))
}

/// Removes the scratch folders of recomputes that stopped before cleaning up.
#[cfg(feature = "ballista")]
async fn remove_stale_scratch(store: &Store) -> Result<()> {
    let now = chrono::Utc::now();
    for meta in store.list(&Path::from(SCRATCH)).await? {
        let age = (now - meta.last_modified).to_std().unwrap_or_default();
        if age > SCRATCH_STALE {
            store.delete(&meta.location).await?;
        }
    }
    Ok(())
}

/// Starts a Ballista scheduler and one executor with `vcores` task slots in this process, as
/// a stand-in for a cluster (tests, trying `--engine df://…` on one machine); returns the
/// scheduler's `df://` address. They run until the process ends. The executor reads data
/// roots by path, like an executor of a real cluster with a shared file system.
#[cfg(feature = "ballista")]
pub async fn start_cluster(vcores: usize) -> Result<String> {
    use ballista_core::serde::BallistaCodec;
    use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
    let failed = |e: &dyn fmt::Display| crate::Error::Engine(format!("starting Ballista: {e}"));
    let addr = ballista_scheduler::standalone::new_standalone_scheduler()
        .await
        .map_err(|e| failed(&e))?;
    let grpc = format!("http://localhost:{}", addr.port());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let scheduler = loop {
        match SchedulerGrpcClient::connect(grpc.clone()).await {
            Ok(client) => break client,
            Err(e) if std::time::Instant::now() > deadline => return Err(failed(&e)),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    ballista_executor::new_standalone_executor(scheduler, vcores, BallistaCodec::default())
        .await
        .map_err(|e| failed(&e))?;
    Ok(format!("df://localhost:{}", addr.port()))
}

/// The state of `local` (its settings and object stores) with Ballista's settings for the jobs.
#[cfg(feature = "ballista")]
fn ballista_state(local: &SessionContext) -> datafusion::execution::SessionState {
    use ballista::prelude::SessionConfigExt;
    let state = local.state();
    // The adaptive planner re-plans a query stage by stage as they finish; on these jobs it
    // ran thousands of one-millisecond stages. The static planner runs each plan as a few
    // shuffles.
    let config = state
        .config()
        .clone()
        .upgrade_for_ballista()
        .with_ballista_adaptive_query_planner(false);
    datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build()
}

/// The data root's address as a cluster's executors read it: the absolute path of a local
/// root (which must be the same on every executor), or the `s3://bucket/prefix` location.
#[cfg(feature = "ballista")]
fn cluster_root(store: &Store) -> Result<String> {
    match store.local_root() {
        Some(root) => {
            let abs = std::fs::canonicalize(root).map_err(|e| {
                crate::Error::DataRoot(format!("resolving {}: {e}", root.display()))
            })?;
            Ok(abs.display().to_string())
        }
        None => Ok(store.location().trim_end_matches('/').to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_parse_and_print() {
        assert_eq!("local".parse::<Engine>(), Ok(Engine::Local));
        assert!(
            "spark"
                .parse::<Engine>()
                .unwrap_err()
                .contains("not an engine")
        );
        assert!("df://".parse::<Engine>().is_err());
        if cfg!(feature = "ballista") {
            assert_eq!("ballista".parse::<Engine>(), Ok(Engine::BallistaStandalone));
            let cluster = "df://scheduler:50050".parse::<Engine>().unwrap();
            assert_eq!(cluster.to_string(), "df://scheduler:50050");
        } else {
            assert!(
                "ballista"
                    .parse::<Engine>()
                    .unwrap_err()
                    .contains("feature")
            );
        }
    }
}
