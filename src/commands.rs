//! The one-shot subcommands: `recompute`, `sql`, `import` and `compact`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use netrev_pipeline::engine::Engine;
use netrev_pipeline::output::{self, Format};
use netrev_pipeline::recompute::{self, DateRange, Progress};
use netrev_storage::Store;
use netrev_storage::buffer::Buffer;

pub async fn recompute(
    data: &str,
    log: Option<PathBuf>,
    range: DateRange,
    engine: &Engine,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let store = Store::open(data).with_context(|| format!("opening data root {data}"))?;
    let _log = read_log(&store, log.as_deref())?;
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

pub async fn sql(
    data: &str,
    log: Option<PathBuf>,
    query: &str,
    format: Format,
) -> anyhow::Result<()> {
    let store = Store::open(data).with_context(|| format!("opening data root {data}"))?;
    let _log = read_log(&store, log.as_deref())?;
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
    // A running server compacts closed days under this lock: an import into a day being
    // compacted waits for it, so a crash of the compaction cannot take the imported file.
    let _compaction = netrev_pipeline::recompute::lock_data_root(&store).await?;
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

pub async fn compact(
    data: &str,
    config: &netrev_pipeline::compact::CompactConfig,
) -> anyhow::Result<()> {
    let store = Store::open(data).with_context(|| format!("opening data root {data}"))?;
    let started = Instant::now();
    let (mut before, mut after) = (0, 0);
    let done = netrev_pipeline::compact::compact(&store, config, &mut |c| {
        before += c.files_before;
        after += c.files_after;
        eprintln!(
            "{} {}: {} files -> {} ({} rows)",
            c.table.name(),
            c.date,
            c.files_before,
            c.files_after,
            c.rows
        );
    })
    .await
    .context("compacting the raw tables")?;
    eprintln!(
        "compacted {} partitions: {before} files -> {after}, {:.1}s",
        done.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Adds the events of the write-ahead log in `dir` that are not in Parquet yet to what
/// `store`'s readers see; the store holds them as long as the returned value lives. Nothing
/// when there is no log there.
fn read_log(store: &Store, dir: Option<&Path>) -> anyhow::Result<Option<Arc<dyn Buffer>>> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let Some(rows) = netrev_ingest::ingestor::read_unpersisted(dir)
        .with_context(|| format!("reading the write-ahead log in {}", dir.display()))?
    else {
        return Ok(None);
    };
    let rows: Arc<dyn Buffer> = Arc::new(rows);
    store.attach_buffer(Arc::downgrade(&rows));
    Ok(Some(rows))
}
