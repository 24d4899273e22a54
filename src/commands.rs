//! The one-shot subcommands: `recompute`, `sql` and `import`.

use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use netrev_pipeline::engine::Engine;
use netrev_pipeline::output::{self, Format};
use netrev_pipeline::recompute::{self, DateRange, Progress};
use netrev_storage::Store;

pub async fn recompute(
    data: &str,
    range: DateRange,
    engine: &Engine,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let store = Store::open(data).with_context(|| format!("opening data root {data}"))?;
    let started = Instant::now();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut step = Instant::now();
    let mut show = |p| match p {
        Progress::Start { tables } => bar.set_length(tables as u64),
        Progress::Computing { table } => bar.set_message(format!("computing {table}")),
        Progress::Skipped { table, why } => bar.suspend(|| eprintln!("{table}: skipped, {why}")),
        Progress::Written { table, rows, files } => {
            bar.inc(1);
            bar.suspend(|| {
                eprintln!(
                    "{table}: {rows} rows in {files} file(s), {:.1}s",
                    step.elapsed().as_secs_f64()
                )
            });
            step = Instant::now();
        }
    };
    let timeout = (timeout_secs > 0).then(|| std::time::Duration::from_secs(timeout_secs));
    let report = recompute::recompute(&store, range, engine, timeout, &mut show).await;
    bar.finish_and_clear();
    let report = report.context("recompute failed")?;
    eprintln!(
        "recomputed {} tables in {:.1}s",
        report.tables.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub async fn sql(data: &str, query: &str, format: Format) -> anyhow::Result<()> {
    let store = Store::open(data).with_context(|| format!("opening data root {data}"))?;
    let ctx = netrev_pipeline::query_session(&store).await?;
    // The same read-only rules as POST /api/sql; on the command line nothing is cut and any
    // length is taken. The depth limit stays: deeper expressions overflow the planner's stack.
    let limits = netrev_pipeline::query::Limits {
        max_rows: usize::MAX,
        timeout: std::time::Duration::from_secs(24 * 3600),
        max_sql_bytes: usize::MAX,
        ..Default::default()
    };
    let answer = netrev_pipeline::query::run(&ctx, query, limits).await?;
    let text = output::render(&answer.batches, format)?;
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}

pub async fn import(
    data: &str,
    table: netrev_storage::Table,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let store = Store::open(data).with_context(|| format!("opening data root {data}"))?;
    let report = netrev_ingest::import::import(&store, table, file)
        .await
        .with_context(|| format!("importing {}", file.display()))?;
    if !report.rejected.is_empty() {
        for r in report.rejected.iter().take(100) {
            eprintln!("line {}: {}: {}", r.line, r.field, r.error);
        }
        if report.rejected.len() > 100 {
            eprintln!("… and {} more", report.rejected.len() - 100);
        }
        anyhow::bail!(
            "{} of {} rows refused; nothing was imported",
            report.rejected.len(),
            report.rows
        );
    }
    eprintln!(
        "imported {} of {} rows into {} ({} duplicates skipped, {} files)",
        report.imported,
        report.rows,
        table.name(),
        report.duplicates,
        report.files
    );
    Ok(())
}
