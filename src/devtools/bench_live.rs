//! `netrev bench-live` (hidden): the cost of applying one micro-batch to the live stats,
//! against the history in a data root (see `bench/live`, which runs it at two history sizes
//! and prints the ratio).
//!
//! It builds the live state exactly as `serve` does (a recompute and its snapshot), then
//! applies one batch of a fixed composition: new clicks, conversions of those clicks,
//! conversions of old clicks that are no longer in memory (each found through that day's
//! Parquet files), and refunds of old converted clicks. Prints one JSON line.

use std::time::Instant;

use anyhow::Context as _;
use arrow::array::AsArray;
use rust_decimal::Decimal;

use netrev_live::state::ClickLookup;
use netrev_storage::{Click, Conversion, Event, Refund, RefundType, Store, clickid};

/// The process's current and peak resident memory, MiB (Linux).
pub fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn strings(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> anyhow::Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for b in ctx.sql(sql).await?.collect().await? {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8))
            .collect::<Result<_, _>>()?;
        for r in 0..b.num_rows() {
            rows.push(
                cols.iter()
                    .map(|c| c.as_string::<i32>().value(r).to_string())
                    .collect(),
            );
        }
    }
    Ok(rows)
}

pub async fn run(data: &str, batch: usize, days: u32) -> anyhow::Result<()> {
    let store = Store::open(data).with_context(|| format!("opening data root {data}"))?;
    let history: u64 = {
        let ctx = netrev_pipeline::session(&store).await?;
        strings(&ctx, "SELECT count(*) FROM clicks").await?[0][0].parse()?
    };
    let today = chrono::Utc::now().date_naive();
    let horizon = today - chrono::Days::new(u64::from(days.max(1) - 1));
    let started = Instant::now();
    let (_, mut state, mut lookup, _) = netrev_live::runner::recompute_live(
        &store,
        Some(horizon),
        netrev_live::runner::PENDING_MAX_MIB << 20,
        &mut |_| {},
    )
    .await?;
    let rebase_secs = started.elapsed().as_secs_f64();
    let (rss_after_rebase, _) = rss_mib();
    let sizes = state.sizes();

    // The batch: a quarter each of the kinds below, from samples of the history.
    let quarter = batch / 4;
    let ctx = netrev_pipeline::session(&store).await?;
    let h = format!("TIMESTAMP '{horizon}T00:00:00Z'");
    let old_clicks = strings(
        &ctx,
        &format!(
            "SELECT cid FROM clicks WHERE ts < {h} AND cid NOT IN (SELECT cid FROM conversions) \
             ORDER BY random() LIMIT {quarter}"
        ),
    )
    .await?;
    let old_sales = strings(
        &ctx,
        &format!(
            "SELECT cid, txid, CAST(amount AS VARCHAR) FROM conversions WHERE ts < {h} \
             ORDER BY random() LIMIT {quarter}"
        ),
    )
    .await?;
    let ids = clickid::Generator::new(store.click_id_key().await?);
    let now = chrono::Utc::now().timestamp_micros();
    let mut events = Vec::with_capacity(batch);
    let mut new_cids = Vec::new();
    for i in 0..(batch - 3 * quarter) {
        let (cid, _) = ids.issue(u64::try_from(now / 1000).expect("after 1970"));
        events.push(Event::Click(Click {
            cid: cid.clone(),
            vid: format!("bench{i}"),
            ts: now,
            source: Some(format!("src{:02}", i % 30 + 1)),
            campaign: None,
            link: None,
            country: Some("DE".into()),
            device: Some("mobile".into()),
            cost: Decimal::new(25, 2),
            subs: Default::default(),
        }));
        new_cids.push(cid);
    }
    for (i, cid) in new_cids.iter().take(quarter).enumerate() {
        events.push(Event::Conversion(Conversion {
            cid: cid.clone(),
            ts: now,
            amount: Decimal::new(4999, 2),
            txid: Some(format!("BN{i}")),
            kind: None,
        }));
    }
    for (i, row) in old_clicks.iter().enumerate() {
        events.push(Event::Conversion(Conversion {
            cid: row[0].clone(),
            ts: now,
            amount: Decimal::new(1999, 2),
            txid: Some(format!("BO{i}")),
            kind: None,
        }));
    }
    for (i, row) in old_sales.iter().enumerate() {
        events.push(Event::Refund(Refund {
            cid: row[0].clone(),
            ts: now,
            amount: row[2].parse()?,
            txid: Some(format!("BR{i}")),
            kind: if i % 6 == 0 {
                RefundType::Chargeback
            } else {
                RefundType::CustomerRequest
            },
            reference: Some(row[1].clone()),
        }));
    }
    let started = Instant::now();
    let mut changes = 0usize;
    for e in &events {
        changes += state.apply(e, &mut lookup as &mut dyn ClickLookup)?.len();
    }
    let apply = started.elapsed();
    let (rss, hwm) = rss_mib();
    println!(
        "{}",
        serde_json::json!({
            "history_clicks": history,
            "live_days": days,
            "rebase_secs": rebase_secs,
            "state": sizes,
            "rss_after_rebase_mib": rss_after_rebase,
            "batch_events": events.len(),
            "old_click_conversions": old_clicks.len(),
            "old_refunds": old_sales.len(),
            "changes": changes,
            "apply_ms": apply.as_secs_f64() * 1000.0,
            "us_per_event": apply.as_secs_f64() * 1e6 / events.len().max(1) as f64,
            "footers_read": lookup.footers_read,
            "row_groups_read": lookup.groups_read,
            "rows_decoded": lookup.rows_read,
            "lookup_ms": lookup.busy.as_secs_f64() * 1000.0,
            "rss_mib": rss,
            "peak_rss_mib": hwm,
        })
    );
    Ok(())
}
