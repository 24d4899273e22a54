//! The SQL jobs of `sql/`, embedded in the binary, and the tables they produce.
//!
//! Each file creates one view; later files build on earlier ones. The files are the single
//! source of these computations: nothing here restates them in Rust, and the same files run
//! unchanged in datafusion-cli (see `sql/README.md`).

use datafusion::prelude::SessionContext;

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
        let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
        let partitions = df.collect_partitioned().await?;
        tracing::info!(
            view = job.name,
            secs = started.elapsed().as_secs_f64(),
            "materialized"
        );
        let table = datafusion::datasource::MemTable::try_new(schema, partitions)?;
        ctx.deregister_table(job.name)?;
        ctx.register_table(job.name, std::sync::Arc::new(table))?;
    }
    Ok(())
}
