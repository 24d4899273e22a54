//! The SQL jobs of `sql/`, embedded in the binary, and the tables they produce.
//!
//! Each file creates one view; later files build on earlier ones. The files are the single
//! source of these computations: nothing here restates them in Rust, and the same files run
//! unchanged in datafusion-cli (see `sql/README.md`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, MutableArrayData, RecordBatch, make_array};
use datafusion::physical_plan::collect_partitioned;
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::prelude::{DataFrame, SessionContext};

use crate::Result;

/// A SQL job: the view it creates and its text.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub name: &'static str,
    pub sql: &'static str,
    /// Whether a recompute computes this view once and holds its rows in memory: worth it for
    /// small results that several later jobs read; not for views as large as the raw clicks,
    /// which are cheaper to scan again than to hold.
    pub materialize: bool,
}

/// Every job, in dependency order.
pub const JOBS: &[Job] = &[
    Job {
        name: "repeated_clicks",
        sql: include_str!("../../sql/repeated_clicks.sql"),
        materialize: true,
    },
    Job {
        name: "clicks_dedup",
        sql: include_str!("../../sql/clicks_dedup.sql"),
        materialize: false,
    },
    Job {
        name: "conversions_dedup",
        sql: include_str!("../../sql/conversions_dedup.sql"),
        materialize: true,
    },
    Job {
        name: "refunds_dedup",
        sql: include_str!("../../sql/refunds_dedup.sql"),
        materialize: true,
    },
    Job {
        name: "converting_clicks",
        sql: include_str!("../../sql/converting_clicks.sql"),
        materialize: true,
    },
    Job {
        name: "refund_links",
        sql: include_str!("../../sql/refund_links.sql"),
        materialize: true,
    },
    Job {
        name: "visitor_clicks",
        sql: include_str!("../../sql/visitor_clicks.sql"),
        materialize: true,
    },
    Job {
        name: "stats_hourly",
        sql: include_str!("../../sql/stats_hourly.sql"),
        materialize: false,
    },
    Job {
        name: "cohort_sources",
        sql: include_str!("../../sql/cohort_sources.sql"),
        materialize: true,
    },
    Job {
        name: "cohort_ltv",
        sql: include_str!("../../sql/cohort_ltv.sql"),
        materialize: false,
    },
    Job {
        name: "visitors",
        sql: include_str!("../../sql/visitors.sql"),
        materialize: false,
    },
];

/// A derived table: which job fills it and how it is laid out under `tables/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Derived {
    /// Public table name; also the job (view) that computes it and its folder.
    pub name: &'static str,
    /// Whether it is partitioned by `date=YYYY-MM-DD` (the view's `date` column).
    pub partitioned_by_date: bool,
}

/// The derived tables written by a recompute, in the order computed. A table is written while
/// the next one is computed: `visitors`, one large file encoded on one core, goes before the
/// longest computation (`stats_hourly`), whose many files are encoded in parallel.
pub const DERIVED: &[Derived] = &[
    Derived {
        name: "visitors",
        partitioned_by_date: false,
    },
    Derived {
        name: "stats_hourly",
        partitioned_by_date: true,
    },
    Derived {
        name: "cohort_ltv",
        partitioned_by_date: false,
    },
    Derived {
        name: "refund_links",
        partitioned_by_date: false,
    },
    Derived {
        name: "cohort_sources",
        partitioned_by_date: false,
    },
];

/// Creates every job's view in `ctx` (whose raw tables are registered).
pub async fn create_views(ctx: &SessionContext) -> Result<()> {
    for job in JOBS {
        ctx.sql(job.sql).await?.collect().await?;
    }
    Ok(())
}

/// Creates the views like [`create_views`], but computes each view marked
/// [`Job::materialize`] once and keeps its rows in memory, so the four derived tables do not
/// each recompute the deduplication and linking. Same SQL, same results; only evaluated once.
pub async fn create_materialized_views(ctx: &SessionContext) -> Result<()> {
    for job in JOBS {
        ctx.sql(job.sql).await?.collect().await?;
        if !job.materialize {
            continue;
        }
        let started = std::time::Instant::now();
        let df = ctx.table(job.name).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let partitions = run_partitioned(df, job.name)
            .await?
            .into_iter()
            .map(|batches| batches.into_iter().map(compacted).collect())
            .collect::<Result<_>>()?;
        tracing::info!(
            view = job.name,
            secs = started.elapsed().as_secs_f64(),
            "materialized"
        );
        let table = datafusion::datasource::MemTable::try_new(schema, partitions)?;
        ctx.deregister_table(job.name)?;
        ctx.register_table(job.name, Arc::new(table))?;
    }
    Ok(())
}

/// Runs `df` and returns the rows of each of its output partitions. Its physical plan, with
/// the rows and time of every step, is logged at debug level (`NETREV_LOG=netrev_pipeline=debug`):
/// an `EXPLAIN ANALYZE` of every query a recompute runs.
pub(crate) async fn run_partitioned(df: DataFrame, what: &str) -> Result<Vec<Vec<RecordBatch>>> {
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let partitions = collect_partitioned(Arc::clone(&plan), task).await?;
    tracing::debug!(
        what,
        plan = %DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(false),
        "ran"
    );
    Ok(partitions)
}

/// `batch` with each array in buffers of its own size. A query's output is often sliced from
/// larger arrays, and a slice keeps (and counts as) the whole buffer: DataFusion sizes the
/// inputs of a join by their buffers when it decides whether to hash the smaller side once
/// for all partitions, and held rows should not keep more memory than they use.
fn compacted(batch: RecordBatch) -> Result<RecordBatch> {
    let wasteful = |a: &ArrayRef| {
        let used = a.to_data().get_slice_memory_size().unwrap_or(0);
        a.get_buffer_memory_size() > 2 * used + 4096
    };
    if !batch.columns().iter().any(wasteful) {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|a| {
            if !wasteful(a) {
                return Ok(Arc::clone(a));
            }
            let data = a.to_data();
            let mut copy = MutableArrayData::new(vec![&data], false, data.len());
            copy.try_extend(0, 0, data.len())?;
            Ok(make_array(copy.freeze()))
        })
        .collect::<Result<_, arrow::error::ArrowError>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn compacted_rows_keep_their_values_in_buffers_of_their_size() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let n = Int64Array::from_iter_values(0..100_000);
        let s = StringArray::from_iter((0..100_000).map(|i| (i % 3 != 0).then(|| i.to_string())));
        let whole = RecordBatch::try_new(schema, vec![Arc::new(n), Arc::new(s)]).unwrap();
        let slice = whole.slice(50_000, 10);
        assert!(slice.get_array_memory_size() > 100 * 10 * 16);

        let compact = compacted(slice.clone()).unwrap();
        assert_eq!(compact, slice);
        assert!(
            compact.get_array_memory_size() < 2_000,
            "{} bytes",
            compact.get_array_memory_size()
        );
        // Rows that already own their buffers are passed on as they are.
        let again = compacted(compact.clone()).unwrap();
        assert!(Arc::ptr_eq(again.column(0), compact.column(0)));
    }
}
