//! `recompute`: runs the SQL jobs and replaces the derived tables under `tables/`.
//!
//! Every derived file is written whole to a temporary name and renamed into place
//! ([`Store::put_durable`]), one file per partition, so a concurrent reader sees a partition's
//! old rows or its new rows, never a mix or half a file.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Date32Type;
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;

use netrev_storage::Store;

use crate::engine::{Deadline, Engine, JobSession, within};
use crate::jobs::{DERIVED, Derived, run_partitioned};
use crate::{Error, Result};

/// Which click days of `stats_hourly` to rebuild; both ends inclusive, open when `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DateRange {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl DateRange {
    pub fn is_full(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }

    pub fn contains(&self, d: NaiveDate) -> bool {
        self.from.is_none_or(|f| d >= f) && self.to.is_none_or(|t| d <= t)
    }
}

/// What a recompute is doing, for progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Starting: this many derived tables will be computed.
    Start { tables: usize },
    /// Computing one table (running its SQL).
    Computing { table: &'static str },
    /// A table is left alone.
    Skipped {
        table: &'static str,
        why: &'static str,
    },
    /// One table is written.
    Written {
        table: &'static str,
        rows: usize,
        files: usize,
    },
}

/// What a recompute wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// (table, rows, files written) in the order computed.
    pub tables: Vec<(&'static str, usize, usize)>,
}

/// The folder of a derived table.
pub fn table_dir(name: &str) -> Path {
    Path::from(format!("tables/{name}"))
}

/// The one file of a derived table's partition (or of the whole table when unpartitioned).
fn file_path(d: &Derived, date: Option<NaiveDate>) -> Path {
    match date {
        Some(date) => table_dir(d.name)
            .join(format!("date={}", date.format("%Y-%m-%d")))
            .join("part-0.parquet"),
        None => table_dir(d.name).join("part-0.parquet"),
    }
}

/// The columns that order a table's rows, so the same data always yields the same file.
pub(crate) fn order_by(name: &str) -> &'static str {
    match name {
        "stats_hourly" => "hour, source, campaign, link, country, device",
        "cohort_ltv" => "cohort, age",
        "cohort_sources" => "cohort, source, age",
        "visitors" => "vid",
        // Unique: refunds are keyed by (cid, txid), or (cid, type, ref, amount) without txid.
        _ => r#"cid, ts, txid, amount, "type", "ref""#,
    }
}

/// Runs every job over the raw tables of `store` and replaces the derived tables. With a
/// `range`, only those click days of `stats_hourly` are rebuilt (the other tables are always
/// rebuilt whole: a refund today changes a cohort of any age). The SQL runs on `engine`; every
/// engine writes the same bytes. With a `timeout` it gives up after that long (a Ballista
/// cluster without executors queues jobs forever), removing its scratch files.
pub async fn recompute(
    store: &Store,
    range: DateRange,
    engine: &Engine,
    timeout: Option<std::time::Duration>,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Report> {
    let deadline = timeout.map(Deadline::after);
    Ok(run(store, range, engine, deadline, progress, Keep::Nothing)
        .await?
        .0)
}

/// The lock a running `serve` holds on its data root (`tables/.live.lock`): while it is
/// held, `stats_hourly` belongs to that server's live stats, which rewrite its partitions.
pub fn live_lock_path(root: &std::path::Path) -> std::path::PathBuf {
    root.join("tables").join(".live.lock")
}

/// Takes the live lock of a local data root for as long as the returned file is open;
/// fails when another process holds it.
pub fn take_live_lock(store: &Store) -> Result<Option<std::fs::File>> {
    let Some(root) = store.local_root() else {
        return Ok(None);
    };
    let path = live_lock_path(root);
    let file = open_lock_file(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::DataRoot(format!(
            "another netrev serve is running on {} (it holds {})",
            store.location(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::DataRoot(format!("locking {}: {e}", path.display())))
        }
    }
}

/// Whether a running `serve` owns `stats_hourly` of this data root.
fn live_server_running(store: &Store) -> Result<bool> {
    match take_live_lock(store) {
        Ok(_) => Ok(false),
        Err(Error::DataRoot(m)) if m.starts_with("another netrev serve") => Ok(true),
        Err(e) => Err(e),
    }
}

fn open_lock_file(path: &std::path::Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::DataRoot(format!("creating {}: {e}", dir.display())))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::DataRoot(format!("opening {}: {e}", path.display())))
}

/// A full recompute whose session is kept for the caller ([`Kept`]): its views, the
/// `stats_hourly` rows it computed and the raw files of its snapshot, from which the live
/// state of `serve` is built. With `stats` false, `stats_hourly` is neither computed nor
/// written: a live state that exists already keeps it.
pub async fn recompute_kept(
    store: &Store,
    stats: bool,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(Report, Kept)> {
    let keep = match stats {
        true => Keep::Session,
        false => Keep::SessionWithoutStats,
    };
    let (report, kept) = run(
        store,
        DateRange::default(),
        &Engine::Local,
        None,
        progress,
        keep,
    )
    .await?;
    Ok((report, kept.expect("asked to keep the session")))
}

/// The session of a recompute, kept: read what it computed, then [`Kept::finish`] it.
pub struct Kept {
    session: JobSession,
    /// The rows of `stats_hourly` it computed.
    pub stats: Vec<RecordBatch>,
    /// What it read (the raw files of its snapshot among it) and the part of its result a recompute by difference starts from
    /// ([`crate::incremental`]).
    pub seen: crate::incremental::Seen,
    /// The data root's recompute lock, held until the session is let go.
    _lock: Option<std::fs::File>,
}

impl Kept {
    /// The session, its views registered (`clicks_dedup`, `conversions_dedup`, …).
    pub fn ctx(&self) -> &SessionContext {
        &self.session.ctx
    }

    /// Lets the session go, with what it wrote besides the tables, and returns what it read.
    /// A failure to clean up is logged, not returned: it leaves a scratch folder for a later
    /// recompute.
    pub async fn finish(self, store: &Store) -> crate::incremental::Seen {
        if let Err(e) = self.session.finish(store).await {
            tracing::warn!(error = %e, "cleaning up after the recompute");
        }
        self.seen
    }
}

/// What a recompute keeps for its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Nothing,
    /// The session, and the `stats_hourly` rows.
    Session,
    /// The session; `stats_hourly` is left alone.
    SessionWithoutStats,
}

async fn run(
    store: &Store,
    range: DateRange,
    engine: &Engine,
    deadline: Option<Deadline>,
    progress: &mut (dyn FnMut(Progress) + Send),
    keep: Keep,
) -> Result<(Report, Option<Kept>)> {
    // One recompute at a time per data root (the scheduler in `serve` and the command line
    // may both start one); the lock is released when the file closes.
    let lock = lock_data_root(store).await?;
    // A running server keeps stats_hourly itself (its live stats rewrite the partitions they
    // change); writing it from here would put older numbers under it.
    let skip_stats = match keep {
        Keep::Nothing => live_server_running(store)?,
        Keep::Session => false,
        Keep::SessionWithoutStats => true,
    };
    let keep = keep != Keep::Nothing;
    progress(Progress::Start {
        tables: DERIVED.len() - usize::from(skip_stats),
    });
    if skip_stats {
        progress(Progress::Skipped {
            table: "stats_hourly",
            why: "a running netrev serve keeps it live",
        });
    }
    progress(Progress::Computing {
        table: "deduplicated events",
    });
    let session = crate::engine::job_session(store, engine, deadline).await?;
    let outcome = within(
        deadline,
        write_tables(store, range, progress, keep, skip_stats, &session),
    )
    .await;
    if keep && let Ok((report, stats, cohort_sources)) = outcome {
        let files = session
            .files
            .clone()
            .expect("the local engine keeps a snapshot");
        let horizon = match crate::incremental::latest(&session.ctx).await {
            Ok(h) => h,
            Err(e) => {
                let _ = session.finish(store).await;
                return Err(e);
            }
        };
        let seen = crate::incremental::Seen {
            files,
            rows: session.rows.clone(),
            cohort_sources,
            horizon,
        };
        return Ok((
            report,
            Some(Kept {
                session,
                stats,
                seen,
                _lock: lock,
            }),
        ));
    }
    // What the session wrote besides the tables goes, whether or not they were written; a
    // failure here leaves a scratch folder for a later recompute, not a failed recompute.
    if let Err(e) = session.finish(store).await {
        tracing::warn!(error = %e, "cleaning up after the recompute");
    }
    outcome.map(|(report, _, _)| (report, None))
}

/// Computes and writes the derived tables in `session`; when the session is to be `kept`,
/// returns the rows of `stats_hourly` instead of writing them, and those of `cohort_sources`,
/// and keeps every view.
async fn write_tables(
    store: &Store,
    range: DateRange,
    progress: &mut (dyn FnMut(Progress) + Send),
    keep: bool,
    skip_stats: bool,
    session: &JobSession,
) -> Result<(Report, Vec<RecordBatch>, Vec<RecordBatch>)> {
    let ctx = &session.ctx;
    let mut report = Report::default();
    let mut stats = Vec::new();
    let mut cohort_sources = Vec::new();
    // A table is written while the next one is computed: encoding Parquet keeps one core
    // busy, and a query rarely keeps both.
    let mut writing: Option<Writing> = None;
    let tables: Vec<&'static Derived> = DERIVED
        .iter()
        .filter(|d| !(skip_stats && d.name == "stats_hourly"))
        .collect();
    // What each table's query reads, to let go of the views (and the rows held in memory for
    // them) once no table left needs them. A kept session keeps them all.
    let mut reads = Vec::new();
    if !keep {
        for d in &tables {
            reads.push(tables_read(ctx, d.name).await?);
        }
    }
    for (i, d) in tables.iter().copied().enumerate() {
        progress(Progress::Computing { table: d.name });
        let started = std::time::Instant::now();
        let step = async {
            let batches = compute(ctx, d, range).await?;
            if !reads.is_empty() {
                // A view holds what it reads: its own registration goes too once unneeded.
                let mut needed: BTreeSet<&str> = reads[i + 1..]
                    .iter()
                    .flatten()
                    .map(|t| t.as_str())
                    .collect();
                needed.extend(tables[i + 1..].iter().map(|t| t.name));
                for job in crate::jobs::JOBS {
                    if !needed.contains(job.name) {
                        ctx.deregister_table(job.name)?;
                    }
                }
            }
            Ok::<_, Error>(batches)
        };
        let batches = match step.await {
            Ok(batches) => batches,
            Err(e) => {
                // The table being written is whole or absent, but its own failure would go
                // unreported if the recompute returned before it ended.
                if let Some(w) = writing.take() {
                    let _ = w.task.await;
                }
                return Err(e);
            }
        };
        let computed = started.elapsed().as_secs_f64();
        match d.name {
            "stats_hourly" if keep => stats = batches.clone(),
            "cohort_sources" if keep => cohort_sources = batches.clone(),
            _ => {}
        }
        if let Some(w) = writing.take() {
            report.tables.push(w.finish(progress).await?);
        }
        let store = store.clone();
        writing = Some(Writing {
            table: d.name,
            rows: batches.iter().map(RecordBatch::num_rows).sum(),
            started,
            computed,
            task: tokio::spawn(async move {
                if d.partitioned_by_date {
                    write_partitions(&store, d, range, &batches).await
                } else {
                    write_whole(&store, d, &batches).await
                }
            }),
        });
    }
    if let Some(w) = writing.take() {
        report.tables.push(w.finish(progress).await?);
    }
    Ok((report, stats, cohort_sources))
}

/// The tables a query of `name` reads, its views inlined.
async fn tables_read(ctx: &SessionContext, name: &str) -> Result<BTreeSet<String>> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let plan = ctx.table(name).await?.into_optimized_plan()?;
    let mut names = BTreeSet::new();
    plan.apply_with_subqueries(|node| {
        if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node {
            names.insert(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(names)
}

/// A derived table being written.
struct Writing {
    table: &'static str,
    rows: usize,
    started: std::time::Instant,
    computed: f64,
    /// Resolves to the number of files written.
    task: tokio::task::JoinHandle<Result<usize>>,
}

impl Writing {
    /// Waits for the files; returns the report's line for the table.
    async fn finish(
        self,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(&'static str, usize, usize)> {
        let files = self.task.await.expect("writing task panicked")?;
        tracing::info!(
            table = self.table,
            rows = self.rows,
            files,
            secs = self.started.elapsed().as_secs_f64(),
            computed_secs = self.computed,
            "written"
        );
        progress(Progress::Written {
            table: self.table,
            rows: self.rows,
            files,
        });
        Ok((self.table, self.rows, files))
    }
}

/// Replaces one `stats_hourly` partition with `encoded` (a Parquet file of all of that day's
/// rows, as the live state holds them), or removes it when there is none.
pub async fn write_stats_partition(
    store: &Store,
    date: NaiveDate,
    encoded: Option<bytes::Bytes>,
) -> Result<()> {
    let d = DERIVED
        .iter()
        .find(|d| d.name == "stats_hourly")
        .expect("stats_hourly is derived");
    let path = file_path(d, Some(date));
    match encoded {
        None => Ok(store.delete(&path).await?),
        Some(encoded) => Ok(store.put_durable(&path, encoded).await?),
    }
}

/// Takes the data root's recompute lock (`tables/.recompute.lock`), waiting for a running
/// recompute to finish. Only local roots have one: a remote root has no shared lock.
pub async fn lock_data_root(store: &Store) -> Result<Option<std::fs::File>> {
    let Some(root) = store.local_root() else {
        return Ok(None);
    };
    let dir = root.join("tables");
    let path = dir.join(".recompute.lock");
    let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
        let f = open_lock_file(&path)?;
        f.lock()
            .map_err(|e| Error::DataRoot(format!("taking the recompute lock: {e}")))?;
        Ok(f)
    })
    .await
    .expect("lock task panicked")?;
    Ok(Some(file))
}

async fn compute(ctx: &SessionContext, d: &Derived, range: DateRange) -> Result<Vec<RecordBatch>> {
    let mut sql = format!("SELECT * FROM {}", d.name);
    if d.partitioned_by_date {
        let mut conds = Vec::new();
        if let Some(f) = range.from {
            conds.push(format!("date >= DATE '{f}'"));
        }
        if let Some(t) = range.to {
            conds.push(format!("date <= DATE '{t}'"));
        }
        if !conds.is_empty() {
            sql.push_str(&format!(" WHERE {}", conds.join(" AND ")));
        }
    }
    // A partitioned table is put in order one partition at a time (`sort_rows`).
    if !d.partitioned_by_date {
        sql.push_str(&format!(" ORDER BY {}", order_by(d.name)));
    }
    let mut batches: Vec<_> = run_partitioned(ctx.sql(&sql).await?, d.name)
        .await?
        .into_iter()
        .flatten()
        .collect();
    if batches.is_empty() && !d.partitioned_by_date {
        // An unpartitioned table is written even when empty.
        let schema = ctx.table(d.name).await?.schema().as_arrow().clone();
        batches.push(RecordBatch::new_empty(std::sync::Arc::new(schema)));
    }
    Ok(batches)
}

/// Writes the one file of an unpartitioned table; anything else in its folder (a crashed
/// write's temporary) goes.
pub(crate) async fn write_whole(
    store: &Store,
    d: &Derived,
    batches: &[RecordBatch],
) -> Result<usize> {
    let path = file_path(d, None);
    store.write_parquet(&path, batches).await?;
    for meta in store.list(&table_dir(d.name)).await? {
        if meta.location != path {
            store.delete(&meta.location).await?;
        }
    }
    Ok(1)
}

/// Splits rows by their `date` column and writes one file per date; partitions in the range
/// that no longer have rows are removed.
async fn write_partitions(
    store: &Store,
    d: &Derived,
    range: DateRange,
    batches: &[RecordBatch],
) -> Result<usize> {
    let mut parts: BTreeMap<i32, Vec<RecordBatch>> = BTreeMap::new();
    for batch in batches {
        let idx = batch
            .schema()
            .index_of("date")
            .map_err(datafusion::error::DataFusionError::from)?;
        let dates = batch.column(idx).as_primitive::<Date32Type>();
        let distinct: BTreeSet<i32> = dates.iter().flatten().collect();
        for day in distinct {
            let mask = arrow::compute::kernels::cmp::eq(
                dates,
                &arrow::array::Date32Array::new_scalar(day),
            )
            .map_err(datafusion::error::DataFusionError::from)?;
            let mut part = filter_record_batch(batch, &mask)
                .map_err(datafusion::error::DataFusionError::from)?;
            part.remove_column(idx);
            parts.entry(day).or_default().push(part);
        }
    }
    // Two files at a time: each is encoded on a core of its own.
    let files = parts.len();
    let writes = parts.into_iter().map(|(day, rows)| {
        let store = store.clone();
        async move {
            // Each day's rows are put in the table's order here, a few thousand at a time, in
            // parallel: cheaper than ordering all days' millions in the query.
            let name = d.name;
            let sorted = tokio::task::spawn_blocking(move || sort_rows(name, &rows))
                .await
                .expect("sorting task panicked")?;
            write_partition(&store, d, day, &[sorted]).await
        }
    });
    futures::stream::iter(writes)
        .buffer_unordered(2)
        .try_collect::<()>()
        .await?;
    // A partition in the range keeps nothing but the file just written: a partition without
    // rows now loses its old ones, and stray files (an older layout, a crashed write's
    // temporary) would otherwise be read too.
    for meta in store.list(&table_dir(d.name)).await? {
        if let Some(date) = netrev_storage::store::layout::partition_date(&meta.location)
            && range.contains(date)
            && meta.location != file_path(d, Some(date))
        {
            store.delete(&meta.location).await?;
        }
    }
    Ok(files)
}

/// `rows` as one batch in the order of [`order_by`] (ascending, NULLs last, as SQL's
/// `ORDER BY` in [`compute`]).
fn sort_rows(table: &str, rows: &[RecordBatch]) -> Result<RecordBatch> {
    let arrow = datafusion::error::DataFusionError::from;
    let schema = rows[0].schema();
    let batch = arrow::compute::concat_batches(&schema, rows).map_err(arrow)?;
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for name in order_by(table).split(", ") {
        let column = batch.column(schema.index_of(name.trim_matches('"')).map_err(arrow)?);
        let options = arrow::compute::SortOptions {
            descending: false,
            nulls_first: false,
        };
        fields.push(arrow::row::SortField::new_with_options(
            column.data_type().clone(),
            options,
        ));
        columns.push(column.clone());
    }
    let keys = arrow::row::RowConverter::new(fields)
        .and_then(|c| c.convert_columns(&columns))
        .map_err(arrow)?;
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.sort_unstable_by(|a, b| keys.row(*a as usize).cmp(&keys.row(*b as usize)));
    let indices = arrow::array::UInt32Array::from(order);
    Ok(arrow::compute::take_record_batch(&batch, &indices).map_err(arrow)?)
}

/// Writes the file of one day's partition.
async fn write_partition(store: &Store, d: &Derived, day: i32, rows: &[RecordBatch]) -> Result<()> {
    let date = Date32Type::to_naive_date_opt(day).ok_or_else(|| {
        datafusion::error::DataFusionError::Internal(format!("date {day} out of range"))
    })?;
    Ok(store.write_parquet(&file_path(d, Some(date)), rows).await?)
}

impl From<netrev_storage::Error> for Error {
    fn from(e: netrev_storage::Error) -> Self {
        Error::Storage(e)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    /// `sort_rows` puts a day's rows in the order SQL's `ORDER BY` gives them (NULLs last),
    /// whatever batches they come in.
    #[tokio::test]
    async fn sort_rows_orders_like_the_query() {
        let mut fields = vec![Field::new(
            "hour",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )];
        for name in ["source", "campaign", "link", "country", "device"] {
            fields.push(Field::new(name, DataType::Utf8, true));
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = |hours: Vec<i64>, sources: Vec<Option<&str>>, devices: Vec<Option<&str>>| {
            let n = hours.len();
            let same = |v: &str| Arc::new(StringArray::from(vec![v; n])) as arrow::array::ArrayRef;
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(TimestampMicrosecondArray::from(hours).with_timezone("UTC")),
                    Arc::new(StringArray::from(sources)),
                    same("c"),
                    same("l"),
                    same("US"),
                    Arc::new(StringArray::from(devices)),
                ],
            )
            .unwrap()
        };
        let h = 3_600_000_000;
        let rows = vec![
            batch(
                vec![2 * h, h, h],
                vec![Some("b"), None, Some("b")],
                vec![Some("x"), Some("x"), None],
            ),
            batch(
                vec![h, 0, h],
                vec![Some("a"), Some("z"), Some("b")],
                vec![Some("y"), None, Some("a")],
            ),
        ];
        let ctx = SessionContext::new();
        let table =
            datafusion::datasource::MemTable::try_new(schema.clone(), vec![rows.clone()]).unwrap();
        ctx.register_table("stats_hourly", Arc::new(table)).unwrap();
        let sql = format!(
            "SELECT * FROM stats_hourly ORDER BY {}",
            order_by("stats_hourly")
        );
        let expected = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let expected = arrow::compute::concat_batches(&schema, &expected).unwrap();
        assert_eq!(sort_rows("stats_hourly", &rows).unwrap(), expected);
        // The NULL source of hour 1 comes after its named sources.
        let sources = expected.column(1).as_string::<i32>();
        assert!(sources.is_null(4) && sources.value(3) == "b");
    }
}
