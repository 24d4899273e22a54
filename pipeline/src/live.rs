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
//!
//! Cost of an event: proportional to the events of its own click, never to the history.
//! Memory: every click ID seen is kept with its row key and events (about 250 bytes per click
//! without conversions); bounding it is the caller's job.

use std::collections::HashMap;

use rust_decimal::Decimal;

use netrev_storage::{Click, Conversion, Event, Refund, RefundType};

/// Microseconds in an hour: the window size.
const HOUR_MICROS: i64 = 3_600_000_000;

/// A window: the hour of the click (start, microseconds since the epoch, UTC) and the
/// dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub hour: i64,
    pub source: Option<String>,
    pub campaign: Option<String>,
    pub link: Option<String>,
    pub country: Option<String>,
    pub device: Option<String>,
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
    fn add(&mut self, o: &Measures, sign: i64) {
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
}

/// A refund's deduplication key (DESIGN.md 4): its txid, or without one (type, ref, amount).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RefundKey {
    Txid(String),
    Content(RefundType, Option<String>, Decimal),
}

/// Everything known about one click ID.
#[derive(Debug, Default)]
struct ClickState {
    /// The winning copy of the click; `None` while only its conversions or refunds are known.
    click: Option<Click>,
    /// Winning copy per conversion key (txid; `None` is the one txid-less conversion).
    conversions: HashMap<Option<String>, Conversion>,
    refunds: HashMap<RefundKey, Refund>,
    /// What this click currently adds to its window row.
    contribution: Option<(WindowKey, Measures)>,
}

/// Orders copies of a click as `clicks_dedup.sql` does: earliest first, ties by the other
/// columns with NULLs first.
fn click_order(c: &Click) -> impl Ord + '_ {
    (
        c.ts,
        &c.vid,
        &c.source,
        &c.campaign,
        &c.link,
        &c.country,
        &c.device,
        c.cost,
    )
}

fn conversion_order(c: &Conversion) -> impl Ord + '_ {
    (c.ts, c.amount, &c.kind)
}

fn refund_order(r: &Refund) -> impl Ord + '_ {
    (r.ts, r.amount, r.kind.as_str(), &r.reference)
}

impl ClickState {
    /// The click's contribution to its window row, from its own events.
    fn contribution(&self) -> Option<(WindowKey, Measures)> {
        let c = self.click.as_ref()?;
        let key = WindowKey {
            hour: c.ts - c.ts.rem_euclid(HOUR_MICROS),
            source: c.source.clone(),
            campaign: c.campaign.clone(),
            link: c.link.clone(),
            country: c.country.clone(),
            device: c.device.clone(),
        };
        let mut m = Measures {
            clicks: 1,
            cost: c.cost,
            conversions: self.conversions.len() as i64,
            gross_revenue: self.conversions.values().map(|v| v.amount).sum(),
            ..Measures::default()
        };
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
        Some((key, m))
    }
}

/// The live `stats_hourly`.
#[derive(Debug, Default)]
pub struct LiveStats {
    clicks: HashMap<String, ClickState>,
    rows: HashMap<WindowKey, Measures>,
}

impl LiveStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one raw event; returns the changes to the rows (possibly none: a duplicate, or
    /// an event whose click is not known yet).
    pub fn apply(&mut self, event: &Event) -> Vec<Change> {
        let cid = match event {
            Event::Click(c) => &c.cid,
            Event::Conversion(c) => &c.cid,
            Event::Refund(r) => &r.cid,
        };
        let state = self.clicks.entry(cid.clone()).or_default();
        let changed = match event {
            Event::Click(c) => match &state.click {
                Some(old) if click_order(old) <= click_order(c) => false,
                _ => {
                    state.click = Some(c.clone());
                    true
                }
            },
            Event::Conversion(c) => match state.conversions.get(&c.txid) {
                Some(old) if conversion_order(old) <= conversion_order(c) => false,
                _ => {
                    state.conversions.insert(c.txid.clone(), c.clone());
                    true
                }
            },
            Event::Refund(r) => {
                let key = match &r.txid {
                    Some(t) => RefundKey::Txid(t.clone()),
                    None => RefundKey::Content(r.kind, r.reference.clone(), r.amount.normalize()),
                };
                match state.refunds.get(&key) {
                    Some(old) if refund_order(old) <= refund_order(r) => false,
                    _ => {
                        state.refunds.insert(key, r.clone());
                        true
                    }
                }
            }
        };
        if !changed {
            return Vec::new();
        }
        let new = state.contribution();
        let old = std::mem::replace(&mut state.contribution, new.clone());
        let mut changes = Vec::new();
        match (old, new) {
            (Some((ok, om)), Some((nk, nm))) if ok == nk => {
                if om != nm {
                    let row = self.rows.get_mut(&ok).expect("a contributed row exists");
                    let before = row.clone();
                    row.add(&om, -1);
                    row.add(&nm, 1);
                    changes.push(Change::Update(ok, before, row.clone()));
                }
            }
            (old, new) => {
                if let Some((ok, om)) = old {
                    self.remove(&ok, &om, &mut changes);
                }
                if let Some((nk, nm)) = new {
                    self.insert(nk, &nm, &mut changes);
                }
            }
        }
        changes
    }

    fn remove(&mut self, key: &WindowKey, m: &Measures, changes: &mut Vec<Change>) {
        let row = self.rows.get_mut(key).expect("a contributed row exists");
        let before = row.clone();
        row.add(m, -1);
        if row.clicks == 0 {
            self.rows.remove(key);
            changes.push(Change::Retract(key.clone(), before));
        } else {
            changes.push(Change::Update(key.clone(), before, row.clone()));
        }
    }

    fn insert(&mut self, key: WindowKey, m: &Measures, changes: &mut Vec<Change>) {
        match self.rows.get_mut(&key) {
            Some(row) => {
                let before = row.clone();
                row.add(m, 1);
                changes.push(Change::Update(key, before, row.clone()));
            }
            None => {
                self.rows.insert(key.clone(), m.clone());
                changes.push(Change::Append(key, m.clone()));
            }
        }
    }

    /// The current rows.
    pub fn rows(&self) -> &HashMap<WindowKey, Measures> {
        &self.rows
    }

    /// Click IDs held (for the memory bound).
    pub fn click_ids(&self) -> usize {
        self.clicks.len()
    }
}

/// Applies a changelog to a materialized copy of the rows, as a consumer would.
pub fn apply_changes(rows: &mut HashMap<WindowKey, Measures>, changes: &[Change]) {
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
        }
    }
}
