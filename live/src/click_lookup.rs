//! Finding an old click in the raw Parquet files without scanning the history.
//!
//! A netrev click ID carries its click time, so only the files of that day's `clicks`
//! partition are candidates. Their footers and page indexes are read once per day (the `cid`
//! ranges are kept for the most recently used days, up to [`PAGES_CACHED`] pages); the min/max statistics of `cid` per row
//! group and then per page leave only the pages whose range holds the ID, usually one, since
//! files are written in arrival order and IDs sort by time. So a lookup decodes about one page
//! (at most 4,096 rows, `PAGE_ROWS`) per file of the day, and only its `cid` column, however large the day or the history.
//! Only the files of the snapshot the live state was built from are read: a click that
//! arrived later is in the live index instead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;

use arrow::array::StringArray;
use chrono::NaiveDate;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter, RowSelection,
};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::statistics::Statistics;

use crate::state::{ClickColumns, ClickLookup, ClickRow};
use crate::{Error, Result};
use netrev_storage::model::Table;
use netrev_storage::store::layout;

/// Most pages whose `cid` ranges are kept in memory (about 60 bytes each), over all cached
/// days; the least recently used days are dropped beyond it.
pub const PAGES_CACHED: usize = 1_000_000;

const COLUMNS: [&str; 9] = [
    "cid", "vid", "ts", "source", "campaign", "link", "country", "device", "cost",
];

/// A `cid` range from statistics; `None` (no statistics) is a candidate for any ID.
type CidRange = Option<(Vec<u8>, Vec<u8>)>;

fn holds(range: &CidRange, cid: &[u8]) -> bool {
    range
        .as_ref()
        .is_none_or(|(min, max)| min.as_slice() <= cid && cid <= max.as_slice())
}

/// A row group of a file: its `cid` range, and each page's rows and range when the file has
/// a page index.
struct Group {
    index: usize,
    rows: usize,
    range: CidRange,
    pages: Vec<(Range<usize>, CidRange)>,
}

/// One file of a day: the `cid` ranges of its row groups and pages (its footer is read again
/// when a lookup needs the file: a footer and offset index, without
/// the column index, are small).
struct FileIndex {
    path: Path,
    groups: Vec<Group>,
}

impl FileIndex {
    fn pages(&self) -> usize {
        self.groups.iter().map(|g| g.pages.len().max(1)).sum()
    }
}

/// Where the click files are read from.
enum Files {
    /// Paths of the local file system (a local data root's snapshot).
    Local(LocalFileSystem),
    /// Paths of a remote store (S3), fetched whole: raw files are micro-batch sized.
    Remote(Arc<dyn ObjectStore>),
}

/// A click file opened for reading: a local file, or the bytes of a remote one.
enum Source {
    File(std::fs::File),
    Bytes(Bytes),
}

impl Length for Source {
    fn len(&self) -> u64 {
        match self {
            Source::File(f) => f.len(),
            Source::Bytes(b) => Length::len(b),
        }
    }
}

impl ChunkReader for Source {
    type T = Box<dyn std::io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            Source::File(f) => Box::new(f.get_read(start)?),
            Source::Bytes(b) => Box::new(b.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            Source::File(f) => f.get_bytes(start, length),
            Source::Bytes(b) => b.get_bytes(start, length),
        }
    }
}

/// The runtime remote reads are driven on: lookups run on the live stats' own thread, which
/// is not a runtime's, and block there until the bytes arrive. Lives as long as the process.
fn remote_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("netrev-click-reads")
            .enable_all()
            .build()
            .expect("click lookup runtime")
    })
}

/// Looks clicks up in the `clicks` files of a snapshot.
pub struct ParquetClicks {
    files: Files,
    /// The snapshot's click files by partition day.
    by_day: HashMap<NaiveDate, Vec<Path>>,
    days: HashMap<NaiveDate, Vec<FileIndex>>,
    /// Cached days, least recently used first.
    recent: VecDeque<NaiveDate>,
    pages_cached: usize,
    /// Footers read, row groups read and rows decoded, for tests and the benchmark.
    pub footers_read: u64,
    pub groups_read: u64,
    pub rows_read: u64,
    /// Time spent in lookups.
    pub busy: std::time::Duration,
}

impl std::fmt::Debug for ParquetClicks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetClicks")
            .field("days", &self.by_day.len())
            .finish()
    }
}

impl ParquetClicks {
    /// [`ParquetClicks::new`] over `files` as a snapshot of `store` names them: on the local
    /// file system for a local root, in the remote store otherwise.
    pub fn over(store: &netrev_storage::Store, files: &HashSet<Path>) -> Self {
        let remote = store.local_root().is_none().then(|| store.object_store());
        ParquetClicks::new(files, remote)
    }

    /// A lookup over the `clicks` files among `files`, each under a `clicks/date=YYYY-MM-DD/`
    /// partition: paths of the local file system, or of `remote` when given.
    pub fn new(files: &HashSet<Path>, remote: Option<Arc<dyn ObjectStore>>) -> Self {
        let by_day = files_by_day(files);
        ParquetClicks {
            files: match remote {
                Some(store) => Files::Remote(store),
                None => Files::Local(LocalFileSystem::new()),
            },
            by_day,
            days: HashMap::new(),
            recent: VecDeque::new(),
            pages_cached: 0,
            footers_read: 0,
            groups_read: 0,
            rows_read: 0,
            busy: std::time::Duration::ZERO,
        }
    }

    fn open(&self, path: &Path) -> Result<Source> {
        let failed = |e: &dyn std::fmt::Display| Error::DataRoot(format!("{path}: {e}"));
        match &self.files {
            Files::Local(fs) => {
                let local = fs.path_to_filesystem(path).map_err(|e| failed(&e))?;
                Ok(Source::File(
                    std::fs::File::open(&local).map_err(|e| failed(&e))?,
                ))
            }
            Files::Remote(store) => {
                let bytes = remote_runtime()
                    .block_on(async { store.get(path).await?.bytes().await })
                    .map_err(|e| failed(&e))?;
                Ok(Source::Bytes(bytes))
            }
        }
    }

    fn day(&mut self, day: NaiveDate) -> Result<&Vec<FileIndex>> {
        if !self.days.contains_key(&day) {
            let mut files = Vec::new();
            for path in self.by_day.get(&day).cloned().unwrap_or_default() {
                let meta = ArrowReaderMetadata::load(
                    &self.open(&path)?,
                    ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
                )
                .map_err(|e| Error::DataRoot(format!("reading {path}: {e}")))?;
                self.footers_read += 1;
                let groups = index_groups(meta.metadata());
                files.push(FileIndex { path, groups });
            }
            self.pages_cached += files.iter().map(FileIndex::pages).sum::<usize>();
            self.days.insert(day, files);
            while self.pages_cached > PAGES_CACHED && self.recent.len() > 1 {
                let Some(old) = self.recent.pop_front() else {
                    break;
                };
                if let Some(files) = self.days.remove(&old) {
                    self.pages_cached -= files.iter().map(FileIndex::pages).sum::<usize>();
                }
            }
        } else {
            self.recent.retain(|d| *d != day);
        }
        self.recent.push_back(day);
        Ok(&self.days[&day])
    }

    fn find_click(&mut self, cid: &str, day: NaiveDate) -> Result<Option<ClickRow>> {
        let files = self.day(day)?;
        let mut reads = Vec::new();
        for f in files {
            let mut groups = Vec::new();
            let mut ranges = Vec::new();
            let mut offset = 0;
            for g in f.groups.iter().filter(|g| holds(&g.range, cid.as_bytes())) {
                groups.push(g.index);
                if g.pages.is_empty() {
                    ranges.push(offset..offset + g.rows);
                } else {
                    ranges.extend(
                        g.pages
                            .iter()
                            .filter(|(_, range)| holds(range, cid.as_bytes()))
                            .map(|(rows, _)| offset + rows.start..offset + rows.end),
                    );
                }
                offset += g.rows;
            }
            if !ranges.is_empty() {
                let selected: usize = ranges.iter().map(|r| r.len()).sum();
                let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), offset);
                reads.push((f.path.clone(), groups, selection, selected));
            }
        }
        let mut best: Option<ClickRow> = None;
        for (path, groups, selection, selected) in reads {
            self.groups_read += groups.len() as u64;
            self.rows_read += selected as u64;
            let meta = ArrowReaderMetadata::load(
                &self.open(&path)?,
                // The offset index lets the reader jump to the selected pages.
                ArrowReaderOptions::new()
                    .with_column_index_policy(PageIndexPolicy::Skip)
                    .with_offset_index_policy(PageIndexPolicy::Optional),
            )
            .map_err(|e| Error::DataRoot(format!("reading {path}: {e}")))?;
            let schema = meta.metadata().file_metadata().schema_descr_ptr();
            let indices: Vec<usize> = schema
                .columns()
                .iter()
                .enumerate()
                .filter(|(_, c)| COLUMNS.contains(&c.name()))
                .map(|(i, _)| i)
                .collect();
            let mask = ProjectionMask::leaves(&schema, indices);
            // Only the `cid` column of the selected rows is decoded for every row; the others
            // only for the rows that match.
            let cid_leaf = schema.columns().iter().position(|c| c.name() == "cid");
            let mut builder =
                ParquetRecordBatchReaderBuilder::new_with_metadata(self.open(&path)?, meta)
                    .with_row_groups(groups)
                    .with_row_selection(selection)
                    .with_projection(mask);
            if let Some(leaf) = cid_leaf {
                let wanted = StringArray::new_scalar(cid);
                let predicate = ArrowPredicateFn::new(
                    ProjectionMask::leaves(&schema, [leaf]),
                    move |batch: arrow::array::RecordBatch| {
                        let cids = arrow::compute::cast(
                            batch.column(0),
                            &arrow::datatypes::DataType::Utf8,
                        )?;
                        arrow::compute::kernels::cmp::eq(&cids, &wanted)
                    },
                );
                builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
            }
            let reader = builder
                .build()
                .map_err(|e| Error::DataRoot(format!("reading {path}: {e}")))?;
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            for batch in batches {
                let columns = ClickColumns::new(&batch)?;
                for r in (0..columns.len()).filter(|&r| columns.cid(r) == cid) {
                    let row = columns.row(r);
                    if best.as_ref().is_none_or(|b| row.order() < b.order()) {
                        best = Some(row);
                    }
                }
            }
        }
        Ok(best)
    }
}

/// The `cid` ranges of every row group and page of a file.
fn index_groups(md: &ParquetMetaData) -> Vec<Group> {
    let Some(col) = md
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == "cid")
    else {
        return (0..md.num_row_groups())
            .map(|g| Group {
                index: g,
                rows: row_count(md, g),
                range: None,
                pages: Vec::new(),
            })
            .collect();
    };
    (0..md.num_row_groups())
        .map(|g| {
            let rows = row_count(md, g);
            let range = md
                .row_group(g)
                .column(col)
                .statistics()
                .and_then(|s| match s {
                    Statistics::ByteArray(v) => {
                        Some((v.min_opt()?.data().to_vec(), v.max_opt()?.data().to_vec()))
                    }
                    _ => None,
                });
            let pages = match (md.column_index(), md.offset_index()) {
                (Some(ci), Some(oi)) => match (&ci[g][col], &oi[g][col]) {
                    (ColumnIndexMetaData::BYTE_ARRAY(index), offsets) => {
                        let locations = offsets.page_locations();
                        (0..locations.len())
                            // A page of nulls holds no click ID.
                            .filter(|&p| !index.is_null_page(p))
                            .map(|p| {
                                let start =
                                    usize::try_from(locations[p].first_row_index).unwrap_or(0);
                                let end = locations.get(p + 1).map_or(rows, |next| {
                                    usize::try_from(next.first_row_index).unwrap_or(rows)
                                });
                                let range = match (index.min_value(p), index.max_value(p)) {
                                    (Some(min), Some(max)) => Some((min.to_vec(), max.to_vec())),
                                    _ => None,
                                };
                                (start..end, range)
                            })
                            .collect()
                    }
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            Group {
                index: g,
                rows,
                range,
                pages,
            }
        })
        .collect()
}

fn row_count(md: &ParquetMetaData, g: usize) -> usize {
    usize::try_from(md.row_group(g).num_rows()).unwrap_or(0)
}

impl ClickLookup for ParquetClicks {
    fn find(&mut self, cid: &str, day: NaiveDate) -> Result<Option<ClickRow>> {
        let started = std::time::Instant::now();
        let found = self.find_click(cid, day);
        self.busy += started.elapsed();
        found
    }

    /// The click files of a later snapshot: a day whose files changed (new ones, or compacted
    /// into one) is read again; the others stay cached.
    fn refresh(&mut self, files: &HashSet<Path>) {
        let mut by_day = files_by_day(files);
        for paths in by_day.values_mut() {
            paths.sort_unstable();
        }
        for paths in self.by_day.values_mut() {
            paths.sort_unstable();
        }
        // Every cached day, also one cached while it had no files.
        let cached: Vec<NaiveDate> = self.days.keys().copied().collect();
        for day in cached {
            if by_day.get(&day) != self.by_day.get(&day) {
                self.days.remove(&day);
                self.recent.retain(|d| *d != day);
            }
        }
        self.pages_cached = self.days.values().flatten().map(FileIndex::pages).sum();
        self.by_day = by_day;
    }
}

/// The click files among `files` by partition day.
fn files_by_day(files: &HashSet<Path>) -> HashMap<NaiveDate, Vec<Path>> {
    let mut by_day: HashMap<NaiveDate, Vec<Path>> = HashMap::new();
    for f in files {
        if layout::is_raw_file(f, Table::Clicks)
            && let Some(day) = layout::partition_date(f)
        {
            by_day.entry(day).or_default().push(f.clone());
        }
    }
    by_day
}
