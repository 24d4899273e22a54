//! The scheduled recompute of `serve`, by difference: it rebuilds only what the events since
//! the last recompute touched, so its cost follows the new events rather than the history.
//!
//! Every derived table is a sum or a set of rows per click ID or per visitor:
//! - `visitors` has a row per visitor, computed from that visitor's clicks and their money;
//! - `refund_links` has rows per click ID;
//! - `cohort_sources` sums its visitors: a visitor adds one to the size of its cohort (first
//!   day and first source) and its money to the ages of that cohort;
//! - `cohort_ltv` is computed from `cohort_sources` alone.
//!
//! A pass therefore:
//! 1. finds the click IDs of the rows read since the last pass (new raw files, the buffer);
//! 2. closes that set over the raw clicks: every visitor of those click IDs, every click ID of
//!    those visitors, and so on until nothing is added (a click ID sent twice under two visitor
//!    IDs links them), so the rows of the set hold the whole story of each of its click IDs
//!    and visitors;
//! 3. runs the unchanged SQL jobs twice over just the rows of that set: as the last pass read
//!    them (its files and buffered rows, kept in [`Seen`]) and as they are now;
//! 4. replaces the `visitors` and `refund_links` rows of the set with the new ones, and in
//!    `cohort_sources` takes away the old run's contribution and adds the new one's (both as
//!    per-age amounts, then summed again up to the horizon);
//! 5. computes `cohort_ltv` from `cohort_sources` with its SQL.
//!
//! `stats_hourly` is not written: the live state of `serve` keeps it. A pass needs the raw
//! files the last one read (a compaction by `serve` names its new files in [`Seen`]): when one
//! is gone, or the new events reach more than a quarter of the clicks (a full run costs less),
//! it fails with [`crate::Error::Stale`], and the caller runs a full recompute instead.
//!
//! What a pass still reads whole, besides the new events: the raw clicks' click and visitor
//! IDs (once per step of the closure, usually three), the raw rows of the set (one scan), and
//! the `visitors` and `refund_links` files, rewritten whole. So its cost follows the new
//! events plus a part that grows with the history, unlike the full recompute's joins, sorts
//! and aggregations over all of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Int64Type, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use object_store::path::Path;

use netrev_storage::Store;
use netrev_storage::buffer::Unpersisted;
use netrev_storage::model::Table;
use netrev_storage::store::layout;

use crate::jobs::{self, DERIVED, Derived};
use crate::recompute::{Progress, Report};
use crate::{Error, Result};

/// What a recompute read (its raw files and buffered rows) and the part of its result the
/// next pass by difference starts from.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The raw files of its snapshot (as the snapshot's object store names them).
    pub files: Arc<HashSet<Path>>,
    /// The buffered rows it took (before listing the files; those a file listed holds were
    /// left out when read).
    pub rows: Vec<Unpersisted>,
    /// Its `cohort_sources` rows.
    pub(crate) cohort_sources: Vec<RecordBatch>,
    /// The time of the latest raw event it read (microseconds), from which the cohorts are
    /// aged (`horizon` in `sql/cohort_sources.sql`).
    pub(crate) horizon: Option<i64>,
}

/// The name of the file of [`Seen::write`] in `serve`'s write-ahead log directory.
pub const SEEN_FILE: &str = "recompute.seen";

/// The first bytes of the file of [`Seen::write`].
const SEEN_MAGIC: &[u8] = b"netrev recompute seen\n";

/// Changed whenever what that file holds, or means, changes: an older one is not read.
const SEEN_VERSION: u32 = 1;

/// The largest header of that file read: the paths of the raw files (a few per table and day)
/// and the sequences of the buffered rows.
const SEEN_META_MAX: u64 = 512 << 20;

#[derive(serde::Serialize, serde::Deserialize)]
struct SeenMeta {
    version: u32,
    /// The node and data root it belongs to.
    owner: String,
    horizon: Option<i64>,
    files: Vec<String>,
    /// Each buffered batch, in order (its rows follow as an IPC stream each).
    rows: Vec<RowsMeta>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RowsMeta {
    node: String,
    table: String,
    date: chrono::NaiveDate,
    seqs: Vec<u64>,
}

impl Seen {
    /// Writes it to `path` (node-local: beside the write-ahead log of the node and data root
    /// `owner` names), so that the first recompute after a restart runs by difference from
    /// it; returns the file's size.
    pub fn write(&self, path: &std::path::Path, owner: &str) -> Result<u64> {
        let meta = SeenMeta {
            version: SEEN_VERSION,
            owner: owner.to_string(),
            horizon: self.horizon,
            files: self.files.iter().map(|p| p.to_string()).collect(),
            rows: self
                .rows
                .iter()
                .map(|r| RowsMeta {
                    node: r.node.to_string(),
                    table: r.table.name().to_string(),
                    date: r.date,
                    seqs: r.seqs.to_vec(),
                })
                .collect(),
        };
        let written = netrev_storage::sealed::write(path, SEEN_MAGIC, |out| {
            netrev_storage::sealed::write_json(out, &meta)?;
            let schema = self.cohort_sources.first().map_or_else(
                || Arc::new(arrow::datatypes::Schema::empty()),
                |b| b.schema(),
            );
            netrev_storage::sealed::write_stream(out, &schema, &self.cohort_sources)?;
            for r in &self.rows {
                netrev_storage::sealed::write_stream(out, &r.batch.schema(), [&r.batch])?;
            }
            Ok(())
        })?;
        Ok(written)
    }

    /// Reads what [`Seen::write`] wrote for `owner`: `None` when there is nothing; an error
    /// when it is damaged, another's or another version's.
    pub fn read(path: &std::path::Path, owner: &str) -> Result<Option<Seen>> {
        let read = netrev_storage::sealed::read(path, SEEN_MAGIC, |input| {
            let meta: SeenMeta = netrev_storage::sealed::read_json(input, SEEN_META_MAX)?;
            if meta.version != SEEN_VERSION || meta.owner != owner {
                std::io::copy(input, &mut std::io::sink()).map_err(|e| {
                    netrev_storage::Error::Io {
                        op: "read",
                        path: path.to_path_buf(),
                        source: e,
                    }
                })?;
                return Ok(Err(format!(
                    "version {} written by {}, not version {SEEN_VERSION} of {owner}",
                    meta.version, meta.owner
                )));
            }
            let mut cohort_sources = Vec::new();
            netrev_storage::sealed::read_stream(input, None, &mut |b| {
                cohort_sources.push(b);
                Ok(())
            })?;
            let mut rows = Vec::with_capacity(meta.rows.len());
            for r in &meta.rows {
                let table =
                    Table::from_name(&r.table).ok_or_else(|| netrev_storage::Error::Corrupt {
                        path: path.display().to_string(),
                        what: format!("no table {}", r.table),
                    })?;
                let mut batches = Vec::new();
                netrev_storage::sealed::read_stream(input, Some(&table.schema()), &mut |b| {
                    batches.push(b);
                    Ok(())
                })?;
                let batch = arrow::compute::concat_batches(&table.schema(), &batches)?;
                if batch.num_rows() != r.seqs.len() {
                    return Err(netrev_storage::Error::Corrupt {
                        path: path.display().to_string(),
                        what: "buffered rows and their sequences disagree".into(),
                    });
                }
                rows.push(Unpersisted {
                    node: r.node.as_str().into(),
                    table,
                    date: r.date,
                    seqs: r.seqs.clone().into(),
                    batch,
                });
            }
            let files = meta
                .files
                .iter()
                .map(Path::parse)
                .collect::<std::result::Result<HashSet<_>, _>>()
                .map_err(|e| netrev_storage::Error::Corrupt {
                    path: path.display().to_string(),
                    what: e.to_string(),
                })?;
            Ok(Ok(Seen {
                files: Arc::new(files),
                rows,
                cohort_sources,
                horizon: meta.horizon,
            }))
        })?;
        match read {
            None => Ok(None),
            Some(Ok(seen)) => Ok(Some(seen)),
            Some(Err(why)) => Err(Error::DataRoot(format!("{}: {why}", path.display()))),
        }
    }
}

/// What a pass by difference did.
#[derive(Debug)]
pub struct Pass {
    pub report: Report,
    /// What it read, for the next pass.
    pub seen: Seen,
    /// Raw files it read that the last pass had not.
    pub added: Vec<Path>,
    /// Click IDs with new rows, and the click IDs and visitors rebuilt with them.
    pub touched: usize,
    pub click_ids: usize,
    pub visitors: usize,
}

/// Where the set of click IDs being rebuilt is registered in a session.
const SET: &str = "netrev_rebuilt_cids";
const VISITORS: &str = "netrev_rebuilt_vids";

/// Rebuilds the derived tables but `stats_hourly` from the events read since `seen` (see the
/// module's description). Takes the data root's recompute lock.
pub async fn recompute_incremental(
    store: &Store,
    seen: &Seen,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Pass> {
    let _lock = crate::recompute::lock_data_root(store).await?;
    // Every derived table but stats_hourly.
    progress(Progress::Start {
        tables: DERIVED.len() - 1,
    });
    progress(Progress::Computing {
        table: "events since the last recompute",
    });
    let started = std::time::Instant::now();
    let step = |what: &str| {
        tracing::debug!(
            what,
            secs = started.elapsed().as_secs_f64(),
            "recompute by difference"
        )
    };
    let (now, files, rows) = crate::snapshot_session(store).await?;
    if let Some(gone) = seen.files.iter().find(|f| !files.contains(*f)) {
        return Err(Error::Stale(format!(
            "{gone}, read by the last recompute, is gone"
        )));
    }
    let added: HashSet<Path> = files.difference(&seen.files).cloned().collect();
    let fresh =
        crate::session_over_files(store, Arc::new(added.clone()), not_in(&rows, &seen.rows)?)
            .await?;
    let touched = collect(
        &fresh,
        "SELECT cid FROM clicks UNION SELECT cid FROM conversions UNION SELECT cid FROM refunds",
    )
    .await?;
    let touched_count = count(&touched);
    let next = |cohort_sources, horizon| Seen {
        files: files.clone(),
        rows: rows.clone(),
        cohort_sources,
        horizon,
    };
    if touched_count == 0 {
        return Ok(Pass {
            report: Report::default(),
            seen: next(seen.cohort_sources.clone(), seen.horizon),
            added: added.into_iter().collect(),
            touched: 0,
            click_ids: 0,
            visitors: 0,
        });
    }
    step("touched");
    let set = closure(&now, touched).await?;
    let click_ids = count(&set);
    step("closure");
    let history = collect(&now, "SELECT count(*) FROM clicks").await?;
    let history = history
        .first()
        .map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0));
    if click_ids as i64 > history / 4 + 1000 {
        return Err(Error::Stale(format!(
            "the new events reach {click_ids} click IDs of {history} clicks: a full recompute costs less"
        )));
    }
    // The rows of the set now, and as the last pass read them: without those read since
    // (new files and buffered rows, less the rows it read from the buffer that are in new
    // files now).
    let (mut now_rows, mut then_rows) = (Vec::new(), Vec::new());
    let keys: HashSet<String> = strings(&set, 0)?.into_iter().collect();
    for table in Table::ALL {
        let (schema, rows_now) = rows_with_cid_in(&now, table, &set).await?;
        let (_, fresh_rows) = rows_with_cid_in(&fresh, table, &set).await?;
        let flushed = flushed_since(&seen.rows, &added, table, &keys, &schema)?;
        let new_rows = minus(&fresh_rows, &flushed, &schema)?;
        then_rows.push((table, schema.clone(), minus(&rows_now, &new_rows, &schema)?));
        now_rows.push((table, schema, rows_now));
    }
    step("rows");
    let after = restricted(now_rows).await?;
    let before = restricted(then_rows).await?;
    let horizon = latest(&fresh).await?.max(seen.horizon);
    step("views");
    let vids = collect(&after, "SELECT DISTINCT vid FROM clicks").await?;
    let visitors = count(&vids);

    let mut report = Report::default();
    let mut write = async |d: &'static Derived, batches: Vec<RecordBatch>| -> Result<()> {
        progress(Progress::Computing { table: d.name });
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let files = crate::recompute::write_whole(store, d, &batches).await?;
        progress(Progress::Written {
            table: d.name,
            rows,
            files,
        });
        report.tables.push((d.name, rows, files));
        Ok(())
    };

    let replaced = replace_rows(store, &after, "visitors", "vid", VISITORS, vids).await?;
    write(derived("visitors"), replaced).await?;
    step("visitors");
    let replaced = replace_rows(store, &after, "refund_links", "cid", SET, set).await?;
    write(derived("refund_links"), replaced).await?;
    step("refund_links");

    let schema = view_schema(&after, "cohort_sources").await?;
    let mut cohorts = Cohorts::of(&seen.cohort_sources, 1)?;
    cohorts.add(Cohorts::of(&rows_of(&before, "cohort_sources").await?, -1)?);
    cohorts.add(Cohorts::of(&rows_of(&after, "cohort_sources").await?, 1)?);
    let cohort_sources = cohorts.rows(horizon.map(|us| us / 86_400_000_000), &schema)?;
    write(derived("cohort_sources"), cohort_sources.clone()).await?;
    let ltv = cohort_ltv(&cohort_sources).await?;
    write(derived("cohort_ltv"), ltv).await?;
    step("cohorts");

    Ok(Pass {
        report,
        seen: next(cohort_sources, horizon),
        added: added.into_iter().collect(),
        touched: touched_count,
        click_ids,
        visitors,
    })
}

/// The days before `before` with raw files that `seen` holds and a compaction would merge (two
/// or more files of one node in a table, not counting the node's newest flush, which stays
/// apart), oldest first.
pub fn days_to_compact(seen: &Seen, before: chrono::NaiveDate) -> Vec<chrono::NaiveDate> {
    let parsed: Vec<(Table, chrono::NaiveDate, &str, u64)> = seen
        .files
        .iter()
        .filter_map(|f| {
            let table = Table::ALL
                .into_iter()
                .find(|t| layout::is_raw_file(f, *t))?;
            let (node, _, last) = layout::parse_raw_file(f.filename()?)?;
            Some((table, layout::partition_date(f)?, node, last))
        })
        .collect();
    let mut newest: HashMap<&str, u64> = HashMap::new();
    for (_, _, node, last) in &parsed {
        let n = newest.entry(node).or_default();
        *n = (*n).max(*last);
    }
    let mut files: BTreeMap<(chrono::NaiveDate, Table, &str), usize> = BTreeMap::new();
    for (table, date, node, last) in parsed {
        if date < before && newest.get(node) != Some(&last) {
            *files.entry((date, table, node)).or_default() += 1;
        }
    }
    let days: std::collections::BTreeSet<_> = files
        .into_iter()
        .filter(|(_, n)| *n >= 2)
        .map(|((date, _, _), _)| date)
        .collect();
    days.into_iter().collect()
}

/// How many rows the raw `files` hold (from their footers).
pub async fn rows_in(store: &Store, files: &[Path]) -> Result<usize> {
    if files.is_empty() {
        return Ok(0);
    }
    let files = Arc::new(files.iter().cloned().collect());
    let ctx = crate::session_over_files(store, files, Vec::new()).await?;
    let mut rows = 0;
    for table in Table::ALL {
        let sql = format!("SELECT count(*) FROM {}", table.name());
        for b in collect(&ctx, &sql).await? {
            rows += b.column(0).as_primitive::<Int64Type>().value(0) as usize;
        }
    }
    Ok(rows)
}

/// Compacts the raw files of `day` that `seen` holds ([`crate::compact`]), and names the new
/// files in `seen` in place of those they replaced (they hold the same rows), so the next
/// pass by difference still starts from it. For a running `serve` on a local data root, whose
/// ingest must not flush meanwhile.
pub async fn compact_seen(
    store: &Store,
    seen: &mut Seen,
    day: chrono::NaiveDate,
) -> Result<Vec<crate::compact::Compacted>> {
    let (_, events) = crate::raw_files_of(store)?;
    // A path of the data root (`events/…`) as the snapshot names it.
    let as_read = |p: &Path| Path::from_iter(events.parts().chain(p.parts().skip(1)));
    let files = seen.files.clone();
    let include = |date: chrono::NaiveDate, p: &Path| date == day && files.contains(&as_read(p));
    let config = crate::compact::CompactConfig::default();
    let done = crate::compact::compact_where(store, &config, &include, &mut |_| {}).await?;
    if !done.is_empty() {
        let mut files = (*seen.files).clone();
        for c in &done {
            for p in &c.inputs {
                files.remove(&as_read(p));
            }
            files.extend(c.outputs.iter().map(as_read));
        }
        seen.files = Arc::new(files);
    }
    Ok(done)
}

/// The raw files of `store` now, named as a snapshot names them ([`Seen::files`]).
pub async fn raw_files_now(store: &Store) -> Result<Arc<HashSet<Path>>> {
    let (inner, events) = crate::raw_files_of(store)?;
    let frozen = crate::snapshot::Snapshot::take(inner, vec![events])
        .await
        .map_err(|e| Error::Storage(e.into()))?;
    Ok(frozen.files())
}

/// The events of raw `files` (paths as a snapshot of `store`'s raw files names them: the
/// files a pass found new).
pub async fn events_in(store: &Store, files: &[Path]) -> Result<Vec<netrev_storage::Event>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let files = Arc::new(files.iter().cloned().collect());
    let ctx = crate::session_over_files(store, files, Vec::new()).await?;
    let mut out = Vec::new();
    for table in Table::ALL {
        for b in collect(&ctx, &format!("SELECT * FROM {}", table.name())).await? {
            out.extend(netrev_storage::model::from_batch(table, &b).map_err(Error::Storage)?);
        }
    }
    Ok(out)
}

/// The conversions and refunds of the click IDs `cids` in the raw `files` (a snapshot of
/// `store`'s) and the buffered `rows`: for a live state that left them to the files and now
/// has their click.
pub async fn events_of_clicks(
    store: &Store,
    files: Arc<HashSet<Path>>,
    rows: Vec<Unpersisted>,
    cids: &[String],
) -> Result<Vec<netrev_storage::Event>> {
    use datafusion::prelude::{col, lit};
    if cids.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = crate::session_over_files(store, files, rows).await?;
    let mut out = Vec::new();
    for chunk in cids.chunks(10_000) {
        let list: Vec<_> = chunk.iter().map(|c| lit(c.as_str())).collect();
        for table in [Table::Conversions, Table::Refunds] {
            let found = ctx
                .table(table.name())
                .await?
                .filter(col("cid").in_list(list.clone(), false))?
                .collect()
                .await?;
            for b in found {
                out.extend(netrev_storage::model::from_batch(table, &b).map_err(Error::Storage)?);
            }
        }
    }
    Ok(out)
}

/// The buffered `rows` that `before` (rows buffered earlier) does not hold.
fn not_in(rows: &[Unpersisted], before: &[Unpersisted]) -> Result<Vec<Unpersisted>> {
    let held: HashSet<(&str, u64)> = before
        .iter()
        .flat_map(|p| p.seqs.iter().map(|&s| (p.node.as_ref(), s)))
        .collect();
    let mut out = Vec::new();
    for part in rows {
        let keep: arrow::array::BooleanArray = part
            .seqs
            .iter()
            .map(|&s| Some(!held.contains(&(part.node.as_ref(), s))))
            .collect();
        if keep.true_count() == 0 {
            continue;
        }
        let seqs: Vec<u64> = part
            .seqs
            .iter()
            .copied()
            .filter(|&s| !held.contains(&(part.node.as_ref(), s)))
            .collect();
        out.push(Unpersisted {
            batch: arrow::compute::filter_record_batch(&part.batch, &keep)?,
            seqs: seqs.into(),
            ..part.clone()
        });
    }
    Ok(out)
}

fn derived(name: &str) -> &'static Derived {
    DERIVED
        .iter()
        .find(|d| d.name == name)
        .expect("a derived table")
}

async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Registers `batches` (of one string column, `column`) as table `name` of `ctx`,
/// replacing it.
fn register(
    ctx: &SessionContext,
    name: &str,
    column: &str,
    batches: Vec<RecordBatch>,
) -> Result<()> {
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new(column, DataType::Utf8, true),
        ])),
    };
    ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(MemTable::try_new(schema, vec![batches])?))?;
    Ok(())
}

/// The click IDs `touched` and every click ID linked to them through the raw clicks of
/// `ctx`: by a visitor ID, or by a click ID recorded under two visitors.
async fn closure(ctx: &SessionContext, touched: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let mut set = touched;
    let mut vids: Vec<RecordBatch> = Vec::new();
    loop {
        let known = (count(&set), count(&vids));
        register(ctx, SET, "cid", set)?;
        register(ctx, VISITORS, "vid", vids)?;
        let linked = format!(
            "SELECT cid, vid FROM clicks \
             WHERE cid IN (SELECT cid FROM {SET}) OR vid IN (SELECT vid FROM {VISITORS})"
        );
        ctx.register_table(
            "netrev_linked",
            ctx.sql(&linked).await?.cache().await?.into_view(),
        )?;
        set = collect(
            ctx,
            &format!("SELECT cid FROM netrev_linked UNION SELECT cid FROM {SET}"),
        )
        .await?;
        vids = collect(ctx, "SELECT DISTINCT vid FROM netrev_linked").await?;
        ctx.deregister_table("netrev_linked")?;
        if (count(&set), count(&vids)) == known {
            ctx.deregister_table(VISITORS)?;
            ctx.deregister_table(SET)?;
            return Ok(set);
        }
    }
}

/// The rows of `table` in `ctx` whose click ID is in `set`, and their schema.
async fn rows_with_cid_in(
    ctx: &SessionContext,
    table: Table,
    set: &[RecordBatch],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    register(ctx, SET, "cid", set.to_vec())?;
    let df = ctx
        .sql(&format!(
            "SELECT * FROM {} WHERE cid IN (SELECT cid FROM {SET})",
            table.name()
        ))
        .await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    ctx.deregister_table(SET)?;
    Ok((schema, batches))
}

/// The rows of `table` in the buffered `rows` (a pass's) whose click ID is among `keys` and
/// that one of the `added` files holds now (by node and sequence range), in `schema`.
fn flushed_since(
    rows: &[Unpersisted],
    added: &HashSet<Path>,
    table: Table,
    keys: &HashSet<String>,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let mut ranges: HashMap<(String, chrono::NaiveDate), Vec<(u64, u64)>> = HashMap::new();
    for f in added.iter().filter(|f| layout::is_raw_file(f, table)) {
        if let (Some((node, first, last)), Some(date)) = (
            f.filename().and_then(layout::parse_raw_file),
            layout::partition_date(f),
        ) {
            ranges
                .entry((node.to_string(), date))
                .or_default()
                .push((first, last));
        }
    }
    let mut out = Vec::new();
    for part in rows.iter().filter(|p| p.table == table) {
        let Some(held) = ranges.get(&(part.node.to_string(), part.date)) else {
            continue;
        };
        let cids = arrow::compute::cast(
            part.batch
                .column_by_name("cid")
                .ok_or_else(|| Error::DataRoot("a buffered batch without cid".into()))?,
            &DataType::Utf8,
        )?;
        let cids = cids.as_string::<i32>();
        let keep: arrow::array::BooleanArray = part
            .seqs
            .iter()
            .enumerate()
            .map(|(i, &seq)| {
                Some(
                    held.iter().any(|&(a, b)| (a..=b).contains(&seq))
                        && keys.contains(cids.value(i)),
                )
            })
            .collect();
        if keep.true_count() == 0 {
            continue;
        }
        let batch = arrow::compute::filter_record_batch(&part.batch, &keep)?;
        let date = arrow::array::Date32Array::from(vec![
            Date32Type::from_naive_date(part.date);
            batch.num_rows()
        ]);
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let column: ArrayRef = match batch.column_by_name(f.name()) {
                    Some(c) => c.clone(),
                    None if f.name() == "date" => Arc::new(date.clone()),
                    None => {
                        return Err(Error::DataRoot(format!(
                            "a buffered batch without {}",
                            f.name()
                        )));
                    }
                };
                Ok(arrow::compute::cast(&column, f.data_type())?)
            })
            .collect::<Result<Vec<_>>>()?;
        out.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(out)
}

/// The rows of `rows` less those of `remove` (each row of `remove` takes away one equal row).
fn minus(
    rows: &[RecordBatch],
    remove: &[RecordBatch],
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    use arrow::row::{OwnedRow, RowConverter, SortField};
    if remove.iter().all(|b| b.num_rows() == 0) {
        return Ok(rows.to_vec());
    }
    let fields = schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let mut left: HashMap<OwnedRow, usize> = HashMap::new();
    for b in remove {
        for row in converter.convert_columns(b.columns())?.iter() {
            *left.entry(row.owned()).or_default() += 1;
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for b in rows {
        let converted = converter.convert_columns(b.columns())?;
        let keep: arrow::array::BooleanArray = converted
            .iter()
            .map(|row| match left.get_mut(&row.owned()) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    Some(false)
                }
                _ => Some(true),
            })
            .collect();
        out.push(arrow::compute::filter_record_batch(b, &keep)?);
    }
    if let Some((_, n)) = left.iter().find(|(_, n)| **n > 0) {
        return Err(Error::DataRoot(format!(
            "{n} rows read since the last recompute are not among the rows now"
        )));
    }
    Ok(out)
}

/// The strings of column `i` of `batches`.
fn strings(batches: &[RecordBatch], i: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        let column = arrow::compute::cast(b.column(i), &DataType::Utf8)?;
        let column = column.as_string::<i32>();
        out.extend(
            (0..column.len())
                .filter(|&r| column.is_valid(r))
                .map(|r| column.value(r).to_string()),
        );
    }
    Ok(out)
}

/// A session whose raw tables are the given rows, with every job's view (those that several
/// tables read computed once, as a full recompute does).
async fn restricted(tables: Vec<(Table, SchemaRef, Vec<RecordBatch>)>) -> Result<SessionContext> {
    let part = SessionContext::new_with_config(crate::session_config()?);
    for (table, schema, batches) in tables {
        part.register_table(
            table.name(),
            Arc::new(MemTable::try_new(schema, vec![batches])?),
        )?;
    }
    jobs::create_materialized_views(&part).await?;
    Ok(part)
}

async fn view_schema(ctx: &SessionContext, view: &str) -> Result<SchemaRef> {
    Ok(Arc::new(ctx.table(view).await?.schema().as_arrow().clone()))
}

async fn rows_of(ctx: &SessionContext, view: &str) -> Result<Vec<RecordBatch>> {
    collect(ctx, &format!("SELECT * FROM {view}")).await
}

/// `table` as written, without the rows whose `key` is among `keys`, plus the rows `part`
/// computes for them, in the table's order.
async fn replace_rows(
    store: &Store,
    part: &SessionContext,
    table: &'static str,
    key: &str,
    keys_table: &str,
    keys: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let schema = view_schema(part, table).await?;
    let dir = crate::recompute::table_dir(table);
    let written = store.list(&dir).await.map_err(Error::Storage)?;
    if !written
        .iter()
        .any(|m| m.location.as_ref().ends_with(".parquet"))
    {
        return Err(Error::Stale(format!("{dir} has no file")));
    }
    let ctx = SessionContext::new_with_config(crate::session_config()?);
    let url = crate::table_url(store, dir.as_ref());
    if store.local_root().is_none() {
        crate::register_remote(&ctx, store.object_store());
    }
    ctx.register_parquet("netrev_before", &url, Default::default())
        .await?;
    ctx.register_table(
        "netrev_after",
        Arc::new(MemTable::try_new(
            schema.clone(),
            vec![rows_of(part, table).await?],
        )?),
    )?;
    register(&ctx, keys_table, key, keys)?;
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .collect();
    let columns = columns.join(", ");
    let sql = format!(
        "SELECT {columns} FROM netrev_before \
         WHERE {key} NOT IN (SELECT {key} FROM {keys_table}) \
         UNION ALL SELECT {columns} FROM netrev_after \
         ORDER BY {}",
        crate::recompute::order_by(table)
    );
    let mut batches = conform(collect(&ctx, &sql).await?, &schema)?;
    if batches.is_empty() {
        // A table is written even when empty.
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

/// `batches` with the column types of `schema` (a file read back may give its strings as
/// another string type).
fn conform(batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    batches
        .iter()
        .map(|b| Ok(crate::cast_to(b, schema)?))
        .collect()
}

/// The time of the latest event of the raw tables of `ctx` (microseconds): the cohorts are
/// aged up to its day (`horizon` in `sql/cohort_sources.sql`).
pub(crate) async fn latest(ctx: &SessionContext) -> Result<Option<i64>> {
    let mut latest: Option<i64> = None;
    for table in Table::ALL {
        let sql = format!("SELECT CAST(max(ts) AS BIGINT) FROM {}", table.name());
        for b in collect(ctx, &sql).await? {
            let a = b.column(0).as_primitive::<Int64Type>();
            if !a.is_empty() && a.is_valid(0) {
                latest = latest.max(Some(a.value(0)));
            }
        }
    }
    Ok(latest)
}

/// Money as `Decimal128(18, 4)` units.
type Units = i128;

/// A cohort and source's size and the money of each age (not summed over ages).
#[derive(Debug, Default)]
struct Cohort {
    size: i64,
    by_age: BTreeMap<i64, (Units, Units)>,
}

/// A cohort (its day since the epoch) and source, ordered as the table orders them (no
/// source last).
type CohortKey = (i32, bool, Option<String>);

/// `cohort_sources`, by cohort and source.
#[derive(Debug, Default)]
struct Cohorts(BTreeMap<CohortKey, Cohort>);

impl Cohorts {
    /// The cohorts of `cohort_sources` rows (money summed over ages), each amount times `sign`.
    fn of(batches: &[RecordBatch], sign: i64) -> Result<Cohorts> {
        // (age, size, gross, refunds) of each row.
        let mut rows: BTreeMap<CohortKey, Vec<(i64, i64, Units, Units)>> = BTreeMap::new();
        for b in batches {
            let column = |name: &str, to: &DataType| -> Result<ArrayRef> {
                let c = b.column_by_name(name).ok_or_else(|| {
                    Error::DataRoot(format!("cohort_sources has no column {name}"))
                })?;
                Ok(arrow::compute::cast(c, to)?)
            };
            let money = DataType::Decimal128(18, 4);
            let cohort = column("cohort", &DataType::Date32)?;
            let source = column("source", &DataType::Utf8)?;
            let age = column("age", &DataType::Int64)?;
            let size = column("cohort_size", &DataType::Int64)?;
            let gross = column("gross", &money)?;
            let refunds = column("refunds", &money)?;
            let (cohort, source) = (
                cohort.as_primitive::<Date32Type>(),
                source.as_string::<i32>(),
            );
            let (age, size) = (
                age.as_primitive::<Int64Type>(),
                size.as_primitive::<Int64Type>(),
            );
            let gross = gross.as_primitive::<Decimal128Type>();
            let refunds = refunds.as_primitive::<Decimal128Type>();
            for r in 0..b.num_rows() {
                let source = source.is_valid(r).then(|| source.value(r).to_string());
                rows.entry((cohort.value(r), source.is_none(), source))
                    .or_default()
                    .push((
                        age.value(r),
                        size.value(r),
                        gross.value(r),
                        refunds.value(r),
                    ));
            }
        }
        let mut out = Cohorts::default();
        for (key, mut ages) in rows {
            ages.sort_unstable();
            let mut c = Cohort {
                size: ages[0].1 * sign,
                ..Cohort::default()
            };
            let (mut g, mut r) = (0, 0);
            for (age, _, gross, refunds) in ages {
                let step = (gross - g, refunds - r);
                (g, r) = (gross, refunds);
                if step != (0, 0) {
                    let s = Units::from(sign);
                    c.by_age.insert(age, (step.0 * s, step.1 * s));
                }
            }
            out.0.insert(key, c);
        }
        Ok(out)
    }

    fn add(&mut self, other: Cohorts) {
        for (key, c) in other.0 {
            let mine = self.0.entry(key).or_default();
            mine.size += c.size;
            for (age, (g, r)) in c.by_age {
                let m = mine.by_age.entry(age).or_default();
                m.0 += g;
                m.1 += r;
            }
        }
    }

    /// The rows of `cohort_sources`: every cohort with visitors, at each age from 0 to
    /// `last_day` (at most 365), its money summed up to that age.
    fn rows(&self, last_day: Option<i64>, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
        let (mut cohort, mut source, mut age, mut size) = (vec![], vec![], vec![], vec![]);
        let (mut gross, mut refunds, mut net) = (vec![], vec![], vec![]);
        let fits = |v: Units| -> Result<Units> {
            if v.abs() < 10i128.pow(18) {
                Ok(v)
            } else {
                Err(Error::DataRoot(format!(
                    "a cohort's sum ({v} ten-thousandths) does not fit Decimal(18,4)"
                )))
            }
        };
        for ((day, _, src), c) in &self.0 {
            if c.size < 0 {
                return Err(Error::DataRoot(format!(
                    "cohort {day} of source {src:?} has {} visitors",
                    c.size
                )));
            }
            let Some(last_day) = last_day.filter(|_| c.size > 0) else {
                continue;
            };
            let last = (last_day - i64::from(*day)).min(365);
            let (mut g, mut r) = (0, 0);
            for a in 0..=last {
                if let Some((dg, dr)) = c.by_age.get(&a) {
                    g += dg;
                    r += dr;
                }
                cohort.push(*day);
                source.push(src.clone());
                age.push(a);
                size.push(c.size);
                gross.push(fits(g)?);
                refunds.push(fits(r)?);
                net.push(fits(g - r)?);
            }
        }
        let money = |v: Vec<Units>| -> Result<ArrayRef> {
            Ok(Arc::new(
                Decimal128Array::from(v).with_precision_and_scale(18, 4)?,
            ))
        };
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("cohort", Arc::new(Date32Array::from(cohort))),
            ("source", Arc::new(StringArray::from(source))),
            ("age", Arc::new(Int64Array::from(age))),
            ("cohort_size", Arc::new(Int64Array::from(size))),
            ("gross", money(gross)?),
            ("refunds", money(refunds)?),
            ("net", money(net)?),
        ];
        let mut out = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let (_, c) = columns
                .iter()
                .find(|(n, _)| n == f.name())
                .ok_or_else(|| Error::DataRoot(format!("cohort_sources column {}", f.name())))?;
            out.push(arrow::compute::cast(c, f.data_type())?);
        }
        Ok(vec![RecordBatch::try_new(schema.clone(), out)?])
    }
}

/// `cohort_ltv` computed by its SQL from the rows of `cohort_sources`.
async fn cohort_ltv(cohort_sources: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new_with_config(crate::session_config()?);
    let schema = cohort_sources[0].schema();
    ctx.register_table(
        "cohort_sources",
        Arc::new(MemTable::try_new(schema, vec![cohort_sources.to_vec()])?),
    )?;
    let job = jobs::JOBS
        .iter()
        .find(|j| j.name == "cohort_ltv")
        .expect("the cohort_ltv job");
    ctx.sql(job.sql).await?.collect().await?;
    let sql = format!(
        "SELECT * FROM cohort_ltv ORDER BY {}",
        crate::recompute::order_by("cohort_ltv")
    );
    let schema = view_schema(&ctx, "cohort_ltv").await?;
    let mut batches = collect(&ctx, &sql).await?;
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::NaiveDate;
    use netrev_storage::buffer::{Buffer, Frozen};
    use netrev_storage::store::layout;
    use netrev_storage::{Click, Conversion, Event, Refund, RefundType, model};
    use rust_decimal::Decimal;

    use super::*;
    use crate::engine::Engine;
    use crate::recompute::{DateRange, recompute, recompute_kept};

    const DAY: i64 = 86_400_000_000;
    const START: i64 = 1_795_000_000_000_000 - 1_795_000_000_000_000 % DAY;

    /// A small deterministic generator (xorshift).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    /// A day of traffic: new clicks by a pool of returning visitors (some sent twice, a few
    /// under another visitor, a few dated days back), conversions and refunds of clicks of
    /// any earlier day (some sent twice, some for clicks never seen), all on day `day`.
    fn day_of_events(rng: &mut Rng, day: i64, cids: &mut Vec<String>) -> Vec<Event> {
        let mut out = Vec::new();
        let at = |rng: &mut Rng| START + day * DAY + rng.below(DAY as u64) as i64;
        for i in 0..40 {
            let cid = format!("c{day}x{i}");
            let mut ts = at(rng);
            if rng.below(10) == 0 {
                ts -= (1 + rng.below(day as u64 + 1) as i64) * DAY;
            }
            let click = Click {
                cid: cid.clone(),
                vid: format!("v{}", rng.below(25)),
                ts,
                source: ["ads", "mail", "seo"]
                    .get(rng.below(4) as usize)
                    .map(|s| s.to_string()),
                campaign: Some(format!("k{}", rng.below(2))),
                link: None,
                country: Some("DE".into()),
                device: None,
                cost: Decimal::new(rng.below(300) as i64, 2),
                subs: Default::default(),
            };
            out.push(Event::Click(click.clone()));
            match rng.below(12) {
                0 => out.push(Event::Click(click)),
                1 if !cids.is_empty() => {
                    let again = cids[rng.below(cids.len() as u64) as usize].clone();
                    out.push(Event::Click(Click {
                        cid: again,
                        vid: format!("v{}", rng.below(25)),
                        ..click
                    }));
                }
                _ => {}
            }
            cids.push(cid);
        }
        for i in 0..15 {
            let cid = match rng.below(8) {
                0 => format!("unknown{day}x{i}"),
                _ => cids[rng.below(cids.len() as u64) as usize].clone(),
            };
            let conversion = Conversion {
                cid: cid.clone(),
                ts: at(rng),
                amount: Decimal::new(1_000 + rng.below(9_000) as i64, 2),
                txid: (rng.below(4) != 0).then(|| format!("t{day}x{i}")),
                kind: None,
            };
            out.push(Event::Conversion(conversion.clone()));
            if rng.below(6) == 0 {
                out.push(Event::Conversion(conversion.clone()));
            }
            if rng.below(2) == 0 {
                out.push(Event::Refund(Refund {
                    cid,
                    ts: at(rng) + (1 + rng.below(3) as i64) * DAY,
                    amount: Decimal::new(500 + rng.below(2_000) as i64, 2),
                    txid: (rng.below(3) != 0).then(|| format!("r{day}x{i}")),
                    kind: if rng.below(3) == 0 {
                        RefundType::Chargeback
                    } else {
                        RefundType::CustomerRequest
                    },
                    reference: conversion.txid.clone().filter(|_| rng.below(2) == 0),
                }));
            }
        }
        out
    }

    /// `events` numbered `first..` by node `n`, per partition.
    fn parts(events: &[Event], first: u64) -> BTreeMap<(Table, NaiveDate), Vec<(u64, &Event)>> {
        let mut parts: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for (seq, e) in (first..).zip(events) {
            parts
                .entry((e.table(), e.date()))
                .or_default()
                .push((seq, e));
        }
        parts
    }

    /// Writes `events` as the flush unit `first..` of node `n`; returns its last sequence.
    async fn flush(store: &Store, events: &[Event], first: u64) -> u64 {
        let last = first + events.len() as u64 - 1;
        for ((table, date), list) in parts(events, first) {
            let path = layout::raw_file(table, date, "n", first, last);
            let batch = model::to_batch(table, list.iter().map(|(_, e)| *e)).unwrap();
            store.write_parquet(&path, &[batch]).await.unwrap();
        }
        last
    }

    /// `events` numbered `first..` as the rows of an ingest buffer.
    fn buffered(events: &[Event], first: u64) -> Arc<dyn Buffer> {
        let rows = parts(events, first)
            .into_iter()
            .map(|((table, date), list)| Unpersisted {
                node: "n".into(),
                table,
                date,
                seqs: list.iter().map(|(s, _)| *s).collect(),
                batch: model::to_batch(table, list.iter().map(|(_, e)| *e)).unwrap(),
            })
            .collect();
        Arc::new(Frozen(rows))
    }

    /// Every derived table but `stats_hourly` as written, in a canonical text form.
    async fn tables(store: &Store) -> BTreeMap<&'static str, String> {
        let mut out = BTreeMap::new();
        for name in ["visitors", "refund_links", "cohort_sources", "cohort_ltv"] {
            let ctx = SessionContext::new();
            let url = crate::table_url(store, &format!("tables/{name}"));
            ctx.register_parquet(name, &url, Default::default())
                .await
                .unwrap();
            let columns = ctx.table(name).await.unwrap().schema().fields().len();
            let order: Vec<String> = (1..=columns).map(|i| i.to_string()).collect();
            let sql = format!("SELECT * FROM {name} ORDER BY {}", order.join(", "));
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap();
            out.insert(name, text.to_string());
        }
        out
    }

    /// The first, full recompute of `serve`; what it read.
    async fn first_pass(store: &Store) -> Seen {
        let (_, kept) = recompute_kept(store, true, &mut |_| {}).await.unwrap();
        kept.finish(store).await
    }

    /// A full recompute of every table, as `netrev recompute` runs it.
    async fn full_recompute(store: &Store) {
        recompute(
            store,
            DateRange::default(),
            &Engine::Local,
            None,
            &mut |_| {},
        )
        .await
        .unwrap();
    }

    /// Day after day of new events, some still in the buffer: each pass by difference leaves
    /// the same tables as a full recompute of the same rows.
    #[tokio::test]
    async fn a_pass_by_difference_equals_a_full_recompute() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let mut rng = Rng(0x5eed_1234_abcd);
        let mut cids = Vec::new();
        let mut seq = 1;
        for day in 0..3 {
            let events = day_of_events(&mut rng, day, &mut cids);
            seq = flush(&store, &events, seq).await + 1;
        }
        let mut seen = first_pass(&store).await;

        let mut buffer: Option<(Arc<dyn Buffer>, Vec<Event>, u64)> = None;
        for day in 3..7 {
            let events = day_of_events(&mut rng, day, &mut cids);
            let (flushed, rest) = events.split_at(events.len() / 2);
            // What the last pass read from the buffer is now in a file.
            if let Some((_, held, first)) = buffer.take() {
                flush(&store, &held, first).await;
            }
            seq = flush(&store, flushed, seq).await + 1;
            let held = buffered(rest, seq);
            store.attach_buffer(Arc::downgrade(&held));
            buffer = Some((held, rest.to_vec(), seq));
            seq += rest.len() as u64;

            let pass = recompute_incremental(&store, &seen, &mut |_| {})
                .await
                .unwrap();
            assert!(pass.touched > 0 && pass.click_ids >= pass.touched);
            let by_difference = tables(&store).await;
            full_recompute(&store).await;
            let full = tables(&store).await;
            for (name, text) in &full {
                assert_eq!(&by_difference[name], text, "{name} after day {day}");
            }
            // Every other day, the next pass starts from what was written to disk (as after
            // a restart), buffered rows included.
            seen = match day % 2 {
                0 => pass.seen,
                _ => {
                    let path = dir.path().join("seen");
                    pass.seen.write(&path, "n").unwrap();
                    assert!(Seen::read(&path, "other").is_err(), "another node's");
                    let read = Seen::read(&path, "n").unwrap().unwrap();
                    assert_eq!(read.files, pass.seen.files);
                    assert_eq!(read.rows.len(), pass.seen.rows.len());
                    read
                }
            };
        }

        // Nothing new: nothing rebuilt.
        let pass = recompute_incremental(&store, &seen, &mut |_| {})
            .await
            .unwrap();
        assert!(pass.report.tables.is_empty());
        assert!(pass.added.is_empty());
    }

    /// A history without refunds (an empty `refund_links`): the pass writes the empty table.
    #[tokio::test]
    async fn a_pass_by_difference_writes_empty_tables_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let mut rng = Rng(99);
        let mut cids = Vec::new();
        let no_refunds = |events: Vec<Event>| -> Vec<Event> {
            events
                .into_iter()
                .filter(|e| e.table() != Table::Refunds)
                .collect()
        };
        let events = no_refunds(day_of_events(&mut rng, 0, &mut cids));
        flush(&store, &events, 1).await;
        let seen = first_pass(&store).await;
        let more = no_refunds(day_of_events(&mut rng, 1, &mut cids));
        flush(&store, &more, 1 + events.len() as u64).await;
        recompute_incremental(&store, &seen, &mut |_| {})
            .await
            .unwrap();
        let by_difference = tables(&store).await;
        // A printed table without rows: its border and header lines only.
        assert!(
            by_difference["refund_links"].lines().count() <= 4,
            "no rows"
        );
        full_recompute(&store).await;
        assert_eq!(by_difference, tables(&store).await);
    }

    /// When a file the last pass read is gone (compacted away), a pass by difference cannot
    /// subtract what it held: it says so, and the caller recomputes in full.
    #[tokio::test]
    async fn a_pass_after_its_files_were_replaced_asks_for_a_full_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let mut rng = Rng(77);
        let mut cids = Vec::new();
        let events = day_of_events(&mut rng, 0, &mut cids);
        flush(&store, &events, 1).await;
        let seen = first_pass(&store).await;
        let gone = seen.files.iter().next().unwrap().clone();
        let local = object_store::local::LocalFileSystem::new();
        std::fs::remove_file(local.path_to_filesystem(&gone).unwrap()).unwrap();
        let err = recompute_incremental(&store, &seen, &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Stale(_)), "{err}");
    }
}
