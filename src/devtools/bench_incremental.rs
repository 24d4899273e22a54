//! `netrev bench-incremental` (hidden): a scheduled recompute by difference after one day of
//! new events, against a full recompute of the same history (see `bench/recompute`, which runs
//! it on the history it generated and prints the ratio).
//!
//! The newest day of clicks (with every event dated then or later) is moved aside, a full recompute of the rest is taken as
//! `serve` takes its first one, and the day is moved back: the new events of that day (its
//! clicks, and its conversions and refunds of clicks of any earlier day) are what the pass by
//! difference then reads. A full recompute of the whole history follows, and the two passes'
//! tables are compared. Prints one JSON line. `serve` must not be running on the data root.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};

use netrev_pipeline::engine::Engine;
use netrev_pipeline::incremental::recompute_incremental;
use netrev_pipeline::recompute::{DateRange, recompute, recompute_kept};
use netrev_storage::{Store, Table};

/// The partitions of the raw tables from the newest day of clicks on (the events of that day,
/// and any dated later).
fn newest_partitions(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dates = |table: Table| -> anyhow::Result<Vec<String>> {
        let dir = root.join("events").join(table.name());
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("date=") {
                names.push(name);
            }
        }
        Ok(names)
    };
    let Some(day) = dates(Table::Clicks)?.into_iter().max() else {
        bail!("the data root has no clicks");
    };
    let mut out = Vec::new();
    for table in Table::ALL {
        for name in dates(table)?.into_iter().filter(|n| *n >= day) {
            out.push(root.join("events").join(table.name()).join(name));
        }
    }
    Ok(out)
}

/// The derived tables but `stats_hourly`, each as sorted text lines.
async fn tables(store: &Store) -> anyhow::Result<Vec<Vec<String>>> {
    let ctx = netrev_pipeline::query_session(store).await?;
    let mut out = Vec::new();
    for table in ["visitors", "refund_links", "cohort_sources", "cohort_ltv"] {
        let batches = ctx
            .sql(&format!("SELECT * FROM {table}"))
            .await?
            .collect()
            .await?;
        let text = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort_unstable();
        out.push(lines);
    }
    Ok(out)
}

pub async fn run(data: &str) -> anyhow::Result<()> {
    let store = Store::open(data).with_context(|| format!("opening data root {data}"))?;
    let Some(root) = store.local_root().map(Path::to_path_buf) else {
        bail!("bench-incremental needs a local data root");
    };
    let _server = netrev_pipeline::recompute::take_live_lock(&store)?;
    let day = newest_partitions(&root)?;
    let aside = root.join(".bench-incremental");
    std::fs::create_dir_all(&aside)?;
    let moved: Vec<(PathBuf, PathBuf)> = day
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), aside.join(i.to_string())))
        .collect();
    for (from, to) in &moved {
        std::fs::rename(from, to)?;
    }
    let first = recompute_kept(&store, true, &mut |_| {}).await;
    for (from, to) in &moved {
        std::fs::rename(to, from)?;
    }
    std::fs::remove_dir(&aside)?;
    let (_, kept) = first?;
    let seen = kept.finish(&store).await;

    let started = Instant::now();
    let pass = recompute_incremental(&store, &seen, &mut |_| {}).await?;
    let incremental_secs = started.elapsed().as_secs_f64();
    let by_difference = tables(&store).await?;

    let started = Instant::now();
    recompute(
        &store,
        DateRange::default(),
        &Engine::Local,
        None,
        &mut |_| {},
    )
    .await?;
    let full_secs = started.elapsed().as_secs_f64();
    let equal = tables(&store).await? == by_difference;
    println!(
        "{}",
        serde_json::json!({
            "new_files": pass.added.len(),
            "touched_click_ids": pass.touched,
            "rebuilt_click_ids": pass.click_ids,
            "rebuilt_visitors": pass.visitors,
            "incremental_secs": incremental_secs,
            "full_secs": full_secs,
            "ratio": incremental_secs / full_secs,
            "equal": equal,
        })
    );
    if !equal {
        bail!("the tables of the pass by difference differ from the full recompute's");
    }
    Ok(())
}
