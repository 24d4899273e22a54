//! `netrev generate`: a realistic, deterministic synthetic history written straight into the
//! raw tables, for benchmarks and demos.
//!
//! Shape (all drawn from one seeded generator, so the same arguments give the same files):
//! - clicks spread over `days` UTC days ending yesterday, in time order within a day, with
//!   IDs issued by this data root's click-ID key (postbacks for them pass the MAC check);
//! - 30 traffic sources with Zipf-distributed traffic, 5 campaigns and 4 links each (Zipf),
//!   10 countries (Zipf), mobile/desktop/tablet, a per-source cost per click;
//! - repeat visitors (30% of clicks reuse one of the recent visitors);
//! - a conversion rate of 2–5% by source, 10% of converting clicks with a second conversion;
//! - refunds for 5–15% of conversions by source, 10–20% of them chargebacks, a log-normal
//!   delay (median 10 days, 1 hour to 120 days; refunds not due yet are left out), a fifth
//!   partial;
//! - 1% of conversions and refunds sent twice (the retried postback, same txid), and refunds
//!   for a few unknown click IDs.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{Days, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;

use netrev_storage::model::{self, date_of_micros};
use netrev_storage::store::layout;
use netrev_storage::{Click, Conversion, Event, Refund, RefundType, Store, Table, clickid};

const DAY_MICROS: i64 = 86_400_000_000;
const HOUR_MICROS: i64 = 3_600_000_000;
const SOURCES: usize = 30;
const COUNTRIES: &[&str] = &["US", "DE", "GB", "FR", "BR", "IN", "CA", "AU", "ES", "IT"];
/// The node name in generated files' names (never a real node's).
const NODE: &str = "generated";

/// SplitMix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Zipf-distributed indexes 0..n (exponent 1.1), by inverse CDF.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize) -> Self {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(1.1)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        Zipf(
            weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect(),
        )
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

/// Per-source behaviour, fixed by the seed.
struct Source {
    cpc_cents: i64,
    conversion_rate: f64,
    refund_rate: f64,
    chargeback_share: f64,
}

/// What was written.
#[derive(Debug, Default)]
pub struct Summary {
    pub clicks: u64,
    pub conversions: u64,
    pub refunds: u64,
    pub duplicates: u64,
    pub files: u64,
}

/// Money with `cents` hundredths, exact.
fn cents(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

pub async fn generate(store: &Store, clicks: u64, days: u32, seed: u64) -> anyhow::Result<Summary> {
    anyhow::ensure!(days > 0, "--days must be at least 1");
    for table in Table::ALL {
        anyhow::ensure!(
            store.raw_files(table).await?.is_empty(),
            "{} already holds {} events; generate into an empty data root",
            store.location(),
            table.name()
        );
    }
    let ids = clickid::Generator::new(store.click_id_key().await?);
    let mut rng = Rng(seed);
    let sources: Vec<Source> = (0..SOURCES)
        .map(|_| Source {
            cpc_cents: 5 + i64::try_from(rng.below(75)).expect("small"),
            conversion_rate: 0.02 + 0.03 * rng.unit(),
            refund_rate: 0.05 + 0.10 * rng.unit(),
            chargeback_share: 0.10 + 0.10 * rng.unit(),
        })
        .collect();
    let source_zipf = Zipf::new(SOURCES);
    let campaign_zipf = Zipf::new(5);
    let link_zipf = Zipf::new(4);
    let country_zipf = Zipf::new(COUNTRIES.len());
    let now = Utc::now().timestamp_micros();
    let today = Utc::now().date_naive();
    let first_day = today - Days::new(u64::from(days));
    let per_day = clicks / u64::from(days);
    let mut recent_visitors: Vec<String> = Vec::new();
    let mut later: BTreeMap<(Table, NaiveDate), Vec<Event>> = BTreeMap::new();
    let mut summary = Summary::default();
    let mut seq = 0u64;
    let bar = ProgressBar::new(clicks);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} clicks {msg}",
        )
        .expect("valid template"),
    );
    let mut txids = 0u64;
    for d in 0..days {
        let day = first_day + Days::new(u64::from(d));
        let n = if d + 1 == days {
            clicks - per_day * u64::from(days - 1)
        } else {
            per_day
        };
        let start = model::day_start_micros(day);
        let spacing = DAY_MICROS / i64::try_from(n.max(1)).expect("fits");
        let mut events = Vec::with_capacity(usize::try_from(n).expect("fits"));
        for i in 0..n {
            let ts = start
                + i64::try_from(i).expect("fits") * spacing
                + i64::try_from(rng.below(u64::try_from(spacing.max(1)).expect("positive")))
                    .expect("fits");
            let (cid, _) = ids.issue(u64::try_from(ts / 1000).expect("after 1970"));
            let s = source_zipf.sample(&mut rng);
            let src = &sources[s];
            let vid = if !recent_visitors.is_empty() && rng.chance(0.3) {
                let k = rng.below(recent_visitors.len() as u64) as usize;
                recent_visitors[k].clone()
            } else {
                let v = format!("v{:016x}", rng.next());
                if recent_visitors.len() < 100_000 {
                    recent_visitors.push(v.clone());
                } else {
                    let k = rng.below(recent_visitors.len() as u64) as usize;
                    recent_visitors[k] = v.clone();
                }
                v
            };
            let device = match rng.below(100) {
                0..60 => "mobile",
                60..95 => "desktop",
                _ => "tablet",
            };
            let cpc =
                (src.cpc_cents * 100 + i64::try_from(rng.below(200)).expect("small") - 100).max(1);
            let click = Click {
                cid: cid.clone(),
                vid,
                ts,
                source: Some(format!("src{:02}", s + 1)),
                campaign: Some(format!(
                    "src{:02}-c{}",
                    s + 1,
                    campaign_zipf.sample(&mut rng) + 1
                )),
                link: Some(format!("l{}", link_zipf.sample(&mut rng) + 1)),
                country: Some(COUNTRIES[country_zipf.sample(&mut rng)].to_string()),
                device: Some(device.to_string()),
                cost: Decimal::new(cpc, 4),
                subs: Default::default(),
            };
            events.push(Event::Click(click));
            if rng.chance(src.conversion_rate) {
                let conversions = if rng.chance(0.1) { 2 } else { 1 };
                for c in 0..conversions {
                    // Minutes to a couple of days after the click.
                    let delay = (rng.unit().powi(3) * 2.0 * DAY_MICROS as f64) as i64 + 60_000_000;
                    let cts = ts + delay * (c + 1);
                    if cts >= now {
                        continue;
                    }
                    txids += 1;
                    let txid = format!("T{txids:09}");
                    let amount = cents([999, 1999, 2999, 4999, 9999, 19999][rng.below(6) as usize]);
                    let conversion = Event::Conversion(Conversion {
                        cid: cid.clone(),
                        ts: cts,
                        amount,
                        txid: Some(txid.clone()),
                        kind: Some(if c == 0 { "sale" } else { "upsell" }.to_string()),
                    });
                    push_maybe_twice(&mut later, &mut rng, &mut summary, conversion);
                    summary.conversions += 1;
                    if rng.chance(src.refund_rate) {
                        // Log-normal delay: median 10 days, clipped to 1 hour..120 days.
                        let days_late = (10.0f64.ln() + 1.0 * rng.normal())
                            .exp()
                            .clamp(1.0 / 24.0, 120.0);
                        let rts = cts + (days_late * DAY_MICROS as f64) as i64;
                        if rts < now {
                            let partial = rng.chance(0.2);
                            let refund = Event::Refund(Refund {
                                cid: cid.clone(),
                                ts: rts,
                                amount: if partial {
                                    amount / Decimal::TWO
                                } else {
                                    amount
                                },
                                txid: Some(format!("R{txids:09}")),
                                kind: if rng.chance(src.chargeback_share) {
                                    RefundType::Chargeback
                                } else {
                                    RefundType::CustomerRequest
                                },
                                reference: Some(txid),
                            });
                            push_maybe_twice(&mut later, &mut rng, &mut summary, refund);
                            summary.refunds += 1;
                        }
                    }
                }
            }
            // A refund now and then for a click ID nobody knows.
            if rng.chance(0.0005) {
                let rts = ts + HOUR_MICROS;
                if rts < now {
                    txids += 1;
                    let refund = Event::Refund(Refund {
                        cid: format!("unknown-{:012x}", rng.next() & 0xffff_ffff_ffff),
                        ts: rts,
                        amount: cents(1999),
                        txid: Some(format!("R{txids:09}")),
                        kind: RefundType::CustomerRequest,
                        reference: None,
                    });
                    push_maybe_twice(&mut later, &mut rng, &mut summary, refund);
                    summary.refunds += 1;
                }
            }
        }
        summary.clicks += n;
        write(store, Table::Clicks, day, &events, &mut seq).await?;
        summary.files += 1;
        drop(events);
        // Conversions and refunds of days that are complete now.
        let done: Vec<_> = later
            .keys()
            .filter(|(_, date)| *date < day)
            .copied()
            .collect();
        for key in done {
            let events = later.remove(&key).expect("listed");
            write(store, key.0, key.1, &events, &mut seq).await?;
            summary.files += 1;
        }
        bar.inc(n);
    }
    for ((table, date), events) in std::mem::take(&mut later) {
        write(store, table, date, &events, &mut seq).await?;
        summary.files += 1;
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Queues a conversion or refund for its day, and 1% of them a second time (a retry).
fn push_maybe_twice(
    later: &mut BTreeMap<(Table, NaiveDate), Vec<Event>>,
    rng: &mut Rng,
    summary: &mut Summary,
    event: Event,
) {
    let slot = later
        .entry((event.table(), date_of_micros(event.ts())))
        .or_default();
    if rng.chance(0.01) {
        slot.push(event.clone());
        summary.duplicates += 1;
    }
    slot.push(event);
}

async fn write(
    store: &Store,
    table: Table,
    date: NaiveDate,
    events: &[Event],
    seq: &mut u64,
) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let first = *seq + 1;
    *seq += events.len() as u64;
    let path = layout::raw_file(table, date, NODE, first, *seq);
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.ts());
    let batch = model::to_batch(table, sorted)?;
    store
        .write_parquet(&path, &[batch])
        .await
        .with_context(|| format!("writing {path}"))?;
    Ok(())
}
