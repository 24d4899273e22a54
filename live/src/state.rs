//! The streaming half of `stats_hourly`: an updating aggregate over event-time windows of one
//! hour on the click's time, keyed by the stats dimensions.
//!
//! Every event updates the state of its click ID and, through it, the window row of the click
//! (however old): the click's contribution to its row is recomputed from the click's own
//! events, and the difference is applied. Each change to a row is reported as a changelog
//! entry: [`Change::Append`] for a new row, [`Change::Update`] (old → new) and
//! [`Change::Retract`] when a row loses its last click. Windows are never closed: a refund for
//! a 90-day-old click updates that click's hour.
//!
//! The rules are exactly those of the SQL jobs (`sql/*.sql`), so the live rows equal a batch
//! recompute over the same raw events, to the cent: the earliest copy of a click, conversion or
//! refund wins (ties broken the same way), a refund links to the conversion its `ref` names or
//! else to the click's earliest conversion, and events of unknown clicks wait for their click.
//! Applying an event twice changes nothing, so replays are harmless.
//!
//! State, and what it costs:
//! - every click ID with a conversion or refund keeps its events (like the ingest dedup keys);
//! - other clicks are kept in an index only from the *horizon* day on (and always when their ID
//!   does not tell their day). An event for an older click is resolved through a
//!   [`ClickLookup`]: netrev click IDs carry their click time, so only that day's Parquet files
//!   are candidates. About 100–180 bytes per indexed click (see the README's figures).
//!
//! - hourly rows are held as such from the horizon day on; the hours of older days (*cold*)
//!   are held as the day's `stats_hourly` file (Parquet, a few bytes a row) plus the changes
//!   made since it was last written, and are decoded when read. Their sums by day, and by day
//!   and one dimension, stay in memory for every day.
//!
//! A live state starts from a batch recompute ([`LiveStats::from_session`]): the rows of
//! `stats_hourly` plus the per-click state, read from the same snapshot of the raw files.

use std::collections::BTreeMap;

// The state's maps and sets are hashbrown's with its default hasher (foldhash, seeded at random
// for each map) rather than std's SipHash, which took about a tenth of a restore from the
// checkpoint (profile of 2026-12-07). The seed stays random: click IDs are anyone's to send.
use hashbrown::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{
    DataType, Decimal128Type, Field, Int64Type, Schema, SchemaRef, TimestampMicrosecondType,
};
use bytes::Bytes;
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use rust_decimal::Decimal;

use netrev_storage::model::{self, date_of_micros};
use netrev_storage::{Click, Conversion, Event, Refund, RefundType, Table, clickid};

use crate::spill::SpillFilter;
use crate::{Error, Result};

/// Microseconds in an hour: the window size.
pub const HOUR_MICROS: i64 = 3_600_000_000;

/// A window: the hour of the click (start, microseconds since the epoch, UTC) and the
/// dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub hour: i64,
    pub source: Option<Arc<str>>,
    pub campaign: Option<Arc<str>>,
    pub link: Option<Arc<str>>,
    pub country: Option<Arc<str>>,
    pub device: Option<Arc<str>>,
}

/// A dimension value as a [`WindowKey`] holds it.
pub fn text(s: Option<&str>) -> Option<Arc<str>> {
    s.map(Arc::from)
}

impl WindowKey {
    /// The UTC day of the window, which names its `stats_hourly` partition.
    pub fn date(&self) -> NaiveDate {
        date_of_micros(self.hour)
    }
}

/// The additive measures of a `stats_hourly` row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measures {
    pub clicks: i64,
    pub cost: Decimal,
    pub conversions: i64,
    pub gross_revenue: Decimal,
    pub refunds: i64,
    pub refund_amount: Decimal,
    pub chargebacks: i64,
    pub chargeback_amount: Decimal,
    pub refunded_conversions: i64,
}

impl Measures {
    /// Adds `o` (`sign` 1) or takes it away (`sign` -1).
    pub fn add(&mut self, o: &Measures, sign: i64) {
        let d = Decimal::from(sign);
        self.clicks += sign * o.clicks;
        self.cost += d * o.cost;
        self.conversions += sign * o.conversions;
        self.gross_revenue += d * o.gross_revenue;
        self.refunds += sign * o.refunds;
        self.refund_amount += d * o.refund_amount;
        self.chargebacks += sign * o.chargebacks;
        self.chargeback_amount += d * o.chargeback_amount;
        self.refunded_conversions += sign * o.refunded_conversions;
    }
}

/// One change to the served rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Append(WindowKey, Measures),
    Update(WindowKey, Measures, Measures),
    Retract(WindowKey, Measures),
    /// A change to a row of a day before the horizon, whose value is not held as such: what
    /// is added to it (the row is gone once its clicks are 0).
    Delta(WindowKey, Measures),
}

impl Change {
    pub fn key(&self) -> &WindowKey {
        match self {
            Change::Append(k, _)
            | Change::Update(k, _, _)
            | Change::Retract(k, _)
            | Change::Delta(k, _) => k,
        }
    }
}

/// What the stats table needs of a click: its window and cost (and its time, which orders
/// copies of one click ID), and its visitor, whose totals the webhooks report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickRow {
    pub window: WindowKey,
    pub ts: i64,
    pub cost: Decimal,
    pub vid: Arc<str>,
}

impl ClickRow {
    pub fn of(c: &Click) -> Self {
        ClickRow {
            window: WindowKey {
                hour: c.ts - c.ts.rem_euclid(HOUR_MICROS),
                source: text(c.source.as_deref()),
                campaign: text(c.campaign.as_deref()),
                link: text(c.link.as_deref()),
                country: text(c.country.as_deref()),
                device: text(c.device.as_deref()),
            },
            ts: c.ts,
            cost: c.cost,
            vid: Arc::from(c.vid.as_str()),
        }
    }

    /// The order of `clicks_dedup.sql`: the smallest copy of a click ID wins.
    pub fn order(&self) -> impl Ord + '_ {
        let w = &self.window;
        (
            self.ts,
            &w.source,
            &w.campaign,
            &w.link,
            &w.country,
            &w.device,
            self.cost,
            &self.vid,
        )
    }
}

/// Finds the clicks the in-memory index does not hold (those of days before the horizon).
pub trait ClickLookup {
    /// The winning copy of click `cid` among the clicks of UTC day `day` in the snapshot the
    /// live state was built from; `None` when the snapshot has none.
    fn find(&mut self, cid: &str, day: NaiveDate) -> Result<Option<ClickRow>>;

    /// Looks in the raw files of a later snapshot from now on.
    fn refresh(&mut self, _files: &std::collections::HashSet<object_store::path::Path>) {}
}

/// A lookup for a state that holds every click (no horizon).
#[derive(Debug, Default)]
pub struct NoLookup;

impl ClickLookup for NoLookup {
    fn find(&mut self, _cid: &str, _day: NaiveDate) -> Result<Option<ClickRow>> {
        Ok(None)
    }
}

/// A click ID as a hash key: the 120 bits of a netrev ID, or the text of a foreign one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CidKey {
    Native(u128),
    Other(Box<str>),
}

impl CidKey {
    fn new(cid: &str) -> Self {
        match clickid::bits(cid) {
            Some(b) => CidKey::Native(b),
            None => CidKey::Other(cid.into()),
        }
    }

    /// The ID as the spill filter takes it: the same for every spelling of one ID.
    fn spill_id(&self) -> Vec<u8> {
        match self {
            CidKey::Native(b) => [&[self.kind() as u8][..], &b.to_le_bytes()].concat(),
            CidKey::Other(t) => [&[self.kind() as u8][..], t.as_bytes()].concat(),
        }
    }

    /// Which spill filter the ID goes to ([`Waiting::filters`]).
    fn kind(&self) -> usize {
        match self {
            CidKey::Native(_) => 0,
            CidKey::Other(_) => 1,
        }
    }

    /// The ID as text.
    fn text(&self) -> String {
        match self {
            CidKey::Native(bits) => clickid::from_bits(*bits),
            CidKey::Other(text) => text.to_string(),
        }
    }

    /// The day the ID says its click happened on (netrev IDs only).
    fn day(&self) -> Option<NaiveDate> {
        match self {
            CidKey::Native(b) => {
                let micros = i64::try_from(clickid::bits_millis(*b))
                    .ok()?
                    .checked_mul(1000)?;
                Some(date_of_micros(micros))
            }
            CidKey::Other(_) => None,
        }
    }
}

/// A click in the index: its interned window, time, cost and visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    window: u32,
    ts: i64,
    cost: Decimal,
    vid: Arc<str>,
}

/// A refund's deduplication key (docs/design.md §4): its txid, or without one (type, ref, amount).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RefundKey {
    Txid(String),
    Content(RefundType, Option<String>, Decimal),
}

impl RefundKey {
    fn of(r: &Refund) -> Self {
        match &r.txid {
            Some(t) => RefundKey::Txid(t.clone()),
            None => RefundKey::Content(r.kind, r.reference.clone(), r.amount.normalize()),
        }
    }
}

fn conversion_order(c: &Conversion) -> impl Ord + '_ {
    (c.ts, c.amount, &c.kind)
}

fn refund_order(r: &Refund) -> impl Ord + '_ {
    (r.ts, r.amount, r.kind.as_str(), &r.reference)
}

/// A click ID with conversions or refunds.
#[derive(Debug, Default)]
struct ClickState {
    /// The winning copy of the click; `None` while only its conversions or refunds are known.
    click: Option<Entry>,
    /// Winning copy per conversion key (txid; `None` is the one txid-less conversion).
    conversions: HashMap<Option<String>, Conversion>,
    refunds: HashMap<RefundKey, Refund>,
    /// What this click currently adds to its window row.
    contribution: Option<(u32, Measures)>,
    /// What it currently adds to its visitor's totals.
    credited: Option<(Arc<str>, VisitorTotals)>,
}

/// A visitor's money so far: the conversions and refunds of all their clicks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VisitorTotals {
    pub gross: Decimal,
    pub refunds: Decimal,
}

impl VisitorTotals {
    pub fn net(&self) -> Decimal {
        self.gross - self.refunds
    }
}

/// Where the live state hands what it attributes (the webhooks). Called on the live thread,
/// in the order the events were acknowledged; an error makes the caller offer the same
/// events again on its next turn, so an implementation must accept repeats.
pub trait AttributionSink: Send + Sync {
    /// Accepts `events` (durably, when it must not lose them, before returning).
    fn attributed(
        &self,
        events: &[Attributed],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// A conversion or refund that has just been attributed to its click: when it arrives for a
/// known click, or when its click arrives after it. Each is reported once per state (a
/// retried postback, or a copy that loses to an earlier one, is not reported again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributed {
    /// The conversion or refund (the winning copy).
    pub event: Event,
    /// Its click: the window (hour and dimensions), time and visitor.
    pub window: WindowKey,
    pub click_ts: i64,
    pub vid: Arc<str>,
    /// The visitor's totals once the event is counted.
    pub visitor: VisitorTotals,
}

fn click_only(e: &Entry) -> Measures {
    Measures {
        clicks: 1,
        cost: e.cost,
        ..Measures::default()
    }
}

impl ClickState {
    /// The conversions, then the refunds, of the click ID, each in time order.
    fn events(&self) -> Vec<Event> {
        let mut conversions: Vec<&Conversion> = self.conversions.values().collect();
        conversions.sort_by(|a, b| {
            (a.ts, &a.txid, conversion_order(a)).cmp(&(b.ts, &b.txid, conversion_order(b)))
        });
        let mut refunds: Vec<&Refund> = self.refunds.values().collect();
        refunds.sort_by(|a, b| (refund_order(a), &a.txid).cmp(&(refund_order(b), &b.txid)));
        conversions
            .into_iter()
            .map(|c| Event::Conversion(c.clone()))
            .chain(refunds.into_iter().map(|r| Event::Refund(r.clone())))
            .collect()
    }

    /// What the click adds to its visitor's totals, given its contribution.
    fn credit(&self) -> Option<(Arc<str>, VisitorTotals)> {
        let (c, (_, m)) = (self.click.as_ref()?, self.contribution.as_ref()?);
        Some((
            c.vid.clone(),
            VisitorTotals {
                gross: m.gross_revenue,
                refunds: m.refund_amount,
            },
        ))
    }

    /// The click's contribution to its window row, from its own events.
    fn contribution(&self) -> Option<(u32, Measures)> {
        let c = self.click.as_ref()?;
        let mut m = click_only(c);
        m.conversions = self.conversions.len() as i64;
        m.gross_revenue = self.conversions.values().map(|v| v.amount).sum();
        // The click's earliest conversion, by (ts, txid) with a missing txid first.
        let earliest = self
            .conversions
            .values()
            .min_by(|a, b| (a.ts, &a.txid).cmp(&(b.ts, &b.txid)));
        let mut refunded: Vec<&Option<String>> = Vec::new();
        for r in self.refunds.values() {
            m.refunds += 1;
            m.refund_amount += r.amount;
            if r.kind == RefundType::Chargeback {
                m.chargebacks += 1;
                m.chargeback_amount += r.amount;
            }
            let by_ref = r
                .reference
                .as_ref()
                .and_then(|x| self.conversions.get(&Some(x.clone())));
            if let Some(v) = by_ref.or(earliest)
                && !refunded.contains(&&v.txid)
            {
                refunded.push(&v.txid);
            }
        }
        m.refunded_conversions = refunded.len() as i64;
        Some((c.window, m))
    }
}

/// The events waiting for a click not known yet (click states without their click), held in
/// memory up to a cap; beyond it they are left to the raw files (*spilled*), their click IDs
/// noted in a [`SpillFilter`], and read back from the files when their click arrives.
#[derive(Debug)]
struct Waiting {
    /// The estimated memory of the waiting click states ([`waiting_bytes`]).
    bytes: usize,
    cap: usize,
    /// Events left to the raw files (a repeat counts again), by the kind of their click ID.
    spilled: [u64; 2],
    /// The click IDs of the events left to the raw files: netrev-shaped IDs apart from
    /// others, so that a flood of made-up foreign IDs does not raise the false "maybe"s for
    /// other nodes' netrev clicks. Only clicks from raw files ask ([`LiveStats::apply_logged`]),
    /// so a false "maybe" costs a read of the files at a recompute, never on this node's own
    /// clicks.
    filters: [Option<SpillFilter>; 2],
    /// Click IDs whose click arrived while events of theirs may have been spilled.
    arrived: Vec<String>,
    /// Set while an event of this node's own log is applied ([`LiveStats::apply_logged`]).
    logged: bool,
}

impl Waiting {
    /// Whether `bytes` more fit under the cap.
    fn room(&self, bytes: usize) -> bool {
        self.bytes.saturating_add(bytes) <= self.cap
    }
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            bytes: 0,
            cap: usize::MAX,
            spilled: [0; 2],
            filters: [None, None],
            arrived: Vec::new(),
            logged: false,
        }
    }
}

/// The memory of a click state, its map slot and key, beyond its events (measured with 100k
/// conversions of unknown clicks: see `bench/live`).
const STATE_BYTES: usize = 2 * size_of::<(CidKey, ClickState)>();

fn text_len(t: &Option<String>) -> usize {
    t.as_ref().map_or(0, String::len)
}

/// The memory of one conversion in a click state: its map slot (a map's first allocation
/// has four, and maps grow by doubling: about three per event for the one or two a click
/// usually has) and text.
fn conversion_bytes(c: &Conversion) -> usize {
    3 * size_of::<(Option<String>, Conversion)>()
        + c.cid.len()
        + 2 * text_len(&c.txid)
        + text_len(&c.kind)
}

/// The memory of one refund in a click state.
fn refund_bytes(r: &Refund) -> usize {
    3 * size_of::<(RefundKey, Refund)>()
        + r.cid.len()
        + 2 * text_len(&r.txid)
        + 2 * text_len(&r.reference)
}

fn event_bytes(event: &Event) -> usize {
    match event {
        Event::Click(_) => 0,
        Event::Conversion(c) => conversion_bytes(c),
        Event::Refund(r) => refund_bytes(r),
    }
}

/// The estimated memory a click state without its click takes (counted against the cap).
fn waiting_bytes(key: &CidKey, s: &ClickState) -> usize {
    let key_text = match key {
        CidKey::Other(t) => t.len(),
        CidKey::Native(_) => 0,
    };
    STATE_BYTES
        + key_text
        + s.conversions.values().map(conversion_bytes).sum::<usize>()
        + s.refunds.values().map(refund_bytes).sum::<usize>()
}

/// How much a live state holds, for the memory figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sizes {
    /// Clicks without conversions or refunds held in memory.
    pub indexed_clicks: usize,
    /// Click IDs with conversions or refunds.
    pub click_states: usize,
    /// Rows of `stats_hourly` held as such (from the horizon day on).
    pub rows: usize,
    /// Days before the horizon whose hourly rows are held encoded, and their bytes.
    pub cold_days: usize,
    pub cold_bytes: usize,
    /// Visitors with money, whose totals are kept for the webhooks.
    pub visitors: usize,
    /// Estimated memory of the events waiting for a click not known yet (at most
    /// `--live-pending-max-mib`).
    pub pending_bytes: usize,
    /// Times an event of an unknown click was left to the raw files (a repeat counts again;
    /// kept by the checkpoint, counted anew by a full recompute).
    pub spilled_events: u64,
}

/// Keys numbered in the order first seen; the key → number map holds only numbers, hashed by
/// their key (no second copy of the keys).
#[derive(Debug, Default)]
struct Interner {
    keys: Vec<WindowKey>,
    ids: hashbrown::HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Interner {
    /// The number of `key`, and whether it is new.
    fn id(&mut self, key: &WindowKey) -> (u32, bool) {
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        if let Some(&id) = self.ids.find(hash, |&id| keys[id as usize] == *key) {
            return (id, false);
        }
        let id = u32::try_from(self.keys.len()).expect("fewer than 2^32 windows");
        self.keys.push(key.clone());
        let (keys, hasher) = (&self.keys, &self.hasher);
        self.ids
            .insert_unique(hash, id, |&i| hasher.hash_one(&keys[i as usize]));
        (id, true)
    }
}

/// Microseconds in a day.
const DAY_MICROS: i64 = 24 * HOUR_MICROS;

/// The start of the UTC day of `micros`.
fn day_of(micros: i64) -> i64 {
    micros - micros.rem_euclid(DAY_MICROS)
}

/// The hourly rows of a UTC day before the horizon (a *cold* day): its `stats_hourly` file
/// as written (Parquet: a few bytes a row, against hundreds for a row in a map) and what was
/// added to its rows since, until the day's partition is written from both
/// ([`LiveStats::settle_cold`]).
#[derive(Debug, Default, Clone)]
struct ColdDay {
    /// `None`: the day had no rows.
    encoded: Option<Bytes>,
    deltas: HashMap<WindowKey, Measures>,
}

impl ColdDay {
    /// A day as its file holds it, with no changes since.
    fn written(encoded: Option<Bytes>) -> Self {
        ColdDay {
            encoded,
            deltas: HashMap::new(),
        }
    }

    /// The day's rows, in key order (the order of its file).
    fn rows(&self) -> Result<Vec<(WindowKey, Measures)>> {
        let mut rows = match &self.encoded {
            Some(bytes) => decode_stats(bytes)?,
            None => Vec::new(),
        };
        if !self.deltas.is_empty() {
            let mut at: HashMap<&WindowKey, usize> = HashMap::with_capacity(rows.len());
            for (i, (k, _)) in rows.iter().enumerate() {
                at.insert(k, i);
            }
            let mut added = Vec::new();
            let mut changed = Vec::new();
            for (k, d) in &self.deltas {
                match at.get(k) {
                    Some(&i) => changed.push((i, d)),
                    None => added.push((k.clone(), d.clone())),
                }
            }
            drop(at);
            for (i, d) in changed {
                rows[i].1.add(d, 1);
            }
            rows.extend(added);
            rows.retain(|(_, m)| m.clicks != 0);
            rows.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(rows)
    }

    fn bytes(&self) -> usize {
        self.encoded.as_ref().map_or(0, Bytes::len)
    }
}

/// The hours in `[from, to)` of a day before the horizon, apart from the state
/// ([`LiveStats::cold_between`]).
#[derive(Debug)]
pub struct ColdHours {
    day: ColdDay,
    from: i64,
    to: i64,
}

impl ColdHours {
    /// Its rows, decoded (a few milliseconds for a day of tens of thousands of rows), in hour
    /// order.
    pub fn rows(&self) -> Result<Vec<(WindowKey, Measures)>> {
        let mut rows = self.day.rows()?;
        rows.retain(|(k, _)| (self.from..self.to).contains(&k.hour));
        rows.sort_by_key(|(k, _)| k.hour);
        Ok(rows)
    }
}

/// The rows of a `stats_hourly` file's bytes.
fn decode_stats(bytes: &Bytes) -> Result<Vec<(WindowKey, Measures)>> {
    let bad = |e: parquet::errors::ParquetError| {
        Error::DataRoot(format!("the rows of a day before the horizon: {e}"))
    };
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .map_err(bad)?
            .build()
            .map_err(bad)?;
    let mut rows = Vec::new();
    for batch in reader {
        rows.extend(stats_rows(&batch?)?);
    }
    Ok(rows)
}

/// `rows` (in key order) as the bytes of a `stats_hourly` file; `None` without rows.
fn encode_stats(rows: &[(WindowKey, Measures)]) -> Result<Option<Bytes>> {
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(netrev_storage::store::encode_parquet(&[
        stats_batch(rows)?,
    ])?))
}

/// A dimension value as a [`WindowKey`] holds it.
pub type Dimension = Option<Arc<str>>;

/// Reads one dimension of a window.
pub type DimensionOf = fn(&WindowKey) -> &Dimension;

/// The dimensions of a window, in `WindowKey` order.
pub const DIMENSIONS: [DimensionOf; 5] = [
    |k| &k.source,
    |k| &k.campaign,
    |k| &k.link,
    |k| &k.country,
    |k| &k.device,
];

/// The live `stats_hourly`.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Every window seen, by id; its dimension values shared through `strings`.
    windows: Interner,
    /// Distinct dimension values.
    strings: HashSet<Arc<str>>,
    /// Rows by (hour, window) from the horizon day on (every row without a horizon): in time
    /// order, so a day or a range of days is read alone.
    rows: BTreeMap<(i64, u32), Measures>,
    /// The same rows summed by UTC day (a [`WindowKey`] whose `hour` is the day's start), for
    /// reads that do not need hours: usually many times fewer rows.
    days: Interner,
    day_rows: BTreeMap<(i64, u32), Measures>,
    /// The day key of each window.
    window_day: Vec<u32>,
    /// The hourly rows of the days before the horizon, by day start (`rows` holds the
    /// others).
    cold: BTreeMap<i64, ColdDay>,
    /// The day rows summed again over all dimensions but one (source, campaign, link,
    /// country, device): what a read that groups or filters by at most one dimension needs,
    /// a few rows per day.
    by_dimension: [BTreeMap<(i64, Dimension), Measures>; 5],
    /// Clicks without conversions or refunds.
    index: HashMap<CidKey, Entry>,
    /// Click IDs with conversions or refunds.
    states: HashMap<CidKey, ClickState>,
    /// The totals of every visitor with money (the sum of their clicks' credits).
    visitors: HashMap<Arc<str>, VisitorTotals>,
    /// Native clicks of days before this one may be found only through the lookup.
    horizon: Option<NaiveDate>,
    /// The start of the first day whose hourly rows are in `rows` (those of the days before
    /// it are in `cold`): the horizon's, once the rows of the days before it are encoded
    /// (until then, an earlier day's; `None`: every row in `rows`).
    hot_from: Option<i64>,
    /// The events waiting for their click: how much memory they take, and those spilled.
    waiting: Waiting,
}

impl LiveStats {
    /// An empty state holding every click in memory.
    pub fn new() -> Self {
        Self::default()
    }

    fn intern(&mut self, w: WindowKey) -> u32 {
        if let (id, false) = self.windows.id(&w) {
            return id;
        }
        // New: share its strings (the interner keeps the first copy of the key, so replace it).
        let w = self.share(w);
        let id = u32::try_from(self.windows.keys.len() - 1).expect("fewer than 2^32 windows");
        let day = self.day_id(&w);
        self.windows.keys[id as usize] = w;
        self.window_day.push(day);
        id
    }

    /// `w` with its dimension values shared with the state's other keys.
    fn share(&mut self, w: WindowKey) -> WindowKey {
        let mut share = |s: Option<Arc<str>>| {
            s.map(|s| match self.strings.get(&s) {
                Some(known) => known.clone(),
                None => {
                    self.strings.insert(s.clone());
                    s
                }
            })
        };
        WindowKey {
            hour: w.hour,
            source: share(w.source),
            campaign: share(w.campaign),
            link: share(w.link),
            country: share(w.country),
            device: share(w.device),
        }
    }

    /// The day key of window `w` (whose strings are shared).
    fn day_id(&mut self, w: &WindowKey) -> u32 {
        let day = WindowKey {
            hour: day_of(w.hour),
            ..w.clone()
        };
        self.days.id(&day).0
    }

    /// Adds `m` (`sign` 1) to or takes it from the day rows of window `w`.
    fn add_to_day(&mut self, w: u32, m: &Measures, sign: i64) {
        self.add_to_day_id(self.window_day[w as usize], m, sign);
    }

    /// Adds `m` (`sign` 1) to or takes it from the day rows of day key `d`.
    fn add_to_day_id(&mut self, d: u32, m: &Measures, sign: i64) {
        let day = &self.days.keys[d as usize];
        let key = (day.hour, d);
        let row = self.day_rows.entry(key).or_default();
        row.add(m, sign);
        if row.clicks == 0 {
            self.day_rows.remove(&key);
        }
        for (i, value) in DIMENSIONS.iter().map(|f| f(day)).enumerate() {
            let key = (day.hour, value.clone());
            let row = self.by_dimension[i].entry(key.clone()).or_default();
            row.add(m, sign);
            if row.clicks == 0 {
                self.by_dimension[i].remove(&key);
            }
        }
    }

    fn entry(&mut self, row: ClickRow) -> Entry {
        Entry {
            window: self.intern(row.window),
            ts: row.ts,
            cost: row.cost,
            vid: row.vid,
        }
    }

    /// Moves a click's credit to its visitor's totals from `old` to `new`.
    fn credit(
        &mut self,
        old: Option<(Arc<str>, VisitorTotals)>,
        new: Option<(Arc<str>, VisitorTotals)>,
    ) {
        if old == new {
            return;
        }
        if let Some((vid, t)) = old
            && let Some(v) = self.visitors.get_mut(&vid)
        {
            v.gross -= t.gross;
            v.refunds -= t.refunds;
            if v.gross.is_zero() && v.refunds.is_zero() {
                self.visitors.remove(&vid);
            }
        }
        if let Some((vid, t)) = new
            && !(t.gross.is_zero() && t.refunds.is_zero())
        {
            let v = self.visitors.entry(vid).or_default();
            v.gross += t.gross;
            v.refunds += t.refunds;
        }
    }

    /// A visitor's totals as the state holds them now.
    pub fn visitor(&self, vid: &str) -> VisitorTotals {
        self.visitors.get(vid).copied().unwrap_or_default()
    }

    /// An event the state already holds, as attributed: a conversion or refund (the copy the
    /// state holds) when its click is known, or for a click, every conversion and refund of its
    /// click ID; the visitor's totals are those of now. Nothing for events the state does not
    /// hold or whose click it does not know. For announcing events again after a crash, when
    /// it is not known whether they were.
    pub fn attributions_of(&self, event: &Event) -> Vec<Attributed> {
        let key = CidKey::new(event.cid());
        let mut out = Vec::new();
        let Some(state) = self.states.get(&key) else {
            return out;
        };
        let held = match event {
            Event::Click(_) => state.events(),
            Event::Conversion(c) => state
                .conversions
                .get(&c.txid)
                .map(|c| Event::Conversion(c.clone()))
                .into_iter()
                .collect(),
            Event::Refund(r) => state
                .refunds
                .get(&RefundKey::of(r))
                .map(|r| Event::Refund(r.clone()))
                .into_iter()
                .collect(),
        };
        self.announce(&key, held, &mut out);
        out
    }

    /// Reports `events` of the click ID `key` as attributed to its click.
    fn announce(&self, key: &CidKey, events: Vec<Event>, out: &mut Vec<Attributed>) {
        let Some(click) = self.states.get(key).and_then(|s| s.click.as_ref()) else {
            return;
        };
        let visitor = self.visitor(&click.vid);
        for event in events {
            out.push(Attributed {
                event,
                window: self.windows.keys[click.window as usize].clone(),
                click_ts: click.ts,
                vid: click.vid.clone(),
                visitor,
            });
        }
    }

    /// Whether copy `new` of a click beats copy `old`.
    fn wins(&self, new: &Entry, old: &Entry) -> bool {
        fn order<'a>(keys: &'a [WindowKey], e: &'a Entry) -> impl Ord + 'a {
            let w = &keys[e.window as usize];
            (
                e.ts,
                &w.source,
                &w.campaign,
                &w.link,
                &w.country,
                &w.device,
                e.cost,
                &e.vid,
            )
        }
        order(&self.windows.keys, new) < order(&self.windows.keys, old)
    }

    /// The click of `key` from the lookup, when its day is before the horizon.
    fn looked_up(
        &mut self,
        key: &CidKey,
        cid: &str,
        lookup: &mut dyn ClickLookup,
    ) -> Result<Option<Entry>> {
        let (Some(h), Some(day)) = (self.horizon, key.day()) else {
            return Ok(None);
        };
        if day >= h {
            return Ok(None);
        }
        Ok(lookup.find(cid, day)?.map(|row| self.entry(row)))
    }

    /// Applies one raw event; returns the changes to the rows (possibly none: a duplicate, or
    /// an event whose click is not known yet). On an error (a failed lookup) nothing changed
    /// and the event can be applied again.
    pub fn apply(&mut self, event: &Event, lookup: &mut dyn ClickLookup) -> Result<Vec<Change>> {
        self.apply_with(event, lookup, &mut Vec::new())
    }

    /// [`LiveStats::apply_with`] for an event of this node's own write-ahead log, applied as
    /// it is logged to a state that took every event logged before it. A click there was
    /// issued by this node just before it was logged: no conversion or refund of its click ID
    /// can have reached the state before it, so none can have been spilled, and the spill
    /// filters are not asked (a flood of spilled click IDs does not make this node's own
    /// clicks read the files). Anything else goes through `apply_with`: clicks from raw files
    /// (other nodes, imports), and the log's events replayed into a state built from a
    /// snapshot, which may hold another node's conversion of such a click.
    pub fn apply_logged(
        &mut self,
        event: &Event,
        lookup: &mut dyn ClickLookup,
        attributed: &mut Vec<Attributed>,
    ) -> Result<Vec<Change>> {
        self.waiting.logged = true;
        let applied = self.apply_with(event, lookup, attributed);
        self.waiting.logged = false;
        applied
    }

    /// [`LiveStats::apply`], also adding to `attributed` the conversions and refunds the event
    /// attributed to their click (the event itself, or those waiting for the click it is).
    pub fn apply_with(
        &mut self,
        event: &Event,
        lookup: &mut dyn ClickLookup,
        attributed: &mut Vec<Attributed>,
    ) -> Result<Vec<Change>> {
        let cid = event.cid();
        let key = CidKey::new(cid);
        if let Event::Click(c) = event {
            let new = self.entry(ClickRow::of(c));
            if self.states.contains_key(&key) {
                let wins = match &self.states[&key].click {
                    Some(old) => self.wins(&new, old),
                    None => true,
                };
                if !wins {
                    return Ok(Vec::new());
                }
                let waiting = self.states[&key].click.is_none();
                if waiting {
                    let bytes = waiting_bytes(&key, &self.states[&key]);
                    self.waiting.bytes = self.waiting.bytes.saturating_sub(bytes);
                    self.arrived(&key, cid);
                }
                let state = self.states.get_mut(&key).expect("checked");
                state.click = Some(new);
                let changes = self.refresh(&key);
                if waiting {
                    let events = self.states[&key].events();
                    self.announce(&key, events, attributed);
                }
                return Ok(changes);
            }
            let old = match self.index.get(&key) {
                Some(e) => Some(e.clone()),
                None => self.looked_up(&key, cid, lookup)?,
            };
            if let Some(old) = &old
                && !self.wins(&new, old)
            {
                return Ok(Vec::new());
            }
            if old.is_none() {
                self.arrived(&key, cid);
            }
            let mut changes = Vec::new();
            if let Some(old) = &old {
                self.remove(old.window, &click_only(old), &mut changes);
            }
            self.insert(new.window, &click_only(&new), &mut changes);
            self.index.insert(key, new);
            return Ok(changes);
        }
        // The waiting memory of the click ID's state before the event (none when it has its
        // click); an event that would take it past the cap is spilled.
        let mut before = 0;
        if !self.states.contains_key(&key) {
            let click = match self.index.get(&key) {
                Some(e) => Some(e.clone()),
                None => self.looked_up(&key, cid, lookup)?,
            };
            if click.is_none() && self.admit_waiting(&key, event).is_none() {
                return Ok(Vec::new());
            }
            self.index.remove(&key);
            let contribution = click.as_ref().map(|e| (e.window, click_only(e)));
            self.states.insert(
                key.clone(),
                ClickState {
                    click,
                    contribution,
                    ..ClickState::default()
                },
            );
        } else if self.states[&key].click.is_none() {
            if self.admit_waiting(&key, event).is_none() {
                return Ok(Vec::new());
            }
            before = waiting_bytes(&key, &self.states[&key]);
        }
        let state = self.states.get_mut(&key).expect("inserted above");
        // Whether the event changed the state, and whether it is a new one (not an earlier
        // copy of one already held, which was reported then).
        let (changed, new) = match event {
            Event::Click(_) => unreachable!("handled above"),
            Event::Conversion(c) => match state.conversions.get(&c.txid) {
                Some(old) if conversion_order(old) <= conversion_order(c) => (false, false),
                old => {
                    let new = old.is_none();
                    state.conversions.insert(c.txid.clone(), c.clone());
                    (true, new)
                }
            },
            Event::Refund(r) => {
                let k = RefundKey::of(r);
                match state.refunds.get(&k) {
                    Some(old) if refund_order(old) <= refund_order(r) => (false, false),
                    old => {
                        let new = old.is_none();
                        state.refunds.insert(k, r.clone());
                        (true, new)
                    }
                }
            }
        };
        if !changed {
            return Ok(Vec::new());
        }
        if state.click.is_none() {
            self.waiting.bytes = self.waiting.bytes - before + waiting_bytes(&key, state);
        }
        let changes = self.refresh(&key);
        if new {
            self.announce(&key, vec![event.clone()], attributed);
        }
        Ok(changes)
    }

    /// Recomputes the contribution of a click ID with state and applies the difference.
    fn refresh(&mut self, key: &CidKey) -> Vec<Change> {
        let state = self.states.get_mut(key).expect("a click state");
        let new = state.contribution();
        let old = std::mem::replace(&mut state.contribution, new.clone());
        let credit = state.credit();
        let credited = std::mem::replace(&mut state.credited, credit.clone());
        self.credit(credited, credit);
        let mut changes = Vec::new();
        match (old, new) {
            (Some((ow, om)), Some((nw, nm))) if ow == nw => {
                if om != nm {
                    let key = self.windows.keys[ow as usize].clone();
                    self.add_to_day(ow, &om, -1);
                    self.add_to_day(ow, &nm, 1);
                    if self.is_cold(key.hour) {
                        let mut delta = nm;
                        delta.add(&om, -1);
                        self.add_cold(key, delta, &mut changes);
                    } else {
                        let row = self
                            .rows
                            .get_mut(&(key.hour, ow))
                            .expect("a contributed row exists");
                        let before = row.clone();
                        row.add(&om, -1);
                        row.add(&nm, 1);
                        changes.push(Change::Update(key, before, row.clone()));
                    }
                }
            }
            (old, new) => {
                if let Some((ow, om)) = old {
                    self.remove(ow, &om, &mut changes);
                }
                if let Some((nw, nm)) = new {
                    self.insert(nw, &nm, &mut changes);
                }
            }
        }
        changes
    }

    /// Whether the row of `hour` is of a day before the horizon (held in [`ColdDay`]s).
    fn is_cold(&self, hour: i64) -> bool {
        hour < self.hot_from()
    }

    /// The start of the first day whose rows are held as such.
    fn hot_from(&self) -> i64 {
        self.hot_from.unwrap_or(i64::MIN)
    }

    /// Adds `delta` to the cold row `key`.
    fn add_cold(&mut self, key: WindowKey, delta: Measures, changes: &mut Vec<Change>) {
        let day = self.cold.entry(day_of(key.hour)).or_default();
        let row = day.deltas.entry(key.clone()).or_default();
        row.add(&delta, 1);
        if *row == Measures::default() {
            day.deltas.remove(&key);
        }
        changes.push(Change::Delta(key, delta));
    }

    fn remove(&mut self, w: u32, m: &Measures, changes: &mut Vec<Change>) {
        self.add_to_day(w, m, -1);
        let key = self.windows.keys[w as usize].clone();
        if self.is_cold(key.hour) {
            let mut delta = Measures::default();
            delta.add(m, -1);
            return self.add_cold(key, delta, changes);
        }
        let row = self
            .rows
            .get_mut(&(key.hour, w))
            .expect("a contributed row exists");
        let before = row.clone();
        row.add(m, -1);
        if row.clicks == 0 {
            self.rows.remove(&(key.hour, w));
            changes.push(Change::Retract(key, before));
        } else {
            changes.push(Change::Update(key, before, row.clone()));
        }
    }

    fn insert(&mut self, w: u32, m: &Measures, changes: &mut Vec<Change>) {
        self.add_to_day(w, m, 1);
        let key = self.windows.keys[w as usize].clone();
        if self.is_cold(key.hour) {
            return self.add_cold(key, m.clone(), changes);
        }
        match self.rows.get_mut(&(key.hour, w)) {
            Some(row) => {
                let before = row.clone();
                row.add(m, 1);
                changes.push(Change::Update(key, before, row.clone()));
            }
            None => {
                self.rows.insert((key.hour, w), m.clone());
                changes.push(Change::Append(key, m.clone()));
            }
        }
    }

    /// Every row, in hour order (the days before the horizon decoded).
    pub fn rows(&self) -> Result<Vec<(WindowKey, Measures)>> {
        let mut cold = Vec::new();
        Ok(self
            .rows_between(i64::MIN, i64::MAX, &mut cold)?
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect())
    }

    /// The rows of the hours in `[from, to)` (microseconds since the epoch), in hour order:
    /// those of days before the horizon are decoded into `cold` first (a few milliseconds a
    /// day), and come first.
    pub fn rows_between<'a>(
        &'a self,
        from: i64,
        to: i64,
        cold: &'a mut Vec<(WindowKey, Measures)>,
    ) -> Result<impl Iterator<Item = (&'a WindowKey, &'a Measures)>> {
        cold.clear();
        for day in self.cold_between(from, to) {
            cold.extend(day.rows()?);
        }
        Ok(cold
            .iter()
            .map(|(k, m)| (k, m))
            .chain(self.hot_rows_between(from, to)))
    }

    /// The rows held as such (of the days from the horizon on) of the hours in `[from, to)`,
    /// in hour order.
    pub fn hot_rows_between(
        &self,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = (&WindowKey, &Measures)> {
        self.rows
            .range((from.min(to), 0)..(to, 0))
            .map(|((_, w), m)| (&self.windows.keys[*w as usize], m))
    }

    /// The days before the horizon with hours in `[from, to)`, in day order: copies that share
    /// the state's bytes, to be decoded ([`ColdHours::rows`]) without holding the state.
    pub fn cold_between(&self, from: i64, to: i64) -> Vec<ColdHours> {
        let from = from.min(to);
        self.cold
            .range(from.saturating_sub(DAY_MICROS - 1)..to)
            .map(|(_, day)| ColdHours {
                day: day.clone(),
                from,
                to,
            })
            .collect()
    }

    /// The rows summed by UTC day and one dimension (`0` source, `1` campaign, `2` link,
    /// `3` country, `4` device) for the days starting in `[from, to)`, in day order: the day's
    /// start and the dimension's value.
    pub fn days_by_dimension(
        &self,
        dimension: usize,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = (i64, &Dimension, &Measures)> {
        let range = (from.min(to), None)..(to, None);
        self.by_dimension[dimension]
            .range(range)
            .map(|((day, v), m)| (*day, v, m))
    }

    /// The rows summed by UTC day for the days starting in `[from, to)` (microseconds since the
    /// epoch), in day order: each key's `hour` is its day's start.
    pub fn days_between(
        &self,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = (&WindowKey, &Measures)> {
        let range = (from.min(to), 0)..(to, 0);
        self.day_rows
            .range(range)
            .map(|((_, d), m)| (&self.days.keys[*d as usize], m))
    }

    /// The rows of one UTC day (one `stats_hourly` partition), in the order of the files.
    pub fn rows_of_date(&self, date: NaiveDate) -> Result<Vec<(WindowKey, Measures)>> {
        let start = netrev_storage::model::day_start_micros(date);
        if self.is_cold(start) {
            return self.cold.get(&start).map_or(Ok(Vec::new()), ColdDay::rows);
        }
        let mut out: Vec<(WindowKey, Measures)> = self
            .hot_rows_between(start, start + DAY_MICROS)
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Takes `encoded`, the bytes of the `stats_hourly` file just written for `date` from
    /// [`LiveStats::rows_of_date`] (`None`: none, the day has no rows), as the day's rows when
    /// it is before the horizon: what was added to them since they were last written is in
    /// it. The state must not have changed in between.
    pub fn settle_cold(&mut self, date: NaiveDate, encoded: Option<Bytes>) {
        let start = netrev_storage::model::day_start_micros(date);
        if !self.is_cold(start) {
            return;
        }
        match encoded {
            Some(_) => self.cold.insert(start, ColdDay::written(encoded)),
            None => self.cold.remove(&start),
        };
    }

    /// The rows of `date` as the bytes of its `stats_hourly` file, in the order of the files
    /// (the bytes held, for a day before the horizon without changes since); `None` without
    /// rows.
    pub fn encoded_date(&self, date: NaiveDate) -> Result<Option<Bytes>> {
        let start = netrev_storage::model::day_start_micros(date);
        if let Some(day) = self.cold.get(&start)
            && day.deltas.is_empty()
            && self.is_cold(start)
        {
            return Ok(day.encoded.clone());
        }
        encode_stats(&self.rows_of_date(date)?)
    }

    pub fn sizes(&self) -> Sizes {
        Sizes {
            indexed_clicks: self.index.len(),
            click_states: self.states.len(),
            rows: self.rows.len(),
            cold_days: self.cold.len(),
            cold_bytes: self.cold.values().map(ColdDay::bytes).sum(),
            visitors: self.visitors.len(),
            pending_bytes: self.waiting.bytes,
            spilled_events: self.waiting.spilled.iter().sum(),
        }
    }

    /// Whether `event`, of click ID `key` whose click is not known (no state yet, or a waiting
    /// one), fits under the cap of waiting events: the bytes it adds; `None` when it is
    /// spilled instead.
    fn admit_waiting(&mut self, key: &CidKey, event: &Event) -> Option<usize> {
        let base = match self.states.contains_key(key) {
            true => 0,
            false => waiting_bytes(key, &ClickState::default()),
        };
        let bytes = base + event_bytes(event);
        if self.waiting.room(bytes) {
            return Some(bytes);
        }
        self.spill(key, 1);
        None
    }

    /// Leaves `events` events of click ID `key` to the raw files.
    fn spill(&mut self, key: &CidKey, events: u64) {
        self.waiting.filters[key.kind()]
            .get_or_insert_with(SpillFilter::default)
            .insert(&key.spill_id());
        self.waiting.spilled[key.kind()] += events;
    }

    /// Notes that the click of `key` arrived, if events of its may have been spilled.
    fn arrived(&mut self, key: &CidKey, cid: &str) {
        if self.waiting.logged {
            return;
        }
        if let Some(f) = &self.waiting.filters[key.kind()]
            && f.may_hold(&key.spill_id())
        {
            self.waiting.arrived.push(cid.to_string());
        }
    }

    /// Holds the events waiting for a click not known yet in at most `cap` bytes (estimated)
    /// from now on: those beyond it, of the click IDs whose latest event is oldest first, are
    /// left to the raw files.
    pub fn limit_pending(&mut self, cap: usize) {
        self.waiting.cap = cap;
        if self.waiting.bytes <= cap {
            return;
        }
        let mut waiting: Vec<(i64, CidKey, usize, u64)> = self
            .states
            .iter()
            .filter(|(_, s)| s.click.is_none())
            .map(|(k, s)| {
                let latest = s
                    .conversions
                    .values()
                    .map(|c| c.ts)
                    .chain(s.refunds.values().map(|r| r.ts))
                    .max()
                    .unwrap_or(i64::MIN);
                let events = (s.conversions.len() + s.refunds.len()) as u64;
                (latest, k.clone(), waiting_bytes(k, s), events)
            })
            .collect();
        waiting.sort_unstable_by_key(|w| w.0);
        for (_, key, bytes, events) in waiting {
            if self.waiting.bytes <= cap {
                break;
            }
            self.states.remove(&key);
            self.waiting.bytes -= bytes;
            self.spill(&key, events);
        }
    }

    /// The click IDs whose click arrived while events of theirs may have been spilled (see
    /// [`LiveStats::limit_pending`]): the caller must apply their conversions and refunds
    /// again, from the raw files and the events not yet in one, for the state to hold them.
    pub fn take_arrived(&mut self) -> Vec<String> {
        std::mem::take(&mut self.waiting.arrived)
    }

    /// Whether [`LiveStats::take_arrived`] has any.
    pub fn has_arrived(&self) -> bool {
        !self.waiting.arrived.is_empty()
    }

    /// The live state of a batch recompute: `stats` are the rows of the `stats_hourly` view of
    /// `ctx` (already computed by the recompute), and the per-click state is read from the
    /// deduplicated views of the same session. Clicks without conversions or refunds of days
    /// before `horizon` are left to the lookup (which must read the same snapshot). The events
    /// waiting for a click not known yet are held up to `pending_max` bytes, in the order the
    /// session gives them (not newest first, as [`LiveStats::limit_pending`] keeps them), and
    /// the rest spilled, without all being held first: the click IDs of the events are read
    /// first, then the clicks, then the events.
    pub async fn from_session(
        ctx: &SessionContext,
        stats: &[RecordBatch],
        horizon: Option<NaiveDate>,
        pending_max: usize,
    ) -> Result<LiveStats> {
        let mut built = Builder::new(horizon);
        built.live.waiting.cap = pending_max;
        for batch in stats {
            built.rows(batch)?;
        }
        for sql in [
            "SELECT cid FROM conversions_dedup",
            "SELECT cid FROM refunds_dedup",
        ] {
            let mut cids = ctx.sql(sql).await?.execute_stream().await?;
            while let Some(batch) = cids.next().await {
                built.note_event_cids(&batch?)?;
            }
        }
        let mut clicks = ctx
            .sql(
                "SELECT cid, vid, ts, source, campaign, link, country, device, cost \
                 FROM clicks_dedup",
            )
            .await?
            .execute_stream()
            .await?;
        while let Some(batch) = clicks.next().await {
            built.clicks(&batch?)?;
        }
        // Every click with events has its state: the rest wait, up to the cap.
        built.noted = None;
        built.capped = true;
        for (sql, table) in [
            (
                r#"SELECT cid, ts, amount, txid, "type" FROM conversions_dedup"#,
                Table::Conversions,
            ),
            (
                r#"SELECT cid, ts, amount, txid, "type", "ref" FROM refunds_dedup"#,
                Table::Refunds,
            ),
        ] {
            let mut events = ctx.sql(sql).await?.execute_stream().await?;
            while let Some(batch) = events.next().await {
                built.events(table, &batch?)?;
            }
        }
        built.finish()
    }

    /// Hands the state to `sink` as record batches of about `chunk` rows, section by
    /// section: the hourly rows ([`stats_schema`]), then the conversions, the refunds and the
    /// clicks it holds (the columns of `conversions`, `refunds` and `clicks`), the winning copy
    /// of each, and what it spilled. [`Builder`] makes the same state of them again (a checkpoint).
    pub fn write_parts(
        &self,
        chunk: usize,
        sink: &mut dyn FnMut(Part, RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let hot = self
            .rows
            .iter()
            .map(|((_, w), m)| (&self.windows.keys[*w as usize], m));
        let cold_days = self.day_rows.range(..(self.hot_from(), 0));
        let cold_days = cold_days.map(|((_, d), m)| (&self.days.keys[*d as usize], m));
        for (part, rows) in [
            (Part::Rows, Box::new(hot) as Box<dyn Iterator<Item = _>>),
            (Part::Days, Box::new(cold_days)),
        ] {
            let mut batch = Vec::with_capacity(chunk);
            for (k, m) in rows {
                batch.push((k.clone(), m.clone()));
                if batch.len() == chunk {
                    sink(part, stats_batch(&std::mem::take(&mut batch))?)?;
                }
            }
            if !batch.is_empty() {
                sink(part, stats_batch(&batch)?)?;
            }
        }
        // The days before the horizon, a batch of at most 64 MiB at a time.
        let (mut days, mut encoded, mut bytes) = (Vec::new(), Vec::new(), 0);
        for &start in self.cold.keys() {
            if let Some(e) = self.encoded_date(date_of_micros(start))? {
                bytes += e.len();
                days.push(start);
                encoded.push(e);
            }
            if bytes >= 64 << 20 {
                sink(
                    Part::Cold,
                    cold_batch(&std::mem::take(&mut days), &encoded)?,
                )?;
                (encoded, bytes) = (Vec::new(), 0);
            }
        }
        if !days.is_empty() {
            sink(Part::Cold, cold_batch(&days, &encoded)?)?;
        }
        for (part, table) in [
            (Part::Conversions, Table::Conversions),
            (Part::Refunds, Table::Refunds),
        ] {
            let mut events = Vec::with_capacity(chunk);
            for s in self.states.values() {
                match table {
                    Table::Conversions => {
                        events.extend(s.conversions.values().map(|c| Event::Conversion(c.clone())))
                    }
                    _ => events.extend(s.refunds.values().map(|r| Event::Refund(r.clone()))),
                }
                if events.len() >= chunk {
                    sink(part, model::to_batch(table, &events)?)?;
                    events.clear();
                }
            }
            if !events.is_empty() {
                sink(part, model::to_batch(table, &events)?)?;
            }
        }
        let held = self.index.iter().chain(
            self.states
                .iter()
                .filter_map(|(k, s)| Some((k, s.click.as_ref()?))),
        );
        let mut clicks = Vec::with_capacity(chunk);
        for (key, entry) in held {
            clicks.push(Event::Click(self.click_of(key, entry)));
            if clicks.len() == chunk {
                sink(Part::Clicks, model::to_batch(Table::Clicks, &clicks)?)?;
                clicks.clear();
            }
        }
        if !clicks.is_empty() {
            sink(Part::Clicks, model::to_batch(Table::Clicks, &clicks)?)?;
        }
        let (mut kinds, mut filters, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for (kind, filter) in self.waiting.filters.iter().enumerate() {
            if let Some(filter) = filter {
                kinds.push(kind as i64);
                filters.push(filter.to_bytes());
                counts.push(i64::try_from(self.waiting.spilled[kind]).unwrap_or(i64::MAX));
            }
        }
        if !kinds.is_empty() {
            let filters: Vec<&[u8]> = filters.iter().map(Vec::as_slice).collect();
            let batch = RecordBatch::try_new(
                spilled_schema(),
                vec![
                    Arc::new(Int64Array::from(kinds)),
                    Arc::new(arrow::array::BinaryArray::from_vec(filters)),
                    Arc::new(Int64Array::from(counts)),
                ],
            )?;
            sink(Part::Spilled, batch)?;
        }
        Ok(())
    }

    /// The click an entry of the state holds, as a raw click (no subs: the stats do not read
    /// them).
    fn click_of(&self, key: &CidKey, e: &Entry) -> Click {
        let w = &self.windows.keys[e.window as usize];
        let text = |d: &Dimension| d.as_deref().map(str::to_owned);
        Click {
            cid: key.text(),
            vid: e.vid.to_string(),
            ts: e.ts,
            source: text(&w.source),
            campaign: text(&w.campaign),
            link: text(&w.link),
            country: text(&w.country),
            device: text(&w.device),
            cost: e.cost,
            subs: Default::default(),
        }
    }

    /// Whether a click without conversions or refunds stays in memory: always, unless the
    /// lookup can find it (a netrev ID of a day before the horizon, stored in that day).
    fn keeps(&self, key: &CidKey, ts: i64) -> bool {
        keeps(self.horizon, key, ts)
    }

    /// Moves the horizon on to `horizon` (never back): the clicks without conversions or
    /// refunds of the days before it leave memory, to be found through the lookup, whose
    /// snapshot must hold every click of those days.
    pub fn advance_horizon(&mut self, horizon: NaiveDate) {
        if self.horizon.is_none_or(|h| h >= horizon) {
            return;
        }
        self.horizon = Some(horizon);
        self.index.retain(|key, e| keeps(Some(horizon), key, e.ts));
        if let Err(e) = self.cool(netrev_storage::model::day_start_micros(horizon)) {
            // Only a row too large for Decimal(18,4) can fail to encode: the rows stay as
            // they are, held as such, and the next move of the horizon tries again.
            tracing::error!(error = %e, "encoding the hourly rows of days before the horizon failed");
        }
    }

    /// Encodes the hourly rows of the days before `hot_from` that are held as such (into
    /// [`ColdDay`]s), then forgets the windows nothing refers to any more. All or nothing.
    fn cool(&mut self, hot_from: i64) -> Result<()> {
        let mut cooled: BTreeMap<i64, Vec<(WindowKey, Measures)>> = BTreeMap::new();
        for ((hour, w), m) in self.rows.range(..(hot_from, 0)) {
            cooled
                .entry(day_of(*hour))
                .or_default()
                .push((self.windows.keys[*w as usize].clone(), m.clone()));
        }
        // Encoded first, then taken: a failure leaves the state as it was.
        // (None of these days is cold yet: cold days are all before the old `hot_from`.)
        let mut encoded = Vec::with_capacity(cooled.len());
        for (start, mut rows) in cooled {
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            encoded.push((start, encode_stats(&rows)?));
        }
        for (start, encoded) in encoded {
            self.cold.insert(start, ColdDay::written(encoded));
        }
        self.rows = self.rows.split_off(&(hot_from, 0));
        self.hot_from = Some(hot_from);
        self.cold
            .retain(|_, d| d.encoded.is_some() || !d.deltas.is_empty());
        self.forget_windows();
        Ok(())
    }

    /// Renumbers the windows, keeping only those a row held as such or a click refers to.
    fn forget_windows(&mut self) {
        let mut used = vec![false; self.windows.keys.len()];
        for (_, w) in self.rows.keys() {
            used[*w as usize] = true;
        }
        for e in self.index.values() {
            used[e.window as usize] = true;
        }
        for s in self.states.values() {
            if let Some(e) = &s.click {
                used[e.window as usize] = true;
            }
            if let Some((w, _)) = &s.contribution {
                used[*w as usize] = true;
            }
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let old = std::mem::take(&mut self.windows);
        let old_day = std::mem::take(&mut self.window_day);
        let mut renumbered = vec![u32::MAX; old.keys.len()];
        for (i, key) in old.keys.into_iter().enumerate() {
            if used[i] {
                let (id, _) = self.windows.id(&key);
                renumbered[i] = id;
                self.window_day.push(old_day[i]);
            }
        }
        let new = |w: &mut u32| *w = renumbered[*w as usize];
        self.rows = std::mem::take(&mut self.rows)
            .into_iter()
            .map(|((hour, w), m)| ((hour, renumbered[w as usize]), m))
            .collect();
        for e in self.index.values_mut() {
            new(&mut e.window);
        }
        for s in self.states.values_mut() {
            if let Some(e) = &mut s.click {
                new(&mut e.window);
            }
            if let Some((w, _)) = &mut s.contribution {
                new(w);
            }
        }
    }

    /// The day before which clicks are left to the lookup.
    pub fn horizon(&self) -> Option<NaiveDate> {
        self.horizon
    }
}

/// The sections of a state handed out by [`LiveStats::write_parts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Hourly rows from the horizon day on ([`stats_schema`]).
    Rows,
    /// The day sums of the days before it ([`stats_schema`], `hour` the day's start).
    Days,
    /// Their hourly rows, encoded by day ([`cold_schema`]).
    Cold,
    Conversions,
    Refunds,
    Clicks,
    /// What it left to the raw files ([`spilled_schema`]): a row per kind of click ID.
    Spilled,
}

/// The section of the encoded hourly rows of days before the horizon: per day, its start
/// (microseconds since the epoch) and its rows as a `stats_hourly` file.
pub fn cold_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("day", DataType::Int64, false),
        Field::new("encoded", DataType::Binary, false),
    ]))
}

fn cold_batch(days: &[i64], encoded: &[Bytes]) -> Result<RecordBatch> {
    let encoded: Vec<&[u8]> = encoded.iter().map(|b| b.as_ref()).collect();
    Ok(RecordBatch::try_new(
        cold_schema(),
        vec![
            Arc::new(Int64Array::from(days.to_vec())),
            Arc::new(arrow::array::BinaryArray::from_vec(encoded)),
        ],
    )?)
}

/// The section of a state's spilled events: per kind of click ID (0 netrev, 1 foreign), the
/// filter of their click IDs ([`SpillFilter::to_bytes`]) and how many there were.
pub fn spilled_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Int64, false),
        Field::new("filter", DataType::Binary, false),
        Field::new("events", DataType::Int64, false),
    ]))
}

/// Builds a live state from the rows of `stats_hourly`, the winning copies of the conversions
/// and refunds, and the clicks, as clicks are kept by whether their click ID has events: from a
/// checkpoint, the rows, the events, then the clicks ([`Builder::exact`]); from a recompute's
/// session, the rows, the events' click IDs, the clicks, then the events
/// ([`LiveStats::from_session`]).
pub struct Builder {
    live: LiveStats,
    /// Whether clicks the horizon leaves to the lookup are left out.
    sift: bool,
    /// A build from a recompute's session ([`LiveStats::from_session`]): the click IDs of every
    /// conversion and refund, noted before the clicks are taken, so that the clicks with
    /// events are known when the events come (and those waiting for a click not known yet
    /// are held up to the cap, the rest spilled, instead of all being held first).
    noted: Option<HashSet<CidKey>>,
    /// Whether the events given now are held up to the cap (those of click IDs without a
    /// click), after the clicks of a build with noted click IDs.
    capped: bool,
    /// The rows of days before the horizon, to be encoded by day: their batches
    /// ([`stats_schema`]) and, by day start, where each row is (batch, row).
    cold_batches: Vec<RecordBatch>,
    cold_rows: BTreeMap<i64, Vec<(u32, u32)>>,
}

impl Builder {
    /// Clicks without conversions or refunds of days before `horizon` will be left out (to the
    /// lookup).
    pub fn new(horizon: Option<NaiveDate>) -> Self {
        Builder {
            live: LiveStats {
                horizon,
                hot_from: horizon.map(netrev_storage::model::day_start_micros),
                ..LiveStats::default()
            },
            sift: true,
            noted: None,
            capped: false,
            cold_batches: Vec::new(),
            cold_rows: BTreeMap::new(),
        }
    }

    /// Every click given is kept (those a state held: it may hold old clicks that arrived
    /// after its lookup's snapshot).
    pub fn exact(horizon: Option<NaiveDate>) -> Self {
        Builder {
            sift: false,
            ..Builder::new(horizon)
        }
    }

    /// Takes the `stats_hourly` rows of `batch`: those of days before the horizon are added
    /// to the day sums now and encoded by day at [`Builder::finish`].
    pub fn rows(&mut self, batch: &RecordBatch) -> Result<()> {
        let live = &mut self.live;
        let hot_from = live.hot_from();
        let number = u32::try_from(self.cold_batches.len()).expect("fewer than 2^32 batches");
        let mut cold = false;
        for (r, (key, m)) in stats_rows(batch)?.into_iter().enumerate() {
            if key.hour < hot_from {
                let day = day_of(key.hour);
                let key = live.share(key);
                let d = live.day_id(&key);
                live.add_to_day_id(d, &m, 1);
                let row = u32::try_from(r).expect("fewer than 2^32 rows in a batch");
                self.cold_rows.entry(day).or_default().push((number, row));
                cold = true;
                continue;
            }
            let hour = key.hour;
            let w = live.intern(key);
            live.add_to_day(w, &m, 1);
            live.rows.insert((hour, w), m);
        }
        if cold {
            self.cold_batches.push(conform(batch)?);
        }
        Ok(())
    }

    /// Takes the day sums of the days before the horizon ([`Part::Days`]: `stats_hourly`
    /// rows whose `hour` is the day's start), whose hourly rows come encoded
    /// ([`Builder::cold`]).
    pub fn days(&mut self, batch: &RecordBatch) -> Result<()> {
        let live = &mut self.live;
        for (key, m) in stats_rows(batch)? {
            let key = live.share(key);
            let d = live.day_id(&key);
            live.add_to_day_id(d, &m, 1);
        }
        Ok(())
    }

    /// Takes the encoded hourly rows of days before the horizon ([`Part::Cold`]).
    pub fn cold(&mut self, batch: &RecordBatch) -> Result<()> {
        let bad =
            |what: &str| Error::DataRoot(format!("the rows of days before the horizon: {what}"));
        let (Some(days), Some(encoded)) = (
            batch
                .column_by_name("day")
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
            batch
                .column_by_name("encoded")
                .and_then(|c| c.as_binary_opt::<i32>()),
        ) else {
            return Err(bad("not the columns written"));
        };
        for r in 0..batch.num_rows() {
            let day = ColdDay::written(Some(Bytes::copy_from_slice(encoded.value(r))));
            if self.live.cold.insert(days.value(r), day).is_some() {
                return Err(bad("a day twice"));
            }
        }
        Ok(())
    }

    /// Notes the click IDs in `batch` (a `cid` column of the conversions or refunds to come),
    /// so that the clicks with events are known as they are taken.
    fn note_event_cids(&mut self, batch: &RecordBatch) -> Result<()> {
        let cids = batch
            .column_by_name("cid")
            .ok_or_else(|| Error::DataRoot("events without the column cid".into()))?;
        let cids = utf8(cids)?;
        let noted = self.noted.get_or_insert_with(HashSet::new);
        noted.extend(cids.as_string::<i32>().iter().flatten().map(CidKey::new));
        Ok(())
    }

    /// Takes the conversions or refunds (`table`) of `batch`: winning copies, one per key. In
    /// a build from a session, given after the clicks: those of click IDs without a click
    /// wait up to the cap, and the rest are spilled.
    pub fn events(&mut self, table: Table, batch: &RecordBatch) -> Result<()> {
        for e in netrev_storage::model::from_batch(table, batch)? {
            let key = CidKey::new(e.cid());
            if self.capped && self.live.states.get(&key).is_none_or(|s| s.click.is_none()) {
                // Winning copies, one per key: each adds its own size.
                match self.live.admit_waiting(&key, &e) {
                    Some(bytes) => self.live.waiting.bytes += bytes,
                    None => continue,
                }
            }
            let state = self.live.states.entry(key).or_default();
            match e {
                Event::Conversion(c) => {
                    state.conversions.insert(c.txid.clone(), c);
                }
                Event::Refund(r) => {
                    state.refunds.insert(RefundKey::of(&r), r);
                }
                Event::Click(_) => {}
            }
        }
        Ok(())
    }

    /// Takes the clicks of `batch` (winning copies, with at least the columns that
    /// [`ClickColumns`] reads) that the state keeps (all, when [`Builder::exact`]).
    pub fn clicks(&mut self, batch: &RecordBatch) -> Result<()> {
        let live = &mut self.live;
        let columns = ClickColumns::new(batch)?;
        for r in 0..columns.len() {
            let key = CidKey::new(columns.cid(r));
            // The dimension values as the state shares them: a few distinct ones for a
            // million clicks, so no string is made for each click.
            let row = columns.row_with(r, &mut |s| match live.strings.get(s) {
                Some(known) => known.clone(),
                None => {
                    let new: Arc<str> = Arc::from(s);
                    live.strings.insert(new.clone());
                    new
                }
            });
            let with_events = live.states.contains_key(&key)
                || self.noted.as_ref().is_some_and(|n| n.contains(&key));
            if self.sift && !with_events && !live.keeps(&key, row.ts) {
                continue;
            }
            let entry = live.entry(row);
            match with_events {
                true => live.states.entry(key).or_default().click = Some(entry),
                false => {
                    live.index.insert(key, entry);
                }
            }
        }
        Ok(())
    }

    /// The state, each click's contribution and its visitors' totals worked out.
    pub fn finish(self) -> Result<LiveStats> {
        let mut live = self.live;
        let batches: Vec<&RecordBatch> = self.cold_batches.iter().collect();
        for (day, at) in self.cold_rows {
            let at: Vec<(usize, usize)> = at
                .into_iter()
                .map(|(b, r)| (b as usize, r as usize))
                .collect();
            let rows = arrow::compute::interleave_record_batch(&batches, &at)?;
            let mut rows = stats_rows(&rows)?;
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(held) = live.cold.get(&day) {
                return Err(Error::DataRoot(format!(
                    "the rows of {} given both as rows and encoded ({} bytes)",
                    date_of_micros(day),
                    held.bytes()
                )));
            }
            live.cold
                .insert(day, ColdDay::written(encode_stats(&rows)?));
        }
        let mut credits = Vec::new();
        for state in live.states.values_mut() {
            state.contribution = state.contribution();
            state.credited = state.credit();
            credits.extend(state.credited.clone());
        }
        for credit in credits {
            live.credit(None, Some(credit));
        }
        live.waiting.bytes = live
            .states
            .iter()
            .filter(|(_, s)| s.click.is_none())
            .map(|(k, s)| waiting_bytes(k, s))
            .sum();
        live.forget_windows();
        Ok(live)
    }

    /// Takes what a state had spilled ([`spilled_schema`]), from its [`Part::Spilled`].
    pub fn spilled(&mut self, batch: &RecordBatch) -> Result<()> {
        let bad = |what: &str| Error::DataRoot(format!("spilled events: {what}"));
        let (Some(kinds), Some(filter), Some(events)) = (
            batch
                .column_by_name("kind")
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
            batch
                .column_by_name("filter")
                .and_then(|c| c.as_binary_opt::<i32>()),
            batch
                .column_by_name("events")
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
        ) else {
            return Err(bad("not the columns written"));
        };
        for r in 0..batch.num_rows() {
            let kind = match kinds.value(r) {
                k @ (0 | 1) => k as usize,
                other => return Err(bad(&format!("kind {other}"))),
            };
            let waiting = &mut self.live.waiting;
            if waiting.filters[kind].is_some() {
                return Err(bad(&format!("kind {kind} twice")));
            }
            let filter =
                SpillFilter::from_bytes(filter.value(r)).ok_or_else(|| bad("filter size"))?;
            waiting.filters[kind] = Some(filter);
            waiting.spilled[kind] = u64::try_from(events.value(r)).map_err(|_| bad("count"))?;
        }
        Ok(())
    }
}

fn keeps(horizon: Option<NaiveDate>, key: &CidKey, ts: i64) -> bool {
    match (horizon, key.day()) {
        (Some(h), Some(day)) => day >= h || date_of_micros(ts) != day,
        _ => true,
    }
}

/// The columns of clicks that the stats need (`cid`, `vid`, `ts`, the dimensions and `cost`, found by
/// name in a batch of `clicks` or `clicks_dedup`), read row by row.
pub struct ClickColumns {
    cids: ArrayRef,
    vids: ArrayRef,
    ts: TimestampMicrosecondArray,
    dims: Vec<ArrayRef>,
    cost: Decimal128Array,
}

impl ClickColumns {
    pub fn new(batch: &RecordBatch) -> Result<Self> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::DataRoot(format!("clicks without the column {name}")))
        };
        Ok(ClickColumns {
            cids: utf8(col("cid")?)?,
            vids: utf8(col("vid")?)?,
            ts: col("ts")?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| Error::DataRoot("clicks.ts is not a timestamp".into()))?
                .clone(),
            dims: ["source", "campaign", "link", "country", "device"]
                .into_iter()
                .map(|n| utf8(col(n)?))
                .collect::<Result<_>>()?,
            cost: arrow::compute::cast(col("cost")?, &netrev_storage::model::money_type())?
                .as_primitive::<Decimal128Type>()
                .clone(),
        })
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn cid(&self, r: usize) -> &str {
        self.cids.as_string::<i32>().value(r)
    }

    pub fn row(&self, r: usize) -> ClickRow {
        self.row_with(r, &mut |s| Arc::from(s))
    }

    /// Row `r` with its dimension values made by `text` (which may hand out copies it
    /// already holds instead of a new string for each click).
    fn row_with(&self, r: usize, text: &mut dyn FnMut(&str) -> Arc<str>) -> ClickRow {
        let mut dim = |i: usize| {
            let a = self.dims[i].as_string::<i32>();
            a.is_valid(r).then(|| text(a.value(r)))
        };
        let ts = self.ts.value(r);
        ClickRow {
            window: WindowKey {
                hour: ts - ts.rem_euclid(HOUR_MICROS),
                source: dim(0),
                campaign: dim(1),
                link: dim(2),
                country: dim(3),
                device: dim(4),
            },
            ts,
            cost: Decimal::from_i128_with_scale(self.cost.value(r), 4),
            vid: Arc::from(self.vids.as_string::<i32>().value(r)),
        }
    }
}

/// `batch`'s `stats_hourly` columns as [`stats_schema`] has them.
fn conform(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = stats_schema();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let c = batch.column_by_name(f.name()).ok_or_else(|| {
            Error::DataRoot(format!("stats_hourly rows without the column {}", f.name()))
        })?;
        columns.push(arrow::compute::cast(c, f.data_type())?);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn utf8(a: &arrow::array::ArrayRef) -> Result<arrow::array::ArrayRef> {
    Ok(arrow::compute::cast(a, &DataType::Utf8)?)
}

/// The rows of a `stats_hourly` batch (from the view or from its files).
pub fn stats_rows(batch: &RecordBatch) -> Result<Vec<(WindowKey, Measures)>> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::DataRoot(format!("stats_hourly rows without the column {name}")))
    };
    let hour = col("hour")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| Error::DataRoot("stats_hourly.hour is not a timestamp".into()))?
        .clone();
    let mut dims = Vec::new();
    for name in ["source", "campaign", "link", "country", "device"] {
        dims.push(utf8(col(name)?)?);
    }
    let dims: Vec<_> = dims.iter().map(|a| a.as_string::<i32>()).collect();
    let int = |name: &str| -> Result<arrow::array::Int64Array> {
        Ok(arrow::compute::cast(col(name)?, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .clone())
    };
    let money = |name: &str| -> Result<arrow::array::Decimal128Array> {
        Ok(
            arrow::compute::cast(col(name)?, &netrev_storage::model::money_type())?
                .as_primitive::<Decimal128Type>()
                .clone(),
        )
    };
    let (clicks, conversions, refunds, chargebacks, refunded) = (
        int("clicks")?,
        int("conversions")?,
        int("refunds")?,
        int("chargebacks")?,
        int("refunded_conversions")?,
    );
    let (cost, gross, refund_amount, chargeback_amount) = (
        money("cost")?,
        money("gross_revenue")?,
        money("refund_amount")?,
        money("chargeback_amount")?,
    );
    let dec = |a: &arrow::array::Decimal128Array, r: usize| {
        Decimal::from_i128_with_scale(if a.is_valid(r) { a.value(r) } else { 0 }, 4)
    };
    Ok((0..batch.num_rows())
        .map(|r| {
            let dim = |i: usize| dims[i].is_valid(r).then(|| Arc::from(dims[i].value(r)));
            let key = WindowKey {
                hour: hour.value(r),
                source: dim(0),
                campaign: dim(1),
                link: dim(2),
                country: dim(3),
                device: dim(4),
            };
            let m = Measures {
                clicks: clicks.value(r),
                cost: dec(&cost, r),
                conversions: conversions.value(r),
                gross_revenue: dec(&gross, r),
                refunds: refunds.value(r),
                refund_amount: dec(&refund_amount, r),
                chargebacks: chargebacks.value(r),
                chargeback_amount: dec(&chargeback_amount, r),
                refunded_conversions: refunded.value(r),
            };
            (key, m)
        })
        .collect())
}

/// The schema of a `stats_hourly` file (the view's columns without the partition's `date`).
pub fn stats_schema() -> SchemaRef {
    let text = |n: &str| Field::new(n, DataType::Utf8, true);
    let count = |n: &str| Field::new(n, DataType::Int64, false);
    let money = |n: &str| Field::new(n, netrev_storage::model::money_type(), false);
    Arc::new(Schema::new(vec![
        Field::new("hour", netrev_storage::model::ts_type(), true),
        text("source"),
        text("campaign"),
        text("link"),
        text("country"),
        text("device"),
        count("clicks"),
        money("cost"),
        count("conversions"),
        money("gross_revenue"),
        count("refunds"),
        money("refund_amount"),
        count("chargebacks"),
        money("chargeback_amount"),
        count("refunded_conversions"),
    ]))
}

/// `rows` as one batch of [`stats_schema`].
pub fn stats_batch(rows: &[(WindowKey, Measures)]) -> Result<RecordBatch> {
    let dim = |f: fn(&WindowKey) -> &Option<Arc<str>>| -> ArrayRef {
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(k, _)| f(k).as_deref()),
        ))
    };
    let count = |f: fn(&Measures) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, m)| f(m))))
    };
    let money = |f: fn(&Measures) -> Decimal| -> Result<ArrayRef> {
        let units = rows
            .iter()
            .map(|(_, m)| {
                netrev_storage::money::to_units(f(m))
                    .ok_or_else(|| Error::DataRoot(format!("{} does not fit Decimal(18,4)", f(m))))
            })
            .collect::<Result<Vec<i128>>>()?;
        Ok(Arc::new(
            Decimal128Array::from(units).with_data_type(netrev_storage::model::money_type()),
        ))
    };
    let hours = TimestampMicrosecondArray::from_iter_values(rows.iter().map(|(k, _)| k.hour))
        .with_timezone("UTC");
    Ok(RecordBatch::try_new(
        stats_schema(),
        vec![
            Arc::new(hours),
            dim(|k| &k.source),
            dim(|k| &k.campaign),
            dim(|k| &k.link),
            dim(|k| &k.country),
            dim(|k| &k.device),
            count(|m| m.clicks),
            money(|m| m.cost)?,
            count(|m| m.conversions),
            money(|m| m.gross_revenue)?,
            count(|m| m.refunds),
            money(|m| m.refund_amount)?,
            count(|m| m.chargebacks),
            money(|m| m.chargeback_amount)?,
            count(|m| m.refunded_conversions),
        ],
    )?)
}

/// Applies a changelog to a materialized copy of the rows, as a consumer would.
pub fn apply_changes(
    rows: &mut std::collections::HashMap<WindowKey, Measures>,
    changes: &[Change],
) {
    for c in changes {
        match c {
            Change::Append(k, m) => {
                let prev = rows.insert(k.clone(), m.clone());
                debug_assert!(prev.is_none(), "append of an existing row");
            }
            Change::Update(k, _, new) => {
                rows.insert(k.clone(), new.clone());
            }
            Change::Retract(k, _) => {
                rows.remove(k);
            }
            Change::Delta(k, d) => {
                let row = rows.entry(k.clone()).or_default();
                row.add(d, 1);
                if row.clicks == 0 {
                    rows.remove(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(cid: &str) -> Event {
        Event::Click(Click {
            cid: cid.into(),
            vid: format!("v-{cid}"),
            ts: 1_795_000_000_000_000,
            source: Some("s".into()),
            campaign: None,
            link: None,
            country: None,
            device: None,
            cost: Decimal::ZERO,
            subs: Default::default(),
        })
    }

    fn sale(cid: &str, ts: i64) -> Event {
        Event::Conversion(Conversion {
            cid: cid.into(),
            ts: 1_795_000_000_000_000 + ts,
            amount: Decimal::new(4999, 2),
            txid: Some(format!("t-{cid}")),
            kind: None,
        })
    }

    fn conversions(live: &LiveStats) -> i64 {
        live.rows()
            .unwrap()
            .iter()
            .map(|(_, m)| m.conversions)
            .sum()
    }

    #[test]
    fn events_past_the_cap_are_spilled_and_taken_again_when_their_click_arrives() {
        let one =
            waiting_bytes(&CidKey::new("a"), &ClickState::default()) + event_bytes(&sale("a", 0));
        let mut live = LiveStats::new();
        live.limit_pending(one);
        live.apply(&sale("a", 0), &mut NoLookup).unwrap();
        assert_eq!(live.sizes().pending_bytes, one);
        // No room for a second: left to the files.
        live.apply(&sale("b", 1), &mut NoLookup).unwrap();
        assert_eq!(
            (live.sizes().click_states, live.sizes().spilled_events),
            (1, 1)
        );
        assert_eq!(live.sizes().pending_bytes, one);

        // A's click: its sale was held, nothing to read again.
        live.apply(&click("a"), &mut NoLookup).unwrap();
        assert!(live.take_arrived().is_empty());
        assert_eq!(live.sizes().pending_bytes, 0);
        assert_eq!(conversions(&live), 1);
        // B's click: its sale must be read again, and then counts.
        live.apply(&click("b"), &mut NoLookup).unwrap();
        assert_eq!(live.take_arrived(), vec!["b".to_string()]);
        assert_eq!(conversions(&live), 1);
        live.apply(&sale("b", 1), &mut NoLookup).unwrap();
        assert_eq!(conversions(&live), 2);
        assert!(live.take_arrived().is_empty());

        // A lower cap on a state that holds more: the oldest waiting are spilled first.
        let mut live = LiveStats::new();
        for (i, cid) in ["old", "mid", "new"].into_iter().enumerate() {
            live.apply(&sale(cid, i as i64), &mut NoLookup).unwrap();
        }
        let held = live.sizes().pending_bytes;
        live.limit_pending(held - 1);
        assert_eq!(live.sizes().spilled_events, 1);
        for (cid, spilled) in [("old", true), ("mid", false), ("new", false)] {
            live.apply(&click(cid), &mut NoLookup).unwrap();
            assert_eq!(!live.take_arrived().is_empty(), spilled, "{cid}");
        }
        assert_eq!(conversions(&live), 2);
    }

    #[test]
    fn a_day_that_cannot_be_encoded_stays_held_as_such() {
        let day = date_of_micros(1_795_000_000_000_000);
        let mut live = LiveStats {
            horizon: Some(day),
            hot_from: Some(netrev_storage::model::day_start_micros(day)),
            ..LiveStats::new()
        };
        live.apply(&click("a"), &mut NoLookup).unwrap();
        // More than Decimal(18,4) holds in one row: the day cannot be written as Parquet.
        for i in 0..2 {
            let sale = Event::Conversion(Conversion {
                cid: "a".into(),
                ts: 1_795_000_000_000_000 + i,
                amount: Decimal::new(99_999_999_999_999, 0),
                txid: Some(format!("t{i}")),
                kind: None,
            });
            live.apply(&sale, &mut NoLookup).unwrap();
        }
        let before = live.rows().unwrap();
        live.advance_horizon(day.succ_opt().unwrap());
        assert_eq!(live.horizon(), day.succ_opt());
        assert_eq!((live.sizes().rows, live.sizes().cold_days), (1, 0));
        assert_eq!(live.rows().unwrap(), before);
        assert_eq!(live.rows_of_date(day).unwrap(), before);
        // A change to it goes on to the row held as such.
        let changes = live.apply(&click("b"), &mut NoLookup).unwrap();
        assert!(matches!(changes[..], [Change::Update(..)]), "{changes:?}");
        assert_eq!(live.rows().unwrap()[0].1.clicks, 2);
    }
}
