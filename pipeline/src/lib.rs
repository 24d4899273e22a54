//! # netrev-pipeline: SQL over the stored tables
//!
//! **In:** the raw Parquet tables under a [`netrev_storage::Store`] (`events/clicks`,
//! `events/conversions`, `events/refunds`, Hive-partitioned by `date=`).
//!
//! **Out:** the derived tables under `tables/` (`stats_hourly` partitioned by click date,
//! `cohort_ltv`, `cohort_sources`, `visitors`, `refund_links`), computed by the SQL jobs of
//! `sql/` ([`jobs`], run by [`recompute`]); and DataFusion sessions in which raw and derived tables are
//! registered under their public names for analysts' queries ([`query_session`], [`output`]).
//!
//! **Guarantees:** the `.sql` files are the only statement of the computations (embedded here,
//! runnable unchanged in datafusion-cli); raw tables are registered with the documented schema
//! rather than an inferred one, so an empty table is queryable and money stays
//! `Decimal128(18,4)`; every query lists the files afresh, so rows flushed a moment ago are
//! included; each derived partition is replaced atomically. This crate knows nothing of HTTP or
//! the write-ahead log.

pub mod analysts;
pub mod bounded;
pub mod buffered;
pub mod compact;
pub mod engine;
pub mod incremental;
pub mod jobs;
pub mod output;
pub mod query;
pub mod recompute;
pub mod snapshot;

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::catalog::TableProvider;
use datafusion::config::ConfigOptions;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};

use netrev_storage::Store;
use netrev_storage::model::Table;

/// Failures of the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// DataFusion refused or failed a query (bad SQL is the caller's; I/O errors are external).
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// The data root cannot be used by the query engine.
    #[error("data root: {0}")]
    DataRoot(String),
    /// The recompute did not finish within its time limit.
    #[error("gave up after {} s (the time limit)", .0.as_secs())]
    TimedOut(std::time::Duration),
    /// The query engine could not be started or reached (a Ballista scheduler).
    #[error("engine: {0}")]
    Engine(String),
    /// Reading or writing the stored tables failed.
    #[error(transparent)]
    Storage(netrev_storage::Error),
    /// A recompute by difference should not run (the last one's files are gone, or a full
    /// recompute costs less): a full recompute is needed.
    #[error("the last recompute's result cannot be updated: {0}")]
    Stale(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A session with the raw tables registered. DataFusion's settings can be tuned with its
/// `DATAFUSION_*` environment variables (e.g. `DATAFUSION_EXECUTION_BATCH_SIZE`).
pub async fn session(store: &Store) -> Result<SessionContext> {
    session_in(store, session_config()?, Arc::new(RuntimeEnv::default())).await
}

/// [`session`] with `config` and `runtime` (memory pool, disk manager, object stores).
async fn session_in(
    store: &Store,
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
) -> Result<SessionContext> {
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    if store.local_root().is_none() {
        register_remote(&ctx, store.object_store());
    }
    register_raw_tables(&ctx, store).await?;
    Ok(ctx)
}

/// DataFusion's defaults and `DATAFUSION_*` variables, with defaults of our own (a variable
/// for any of them still wins):
/// - sorting up to 256 MiB of rows as one array (DataFusion: 1 MiB): merging a few thousand
///   sorted batches took twice as long as sorting the rows whole (7 million visitors by `vid`);
/// - skipping the partial (per-partition) phase of an aggregation whose first 100,000 rows
///   hold more than one group per ten rows (DataFusion: eight per ten). Most of the jobs group
///   by click or visitor ID, or by click hour and five dimensions, with about one group per
///   one or two rows: there the partial phase only doubles the hashing and the memory;
/// - hashing the smaller side of a join once for all partitions when it holds under 128 MiB
///   (or, its size unknown, under a million rows; DataFusion: 1 MiB, 128 K rows), instead of
///   redistributing both sides by the join key. The jobs join the few hundred thousand
///   clicks with money to all 10 million clicks or 7 million visitors, which then need no
///   redistribution: 5% less CPU time for a recompute.
fn session_config() -> Result<SessionConfig> {
    let mut config = SessionConfig::from_env()?;
    let options = config.options_mut();
    if unset("EXECUTION_SORT_IN_PLACE_THRESHOLD_BYTES") {
        options.execution.sort_in_place_threshold_bytes = 256 << 20;
    }
    if unset("EXECUTION_SKIP_PARTIAL_AGGREGATION_PROBE_RATIO_THRESHOLD") {
        options
            .execution
            .skip_partial_aggregation_probe_ratio_threshold = 0.1;
    }
    set_join_limits(options, 128 << 20, 1 << 20);
    Ok(config)
}

/// Whether `DATAFUSION_<name>` is unset, so that a default of ours applies.
fn unset(name: &str) -> bool {
    std::env::var_os(format!("DATAFUSION_{name}")).is_none()
}

/// Sets the size (`bytes`, or `rows` when the size is unknown) below which a join hashes its
/// smaller side once for all partitions, unless a `DATAFUSION_*` variable sets it.
pub(crate) fn set_join_limits(options: &mut ConfigOptions, bytes: usize, rows: usize) {
    if unset("OPTIMIZER_HASH_JOIN_SINGLE_PARTITION_THRESHOLD") {
        options.optimizer.hash_join_single_partition_threshold = bytes;
    }
    if unset("OPTIMIZER_HASH_JOIN_SINGLE_PARTITION_THRESHOLD_ROWS") {
        options.optimizer.hash_join_single_partition_threshold_rows = rows;
    }
}

/// The URL under which a remote data root (S3) is registered in DataFusion; its paths are
/// those of the store (`events/clicks/…`). A local root is read by its directory's path.
const REMOTE_URL: &str = "netrev://root/";

/// Registers a remote data root's store, its listings without the raw files an interrupted
/// compaction left behind ([`compact::Unshadowed`]).
fn register_remote(ctx: &SessionContext, store: Arc<dyn object_store::ObjectStore>) {
    let url = url::Url::parse(REMOTE_URL).expect("valid URL");
    ctx.runtime_env()
        .register_object_store(&url, Arc::new(compact::Unshadowed(store)));
}

/// The listing URL of the directory `rel` (`events/clicks`, `tables/visitors`) of `store`.
pub(crate) fn table_url(store: &Store, rel: &str) -> String {
    match store.local_root() {
        Some(root) => format!("{}/", root.join(rel).display()),
        None => format!("{REMOTE_URL}{rel}/"),
    }
}

/// A session with the raw tables and every job's view: what the jobs run in.
pub async fn job_session(store: &Store) -> Result<SessionContext> {
    let ctx = session(store).await?;
    jobs::create_views(&ctx).await?;
    Ok(ctx)
}

/// Like [`job_session`], with the intermediate views computed once and held in memory: for a
/// recompute, which reads each of them several times. Every query of the session reads the
/// raw files that existed when it was made ([`snapshot`]).
pub async fn materialized_job_session(store: &Store) -> Result<SessionContext> {
    Ok(materialized_job_session_with_files(store).await?.0)
}

/// [`materialized_job_session`], and what its snapshot reads: the raw files (paths of the
/// local file system's object store, [`local_files`]) and the buffered rows.
#[allow(clippy::type_complexity)]
pub async fn materialized_job_session_with_files(
    store: &Store,
) -> Result<(
    SessionContext,
    Arc<HashSet<object_store::path::Path>>,
    Vec<netrev_storage::buffer::Unpersisted>,
)> {
    let (ctx, files, rows) = snapshot_session(store).await?;
    jobs::create_materialized_views(&ctx).await?;
    Ok((ctx, files, rows))
}

/// A session with the raw tables registered over a [`snapshot`] of their files (no views yet),
/// and what it reads: the files the snapshot holds, and the buffered rows taken (before the
/// listing, so a row flushed meanwhile is read from its file).
pub(crate) async fn snapshot_session(
    store: &Store,
) -> Result<(
    SessionContext,
    Arc<HashSet<object_store::path::Path>>,
    Vec<netrev_storage::buffer::Unpersisted>,
)> {
    let rows = store.unpersisted();
    let (inner, events) = raw_files_of(store)?;
    let frozen = snapshot::Snapshot::take(inner, vec![events])
        .await
        .map_err(|e| Error::Storage(e.into()))?;
    let files = frozen.files();
    let ctx = session_over(store, frozen, rows.clone()).await?;
    Ok((ctx, files, rows))
}

/// A session with the raw tables registered over exactly `files` (raw files of an earlier
/// [`snapshot_session`]) and the buffered `rows`, no views yet.
pub(crate) async fn session_over_files(
    store: &Store,
    files: Arc<HashSet<object_store::path::Path>>,
    rows: Vec<netrev_storage::buffer::Unpersisted>,
) -> Result<SessionContext> {
    let (inner, events) = raw_files_of(store)?;
    session_over(
        store,
        snapshot::Snapshot::of(inner, files, vec![events]),
        rows,
    )
    .await
}

/// The object store whose paths a snapshot of `store`'s raw files holds, and the folder of
/// the raw tables in it: the local file system and the root's `events` folder (absolute), or
/// the remote store (without files an interrupted compaction left) and `events`.
fn raw_files_of(
    store: &Store,
) -> Result<(Arc<dyn object_store::ObjectStore>, object_store::path::Path)> {
    let Some(root) = store.local_root() else {
        let remote = Arc::new(compact::Unshadowed(store.object_store()));
        return Ok((remote, object_store::path::Path::from("events")));
    };
    let events_dir = root.join("events");
    // Resolving the path needs it to exist; a data root without events yet is fine.
    std::fs::create_dir_all(&events_dir).map_err(|e| Error::DataRoot(e.to_string()))?;
    let events = object_store::path::Path::from_filesystem_path(&events_dir)
        .map_err(|e| Error::DataRoot(e.to_string()))?;
    Ok((local_files(), events))
}

/// A session whose raw tables read the files of `frozen` and the buffered `rows`.
async fn session_over(
    store: &Store,
    frozen: snapshot::Snapshot,
    rows: Vec<netrev_storage::buffer::Unpersisted>,
) -> Result<SessionContext> {
    let ctx =
        SessionContext::new_with_config_rt(session_config()?, Arc::new(RuntimeEnv::default()));
    let url = match store.local_root() {
        Some(_) => "file://",
        None => REMOTE_URL,
    };
    ctx.runtime_env()
        .register_object_store(&url::Url::parse(url).expect("valid URL"), Arc::new(frozen));
    register_raw_tables_with(&ctx, |rel| table_url(store, rel), rows).await?;
    Ok(ctx)
}

/// The object store the snapshot's paths belong to (absolute paths of the local file system).
pub fn local_files() -> Arc<dyn object_store::ObjectStore> {
    Arc::new(object_store::local::LocalFileSystem::new())
}

/// A session for analysts: raw tables and the derived tables as last recomputed, under their
/// public names (docs/design.md §8).
pub async fn query_session(store: &Store) -> Result<SessionContext> {
    query_session_with(store, session(store).await?).await
}

/// [`query_session`] in `runtime` (an analyst query's memory pool), its plans split in
/// `partitions`.
pub async fn query_session_in(
    store: &Store,
    runtime: Arc<RuntimeEnv>,
    partitions: usize,
) -> Result<SessionContext> {
    let config = session_config()?.with_target_partitions(partitions.max(1));
    query_session_with(store, session_in(store, config, runtime).await?).await
}

/// Registers the derived tables in `ctx`, a [`session`] of `store`.
async fn query_session_with(store: &Store, ctx: SessionContext) -> Result<SessionContext> {
    // The derived tables' schemas are those of the job views; planning them reads no data.
    let jobs = job_session(store).await?;
    for d in jobs::DERIVED {
        let full = jobs.table(d.name).await?.schema().as_arrow().clone();
        let file_fields: Vec<_> = full
            .fields()
            .iter()
            .filter(|f| !(d.partitioned_by_date && f.name() == "date"))
            .cloned()
            .collect();
        let file_schema = Arc::new(Schema::new(file_fields));
        let rel = format!("tables/{}", d.name);
        let written = match store.local_root() {
            Some(root) => root.join(&rel).is_dir(),
            None => !store
                .list(&object_store::path::Path::from(rel.as_str()))
                .await
                .map_err(Error::Storage)?
                .is_empty(),
        };
        if written {
            let mut options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            if d.partitioned_by_date {
                options =
                    options.with_table_partition_cols(vec![("date".to_string(), DataType::Date32)]);
            }
            ctx.register_listing_table(
                d.name,
                table_url(store, &rel),
                options,
                Some(file_schema),
                None,
            )
            .await?;
        } else {
            // Never recomputed yet: an empty table of the right shape.
            let schema = Arc::new(full);
            ctx.register_table(d.name, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
        }
    }
    Ok(ctx)
}

/// `batch` with the column types of `schema` (same columns, in order): a dictionary column
/// as its values, a file's strings as the view's string type.
pub(crate) fn cast_to(
    batch: &arrow::array::RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    arrow::array::RecordBatch::try_new(schema.clone(), columns)
}

/// Registers `clicks`, `conversions` and `refunds` in `ctx`: their files, and the rows
/// acknowledged but not yet in files when the store has a buffer ([`Store::unpersisted`],
/// taken now, before any listing).
pub async fn register_raw_tables(ctx: &SessionContext, store: &Store) -> Result<()> {
    let rows = store.unpersisted();
    register_raw_tables_with(ctx, |rel| table_url(store, rel), rows).await
}

/// Registers the raw tables in `ctx`, each at the listing URL `url_of` gives its directory
/// (`events/clicks`, …), with the buffered `rows` of each ([`buffered::Buffered`]).
pub(crate) async fn register_raw_tables_with(
    ctx: &SessionContext,
    url_of: impl Fn(&str) -> String,
    rows: Vec<netrev_storage::buffer::Unpersisted>,
) -> Result<()> {
    for table in Table::ALL {
        let url = ListingTableUrl::parse(url_of(&format!("events/{}", table.name())))?
            .with_table_ref(table.name().into());
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("date".to_string(), DataType::Date32)]);
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(table.schema());
        let files: Arc<dyn TableProvider> = Arc::new(
            ListingTable::try_new(config)?
                .with_cache(ctx.runtime_env().cache_manager.get_file_statistic_cache()),
        );
        let mine: Vec<_> = rows.iter().filter(|r| r.table == table).cloned().collect();
        let provider = if mine.is_empty() {
            files
        } else {
            Arc::new(buffered::Buffered::new(files, mine))
        };
        ctx.register_table(table.name(), provider)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Decimal128Type;
    use netrev_storage::model;
    use netrev_storage::store::layout;
    use netrev_storage::{Conversion, Event};
    use rust_decimal::Decimal;

    #[tokio::test]
    async fn raw_tables_are_queryable_with_exact_money_and_dates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let ctx = session(&store).await.unwrap();
        // Empty tables are queryable.
        let empty = ctx
            .sql("select count(*) from refunds")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            empty[0]
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            0
        );

        let day = 1_795_000_000_000_000_i64;
        for (i, (amount, ts)) in [("0.1", day), ("0.2", day + 86_400_000_000)]
            .iter()
            .enumerate()
        {
            let e = Event::Conversion(Conversion {
                cid: "c".into(),
                ts: *ts,
                amount: amount.parse().unwrap(),
                txid: Some(format!("t{i}")),
                kind: None,
            });
            let path =
                layout::raw_file(model::Table::Conversions, e.date(), "n", i as u64, i as u64);
            store
                .write_parquet(&path, &[model::to_batch(Table::Conversions, [&e]).unwrap()])
                .await
                .unwrap();
        }
        let batches = ctx
            .sql("select sum(amount) as s, count(distinct date) as d from conversions")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let sum = batches[0]
            .column(0)
            .as_primitive::<Decimal128Type>()
            .value(0);
        let scale = match batches[0].column(0).data_type() {
            DataType::Decimal128(_, s) => *s as u32,
            other => panic!("{other}"),
        };
        assert_eq!(
            Decimal::from_i128_with_scale(sum, scale),
            Decimal::new(3, 1)
        );
        assert_eq!(
            batches[0]
                .column(1)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            2
        );
    }

    /// A recompute's session reads the files that existed when it started, however many
    /// arrive while it runs.
    #[tokio::test]
    async fn job_sessions_read_a_snapshot_of_the_raw_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let day = 1_795_000_000_000_000_i64;
        let write = |i: u64| {
            let store = store.clone();
            async move {
                let e = Event::Conversion(Conversion {
                    cid: format!("c{i}"),
                    ts: day,
                    amount: Decimal::ONE,
                    txid: None,
                    kind: None,
                });
                let path = layout::raw_file(Table::Conversions, e.date(), "n", i, i);
                let batch = model::to_batch(Table::Conversions, [&e]).unwrap();
                store.write_parquet(&path, &[batch]).await.unwrap();
            }
        };
        write(1).await;
        let ctx = materialized_job_session(&store).await.unwrap();
        write(2).await;
        let count = |ctx: SessionContext| async move {
            let b = ctx
                .sql("select count(*) from conversions")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            b[0].column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0)
        };
        assert_eq!(count(ctx).await, 1);
        assert_eq!(count(session(&store).await.unwrap()).await, 2);
    }
}
