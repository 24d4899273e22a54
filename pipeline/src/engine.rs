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
            return Err("this netrev was built without Ballista: build it with `cargo build --release --features ballista`".to_string());
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

/// When a recompute gives up, and the limit it was given.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: tokio::time::Instant,
    pub limit: std::time::Duration,
}

impl Deadline {
    pub fn after(limit: std::time::Duration) -> Deadline {
        Deadline {
            at: tokio::time::Instant::now() + limit,
            limit,
        }
    }
}

/// `work`, or [`crate::Error::TimedOut`] once `deadline` passes (the work is dropped).
pub async fn within<T>(
    deadline: Option<Deadline>,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match deadline {
        None => work.await,
        Some(d) => tokio::time::timeout_at(d.at, work)
            .await
            .map_err(|_| crate::Error::TimedOut(d.limit))?,
    }
}

/// A session on an engine with the raw tables and every job's view, for one recompute.
pub struct JobSession {
    pub ctx: SessionContext,
    /// The raw files the session reads, when it reads a frozen listing.
    pub files: Option<Arc<HashSet<Path>>>,
    /// The buffered rows it reads (none on Ballista, whose executors read files only).
    pub rows: Vec<netrev_storage::buffer::Unpersisted>,
    /// Where a Ballista session wrote its intermediate views (removed by [`Self::finish`]).
    scratch: Option<Path>,
}

impl JobSession {
    /// Removes what the session wrote besides the derived tables.
    pub async fn finish(self, store: &Store) -> Result<()> {
        match self.scratch {
            Some(dir) => remove_folder(store, &dir).await,
            None => Ok(()),
        }
    }
}

/// Removes the folder `dir` of the data root with everything in it (on a local root also
/// the shared parent, when no other recompute is using it).
async fn remove_folder(store: &Store, dir: &Path) -> Result<()> {
    match store.local_root() {
        Some(root) => {
            let folder = root.join(dir.as_ref());
            match std::fs::remove_dir_all(&folder) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(crate::Error::DataRoot(format!(
                        "removing {}: {e}",
                        folder.display()
                    )));
                }
            }
            if let Some(parent) = folder.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        None => {
            for meta in store.list(dir).await? {
                store.delete(&meta.location).await?;
            }
        }
    }
    Ok(())
}

/// A session on `engine` with the raw tables and every job's view, for one recompute.
/// Gives up with [`crate::Error::TimedOut`] at `deadline`; what it wrote is removed.
pub async fn job_session(
    store: &Store,
    engine: &Engine,
    deadline: Option<Deadline>,
) -> Result<JobSession> {
    match engine {
        Engine::Local => {
            let (ctx, files, rows) =
                within(deadline, crate::materialized_job_session_with_files(store)).await?;
            Ok(JobSession {
                ctx,
                files: Some(files),
                rows,
                scratch: None,
            })
        }
        #[cfg(feature = "ballista")]
        Engine::BallistaStandalone => {
            use ballista::prelude::SessionContextExt;
            // The scheduler and executor take this session's object stores, the snapshot's
            // among them; the tables are registered again in the Ballista session's catalog.
            let (local, files, _) = crate::snapshot_session(store).await?;
            let ctx = SessionContext::standalone_with_state(ballista_state(&local)).await?;
            let url_of = |rel: &str| crate::table_url(store, rel);
            let scratch = ballista_views(&ctx, store, &url_of, Some(&files), deadline).await?;
            Ok(JobSession {
                ctx,
                files: Some(files),
                rows: Vec::new(),
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
            let scratch = ballista_views(&ctx, store, &url_of, None, deadline).await?;
            Ok(JobSession {
                ctx,
                files: None,
                rows: Vec::new(),
                scratch: Some(scratch),
            })
        }
        #[cfg(not(feature = "ballista"))]
        Engine::BallistaStandalone | Engine::BallistaCluster(_) => Err(crate::Error::Engine(
            "this netrev was built without Ballista: build it with `cargo build --release --features ballista`".into(),
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
/// ships plans, not in-memory tables: each view marked [`crate::jobs::Job::materialize`], and
/// `clicks_dedup`, is written by the cluster to Parquet under [`SCRATCH`] and read from there
/// by the later jobs, which also keeps every plan shallow enough to ship. `clicks_dedup` is
/// written once because a cluster lists the raw files anew for every query it plans: a
/// duplicate click arriving between two plans must not pass the duplicate check in one
/// table's query and not in another. `url_of` gives the listing URL of a folder of the data
/// root as the cluster reads it; `frozen`, the raw files the session lists, when it lists a
/// [`crate::snapshot::Snapshot`]. A raw table or view without files is read from an
/// [`EMPTY_FILE`] in the scratch folder. Returns the scratch folder, removed again on failure.
#[cfg(feature = "ballista")]
async fn ballista_views(
    ctx: &SessionContext,
    store: &Store,
    url_of: &(dyn Fn(&str) -> String + Sync),
    frozen: Option<&HashSet<Path>>,
    deadline: Option<Deadline>,
) -> Result<Path> {
    remove_stale_scratch(store).await?;
    let scratch = Path::from(format!("{SCRATCH}/{}", run_id(chrono::Utc::now())));
    let views = write_views(ctx, store, url_of, frozen, &scratch);
    match within(deadline, views).await {
        Ok(()) => Ok(scratch),
        Err(e) => {
            if let Err(cleanup) = remove_folder(store, &scratch).await {
                tracing::warn!(error = %cleanup, folder = %scratch, "removing scratch");
            }
            Err(e)
        }
    }
}

#[cfg(feature = "ballista")]
async fn write_views(
    ctx: &SessionContext,
    store: &Store,
    url_of: &(dyn Fn(&str) -> String + Sync),
    frozen: Option<&HashSet<Path>>,
    scratch: &Path,
) -> Result<()> {
    use datafusion::dataframe::DataFrameWriteOptions;
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::ListingOptions;
    use netrev_storage::model::Table;
    use netrev_storage::store::layout;

    // A raw table stands in under a `date=` folder, like the raw files.
    let mut stand_ins = HashSet::new();
    for table in Table::ALL {
        let rel = layout::raw_table(table);
        let has_files = match frozen {
            Some(files) => files.iter().any(|f| layout::is_raw_file(f, table)),
            None => store.holds(&rel, ".parquet").await?,
        };
        if !has_files {
            let folder = Path::from(format!("{scratch}/{rel}/date=1970-01-01"));
            write_empty(store, &folder, table.schema()).await?;
            stand_ins.insert(rel.to_string());
        }
    }
    crate::register_raw_tables_with(
        ctx,
        |rel| {
            if stand_ins.contains(rel) {
                url_of(&format!("{scratch}/{rel}"))
            } else {
                url_of(rel)
            }
        },
        // Ballista's executors read files only: rows not yet flushed wait for the next run.
        Vec::new(),
    )
    .await?;
    for job in crate::jobs::JOBS {
        ctx.sql(job.sql).await?.collect().await?;
        if !(job.materialize || job.name == "clicks_dedup") {
            continue;
        }
        let started = std::time::Instant::now();
        let df = ctx.table(job.name).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let rel = format!("{scratch}/{}", job.name);
        let url = url_of(&rel);
        df.write_parquet(&url, DataFrameWriteOptions::new(), None)
            .await?;
        let folder = Path::from(rel.as_str());
        if !store.holds(&folder, ".parquet").await? {
            // No rows, so the cluster wrote no file.
            write_empty(store, &folder, schema.clone()).await?;
        }
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
    Ok(())
}

/// Writes an [`EMPTY_FILE`] of `schema` in `folder`.
#[cfg(feature = "ballista")]
async fn write_empty(
    store: &Store,
    folder: &Path,
    schema: arrow::datatypes::SchemaRef,
) -> Result<()> {
    let empty = arrow::array::RecordBatch::new_empty(schema);
    let path = Path::from(format!("{folder}/{EMPTY_FILE}"));
    Ok(store.write_parquet(&path, &[empty]).await?)
}

/// Stands in for a table with no Parquet files in Ballista sessions. A listing table without
/// files is planned as an `EmptyExec`, and under a UNION the Ballista 55 scheduler replaces
/// that with an in-memory source in some tasks of a stage and not in others, depending on
/// which partitions each task was given. The tasks then report different numbers of operator
/// metrics, the scheduler drops their results ("task metrics array size … does not equal
/// with the stage metrics array size …"), and the query never finishes.
#[cfg(feature = "ballista")]
const EMPTY_FILE: &str = "empty.parquet";

/// A scratch folder's name: its start time (which [`remove_stale_scratch`] reads back) and
/// 64 random bits, unique among recomputes sharing a bucket.
#[cfg(feature = "ballista")]
fn run_id(now: chrono::DateTime<chrono::Utc>) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now.timestamp_nanos_opt().unwrap_or_default() as u128);
    h.write_u32(std::process::id());
    format!("{}-{:016x}", now.format(RUN_TIME), h.finish())
}

#[cfg(feature = "ballista")]
const RUN_TIME: &str = "%Y%m%dT%H%M%SZ";

/// When the recompute that owns a scratch folder started, from the folder's name.
#[cfg(feature = "ballista")]
fn run_started(name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let stamp = name.split('-').next()?;
    chrono::NaiveDateTime::parse_from_str(stamp, RUN_TIME)
        .ok()
        .map(|t| t.and_utc())
}

/// Removes the scratch folders of recomputes that started more than [`SCRATCH_STALE`] ago
/// and did not clean up (killed, or the machine stopped). Whole folders only, judged by
/// their start: a long recompute's early views are not its stale files.
#[cfg(feature = "ballista")]
async fn remove_stale_scratch(store: &Store) -> Result<()> {
    let now = chrono::Utc::now();
    let mut stale = std::collections::BTreeSet::new();
    for meta in store.list(&Path::from(SCRATCH)).await? {
        let Some(run) = meta.location.parts().nth(2) else {
            continue;
        };
        let started = run_started(run.as_ref()).unwrap_or(meta.last_modified);
        if (now - started).to_std().unwrap_or_default() > SCRATCH_STALE {
            stale.insert(format!("{SCRATCH}/{}", run.as_ref()));
        }
    }
    for folder in stale {
        tracing::info!(%folder, "removing a stopped recompute's scratch");
        remove_folder(store, &Path::from(folder)).await?;
    }
    Ok(())
}

/// Starts a Ballista scheduler and (with `executor`) one executor with `vcores` task slots in this process, as
/// a stand-in for a cluster (tests, trying `--engine df://…` on one machine); returns the
/// scheduler's `df://` address. They run until the process ends. The executor reads data
/// roots by path, like an executor of a real cluster with a shared file system.
#[cfg(feature = "ballista")]
pub async fn start_cluster(vcores: usize, executor: bool) -> Result<String> {
    use ballista_core::serde::BallistaCodec;
    use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
    let failed = |e: &dyn fmt::Display| crate::Error::Engine(format!("starting Ballista: {e}"));
    let addr = ballista_scheduler::standalone::new_standalone_scheduler()
        .await
        .map_err(|e| failed(&e))?;
    let url = format!("df://localhost:{}", addr.port());
    if !executor {
        return Ok(url);
    }
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
    Ok(url)
}

/// The state of `local` (its settings and object stores) with Ballista's settings for the jobs.
#[cfg(feature = "ballista")]
fn ballista_state(local: &SessionContext) -> datafusion::execution::SessionState {
    use ballista::prelude::SessionConfigExt;
    let state = local.state();
    // The adaptive planner re-plans a query stage by stage as they finish; on these jobs it
    // ran thousands of one-millisecond stages. The static planner runs each plan as a few
    // shuffles.
    let mut config = state
        .config()
        .clone()
        .upgrade_for_ballista()
        .with_ballista_adaptive_query_planner(false);
    // Joins are planned with DataFusion's own limits for hashing one side once, not the local
    // engine's larger ones (`session_config`): on a cluster every task of such a join reads
    // that whole side, and these plans are the ones the Ballista tests were first measured
    // with.
    let defaults = datafusion::config::ConfigOptions::default().optimizer;
    crate::set_join_limits(
        config.options_mut(),
        defaults.hash_join_single_partition_threshold,
        defaults.hash_join_single_partition_threshold_rows,
    );
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
    /// The jobs on Ballista against the local engine.
    #[cfg(feature = "ballista")]
    mod on_ballista {
        use super::*;
        use arrow::array::RecordBatch;
        use chrono::NaiveDate;
        use netrev_storage::model::{self, Click, Conversion, Event, Refund, RefundType, Table};
        use netrev_storage::store::layout;
        use rust_decimal::Decimal;

        /// A small history with every case the jobs rank or link: clicks imported twice,
        /// retried conversions with and without txid, several conversions per click, refunds by
        /// ref, without ref, of unknown clicks, retried, and more than the sale. Without
        /// `refunds`, the refunds are not written: the raw table has no files.
        async fn history(store: &Store, refunds: bool) {
            let mut seed = 7_u64;
            let mut next = move |n: u64| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (seed >> 33) % n
            };
            let day0 = 1_795_000_000_000_000_i64;
            let hour = 3_600_000_000_i64;
            let mut events = Vec::new();
            for i in 0..1500_u64 {
                let ts = day0 + (next(5 * 24) as i64) * hour + next(3600) as i64 * 1_000_000;
                let click = Click {
                    cid: format!("c{i}"),
                    vid: format!("v{}", next(600)),
                    ts,
                    source: ["fb", "gg", "tt"]
                        .get(next(4) as usize)
                        .map(|s| s.to_string()),
                    campaign: Some(format!("k{}", next(3))),
                    link: None,
                    country: Some(["DE", "US"][next(2) as usize].into()),
                    device: Some("mobile".into()),
                    cost: Decimal::new(next(100) as i64, 2),
                    subs: Default::default(),
                };
                if next(50) == 0 {
                    // Imported twice, the second copy with other attributes.
                    let mut copy = click.clone();
                    copy.source = Some("copy".into());
                    copy.ts += next(2) as i64 * hour;
                    events.push(Event::Click(copy));
                }
                events.push(Event::Click(click));
                for n in 0..[0, 0, 0, 0, 1, 1, 2][next(7) as usize] {
                    let txid = (next(3) > 0).then(|| format!("t{i}-{n}"));
                    let sale = Conversion {
                        cid: format!("c{i}"),
                        ts: ts + (1 + next(48) as i64) * hour,
                        amount: Decimal::new(1 + next(10_000) as i64, 2),
                        txid: txid.clone(),
                        kind: None,
                    };
                    if next(10) == 0 {
                        events.push(Event::Conversion(sale.clone()));
                    }
                    if next(4) == 0 {
                        let refund = Refund {
                            cid: format!("c{i}"),
                            ts: sale.ts + (1 + next(200) as i64) * hour,
                            amount: sale.amount * Decimal::new(1 + next(12) as i64, 1),
                            txid: (next(2) == 0).then(|| format!("r{i}-{n}")),
                            kind: [RefundType::Chargeback, RefundType::CustomerRequest]
                                [next(2) as usize],
                            reference: if next(2) == 0 { txid } else { None },
                        };
                        if next(5) == 0 {
                            events.push(Event::Refund(refund.clone()));
                        }
                        events.push(Event::Refund(refund));
                    }
                    events.push(Event::Conversion(sale));
                }
            }
            for i in 0..20 {
                events.push(Event::Refund(Refund {
                    cid: format!("unknown{i}"),
                    ts: day0 + i * hour,
                    amount: Decimal::new(500, 2),
                    txid: Some(format!("u{i}")),
                    kind: RefundType::CustomerRequest,
                    reference: None,
                }));
            }
            // Several files per table and day, as ingest writes them.
            let mut files: std::collections::BTreeMap<(usize, NaiveDate, usize), Vec<Event>> =
                Default::default();
            for (n, e) in events.into_iter().enumerate() {
                let table = match e {
                    Event::Click(_) => 0,
                    Event::Conversion(_) => 1,
                    Event::Refund(_) => 2,
                };
                files.entry((table, e.date(), n % 3)).or_default().push(e);
            }
            for ((table, date, part), events) in files {
                let table = [Table::Clicks, Table::Conversions, Table::Refunds][table];
                if table == Table::Refunds && !refunds {
                    continue;
                }
                let path = layout::raw_file(table, date, "n", part as u64, part as u64);
                let batch = model::to_batch(table, &events).unwrap();
                store.write_parquet(&path, &[batch]).await.unwrap();
            }
        }

        /// Every row of a view, in the order of all its columns.
        async fn rows(ctx: &SessionContext, view: &str) -> RecordBatch {
            let n = ctx.table(view).await.unwrap().schema().fields().len();
            let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
            let sql = format!("SELECT * FROM {view} ORDER BY {}", order.join(", "));
            let df = ctx.sql(&sql).await.unwrap();
            let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await.unwrap();
            arrow::compute::concat_batches(&schema, &batches).unwrap()
        }

        /// Every job's view, intermediate ones included, has the same rows on Ballista as on
        /// the local engine. Returns the jobs whose views have no rows.
        fn same_rows_on_ballista(refunds: bool) -> Vec<&'static str> {
            // Ballista encodes and decodes plans recursively: the binary's thread stack size.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(16 << 20)
                .build()
                .unwrap();
            let compare = async {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path().to_str().unwrap()).unwrap();
                history(&store, refunds).await;
                let local = job_session(&store, &Engine::Local, None).await.unwrap();
                let ballista = job_session(&store, &Engine::BallistaStandalone, None)
                    .await
                    .unwrap();
                let mut empty = Vec::new();
                for job in crate::jobs::JOBS {
                    let want = rows(&local.ctx, job.name).await;
                    let got = rows(&ballista.ctx, job.name).await;
                    assert_eq!(got.columns(), want.columns(), "{}", job.name);
                    if want.num_rows() == 0 {
                        empty.push(job.name);
                    }
                }
                ballista.finish(&store).await.unwrap();
                assert!(!dir.path().join(SCRATCH).exists(), "scratch removed");
                empty
            };
            // A query the scheduler loses track of never ends: fail instead of waiting.
            let limit = std::time::Duration::from_secs(300);
            rt.block_on(async { tokio::time::timeout(limit, compare).await })
                .expect("Ballista did not finish the jobs within 5 minutes")
        }

        #[test]
        fn every_job_gives_the_same_rows_on_ballista() {
            assert_eq!(same_rows_on_ballista(true), Vec::<&str>::new());
        }

        /// Empty tables, here `refunds` and so `refunds_dedup`, once made every query with a
        /// UNION over them hang on Ballista.
        #[test]
        fn jobs_over_a_table_without_files_finish_on_ballista() {
            let empty = same_rows_on_ballista(false);
            assert!(empty.contains(&"refunds_dedup"), "{empty:?}");
        }
    }

    #[cfg(feature = "ballista")]
    #[test]
    fn scratch_folders_are_unique_and_know_their_start() {
        let now = chrono::Utc::now();
        let (a, b) = (run_id(now), run_id(now));
        assert_ne!(a, b);
        let started = run_started(&a).unwrap();
        assert_eq!(started.timestamp(), now.timestamp());
        assert_eq!(run_started("junk"), None);
    }

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
