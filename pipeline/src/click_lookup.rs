//! Finding an old click in the raw Parquet files without scanning the history.
//!
//! A netrev click ID carries its click time, so only the files of that day's `clicks`
//! partition are candidates. Their footers are read once per day (and kept for the
//! [`DAYS_CACHED`] most recently used days); each row group's min/max statistics of `cid` then
//! leave only the row groups whose range holds the ID, usually one, since files are written
//! in arrival order and IDs sort by time. Only the files of the snapshot the live state was
//! built from are read: a click that arrived later is in the live index instead.

use std::collections::{HashMap, HashSet, VecDeque};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Decimal128Type, TimestampMicrosecondType};
use chrono::NaiveDate;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::statistics::Statistics;
use rust_decimal::Decimal;

use crate::live::{ClickLookup, ClickRow, HOUR_MICROS, WindowKey};
use crate::{Error, Result};

/// Days whose file footers are kept in memory.
pub const DAYS_CACHED: usize = 32;

const COLUMNS: [&str; 8] = [
    "cid", "ts", "source", "campaign", "link", "country", "device", "cost",
];

/// One file of a day: its footer and each row group's `cid` range.
struct FileIndex {
    path: Path,
    meta: ArrowReaderMetadata,
    /// (row group, min cid, max cid); a group without statistics is always a candidate.
    groups: Vec<(usize, Option<(Vec<u8>, Vec<u8>)>)>,
}

/// Looks clicks up in the `clicks` files of a snapshot.
pub struct ParquetClicks {
    store: LocalFileSystem,
    /// The snapshot's click files by partition day.
    by_day: HashMap<NaiveDate, Vec<Path>>,
    days: HashMap<NaiveDate, Vec<FileIndex>>,
    recent: VecDeque<NaiveDate>,
    /// Footers read and row groups read, for the benchmark.
    pub footers_read: u64,
    pub groups_read: u64,
}

impl std::fmt::Debug for ParquetClicks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetClicks")
            .field("days", &self.by_day.len())
            .finish()
    }
}

impl ParquetClicks {
    /// A lookup over the `clicks` files among `files` (paths of `store`, each under a
    /// `clicks/date=YYYY-MM-DD/` partition).
    pub fn new(files: &HashSet<Path>) -> Self {
        let mut by_day: HashMap<NaiveDate, Vec<Path>> = HashMap::new();
        for f in files {
            let parts: Vec<_> = f.parts().collect();
            let in_clicks = parts
                .windows(2)
                .any(|w| w[0].as_ref() == "events" && w[1].as_ref() == "clicks");
            if in_clicks
                && f.as_ref().ends_with(".parquet")
                && let Some(day) = netrev_storage::store::layout::partition_date(f)
            {
                by_day.entry(day).or_default().push(f.clone());
            }
        }
        ParquetClicks {
            store: LocalFileSystem::new(),
            by_day,
            days: HashMap::new(),
            recent: VecDeque::new(),
            footers_read: 0,
            groups_read: 0,
        }
    }

    fn open(&self, path: &Path) -> Result<std::fs::File> {
        let local = self
            .store
            .path_to_filesystem(path)
            .map_err(|e| Error::DataRoot(format!("{path}: {e}")))?;
        std::fs::File::open(&local).map_err(|e| Error::DataRoot(format!("{path}: {e}")))
    }

    fn day(&mut self, day: NaiveDate) -> Result<&Vec<FileIndex>> {
        if !self.days.contains_key(&day) {
            let mut files = Vec::new();
            for path in self.by_day.get(&day).cloned().unwrap_or_default() {
                let meta = ArrowReaderMetadata::load(&self.open(&path)?, ArrowReaderOptions::new())
                    .map_err(|e| Error::DataRoot(format!("reading {path}: {e}")))?;
                self.footers_read += 1;
                let md = meta.metadata();
                let cid_col = md
                    .file_metadata()
                    .schema_descr()
                    .columns()
                    .iter()
                    .position(|c| c.name() == "cid");
                let groups = (0..md.num_row_groups())
                    .map(|g| {
                        let range = cid_col
                            .and_then(|c| md.row_group(g).column(c).statistics())
                            .and_then(|s| match s {
                                Statistics::ByteArray(v) => Some((
                                    v.min_opt()?.data().to_vec(),
                                    v.max_opt()?.data().to_vec(),
                                )),
                                _ => None,
                            });
                        (g, range)
                    })
                    .collect();
                files.push(FileIndex { path, meta, groups });
            }
            self.days.insert(day, files);
            self.recent.push_back(day);
            if self.recent.len() > DAYS_CACHED
                && let Some(old) = self.recent.pop_front()
            {
                self.days.remove(&old);
            }
        }
        Ok(&self.days[&day])
    }

    fn find_click(&mut self, cid: &str, day: NaiveDate) -> Result<Option<ClickRow>> {
        let files = self.day(day)?;
        let mut reads = Vec::new();
        for f in files {
            let groups: Vec<usize> = f
                .groups
                .iter()
                .filter(|(_, range)| {
                    range.as_ref().is_none_or(|(min, max)| {
                        min.as_slice() <= cid.as_bytes() && cid.as_bytes() <= max.as_slice()
                    })
                })
                .map(|(g, _)| *g)
                .collect();
            if !groups.is_empty() {
                reads.push((f.path.clone(), f.meta.clone(), groups));
            }
        }
        let mut best: Option<ClickRow> = None;
        for (path, meta, groups) in reads {
            self.groups_read += groups.len() as u64;
            let schema = meta.metadata().file_metadata().schema_descr_ptr();
            let indices: Vec<usize> = schema
                .columns()
                .iter()
                .enumerate()
                .filter(|(_, c)| COLUMNS.contains(&c.name()))
                .map(|(i, _)| i)
                .collect();
            let mask = ProjectionMask::leaves(&schema, indices);
            let reader =
                ParquetRecordBatchReaderBuilder::new_with_metadata(self.open(&path)?, meta)
                    .with_row_groups(groups)
                    .with_projection(mask)
                    .build()
                    .map_err(|e| Error::DataRoot(format!("reading {path}: {e}")))?;
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            for batch in batches {
                let col = |name: &str| {
                    batch
                        .column_by_name(name)
                        .ok_or_else(|| Error::DataRoot(format!("{path} has no column {name}")))
                };
                let text = |name: &str| -> Result<arrow::array::ArrayRef> {
                    Ok(arrow::compute::cast(
                        col(name)?,
                        &arrow::datatypes::DataType::Utf8,
                    )?)
                };
                let cids = text("cid")?;
                let cids = cids.as_string::<i32>();
                let ts = col("ts")?
                    .as_primitive::<TimestampMicrosecondType>()
                    .clone();
                let cost = col("cost")?.as_primitive::<Decimal128Type>().clone();
                let dims = ["source", "campaign", "link", "country", "device"]
                    .into_iter()
                    .map(text)
                    .collect::<Result<Vec<_>>>()?;
                for r in (0..batch.num_rows()).filter(|&r| cids.value(r) == cid) {
                    let dim = |i: usize| {
                        let a = dims[i].as_string::<i32>();
                        a.is_valid(r).then(|| a.value(r).to_string())
                    };
                    let t = ts.value(r);
                    let row = ClickRow {
                        window: WindowKey {
                            hour: t - t.rem_euclid(HOUR_MICROS),
                            source: dim(0),
                            campaign: dim(1),
                            link: dim(2),
                            country: dim(3),
                            device: dim(4),
                        },
                        ts: t,
                        cost: Decimal::from_i128_with_scale(cost.value(r), 4),
                    };
                    if best.as_ref().is_none_or(|b| row.order() < b.order()) {
                        best = Some(row);
                    }
                }
            }
        }
        Ok(best)
    }
}

impl ClickLookup for ParquetClicks {
    fn find(&mut self, cid: &str, day: NaiveDate) -> Result<Option<ClickRow>> {
        self.find_click(cid, day)
    }
}
