//! `netrev import`: history from a CSV or Parquet file into the raw tables.
//!
//! Each row is validated exactly like a postback ([`crate::postback`]), with its own `ts`
//! instead of the receipt time, and deduplicated by the same keys ([`crate::dedup`]); clicks
//! keep the `cid` they bring and are deduplicated by it. If any row is refused, nothing is
//! written and every refused row is reported with its line and reason. Accepted rows are
//! written as new raw files (one per day), so a running `serve` and the SQL jobs see them like
//! any other; importing the same file again adds nothing.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, NaiveDateTime};
use netrev_storage::model::{self, Table};
use netrev_storage::store::layout;
use netrev_storage::{Event, Store, clickid};

use crate::dedup;
use crate::params::Params;
use crate::postback::{self, Context, Invalid};
use crate::{Error, Result};

/// A refused row: its line in the file (1 = the header, so data starts at 2; for Parquet, the
/// row number + 1) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub line: usize,
    pub field: String,
    pub error: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: usize,
    pub imported: usize,
    pub duplicates: usize,
    /// Non-empty means nothing was written.
    pub rejected: Vec<Rejected>,
    pub files: usize,
}

/// Reads the file's rows as text columns by name.
fn read_rows(path: &Path) -> Result<Vec<RecordBatch>> {
    let io = |e: std::io::Error| Error::io("read", path, e);
    let is_parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let batches = if is_parquet {
        let file = std::fs::File::open(path).map_err(io)?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| {
                Error::Config(format!(
                    "{}: not a readable Parquet file: {e}",
                    path.display()
                ))
            })?;
        reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
    } else {
        let mut file = std::fs::File::open(path).map_err(io)?;
        let format = arrow::csv::reader::Format::default().with_header(true);
        let (inferred, _) = format.infer_schema(&mut file, Some(1)).map_err(|e| {
            Error::Config(format!(
                "{}: not a CSV file with a header: {e}",
                path.display()
            ))
        })?;
        // Every column as text: amounts must not pass through a float, and validation
        // reports bad values itself.
        let schema = Arc::new(Schema::new(
            inferred
                .fields()
                .iter()
                // Header names as written, less a byte-order mark and surrounding spaces.
                .map(|f| {
                    let name = f.name().trim_start_matches('\u{feff}').trim();
                    Field::new(name, DataType::Utf8, true)
                })
                .collect::<Vec<_>>(),
        ));
        let file = std::fs::File::open(path).map_err(io)?;
        arrow::csv::ReaderBuilder::new(schema)
            .with_header(true)
            .build(file)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
    };
    Ok(batches)
}

/// Earliest event time accepted (2000-01-01T00:00:00Z): older times are typos or epoch zero.
const EARLIEST_TS: i64 = 946_684_800_000_000;
/// How far in the future an imported time may be (clock differences between systems).
const MAX_FUTURE_MICROS: i64 = 86_400_000_000;

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// Parses an explicit event time: RFC 3339 (`2026-11-01T10:00:00Z`, any offset) or
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` taken as UTC.
pub fn parse_ts(text: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .map(|t| t.and_utc().timestamp_micros())
}

/// Validates one row into an event.
fn event_of(table: Table, p: &Params, key: &clickid::Key) -> Result<Event, Invalid> {
    let ts_text = p
        .get("ts")
        .ok_or_else(|| Invalid::new("ts", "is required"))?;
    let ts = parse_ts(ts_text).ok_or_else(|| {
        Invalid::new(
            "ts",
            "must be a time like 2026-11-01T10:00:00Z or 2026-11-01 10:00:00",
        )
    })?;
    if !(EARLIEST_TS..=now_micros() + MAX_FUTURE_MICROS).contains(&ts) {
        return Err(Invalid::new(
            "ts",
            "must be between 2000-01-01 and tomorrow",
        ));
    }
    let ctx = Context {
        key,
        now_micros: ts,
    };
    Ok(match table {
        Table::Clicks => {
            let cid = p
                .get("cid")
                .ok_or_else(|| Invalid::new("cid", "is required"))?;
            // Imported clicks keep their ID, netrev's or a foreign one; only its shape is
            // checked (the MAC is for postbacks naming a click, not for the click itself).
            if cid.len() > clickid::MAX_FOREIGN_LEN
                || !cid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(Invalid::new(
                    "cid",
                    "must be 1-64 characters of A-Z a-z 0-9 _ -",
                ));
            }
            let fields = postback::click(p)?;
            Event::Click(fields.into_click(cid.to_string(), ts, postback::new_vid))
        }
        Table::Conversions => Event::Conversion(postback::conversion(p, &ctx)?),
        Table::Refunds => Event::Refund(postback::refund(p, &ctx)?),
    })
}

/// Imports `path` into `table` of `store`.
pub async fn import(store: &Store, table: Table, path: &Path) -> Result<ImportReport> {
    let key = store.click_id_key().await?;
    let batches = read_rows(path)?;
    let mut report = ImportReport::default();
    let mut events = Vec::new();
    let mut line = 1;
    for batch in &batches {
        let columns: Vec<(String, arrow::array::ArrayRef)> = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| arrow::compute::cast(c, &DataType::Utf8).map(|c| (f.name().clone(), c)))
            .collect::<Result<_, _>>()
            .map_err(netrev_storage::Error::from)?;
        let mut names = HashSet::new();
        if let Some((name, _)) = columns.iter().find(|(n, _)| !names.insert(n.as_str())) {
            return Err(Error::Config(format!(
                "{}: column {name:?} appears twice",
                path.display()
            )));
        }
        for row in 0..batch.num_rows() {
            line += 1;
            report.rows += 1;
            let values: Vec<(String, String)> = columns
                .iter()
                .filter(|(_, c)| c.is_valid(row))
                .map(|(n, c)| (n.clone(), c.as_string::<i32>().value(row).to_string()))
                .collect();
            let pairs: Vec<(&str, &str)> = values
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            match event_of(table, &Params::from_pairs(&pairs), &key) {
                Ok(e) => events.push(e),
                Err(i) => report.rejected.push(Rejected {
                    line,
                    field: i.field,
                    error: i.error,
                }),
            }
        }
    }
    if !report.rejected.is_empty() {
        return Ok(report);
    }

    // Deduplicate against what is stored and within the file.
    let mut seen_keys: HashSet<dedup::Key> = HashSet::new();
    let mut seen_cids: HashSet<String> = HashSet::new();
    for meta in store.raw_files(table).await? {
        for e in store.read_events(table, &meta.location).await? {
            match &e {
                Event::Click(c) => {
                    seen_cids.insert(c.cid.clone());
                }
                other => {
                    if let Some(k) = dedup::key(other) {
                        seen_keys.insert(k);
                    }
                }
            }
        }
    }
    let mut by_date: BTreeMap<chrono::NaiveDate, Vec<Event>> = BTreeMap::new();
    for e in events {
        let fresh = match &e {
            Event::Click(c) => seen_cids.insert(c.cid.clone()),
            other => dedup::key(other).is_none_or(|k| seen_keys.insert(k)),
        };
        if fresh {
            by_date.entry(e.date()).or_default().push(e);
        } else {
            report.duplicates += 1;
        }
    }
    // One name per import run; `imp_` never parses as an ingest node's sequence range. All
    // files are staged before any becomes visible, so a failure imports nothing.
    let run: u64 = rand::random();
    let mut files = Vec::new();
    for (date, rows) in &by_date {
        let batch = model::to_batch(table, rows)?;
        let path = layout::raw_partition(table, *date).join(format!("imp_{run:016x}.parquet"));
        files.push((path, netrev_storage::store::encode_parquet(&[batch])?));
        report.imported += rows.len();
    }
    report.files = files.len();
    store.put_all_durable(files).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(
            parse_ts("2026-11-01T10:00:00Z"),
            Some(1_793_527_200_000_000)
        );
        assert_eq!(
            parse_ts("2026-11-01T11:00:00+01:00"),
            Some(1_793_527_200_000_000)
        );
        assert_eq!(parse_ts("2026-11-01 10:00:00"), Some(1_793_527_200_000_000));
        assert_eq!(
            parse_ts("2026-11-01 10:00:00.5"),
            Some(1_793_527_200_500_000)
        );
        assert_eq!(parse_ts("yesterday"), None);
        assert_eq!(parse_ts("1793570400"), None);
    }
}
