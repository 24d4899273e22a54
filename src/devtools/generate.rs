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
//!
//! `--replay URL` sends the same history to a running `netrev serve` as postbacks instead, in
//! event order at a given rate (the server stamps them with its own time and issues its own
//! click IDs; conversions and refunds go to the IDs it answered).

use std::collections::{BTreeMap, HashMap, HashSet};

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

/// The history, produced a day at a time (see the module documentation).
struct History {
    rng: Rng,
    ids: clickid::Generator,
    sources: Vec<Source>,
    source_zipf: Zipf,
    campaign_zipf: Zipf,
    link_zipf: Zipf,
    country_zipf: Zipf,
    now: i64,
    first_day: NaiveDate,
    days: u32,
    clicks: u64,
    per_day: u64,
    /// The next day to produce.
    day: u32,
    recent_visitors: Vec<String>,
    /// Conversions and refunds by (table, day), released once their day is complete.
    later: BTreeMap<(Table, NaiveDate), Vec<Event>>,
    txids: u64,
    /// Click IDs that conversions or refunds will name (what a replay must map).
    converting: HashSet<String>,
    summary: Summary,
}

impl History {
    fn new(key: clickid::Key, clicks: u64, days: u32, seed: u64) -> anyhow::Result<History> {
        anyhow::ensure!(days > 0, "--days must be at least 1");
        let mut rng = Rng(seed);
        let sources: Vec<Source> = (0..SOURCES)
            .map(|_| Source {
                cpc_cents: 5 + i64::try_from(rng.below(75)).expect("small"),
                conversion_rate: 0.02 + 0.03 * rng.unit(),
                refund_rate: 0.05 + 0.10 * rng.unit(),
                chargeback_share: 0.10 + 0.10 * rng.unit(),
            })
            .collect();
        let today = Utc::now().date_naive();
        Ok(History {
            rng,
            ids: clickid::Generator::new(key),
            sources,
            source_zipf: Zipf::new(SOURCES),
            campaign_zipf: Zipf::new(5),
            link_zipf: Zipf::new(4),
            country_zipf: Zipf::new(COUNTRIES.len()),
            now: Utc::now().timestamp_micros(),
            first_day: today - Days::new(u64::from(days)),
            days,
            clicks,
            per_day: clicks / u64::from(days),
            day: 0,
            recent_visitors: Vec::new(),
            later: BTreeMap::new(),
            txids: 0,
            converting: HashSet::new(),
            summary: Summary::default(),
        })
    }

    /// The next day's clicks, then the conversions and refunds of the days completed by it, as
    /// (table, day, events) groups in that order; at the end, what is left. `None` when done.
    /// Every conversion and refund comes after its click.
    fn next_day(&mut self) -> Option<Vec<(Table, NaiveDate, Vec<Event>)>> {
        if self.day > self.days {
            return None;
        }
        if self.day == self.days {
            self.day += 1;
            let rest = std::mem::take(&mut self.later);
            return Some(rest.into_iter().map(|((t, d), e)| (t, d, e)).collect());
        }
        let d = self.day;
        self.day += 1;
        let day = self.first_day + Days::new(u64::from(d));
        let n = if d + 1 == self.days {
            self.clicks - self.per_day * u64::from(self.days - 1)
        } else {
            self.per_day
        };
        let start = model::day_start_micros(day);
        let spacing = DAY_MICROS / i64::try_from(n.max(1)).expect("fits");
        let mut events = Vec::with_capacity(usize::try_from(n).expect("fits"));
        for i in 0..n {
            let ts = start
                + i64::try_from(i).expect("fits") * spacing
                + i64::try_from(
                    self.rng
                        .below(u64::try_from(spacing.max(1)).expect("positive")),
                )
                .expect("fits");
            events.push(self.click(ts));
        }
        self.summary.clicks += n;
        let mut out = vec![(Table::Clicks, day, events)];
        // Conversions and refunds of days that are complete now.
        let done: Vec<_> = self
            .later
            .keys()
            .filter(|(_, date)| *date < day)
            .copied()
            .collect();
        for key in done {
            let events = self.later.remove(&key).expect("listed");
            out.push((key.0, key.1, events));
        }
        Some(out)
    }

    /// One click at `ts`, with its conversions and refunds queued for their days.
    fn click(&mut self, ts: i64) -> Event {
        let rng = &mut self.rng;
        let (cid, _) = self
            .ids
            .issue(u64::try_from(ts / 1000).expect("after 1970"));
        let s = self.source_zipf.sample(rng);
        let src = &self.sources[s];
        let vid = if !self.recent_visitors.is_empty() && rng.chance(0.3) {
            let k = rng.below(self.recent_visitors.len() as u64) as usize;
            self.recent_visitors[k].clone()
        } else {
            let v = format!("v{:016x}", rng.next());
            if self.recent_visitors.len() < 100_000 {
                self.recent_visitors.push(v.clone());
            } else {
                let k = rng.below(self.recent_visitors.len() as u64) as usize;
                self.recent_visitors[k] = v.clone();
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
                self.campaign_zipf.sample(rng) + 1
            )),
            link: Some(format!("l{}", self.link_zipf.sample(rng) + 1)),
            country: Some(COUNTRIES[self.country_zipf.sample(rng)].to_string()),
            device: Some(device.to_string()),
            cost: Decimal::new(cpc, 4),
            subs: Default::default(),
        };
        let (conversion_rate, refund_rate, chargeback_share) =
            (src.conversion_rate, src.refund_rate, src.chargeback_share);
        if rng.chance(conversion_rate) {
            let conversions = if rng.chance(0.1) { 2 } else { 1 };
            for c in 0..conversions {
                // Minutes to a couple of days after the click.
                let rng = &mut self.rng;
                let delay = (rng.unit().powi(3) * 2.0 * DAY_MICROS as f64) as i64 + 60_000_000;
                let cts = ts + delay * (c + 1);
                if cts >= self.now {
                    continue;
                }
                self.txids += 1;
                let txid = format!("T{:09}", self.txids);
                let amount = cents([999, 1999, 2999, 4999, 9999, 19999][rng.below(6) as usize]);
                let conversion = Event::Conversion(Conversion {
                    cid: cid.clone(),
                    ts: cts,
                    amount,
                    txid: Some(txid.clone()),
                    kind: Some(if c == 0 { "sale" } else { "upsell" }.to_string()),
                });
                self.converting.insert(cid.clone());
                self.push_maybe_twice(conversion);
                self.summary.conversions += 1;
                let rng = &mut self.rng;
                if rng.chance(refund_rate) {
                    // Log-normal delay: median 10 days, clipped to 1 hour..120 days.
                    let days_late = (10.0f64.ln() + 1.0 * rng.normal())
                        .exp()
                        .clamp(1.0 / 24.0, 120.0);
                    let rts = cts + (days_late * DAY_MICROS as f64) as i64;
                    if rts < self.now {
                        let partial = rng.chance(0.2);
                        let refund = Event::Refund(Refund {
                            cid: cid.clone(),
                            ts: rts,
                            amount: if partial {
                                amount / Decimal::TWO
                            } else {
                                amount
                            },
                            txid: Some(format!("R{:09}", self.txids)),
                            kind: if rng.chance(chargeback_share) {
                                RefundType::Chargeback
                            } else {
                                RefundType::CustomerRequest
                            },
                            reference: Some(txid),
                        });
                        self.push_maybe_twice(refund);
                        self.summary.refunds += 1;
                    }
                }
            }
        }
        // A refund now and then for a click ID nobody knows.
        if self.rng.chance(0.0005) {
            let rts = ts + HOUR_MICROS;
            if rts < self.now {
                self.txids += 1;
                let refund = Event::Refund(Refund {
                    cid: format!("unknown-{:012x}", self.rng.next() & 0xffff_ffff_ffff),
                    ts: rts,
                    amount: cents(1999),
                    txid: Some(format!("R{:09}", self.txids)),
                    kind: RefundType::CustomerRequest,
                    reference: None,
                });
                self.push_maybe_twice(refund);
                self.summary.refunds += 1;
            }
        }
        Event::Click(click)
    }

    /// Queues a conversion or refund for its day, and 1% of them a second time (a retry).
    fn push_maybe_twice(&mut self, event: Event) {
        let slot = self
            .later
            .entry((event.table(), date_of_micros(event.ts())))
            .or_default();
        if self.rng.chance(0.01) {
            slot.push(event.clone());
            self.summary.duplicates += 1;
        }
        slot.push(event);
    }
}

fn progress(clicks: u64) -> ProgressBar {
    let bar = ProgressBar::new(clicks);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} clicks {msg}",
        )
        .expect("valid template"),
    );
    bar
}

/// Writes the history into the raw tables of an empty data root.
pub async fn generate(store: &Store, clicks: u64, days: u32, seed: u64) -> anyhow::Result<Summary> {
    for table in Table::ALL {
        anyhow::ensure!(
            store.raw_files(table).await?.is_empty(),
            "{} already holds {} events; generate into an empty data root",
            store.location(),
            table.name()
        );
    }
    let mut history = History::new(store.click_id_key().await?, clicks, days, seed)?;
    let mut seq = 0u64;
    let bar = progress(clicks);
    while let Some(groups) = history.next_day() {
        for (table, date, events) in groups {
            if table == Table::Clicks {
                bar.inc(events.len() as u64);
            }
            if !events.is_empty() {
                write(store, table, date, &events, &mut seq).await?;
                history.summary.files += 1;
            }
        }
    }
    bar.finish_and_clear();
    Ok(history.summary)
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    pub summary: Summary,
    pub sent: u64,
    /// Answers other than 200, by status (0: no answer).
    pub refused: BTreeMap<u16, u64>,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The postback of an event, as a path and query string; `None` for a conversion or refund of
/// a click the server never issued an ID for (it failed), which is skipped.
fn postback(event: &Event, issued: &HashMap<String, String>) -> Option<String> {
    let q = |pairs: &[(&str, Option<&str>)]| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            if let Some(v) = v {
                s.append_pair(k, v);
            }
        }
        s.finish()
    };
    let cid = |c: &str| match issued.get(c) {
        Some(server) => Some(server.clone()),
        None if c.starts_with("unknown-") => Some(c.to_string()),
        None => None,
    };
    Some(match event {
        Event::Click(c) => format!(
            "/api/click?{}",
            q(&[
                ("vid", Some(&c.vid)),
                ("source", c.source.as_deref()),
                ("campaign", c.campaign.as_deref()),
                ("link", c.link.as_deref()),
                ("country", c.country.as_deref()),
                ("device", c.device.as_deref()),
                ("cost", Some(&c.cost.to_string())),
            ])
        ),
        Event::Conversion(c) => format!(
            "/api/conversion?{}",
            q(&[
                ("cid", Some(&cid(&c.cid)?)),
                ("amount", Some(&c.amount.to_string())),
                ("txid", c.txid.as_deref()),
                ("type", c.kind.as_deref()),
            ])
        ),
        Event::Refund(r) => format!(
            "/api/conversion/refund?{}",
            q(&[
                ("cid", Some(&cid(&r.cid)?)),
                ("amount", Some(&r.amount.to_string())),
                ("txid", r.txid.as_deref()),
                ("type", Some(r.kind.as_str())),
                ("ref", r.reference.as_deref()),
            ])
        ),
    })
}

/// Sends the history to `base` (a running `netrev serve`) as postbacks, at most `rate` per
/// second and `concurrency` at once. A day's clicks are all answered before the conversions
/// and refunds that follow them are sent.
pub async fn replay(
    base: &str,
    token: Option<&str>,
    clicks: u64,
    days: u32,
    seed: u64,
    rate: f64,
    concurrency: usize,
) -> anyhow::Result<Replayed> {
    anyhow::ensure!(rate > 0.0, "--rate must be positive");
    let base = base.trim_end_matches('/').to_string();
    // The server issues the click IDs; ours only need to be well formed.
    let mut history = History::new(clickid::Key::new([0; 32]), clicks, days, seed)?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let started = std::time::Instant::now();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let bar = progress(clicks);
    let mut issued: HashMap<String, String> = HashMap::new();
    let mut out = Replayed::default();
    let mut latencies: Vec<f64> = Vec::new();
    let mut n = 0u64;
    while let Some(groups) = history.next_day() {
        for (table, _, events) in groups {
            let mut tasks = tokio::task::JoinSet::new();
            for event in events {
                let Some(path) = postback(&event, &issued) else {
                    continue;
                };
                // Paced: the n-th postback leaves no earlier than n / rate seconds in.
                let due = started + std::time::Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                n += 1;
                let permit = slots.clone().acquire_owned().await.expect("never closed");
                let mut request = client.get(format!("{base}{path}"));
                if let Some(t) = token {
                    request = request.header("x-postback-token", t);
                }
                let keep = match &event {
                    Event::Click(c) if history.converting.contains(&c.cid) => Some(c.cid.clone()),
                    _ => None,
                };
                tasks.spawn(async move {
                    let t0 = std::time::Instant::now();
                    let answer = match request.send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body: serde_json::Value = r.json().await.unwrap_or_default();
                            (status, body)
                        }
                        Err(_) => (0, serde_json::Value::Null),
                    };
                    drop(permit);
                    (keep, answer, t0.elapsed().as_secs_f64() * 1000.0)
                });
            }
            while let Some(done) = tasks.join_next().await {
                let (keep, (status, body), ms) = done?;
                out.sent += 1;
                latencies.push(ms);
                if status != 200 {
                    *out.refused.entry(status).or_default() += 1;
                    continue;
                }
                if let (Some(ours), Some(theirs)) = (keep, body["cid"].as_str()) {
                    issued.insert(ours, theirs.to_string());
                }
                if table == Table::Clicks {
                    bar.inc(1);
                }
            }
        }
    }
    bar.finish_and_clear();
    out.secs = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    out.p50_ms = at(0.50);
    out.p99_ms = at(0.99);
    out.summary = history.summary;
    Ok(out)
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
