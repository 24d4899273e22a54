//! Property tests: for random event histories, `stats_hourly` computed by the SQL jobs equals a
//! plain Rust model of docs/design.md §4 and §5, to the cent; and the streaming aggregate
//! (`netrev_pipeline::live`), fed the same events in any order, equals the SQL batch result,
//! both as its own rows and as the rows rebuilt from its changelog.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Decimal128Type, Int64Type, TimestampMicrosecondType};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use netrev_live::state::{ClickLookup, ClickRow, LiveStats, Measures, NoLookup, WindowKey};
use netrev_storage::model::{self, Table};
use netrev_storage::{Click, Conversion, Event, Refund, RefundType};
use proptest::prelude::*;
use rust_decimal::Decimal;

const HOUR: i64 = 3_600_000_000;
const T0: i64 = 1_793_491_200_000_000; // 2026-11-01T00:00:00Z

/// One row of stats_hourly: (hour, source) → measures.
type Key = (i64, Option<String>);

fn money(units: i64) -> Decimal {
    Decimal::new(units, 2)
}

/// Random histories: few click IDs so events collide, retries and refunds often.
fn history() -> impl Strategy<Value = Vec<Event>> {
    let click = (0..6u8, 0..3u8, 0..48i64, 0..500i64).prop_map(|(c, s, h, cost)| {
        Event::Click(Click {
            cid: format!("k{c}"),
            vid: format!("v{}", c % 3),
            ts: T0 + h * HOUR + i64::from(c) * 1000,
            source: (s > 0).then(|| format!("s{s}")),
            campaign: None,
            link: None,
            country: None,
            device: None,
            cost: money(cost),
            subs: Default::default(),
        })
    });
    let conversion = (
        0..7u8,
        0..400i64,
        proptest::option::of(0..3u8),
        0..10_000i64,
    )
        .prop_map(|(c, t, tx, amount)| {
            Event::Conversion(Conversion {
                cid: format!("k{c}"),
                ts: T0 + t * HOUR / 4,
                amount: money(amount),
                txid: tx.map(|t| format!("t{t}")),
                kind: None,
            })
        });
    let refund = (
        0..7u8,
        0..400i64,
        proptest::option::of(0..3u8),
        1..5_000i64,
        any::<bool>(),
        proptest::option::of(0..4u8),
    )
        .prop_map(|(c, t, tx, amount, cb, r)| {
            Event::Refund(Refund {
                cid: format!("k{c}"),
                ts: T0 + t * HOUR / 4 + 7,
                amount: money(amount),
                txid: tx.map(|t| format!("r{t}")),
                kind: if cb {
                    RefundType::Chargeback
                } else {
                    RefundType::CustomerRequest
                },
                reference: r.map(|r| format!("t{r}")),
            })
        });
    (
        proptest::collection::vec(click, 1..12),
        proptest::collection::vec(conversion, 0..14),
        proptest::collection::vec(refund, 0..14),
    )
        .prop_map(|(a, b, c)| a.into_iter().chain(b).chain(c).collect())
}

/// A refund's deduplication key: (cid, txid) and, without txid, (type, ref, amount).
type RefundKey<'a> = (
    &'a str,
    Option<&'a str>,
    Option<(RefundType, Option<&'a str>, Decimal)>,
);

/// docs/design.md §4 and §5, written as plainly as possible.
fn model(events: &[Event]) -> BTreeMap<Key, Measures> {
    // Earliest copy of each click ID, conversion and refund (ties broken as in the SQL).
    let mut clicks: HashMap<&str, &Click> = HashMap::new();
    let mut convs: HashMap<(&str, Option<&str>), &Conversion> = HashMap::new();
    let mut refunds: HashMap<RefundKey, &Refund> = HashMap::new();
    for e in events {
        match e {
            Event::Click(c) => {
                let slot = clicks.entry(&c.cid).or_insert(c);
                if (c.ts, &c.source, c.cost, &c.vid) < (slot.ts, &slot.source, slot.cost, &slot.vid)
                {
                    *slot = c;
                }
            }
            Event::Conversion(c) => {
                let slot = convs.entry((&c.cid, c.txid.as_deref())).or_insert(c);
                if (c.ts, c.amount) < (slot.ts, slot.amount) {
                    *slot = c;
                }
            }
            Event::Refund(r) => {
                let rest = r
                    .txid
                    .is_none()
                    .then(|| (r.kind, r.reference.as_deref(), r.amount.normalize()));
                let slot = refunds
                    .entry((&r.cid, r.txid.as_deref(), rest))
                    .or_insert(r);
                let order = |x: &Refund| (x.ts, x.amount, x.kind.as_str(), x.reference.clone());
                if order(r) < order(slot) {
                    *slot = r;
                }
            }
        }
    }
    let mut out: BTreeMap<Key, Measures> = BTreeMap::new();
    for c in clicks.values() {
        let m = out
            .entry((c.ts - c.ts.rem_euclid(HOUR), c.source.clone()))
            .or_default();
        m.clicks += 1;
        m.cost += c.cost;
        let mine: Vec<&&Conversion> = convs.values().filter(|v| v.cid == c.cid).collect();
        m.conversions += mine.len() as i64;
        m.gross_revenue += mine.iter().map(|v| v.amount).sum::<Decimal>();
        let earliest = mine
            .iter()
            .min_by(|a, b| (a.ts, &a.txid).cmp(&(b.ts, &b.txid)));
        let mut refunded: Vec<Option<&str>> = Vec::new();
        for r in refunds.values().filter(|r| r.cid == c.cid) {
            m.refunds += 1;
            m.refund_amount += r.amount;
            if r.kind == RefundType::Chargeback {
                m.chargebacks += 1;
                m.chargeback_amount += r.amount;
            }
            let by_ref = r
                .reference
                .as_deref()
                .and_then(|x| mine.iter().find(|v| v.txid.as_deref() == Some(x)));
            if let Some(v) = by_ref.or(earliest) {
                let id = v.txid.as_deref();
                if !refunded.contains(&id) {
                    refunded.push(id);
                }
            }
        }
        m.refunded_conversions += refunded.len() as i64;
    }
    out
}

/// A session with `events` as the raw tables and every job's view.
async fn session_of(events: &[Event]) -> SessionContext {
    let ctx = SessionContext::new();
    for table in Table::ALL {
        let rows: Vec<&Event> = events.iter().filter(|e| e.table() == table).collect();
        let batch = model::to_batch(table, rows).unwrap();
        let mem = MemTable::try_new(table.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table(table.name(), Arc::new(mem)).unwrap();
    }
    netrev_pipeline::jobs::create_views(&ctx).await.unwrap();
    ctx
}

/// The deduplication identity of a conversion or refund (docs/design.md §4).
fn identity(e: &Event) -> Option<String> {
    match e {
        Event::Click(_) => None,
        Event::Conversion(c) => Some(format!("c {} {:?}", c.cid, c.txid)),
        Event::Refund(r) => Some(match &r.txid {
            Some(t) => format!("r {} {t}", r.cid),
            None => format!(
                "r {} {:?} {:?} {}",
                r.cid,
                r.kind,
                r.reference,
                r.amount.normalize()
            ),
        }),
    }
}

/// The SQL `visitors` table: vid → (gross revenue, refund amount), visitors with money only.
async fn sql_visitors(events: &[Event]) -> BTreeMap<String, (Decimal, Decimal)> {
    let batches = query(
        events,
        "SELECT CAST(vid AS VARCHAR), gross_revenue, refund_amount FROM visitors",
    )
    .await;
    let mut out = BTreeMap::new();
    for b in &batches {
        let dec = |i: usize, r: usize| money_at(b, i, r);
        let vids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let vids = vids.as_string::<i32>();
        for r in 0..b.num_rows() {
            let (g, f) = (dec(1, r), dec(2, r));
            if !(g.is_zero() && f.is_zero()) {
                out.insert(vids.value(r).to_string(), (g, f));
            }
        }
    }
    out
}

/// The rows of `sql` over the job views of a session holding `events`.
async fn query(events: &[Event], sql: &str) -> Vec<RecordBatch> {
    let ctx = session_of(events).await;
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// The money in column `i`, row `r` of a batch.
fn money_at(b: &RecordBatch, i: usize, r: usize) -> Decimal {
    Decimal::from_i128_with_scale(b.column(i).as_primitive::<Decimal128Type>().value(r), 4)
}

async fn sql_stats(events: &[Event]) -> BTreeMap<Key, Measures> {
    let batches = query(
        events,
        "SELECT hour, source, clicks, cost, conversions, gross_revenue, refunds, refund_amount, \
         chargebacks, chargeback_amount, refunded_conversions FROM stats_hourly",
    )
    .await;
    let mut out = BTreeMap::new();
    for b in &batches {
        let dec = |i: usize, r: usize| money_at(b, i, r);
        let int = |i: usize, r: usize| b.column(i).as_primitive::<Int64Type>().value(r);
        let hours = b.column(0).as_primitive::<TimestampMicrosecondType>();
        let sources = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
        let sources = sources.as_string::<i32>();
        for r in 0..b.num_rows() {
            let key = (
                hours.value(r),
                sources.is_valid(r).then(|| sources.value(r).to_string()),
            );
            let m = Measures {
                clicks: int(2, r),
                cost: dec(3, r),
                conversions: int(4, r),
                gross_revenue: dec(5, r),
                refunds: int(6, r),
                refund_amount: dec(7, r),
                chargebacks: int(8, r),
                chargeback_amount: dec(9, r),
                refunded_conversions: int(10, r),
            };
            // Several (hour, source) rows only differ in dimensions the generator leaves null.
            assert!(out.insert(key, m).is_none());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn stats_hourly_equals_the_rust_model(events in history()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = rt.block_on(sql_stats(&events));
        prop_assert_eq!(got, model(&events));
    }
}

/// Live rows in the test's (hour, source) shape.
fn live_stats<'a>(
    rows: impl Iterator<Item = (&'a WindowKey, &'a Measures)>,
) -> BTreeMap<Key, Measures> {
    rows.map(|(k, m)| ((k.hour, k.source.as_deref().map(String::from)), m.clone()))
        .collect()
}

/// Every row of `live` (the days before its horizon decoded) in the test's shape; each once.
fn live_rows(live: &LiveStats) -> BTreeMap<Key, Measures> {
    let rows = live.rows().unwrap();
    let keys: std::collections::HashSet<&WindowKey> = rows.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), rows.len(), "a row twice: {rows:?}");
    live_stats(rows.iter().map(|(k, m)| (k, m)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn streaming_equals_batch_in_any_order(events in history().prop_shuffle()) {
        let mut live = LiveStats::new();
        let mut replayed = HashMap::new();
        for e in &events {
            let changes = live.apply(e, &mut NoLookup).unwrap();
            netrev_live::state::apply_changes(&mut replayed, &changes);
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let batch = rt.block_on(sql_stats(&events));
        prop_assert_eq!(live_rows(&live), batch.clone());
        prop_assert_eq!(live_stats(replayed.iter()), batch);
    }
}

/// The history with netrev-shaped click IDs, whose encoded days (three of them) let the live
/// state leave clicks to the lookup.
fn with_native_ids(events: Vec<Event>) -> Vec<Event> {
    let ids = netrev_storage::clickid::Generator::new(netrev_storage::clickid::Key::new([7; 32]));
    let cids: Vec<String> = (0..7i64)
        .map(|c| {
            let micros = T0 + (c % 3) * 24 * HOUR + c * 1000;
            ids.issue(u64::try_from(micros / 1000).unwrap()).0
        })
        .collect();
    let native = |cid: &str| cids[cid[1..].parse::<usize>().unwrap()].clone();
    events
        .into_iter()
        .map(|e| match e {
            Event::Click(mut c) => {
                c.cid = native(&c.cid);
                Event::Click(c)
            }
            Event::Conversion(mut c) => {
                c.cid = native(&c.cid);
                Event::Conversion(c)
            }
            Event::Refund(mut r) => {
                r.cid = native(&r.cid);
                Event::Refund(r)
            }
        })
        .collect()
}

/// The live state a full recompute builds of `stored` (as `serve` does at a rebase).
async fn rebuilt(
    stored: &[Event],
    horizon: Option<chrono::NaiveDate>,
    pending_max: usize,
) -> LiveStats {
    let ctx = session_of(stored).await;
    let stats = ctx
        .sql("SELECT * FROM stats_hourly")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    LiveStats::from_session(&ctx, &stats, horizon, pending_max)
        .await
        .unwrap()
}

/// `live` written as a checkpoint and read back.
fn checkpoint_round_trip(live: &LiveStats) -> LiveStats {
    use netrev_live::checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(checkpoint::FILE_NAME);
    let covered = ["events/clicks/date=2026-11-18/a.parquet"]
        .into_iter()
        .map(object_store::path::Path::from)
        .collect();
    checkpoint::write(&path, "n1", live, 42, &covered).unwrap();
    let read = checkpoint::read(&path, "n1").unwrap().unwrap();
    assert_eq!((read.applied, read.covered), (42, covered));
    read.state
}

/// The lookup over a snapshot's clicks held in memory: what the Parquet lookup does, the
/// smallest copy among the clicks stored in the asked day's partition.
struct SnapshotClicks(Vec<Click>);

impl SnapshotClicks {
    /// Over the clicks among `events`.
    fn of(events: &[Event]) -> Self {
        SnapshotClicks(
            events
                .iter()
                .filter_map(|e| match e {
                    Event::Click(c) => Some(c.clone()),
                    _ => None,
                })
                .collect(),
        )
    }
}

impl ClickLookup for SnapshotClicks {
    fn find(&mut self, cid: &str, day: chrono::NaiveDate) -> netrev_live::Result<Option<ClickRow>> {
        Ok(self
            .0
            .iter()
            .filter(|c| c.cid == cid && model::date_of_micros(c.ts) == day)
            .map(ClickRow::of)
            .min_by(|a, b| a.order().cmp(&b.order())))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// A restart in the middle: the state is rebuilt from a batch recompute of the events
    /// stored so far (with old clicks left to the lookup), then the rest arrives along with
    /// replays of stored events; the result equals the batch over everything.
    #[test]
    fn streaming_across_a_restart_equals_batch(
        events in history().prop_shuffle(),
        split in any::<prop::sample::Index>(),
        horizon in 0..4u64,
        advance in 0..4u64,
        replays in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        checkpoint_at in any::<prop::sample::Index>(),
    ) {
        let events = with_native_ids(events);
        let k = split.index(events.len() + 1);
        let (stored, rest) = events.split_at(k);
        let (before_checkpoint, after_checkpoint) = rest.split_at(checkpoint_at.index(rest.len() + 1));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let first_day = model::date_of_micros(T0);
        let horizon_day = first_day + chrono::Days::new(horizon);
        let mut live = rt.block_on(rebuilt(stored, Some(horizon_day), usize::MAX));
        let mut lookup = SnapshotClicks::of(stored);
        let replayed = replays.iter().filter(|_| !stored.is_empty()).map(|i| &stored[i.index(stored.len())]);
        let mut attributed = Vec::new();
        // The changelog, applied to a copy of the rows (those of days before the horizon
        // change by what is added to them).
        let mut changed: HashMap<WindowKey, Measures> = live.rows().unwrap().into_iter().collect();
        for e in before_checkpoint {
            let changes = live.apply_with(e, &mut lookup, &mut attributed).unwrap();
            netrev_live::state::apply_changes(&mut changed, &changes);
        }
        prop_assert_eq!(live_stats(changed.iter()), live_rows(&live));
        // Every day's partition written from the state, which takes what it wrote as the rows
        // of the days before its horizon (as the live thread does).
        for day in 0..4 {
            let date = first_day + chrono::Days::new(day);
            let encoded = live.encoded_date(date).unwrap();
            live.settle_cold(date, encoded);
        }
        // Written to a checkpoint and read back: the same state, which goes on the same.
        let live_before = (live_rows(&live), live.sizes(), live.horizon());
        let mut live = checkpoint_round_trip(&live);
        prop_assert_eq!((live_rows(&live), live.sizes(), live.horizon()), live_before);
        for e in after_checkpoint.iter().chain(replayed) {
            live.apply_with(e, &mut lookup, &mut attributed).unwrap();
        }
        let batch = rt.block_on(sql_stats(&events));
        prop_assert_eq!(live_rows(&live), batch);
        // The visitors' totals (for the webhooks) equal the SQL `visitors` table.
        let live_visitors: BTreeMap<String, (Decimal, Decimal)> = ["v0", "v1", "v2"]
            .into_iter()
            .map(|v| (v.to_string(), live.visitor(v)))
            .filter(|(_, t)| !(t.gross.is_zero() && t.refunds.is_zero()))
            .map(|(v, t)| (v, (t.gross, t.refunds)))
            .collect();
        prop_assert_eq!(live_visitors, rt.block_on(sql_visitors(&events)));
        // Reported as attributed exactly once: each conversion and refund new after the
        // restart whose click is known, and each stored one whose click only came after.
        let clicked = |events: &[Event], cid: &str| {
            events.iter().any(|e| matches!(e, Event::Click(c) if c.cid == cid))
        };
        let before: std::collections::HashSet<String> = stored.iter().filter_map(identity).collect();
        let new_ones = rest
            .iter()
            .filter(|e| clicked(&events, e.cid()))
            .filter_map(identity)
            .filter(|k| !before.contains(k));
        let waited = stored
            .iter()
            .filter(|e| !clicked(stored, e.cid()) && clicked(rest, e.cid()))
            .filter_map(identity);
        let expected: std::collections::BTreeSet<String> = new_ones.chain(waited).collect();
        let reported: Vec<String> = attributed.iter().filter_map(|a| identity(&a.event)).collect();
        let unique: std::collections::BTreeSet<String> = reported.iter().cloned().collect();
        prop_assert_eq!(unique.len(), reported.len(), "reported twice: {:?}", reported);
        prop_assert_eq!(unique, expected);
        // Any of them can be reported again on demand (after a crash): those with a click,
        // and for a click, all of its click ID's.
        for e in &events {
            let mut again = live.attributions_of(e);
            match identity(e) {
                None => {
                    let of_cid: std::collections::BTreeSet<String> = events
                        .iter()
                        .filter(|x| x.cid() == e.cid())
                        .filter_map(identity)
                        .collect();
                    let got: std::collections::BTreeSet<String> =
                        again.iter().filter_map(|a| identity(&a.event)).collect();
                    prop_assert_eq!(got, of_cid);
                }
                Some(k) if clicked(&events, e.cid()) => {
                    prop_assert_eq!(again.len(), 1);
                    let again = again.pop().unwrap();
                    prop_assert_eq!(identity(&again.event), Some(k));
                    // Every copy of a click has the same visitor in these histories.
                    let vid = events.iter().find_map(|x| match x {
                        Event::Click(c) if c.cid == e.cid() => Some(c.vid.clone()),
                        _ => None,
                    });
                    prop_assert_eq!(Some(again.vid.to_string()), vid);
                }
                _ => prop_assert!(again.is_empty()),
            }
        }
        // The day rows are the hourly rows summed by day.
        let mut summed: BTreeMap<Key, Measures> = BTreeMap::new();
        for (k, m) in &live.rows().unwrap() {
            let day = k.hour - k.hour.rem_euclid(24 * HOUR);
            summed.entry((day, k.source.as_deref().map(String::from))).or_default().add(m, 1);
        }
        prop_assert_eq!(live_stats(live.days_between(i64::MIN, i64::MAX)), summed);

        // The horizon moved on, as a recompute by difference does once every click is in a
        // file: the clicks of the days before it leave memory, and events replayed again are
        // resolved through the lookup (now over every click) without changing anything.
        let held = live.sizes().indexed_clicks;
        live.advance_horizon(first_day + chrono::Days::new(horizon + advance));
        prop_assert!(live.sizes().indexed_clicks <= held);
        let mut lookup = SnapshotClicks::of(&events);
        for e in &events {
            live.apply(e, &mut lookup).unwrap();
        }
        prop_assert_eq!(live_rows(&live), rt.block_on(sql_stats(&events)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// With the events waiting for an unknown click capped (as `--live-pending-max-mib` does),
    /// those beyond the cap are left to the raw files: the state never holds more, notes the
    /// click IDs whose click then arrives, and once their events are applied again from what
    /// is stored (as the live thread does), equals the batch over everything; across a
    /// checkpoint too.
    #[test]
    fn a_capped_state_spills_and_reads_back_what_it_left(
        events in history().prop_shuffle(),
        split in any::<prop::sample::Index>(),
        cap in 0..3000usize,
        checkpoint_at in any::<prop::sample::Index>(),
    ) {
        let events = with_native_ids(events);
        let k = split.index(events.len() + 1);
        let (stored, rest) = events.split_at(k);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut live = rt.block_on(rebuilt(stored, None, cap));
        prop_assert!(live.sizes().pending_bytes <= cap);
        let checkpoint_at = checkpoint_at.index(rest.len() + 1);
        for (i, e) in rest.iter().enumerate() {
            if i == checkpoint_at {
                live = checkpoint_round_trip(&live);
                live.limit_pending(cap);
            }
            live.apply(e, &mut NoLookup).unwrap();
            prop_assert!(live.sizes().pending_bytes <= cap);
            let arrived = live.take_arrived();
            let applied = &events[..k + i + 1];
            for e in applied.iter().filter(|e| !matches!(e, Event::Click(_)) && arrived.iter().any(|c| c == e.cid())) {
                live.apply(e, &mut NoLookup).unwrap();
            }
        }
        prop_assert_eq!(live_rows(&live), rt.block_on(sql_stats(&events)));
    }
}
