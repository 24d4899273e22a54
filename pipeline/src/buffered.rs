//! A raw table as its files plus the acknowledged rows not yet in them
//! ([`netrev_storage::buffer`]).
//!
//! The rows are taken when the table is registered, before any listing of its files; a scan
//! lists the files (DataFusion's listing table) and then drops every buffered row that a
//! listed file already holds, known by the node and sequence range in the file's name. A flush
//! between the two steps therefore shows each row once: in the file if the scan listed it,
//! else in the buffer.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Date32Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use netrev_storage::buffer::Unpersisted;
use netrev_storage::store::layout;

/// A raw table's listing table and the rows of its buffer.
#[derive(Debug)]
pub struct Buffered {
    files: Arc<dyn TableProvider>,
    rows: Vec<Unpersisted>,
}

impl Buffered {
    /// `files`, a listing table of a raw table with its `date` partition column, plus `rows`
    /// (of that table), taken before `files` is first scanned.
    pub fn new(files: Arc<dyn TableProvider>, rows: Vec<Unpersisted>) -> Self {
        Buffered { files, rows }
    }

    /// The buffered rows no file of `plan` holds, in the table's schema (with `date`).
    fn rows_not_in(&self, plan: &Arc<dyn ExecutionPlan>) -> DfResult<Vec<RecordBatch>> {
        let held = ranges_read_by(plan);
        let schema = self.files.schema();
        let mut out = Vec::with_capacity(self.rows.len());
        for part in &self.rows {
            let mut batch = part.batch.clone();
            if let Some(ranges) = held.get(&(part.node.to_string(), part.date)) {
                let keep: BooleanArray = part
                    .seqs
                    .iter()
                    .map(|&seq| Some(!contains(ranges, seq)))
                    .collect();
                batch = arrow::compute::filter_record_batch(&batch, &keep)?;
            }
            if batch.num_rows() == 0 {
                continue;
            }
            let mut columns = batch.columns().to_vec();
            let day = days_since_epoch(part.date);
            columns.push(Arc::new(Date32Array::from(vec![day; batch.num_rows()])) as ArrayRef);
            out.push(RecordBatch::try_new(schema.clone(), columns)?);
        }
        Ok(out)
    }
}

/// Sequence ranges of the raw files `plan` reads, by (node, date), sorted and merged.
fn ranges_read_by(plan: &Arc<dyn ExecutionPlan>) -> HashMap<(String, NaiveDate), Vec<(u64, u64)>> {
    fn walk(
        plan: &Arc<dyn ExecutionPlan>,
        out: &mut HashMap<(String, NaiveDate), Vec<(u64, u64)>>,
    ) {
        if let Some(exec) = plan.downcast_ref::<DataSourceExec>()
            && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
        {
            for file in config.file_groups.iter().flat_map(|g| g.files()) {
                let location = &file.object_meta.location;
                let (Some((node, first, last)), Some(date)) = (
                    location.filename().and_then(layout::parse_raw_file),
                    layout::partition_date(location),
                ) else {
                    continue;
                };
                out.entry((node.to_string(), date))
                    .or_default()
                    .push((first, last));
            }
        }
        for child in plan.children() {
            walk(child, out);
        }
    }
    let mut out = HashMap::new();
    walk(plan, &mut out);
    for ranges in out.values_mut() {
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(first, last) in ranges.iter() {
            match merged.last_mut() {
                Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
                _ => merged.push((first, last)),
            }
        }
        *ranges = merged;
    }
    out
}

/// Whether one of `ranges` (sorted, not overlapping) contains `seq`.
fn contains(ranges: &[(u64, u64)], seq: u64) -> bool {
    let after = ranges.partition_point(|&(first, _)| first <= seq);
    after > 0 && ranges[after - 1].1 >= seq
}

fn days_since_epoch(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

#[async_trait]
impl TableProvider for Buffered {
    fn schema(&self) -> SchemaRef {
        self.files.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// The files' answer, but never exact: the filters are applied again above the buffered
    /// rows too.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(self
            .files
            .supports_filters_pushdown(filters)?
            .into_iter()
            .map(|p| match p {
                TableProviderFilterPushDown::Exact => TableProviderFilterPushDown::Inexact,
                other => other,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let files = self.files.scan(state, projection, filters, limit).await?;
        let rows = self.rows_not_in(&files)?;
        if rows.is_empty() {
            return Ok(files);
        }
        let buffered =
            MemorySourceConfig::try_new_exec(&[rows], self.schema(), projection.cloned())?;
        UnionExec::try_new(vec![files, buffered])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use netrev_storage::buffer::Frozen;
    use netrev_storage::model::{self, Table};
    use netrev_storage::{Conversion, Event, Store};
    use rust_decimal::Decimal;

    const DAY1: i64 = 1_795_000_000_000_000;
    const DAY2: i64 = DAY1 + 86_400_000_000;

    fn conversion(seq: u64, ts: i64) -> Event {
        Event::Conversion(Conversion {
            cid: format!("c{seq}"),
            ts,
            amount: Decimal::ONE,
            txid: Some(format!("t{seq}")),
            kind: None,
        })
    }

    /// The rows of `events` (sequence, event) of one partition, as node `node` buffers them.
    fn buffered(node: &str, events: &[(u64, Event)]) -> Unpersisted {
        let list: Vec<&Event> = events.iter().map(|(_, e)| e).collect();
        Unpersisted {
            node: node.into(),
            table: Table::Conversions,
            date: events[0].1.date(),
            seqs: events.iter().map(|(s, _)| *s).collect(),
            batch: model::to_batch(Table::Conversions, list).unwrap(),
        }
    }

    async fn write_file(store: &Store, node: &str, first: u64, last: u64, ts: i64) {
        let events: Vec<Event> = (first..=last).map(|s| conversion(s, ts)).collect();
        let path = layout::raw_file(Table::Conversions, events[0].date(), node, first, last);
        let batch = model::to_batch(Table::Conversions, events.iter()).unwrap();
        store.write_parquet(&path, &[batch]).await.unwrap();
    }

    async fn cids(ctx: &datafusion::prelude::SessionContext) -> Vec<String> {
        let batches = ctx
            .sql("select cid from conversions order by cid")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let text =
                    arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
                (0..text.len())
                    .map(|i| text.as_string::<i32>().value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A buffered row is left out exactly when a listed file of its node and partition covers
    /// its sequence, including a file written after the rows were taken (a flush in between).
    #[tokio::test]
    async fn buffered_rows_a_file_holds_are_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        // In files already: node a's 1..=3 on day 1.
        write_file(&store, "a", 1, 3, DAY1).await;
        let rows = Frozen(vec![
            // 2 and 3 are in a's file; 4 and 5 not yet.
            buffered(
                "a",
                &(2..=5)
                    .map(|s| (s, conversion(s, DAY1)))
                    .collect::<Vec<_>>(),
            ),
            // Node b's 2 is another row: another node's numbering.
            buffered("b", &[(2, conversion(102, DAY1))]),
            // Node a's 6 on day 2: no file of that partition covers it.
            buffered("a", &[(6, conversion(6, DAY2))]),
        ]);
        let rows: Arc<dyn netrev_storage::buffer::Buffer> = Arc::new(rows);
        store.attach_buffer(Arc::downgrade(&rows));
        let ctx = crate::session(&store).await.unwrap();
        // Flushed after the session took the rows, before its query lists the files.
        write_file(&store, "a", 4, 5, DAY1).await;
        let expected = ["c1", "c102", "c2", "c3", "c4", "c5", "c6"];
        assert_eq!(cids(&ctx).await, expected);
        // Filters on the partition column apply to the buffered rows too.
        let day2 = ctx
            .sql("select count(*) from conversions where date > '2026-11-18'")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let n = day2[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(n.value(0), 1);
        // Without the buffer: the files only.
        drop(rows);
        let ctx = crate::session(&store).await.unwrap();
        assert_eq!(cids(&ctx).await, ["c1", "c2", "c3", "c4", "c5"]);
    }

    #[test]
    fn ranges_contain_their_ends_only() {
        let ranges = [(1, 3), (7, 7), (10, 20)];
        let inside: Vec<u64> = (0..22).filter(|&s| contains(&ranges, s)).collect();
        let expected: Vec<u64> = [1, 2, 3, 7].into_iter().chain(10..=20).collect();
        assert_eq!(inside, expected);
    }
}
