//! `netrev compact`: few, large raw files in place of many small ones (docs/design.md §12).
//!
//! A data root written by versions that flushed every second holds up to 86,400 files per
//! table and day. Compaction rewrites, in each `events/<table>/date=D/` partition, the files
//! of each ingest node as one file per `rows_per_file` rows, named
//! `<node>-<first>-<last>.c.parquet` after the lowest and highest sequence of the files it
//! replaces. That keeps the contract recovery relies on: a file of a partition holds every row
//! of that partition its node numbered within its range (every flush unit in between wrote
//! this partition whole, or had nothing for it). The one exception is a node's newest flush
//! unit, which a crash may have left written in some partitions only: its files are never
//! merged, so a range never spans records the node's log may still replay. Files whose ranges
//! overlap (which versions before this one could leave after a crash) are left alone.
//!
//! Rows are neither lost nor duplicated, for readers at any moment and across a crash at any
//! step:
//! - **A local data root** swaps the whole partition directory in one step. The new files are
//!   written, with hard links to the files that stay, into `.compact/events/<table>/date=D/`
//!   (outside every reader's glob), and that directory is exchanged with the partition by
//!   `renameat2(RENAME_EXCHANGE)`: a reader lists either the old files or the new ones. A crash
//!   leaves at most a `.compact/` directory, whole old or whole new, which the next run
//!   deletes.
//! - **An object store (S3)** has no such step: the new files are put, then the old ones
//!   deleted. netrev's own readers ignore a file whose node and range lie within a compacted
//!   file's of the same partition ([`Unshadowed`]), so they see the rows once throughout and after a
//!   crash; readers outside netrev may see both for the moment in between, so on S3 run it
//!   while they are paused.
//!
//! `netrev compact` runs with `serve` stopped (it takes the server's lock and the recompute
//! lock); a running `serve` compacts its closed days itself on a local root
//! ([`compact_where`], from `live/src/runner.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use chrono::NaiveDate;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use netrev_storage::model::Table;
use netrev_storage::store::{self, layout};
use netrev_storage::{Store, failpoint};

use crate::{Error, Result};

/// Settings of a compaction.
#[derive(Debug, Clone)]
pub struct CompactConfig {
    /// Rows per file written (the last of a node's partition holds the rest).
    pub rows_per_file: usize,
}

impl Default for CompactConfig {
    fn default() -> Self {
        CompactConfig {
            rows_per_file: 1_000_000,
        }
    }
}

/// What a compaction did to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    pub table: Table,
    pub date: NaiveDate,
    pub files_before: usize,
    pub files_after: usize,
    pub rows: u64,
    /// The files replaced and those replacing them (paths of the data root).
    pub inputs: Vec<Path>,
    pub outputs: Vec<Path>,
}

/// A raw file of an ingest node, as its name says.
#[derive(Debug, Clone)]
struct RawFile {
    meta: ObjectMeta,
    node: String,
    first: u64,
    last: u64,
}

impl RawFile {
    fn name(&self) -> &str {
        self.meta.location.filename().unwrap_or_default()
    }

    /// Whether `other` (of the same partition) holds every row this one does: it is a
    /// compacted file whose range holds this one's.
    fn within(&self, other: &RawFile) -> bool {
        layout::is_compacted(other.name())
            && self.node == other.node
            && other.first <= self.first
            && self.last <= other.last
            && self.name() != other.name()
    }

    /// Whether the two files' ranges share a sequence.
    fn overlaps(&self, other: &RawFile) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Compacts every partition of the raw tables that has something to gain; calls `progress`
/// after each. Returns what it did.
pub async fn compact(
    store: &Store,
    config: &CompactConfig,
    progress: &mut (dyn FnMut(&Compacted) + Send),
) -> Result<Vec<Compacted>> {
    let _server = crate::recompute::take_live_lock(store)?;
    compact_where(store, config, &|_, _| true, progress).await
}

/// Which raw files a compaction may replace: given a file's partition date and path.
pub type Include<'a> = dyn Fn(NaiveDate, &Path) -> bool + Send + Sync + 'a;

/// [`compact`] of only the files `include` accepts (the others of their partitions stay), for
/// a running `serve`, which holds the server's lock and must keep its ingest from writing the
/// partitions meanwhile (they are a day old: nothing writes them but a late import). Takes the
/// recompute lock.
pub async fn compact_where(
    store: &Store,
    config: &CompactConfig,
    include: &Include<'_>,
    progress: &mut (dyn FnMut(&Compacted) + Send),
) -> Result<Vec<Compacted>> {
    let _recompute = crate::recompute::lock_data_root(store).await?;
    if let Some(root) = store.local_root() {
        remove_leftovers(root)?;
    }
    let mut partitions: BTreeMap<(Table, NaiveDate), Vec<RawFile>> = BTreeMap::new();
    let mut others: BTreeMap<(Table, NaiveDate), Vec<ObjectMeta>> = BTreeMap::new();
    // Each node's newest flush unit, which a crash may have left partly written.
    let mut newest: HashMap<String, (u64, u64)> = HashMap::new();
    for table in Table::ALL {
        for meta in store.raw_files(table).await.map_err(Error::Storage)? {
            let Some(date) = layout::partition_date(&meta.location) else {
                continue;
            };
            let parsed = meta
                .location
                .filename()
                .and_then(layout::parse_raw_file)
                .map(|(n, f, l)| (n.to_string(), f, l));
            match parsed {
                Some((node, first, last)) => {
                    let unit = newest.entry(node.clone()).or_insert((first, last));
                    if last > unit.1 {
                        *unit = (first, last);
                    }
                    if !include(date, &meta.location) {
                        continue;
                    }
                    partitions.entry((table, date)).or_default().push(RawFile {
                        meta,
                        node,
                        first,
                        last,
                    });
                }
                // Imported files (`imp_…`) and anything else stay as they are.
                None => others.entry((table, date)).or_default().push(meta),
            }
        }
    }
    let mut done = Vec::new();
    for ((table, date), files) in partitions {
        let plan = plan(files, &newest);
        let groups = groups(store, &plan.merges, config.rows_per_file).await?;
        if groups.is_empty() && plan.shadowed.is_empty() {
            continue;
        }
        let outputs = merge(store, table, date, &groups).await?;
        let inputs: Vec<&RawFile> = groups.iter().flatten().chain(&plan.shadowed).collect();
        let (before, after) = (inputs.len(), outputs.len());
        let rows = outputs.iter().map(|o| o.rows).sum();
        match store.local_root() {
            #[cfg(target_os = "linux")]
            Some(root) => swap_local(root, table, date, &inputs, &outputs)?,
            _ => replace_remote(store, &inputs, &outputs).await?,
        }
        let report = Compacted {
            table,
            date,
            files_before: before,
            files_after: after,
            rows,
            inputs: inputs.iter().map(|f| f.meta.location.clone()).collect(),
            outputs: outputs.iter().map(|o| o.path.clone()).collect(),
        };
        tracing::info!(?table, %date, before, after, rows, "compacted a raw partition");
        progress(&report);
        done.push(report);
    }
    if let Some(root) = store.local_root() {
        remove_leftovers(root)?;
    }
    Ok(done)
}

/// What to do with one partition's files.
struct Plan {
    /// Per node with at least two files to merge, those files in sequence order.
    merges: Vec<Vec<RawFile>>,
    /// Files whose rows another file of the partition holds: an interrupted compaction on an
    /// object store. Deleted without reading.
    shadowed: Vec<RawFile>,
}

fn plan(files: Vec<RawFile>, newest: &HashMap<String, (u64, u64)>) -> Plan {
    let (shadowed, kept): (Vec<RawFile>, Vec<RawFile>) = files
        .iter()
        .cloned()
        .partition(|f| files.iter().any(|g| f.within(g)));
    let mut by_node: BTreeMap<String, Vec<RawFile>> = BTreeMap::new();
    for f in kept {
        if newest.get(&f.node) == Some(&(f.first, f.last)) {
            continue;
        }
        by_node.entry(f.node.clone()).or_default().push(f);
    }
    let merges = by_node
        .into_values()
        .filter(|files| files.len() >= 2)
        .map(|mut files| {
            files.sort_by_key(|f| (f.first, f.last));
            files
        })
        .filter(|files: &Vec<RawFile>| {
            // Overlapping ranges (left by versions that replayed a half-written flush under a
            // wider name) hold different rows: merged, one range would claim the other's rows.
            let overlapping = files.windows(2).any(|w| w[0].overlaps(&w[1]));
            if overlapping {
                tracing::warn!(
                    node = %files[0].node,
                    partition = %files[0].meta.location,
                    "files with overlapping sequence ranges: left as they are"
                );
            }
            !overlapping
        })
        .collect();
    Plan { merges, shadowed }
}

/// A file to write: its name and bytes, and the rows it holds.
struct Output {
    path: Path,
    bytes: Bytes,
    rows: u64,
}

/// The row count of a Parquet file, from its footer alone (two ranged reads).
async fn rows_of(store: &Store, meta: &ObjectMeta) -> Result<usize> {
    use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
    let objects = store.object_store();
    let corrupt = |what: String| {
        Error::Storage(netrev_storage::Error::Corrupt {
            path: meta.location.to_string(),
            what,
        })
    };
    let size = meta.size;
    if size < 12 {
        return Err(corrupt(format!("{size} bytes is too short for Parquet")));
    }
    let read = |range: Range<u64>| {
        let objects = objects.clone();
        async move {
            object_store::ObjectStoreExt::get_range(&objects, &meta.location, range)
                .await
                .map_err(|e| Error::Storage(e.into()))
        }
    };
    let tail = read(size - 8..size).await?;
    let tail = FooterTail::try_from(tail.as_ref()).map_err(|e| corrupt(e.to_string()))?;
    let len = tail.metadata_length() as u64;
    if len + 8 > size {
        return Err(corrupt(format!("a footer of {len} bytes in {size}")));
    }
    let footer = read(size - 8 - len..size - 8).await?;
    let metadata =
        ParquetMetaDataReader::decode_metadata(&footer).map_err(|e| corrupt(e.to_string()))?;
    Ok(usize::try_from(metadata.file_metadata().num_rows()).unwrap_or(0))
}

/// Splits each node's run of files into groups of about `rows_per_file` rows, in sequence
/// order: each group of two or more files becomes one file. A file already that large stays
/// alone, so a second run finds nothing to do.
async fn groups(
    store: &Store,
    merges: &[Vec<RawFile>],
    rows_per_file: usize,
) -> Result<Vec<Vec<RawFile>>> {
    let mut out = Vec::new();
    for files in merges {
        let mut group: Vec<RawFile> = Vec::new();
        let mut rows = 0;
        for f in files {
            rows += rows_of(store, &f.meta).await?;
            group.push(f.clone());
            if rows >= rows_per_file {
                out.push(std::mem::take(&mut group));
                rows = 0;
            }
        }
        out.push(group);
    }
    out.retain(|g| g.len() >= 2);
    Ok(out)
}

/// One file of each group's rows, named after the group's first and last sequence.
async fn merge(
    store: &Store,
    table: Table,
    date: NaiveDate,
    groups: &[Vec<RawFile>],
) -> Result<Vec<Output>> {
    let mut outputs = Vec::new();
    for files in groups {
        let mut batches: Vec<RecordBatch> = Vec::new();
        for f in files {
            batches.extend(
                store
                    .read_parquet(&f.meta.location)
                    .await
                    .map_err(Error::Storage)?,
            );
        }
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let (first, last) = (files[0].first, files[files.len() - 1].last);
        let path = layout::compacted_file(table, date, &files[0].node, first, last);
        let bytes = tokio::task::spawn_blocking(move || store::encode_parquet(&batches))
            .await
            .expect("encoding task panicked")
            .map_err(Error::Storage)?;
        outputs.push(Output { path, bytes, rows });
    }
    Ok(outputs)
}

/// The directory `.compact/` of a local data root: where partitions are assembled.
fn staging_root(root: &std::path::Path) -> std::path::PathBuf {
    root.join(".compact")
}

/// Deletes what an interrupted run left in `.compact/`: a partition assembled and never swapped
/// in, or the old files of one swapped in. Either way the partition itself is whole.
fn remove_leftovers(root: &std::path::Path) -> Result<()> {
    let dir = staging_root(root);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", &dir, e)),
    }
}

fn io_error(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Storage(netrev_storage::Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    })
}

/// Assembles the new partition beside the data and exchanges the two directories in one step.
#[cfg(target_os = "linux")]
fn swap_local(
    root: &std::path::Path,
    table: Table,
    date: NaiveDate,
    inputs: &[&RawFile],
    outputs: &[Output],
) -> Result<()> {
    let rel = layout::raw_partition(table, date);
    let live = root.join(rel.as_ref());
    let staging = staging_root(root).join(rel.as_ref());
    store::create_dir_durable(&staging).map_err(Error::Storage)?;
    for o in outputs {
        let name = o.path.filename().expect("a file name");
        store::write_file_durably(&staging.join(name), &o.bytes).map_err(Error::Storage)?;
    }
    // Everything else in the partition stays: other nodes' files, imports, the newest unit.
    let replaced: HashSet<&str> = inputs.iter().map(|f| f.name()).collect();
    let before = names_in(&live)?;
    for name in before.iter().filter(|n| !replaced.contains(n.as_str())) {
        std::fs::hard_link(live.join(name), staging.join(name))
            .map_err(|e| io_error("link", &live.join(name), e))?;
    }
    store::sync_dir(&staging).map_err(Error::Storage)?;
    failpoint::check("compact-before-swap").map_err(|e| io_error("swap", &live, e))?;
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        &staging,
        rustix::fs::CWD,
        &live,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(|e| io_error("exchange", &live, e.into()))?;
    store::sync_dir(live.parent().expect("a table directory")).map_err(Error::Storage)?;
    store::sync_dir(staging.parent().expect("a staging table directory"))
        .map_err(Error::Storage)?;
    failpoint::check("compact-after-swap").map_err(|e| io_error("swap", &live, e))?;
    // A file that arrived in the partition while it was assembled (nothing should write it
    // meanwhile, but if something did) is now among the old files: move it back.
    let expected: HashSet<&String> = before.iter().collect();
    for name in names_in(&staging)? {
        if !expected.contains(&name) && !name.starts_with('.') {
            std::fs::rename(staging.join(&name), live.join(&name))
                .map_err(|e| io_error("rename", &live.join(&name), e))?;
            store::sync_dir(&live).map_err(Error::Storage)?;
        }
    }
    std::fs::remove_dir_all(&staging).map_err(|e| io_error("remove", &staging, e))?;
    Ok(())
}

/// The names of the files in `dir`.
fn names_in(dir: &std::path::Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error("list", dir, e))? {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        if entry
            .file_type()
            .map_err(|e| io_error("stat", dir, e))?
            .is_file()
        {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

/// Puts the new files, then deletes the old ones ([`Unshadowed`] hides them from netrev's
/// readers in between).
async fn replace_remote(store: &Store, inputs: &[&RawFile], outputs: &[Output]) -> Result<()> {
    for o in outputs {
        // Already there from an interrupted run: the same range, so the same rows.
        store
            .put_if_absent(&o.path, o.bytes.clone())
            .await
            .map_err(Error::Storage)?;
    }
    failpoint::check("compact-before-delete")
        .map_err(|e| io_error("delete", std::path::Path::new("events"), e))?;
    let written: HashSet<&Path> = outputs.iter().map(|o| &o.path).collect();
    for f in inputs {
        if !written.contains(&f.meta.location) {
            store
                .delete(&f.meta.location)
                .await
                .map_err(Error::Storage)?;
        }
    }
    Ok(())
}

/// Whether the raw file at `location` is shadowed by one of the compacted files `compacted`
/// (same directory, as (node, first, last, name)): its node and range lie within one's.
fn is_shadowed(location: &Path, compacted: &[(String, u64, u64, String)]) -> bool {
    let Some(name) = location.filename() else {
        return false;
    };
    let Some((node, first, last)) = layout::parse_raw_file(name) else {
        return false;
    };
    compacted
        .iter()
        .any(|(n, f, l, c)| n == node && *f <= first && last <= *l && c != name)
}

/// Leaves out of listings every raw file whose rows another file of its partition holds (see
/// the module's documentation): what an interrupted compaction leaves on an object store.
#[derive(Debug)]
pub struct Unshadowed(pub Arc<dyn ObjectStore>);

impl fmt::Display for Unshadowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unshadowed({})", self.0)
    }
}

/// Drops the shadowed raw files of a listing.
fn unshadow(metas: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
    let mut by_dir: HashMap<String, Vec<(String, u64, u64, String)>> = HashMap::new();
    for m in &metas {
        let Some(name) = m.location.filename() else {
            continue;
        };
        if let (true, Some((node, first, last))) =
            (layout::is_compacted(name), layout::parse_raw_file(name))
        {
            by_dir.entry(parent(&m.location)).or_default().push((
                node.to_string(),
                first,
                last,
                name.to_string(),
            ));
        }
    }
    metas
        .into_iter()
        .filter(|m| {
            let others = by_dir
                .get(&parent(&m.location))
                .map_or(&[][..], Vec::as_slice);
            !is_shadowed(&m.location, others)
        })
        .collect()
}

fn parent(p: &Path) -> String {
    let s = p.as_ref();
    s.rsplit_once('/').map_or("", |(dir, _)| dir).to_string()
}

#[async_trait::async_trait]
impl ObjectStore for Unshadowed {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.0.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.0.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let listing = self.0.list(prefix);
        futures::stream::once(async move {
            let all: Vec<object_store::Result<ObjectMeta>> = listing.collect().await;
            let (ok, errors): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| r.is_ok());
            let metas = unshadow(ok.into_iter().map(|r| r.expect("ok")).collect());
            futures::stream::iter(metas.into_iter().map(Ok).chain(errors))
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut result = self.0.list_with_delimiter(prefix).await?;
        result.objects = unshadow(result.objects);
        Ok(result)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrev_storage::model;
    use netrev_storage::{Conversion, Event, Refund, RefundType};
    use rust_decimal::Decimal;

    const DAY1: i64 = 1_795_000_000_000_000;
    const DAY2: i64 = DAY1 + 86_400_000_000;

    fn conversion(node: &str, seq: u64, ts: i64) -> Event {
        Event::Conversion(Conversion {
            cid: format!("{node}{seq}"),
            ts,
            amount: Decimal::new(seq as i64, 2),
            txid: Some(format!("t{seq}")),
            kind: None,
        })
    }

    fn refund(node: &str, seq: u64, ts: i64) -> Event {
        Event::Refund(Refund {
            cid: format!("{node}{seq}"),
            ts,
            amount: Decimal::ONE,
            txid: None,
            kind: RefundType::Chargeback,
            reference: None,
        })
    }

    /// Writes one flush unit `first..=last` of `node`: a file per partition of its events.
    async fn unit(store: &Store, node: &str, first: u64, last: u64, events: &[Event]) {
        let mut parts: BTreeMap<(Table, NaiveDate), Vec<&Event>> = BTreeMap::new();
        for e in events {
            parts.entry((e.table(), e.date())).or_default().push(e);
        }
        for ((table, date), list) in parts {
            let path = layout::raw_file(table, date, node, first, last);
            let batch = model::to_batch(table, list).unwrap();
            store.write_parquet(&path, &[batch]).await.unwrap();
        }
    }

    /// A root written flush by flush: node a's units 1..=20 (a conversion each on day 1, a
    /// refund in every fourth, a day-2 conversion in the last), node b's units 1..=3, and an
    /// import.
    async fn history(store: &Store) {
        for s in 1..=20 {
            let mut events = vec![conversion("a", s, DAY1)];
            if s % 4 == 0 {
                events.push(refund("a", s, DAY1));
            }
            if s == 20 {
                events.push(conversion("a", 100 + s, DAY2));
            }
            unit(store, "a", s, s, &events).await;
        }
        for s in 1..=3 {
            unit(store, "b", s, s, &[conversion("b", s, DAY1)]).await;
        }
        let imported = conversion("i", 1, DAY1);
        let path =
            layout::raw_partition(Table::Conversions, imported.date()).join("imp_0001.parquet");
        let batch = model::to_batch(Table::Conversions, [&imported]).unwrap();
        store.write_parquet(&path, &[batch]).await.unwrap();
    }

    /// Every row of the raw tables as netrev's readers see them (sorted).
    async fn rows(store: &Store) -> Vec<String> {
        let ctx = crate::session(store).await.unwrap();
        let mut out = Vec::new();
        for table in Table::ALL {
            let sql = format!("select * from {}", table.name());
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap();
            out.extend(
                text.to_string()
                    .lines()
                    .filter(|l| l.starts_with("| ") && !l.contains(" cid "))
                    .map(|l| format!("{}{l}", table.name())),
            );
        }
        out.sort();
        out
    }

    fn names(store: &Store, table: Table, ts: i64) -> Vec<String> {
        let date = conversion("x", 0, ts).date();
        let dir = store
            .local_root()
            .unwrap()
            .join(layout::raw_partition(table, date).as_ref());
        let mut names = names_in(&dir).unwrap();
        names.sort();
        names
    }

    #[tokio::test]
    async fn compaction_keeps_every_row_once_and_the_newest_unit_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        history(&store).await;
        let before = rows(&store).await;
        assert_eq!(before.len(), 20 + 5 + 1 + 3 + 1);
        let config = CompactConfig { rows_per_file: 8 };
        let done = compact(&store, &config, &mut |_| {}).await.unwrap();
        assert_eq!(rows(&store).await, before);
        // Node a's conversions 1..=19 in files of 8 rows; its newest unit (20) alone; b's
        // 1..=2 in one and its newest unit (3) alone; the import untouched.
        let conversions = names(&store, Table::Conversions, DAY1);
        let date = conversion("x", 0, DAY1).date();
        let name = |node: &str, f: u64, l: u64| {
            let path = if f == l {
                layout::raw_file(Table::Conversions, date, node, f, l)
            } else {
                layout::compacted_file(Table::Conversions, date, node, f, l)
            };
            path.filename().unwrap().to_string()
        };
        let mut expected = vec![
            name("a", 1, 8),
            name("a", 9, 16),
            name("a", 17, 19),
            name("a", 20, 20),
            name("b", 1, 2),
            name("b", 3, 3),
            "imp_0001.parquet".to_string(),
        ];
        expected.sort();
        assert_eq!(conversions, expected);
        // Refunds 4, 8, 12, 16 merged; 20 is the newest unit. Day 2 has one file.
        assert_eq!(names(&store, Table::Refunds, DAY1).len(), 2);
        assert_eq!(names(&store, Table::Conversions, DAY2).len(), 1);
        assert_eq!(done.len(), 2);
        assert!(!dir.path().join(".compact").exists());
        // A second run has nothing left to do.
        assert!(
            compact(&store, &config, &mut |_| {})
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(rows(&store).await, before);
    }

    /// A reader listing and reading a partition's files while it is compacted sees every row
    /// once each time it succeeds (it may find a listed file gone, and then reads again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_sees_the_old_files_or_the_new_ones_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        for s in 1..=300 {
            unit(&store, "a", s, s, &[conversion("a", s, DAY1)]).await;
        }
        unit(&store, "a", 301, 301, &[conversion("a", 301, DAY2)]).await;
        let partition = dir.path().join(
            layout::raw_partition(Table::Conversions, conversion("a", 0, DAY1).date()).as_ref(),
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut reads, mut retries) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                    let count = || -> std::io::Result<usize> {
                        let mut rows = 0;
                        for entry in std::fs::read_dir(&partition)? {
                            let path = entry?.path();
                            if path.extension().is_some_and(|e| e == "parquet") {
                                let file = std::fs::File::open(&path)?;
                                let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                                    .map_err(std::io::Error::other)?;
                                rows += reader.metadata().file_metadata().num_rows() as usize;
                            }
                        }
                        Ok(rows)
                    };
                    match count() {
                        Ok(rows) => {
                            assert_eq!(rows, 300, "a reader saw {rows} rows");
                            reads += 1;
                        }
                        Err(_) => retries += 1,
                    }
                }
                (reads, retries)
            })
        };
        let config = CompactConfig::default();
        compact(&store, &config, &mut |_| {}).await.unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (reads, _retries) = reader.join().unwrap();
        assert!(reads > 0);
        assert_eq!(names(&store, Table::Conversions, DAY1).len(), 1);
    }

    /// On an object store the new files are put before the old ones are deleted: a run
    /// stopped in between leaves both, which netrev's readers see once, and the next run
    /// deletes the old ones.
    #[tokio::test]
    async fn an_interrupted_compaction_on_an_object_store_shows_each_row_once() {
        let memory = Arc::new(object_store::memory::InMemory::new());
        let store = Store::from_object_store(memory.clone(), "memory://compact");
        history(&store).await;
        let before = rows(&store).await;
        // What a run stopped before its deletes leaves: node a's conversions 1..=19 also in
        // one file.
        let batch = model::to_batch(
            Table::Conversions,
            (1..=19)
                .map(|s| conversion("a", s, DAY1))
                .collect::<Vec<_>>()
                .iter(),
        )
        .unwrap();
        let merged = layout::compacted_file(
            Table::Conversions,
            conversion("a", 0, DAY1).date(),
            "a",
            1,
            19,
        );
        store.write_parquet(&merged, &[batch]).await.unwrap();
        assert_eq!(rows(&store).await, before);
        let done = compact(&store, &CompactConfig::default(), &mut |_| {})
            .await
            .unwrap();
        assert_eq!(rows(&store).await, before);
        let left = store
            .list(&layout::raw_partition(
                Table::Conversions,
                conversion("a", 0, DAY1).date(),
            ))
            .await
            .unwrap();
        // a 1..=19, a 20, b 1..=2, b 3, the import.
        assert_eq!(left.len(), 5, "{left:?}");
        assert!(!done.is_empty());
        // Plain listings (a reader outside netrev) now see each row once too.
        let direct: usize = memory
            .list(Some(&Path::from("events/conversions")))
            .collect::<Vec<_>>()
            .await
            .len();
        assert_eq!(direct, 5 + 1);
    }
}
