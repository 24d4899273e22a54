//! `GET /api/stats`: the stats table (docs/design.md §5 and §8), answered from the live rows
//! of `stats_hourly`, so an acknowledged refund shows at the next read.
//!
//! Days follow `tz` (default UTC). The windows are UTC hours, so a local day is exact in any
//! zone whose offset is a whole number of hours, daylight saving included (such a day has 23 or
//! 25 of them); a zone with a part-hour offset (Asia/Kolkata) is refused with 400.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Map, Value, json};

use netrev_live::state::{Dimension, Measures, WindowKey};
use netrev_storage::csv::neutralise_csv_formula;

use crate::api::{ApiError, date_param};
use netrev_live::Live;

/// Dimensions `group_by` accepts, in output order.
const GROUPS: &[&str] = &[
    "date", "hour", "source", "campaign", "link", "country", "device",
];

/// Every metric of docs/design.md §5, in output order.
pub const METRICS: &[&str] = &[
    "clicks",
    "conversions",
    "cost",
    "gross_revenue",
    "refunds",
    "refund_amount",
    "refund_rate",
    "chargebacks",
    "chargeback_amount",
    "net_revenue",
    "profit",
    "roi",
    "epc",
    "cr",
];

/// Longest range one request may ask for (ten years and then some).
const MAX_DAYS: i64 = 3700;

/// Days shown when `from` is not given: the 30 days up to `to`.
const DEFAULT_DAYS: u64 = 30;

/// A parsed, validated stats request.
#[derive(Debug)]
struct Request {
    from: NaiveDate,
    to: NaiveDate,
    tz: Tz,
    /// The zone is at offset 0 over the whole range (set by [`Request::check_offsets`]).
    utc_days: bool,
    group_by: Vec<&'static str>,
    columns: Vec<&'static str>,
    filters: Vec<(&'static str, String)>,
    csv: bool,
}

fn list(
    params: &HashMap<String, String>,
    field: &'static str,
    allowed: &[&'static str],
) -> Result<Option<Vec<&'static str>>, ApiError> {
    let Some(text) = params.get(field) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let known = allowed.iter().find(|a| **a == name).ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("unknown name {name:?}; one of {}", allowed.join(",")),
            )
        })?;
        if !out.contains(known) {
            out.push(*known);
        }
    }
    Ok(Some(out))
}

impl Request {
    fn parse(params: &HashMap<String, String>, now: DateTime<Utc>) -> Result<Request, ApiError> {
        let tz: Tz = match params.get("tz") {
            None => Tz::UTC,
            Some(name) => name.parse().map_err(|_| {
                ApiError::invalid(
                    "tz",
                    format!("unknown time zone {name:?}; an IANA name such as Europe/Berlin"),
                )
            })?,
        };
        let to = date_param(params, "to")?.unwrap_or_else(|| now.with_timezone(&tz).date_naive());
        let from =
            date_param(params, "from")?.unwrap_or_else(|| to - chrono::Days::new(DEFAULT_DAYS - 1));
        if from > to {
            return Err(ApiError::invalid(
                "from",
                format!("from {from} is after to {to}"),
            ));
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(ApiError::invalid(
                "from",
                format!("at most {MAX_DAYS} days at once ({from} to {to} is longer)"),
            ));
        }
        let csv = match params.get("format").map(String::as_str) {
            None | Some("json") => false,
            Some("csv") => true,
            Some(other) => {
                return Err(ApiError::invalid(
                    "format",
                    format!("unknown format {other:?}; json or csv"),
                ));
            }
        };
        let filters = ["source", "campaign", "link", "country", "device"]
            .into_iter()
            .filter_map(|f| params.get(f).map(|v| (f, v.clone())))
            .collect();
        let mut req = Request {
            from,
            to,
            tz,
            utc_days: false,
            group_by: list(params, "group_by", GROUPS)?.unwrap_or_default(),
            columns: list(params, "columns", METRICS)?.unwrap_or_else(|| METRICS.to_vec()),
            filters,
            csv,
        };
        req.utc_days = req.check_offsets()?;
        Ok(req)
    }

    /// One walk over the hours of the range, in the request's zone. The windows are UTC hours:
    /// a local day is a whole number of them only while the zone's offset is a whole number of
    /// hours; otherwise the answer could not be exact, and the request is refused. Returns
    /// whether the offset is 0 all along (the local days are UTC days).
    fn check_offsets(&self) -> Result<bool, ApiError> {
        let (from, to) = self.hours();
        let mut utc_days = true;
        for t in (from..to).step_by(HOUR_MICROS as usize) {
            let utc = DateTime::<Utc>::from_timestamp_micros(t).unwrap_or_default();
            let offset = self.tz.offset_from_utc_datetime(&utc.naive_utc()).fix();
            if offset.local_minus_utc() % 3600 != 0 {
                return Err(ApiError::invalid(
                    "tz",
                    format!(
                        "{} is at UTC{offset} on {}: stats are kept in UTC hours, so days in a zone with a \
                         part-hour offset cannot be answered exactly; use a zone with whole-hour offsets or UTC",
                        self.tz,
                        utc.with_timezone(&self.tz).date_naive()
                    ),
                ));
            }
            utc_days &= offset.local_minus_utc() == 0;
        }
        Ok(utc_days)
    }

    fn matches(&self, k: &WindowKey) -> bool {
        self.filters
            .iter()
            .all(|(f, v)| dim(k, f).as_deref() == Some(v.as_str()))
    }

    /// The hours the request covers, from the start of `from` to the end of `to` in the
    /// request's zone (a local day may have 23 or 25 hours), in UTC microseconds.
    fn hours(&self) -> (i64, i64) {
        (
            start_of_day(self.from, self.tz),
            start_of_day(self.to + chrono::Days::new(1), self.tz),
        )
    }

    /// A row's group: day and hour (when grouped by them) and the grouped dimensions, shared
    /// with the row (nothing allocated per row).
    fn group(&self, k: &WindowKey) -> Group {
        let mut g = Group::default();
        for name in &self.group_by {
            match *name {
                "date" => g.day = Some(day_number(k.hour, self.tz)),
                "hour" => g.hour = Some(k.hour),
                other => {
                    let i = GROUPS.iter().position(|n| n == &other).expect("validated") - 2;
                    g.dims[i] = Some(dim(k, other).clone());
                }
            }
        }
        g
    }
}

const HOUR_MICROS: i64 = 3_600_000_000;

/// The local day (days from the common era) of a UTC instant in microseconds.
fn day_number(micros: i64, tz: Tz) -> i64 {
    let utc = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default();
    i64::from(utc.with_timezone(&tz).date_naive().num_days_from_ce())
}

/// The first instant of local day `d` in `tz` (the end of a gap when midnight is skipped).
fn start_of_day(d: NaiveDate, tz: Tz) -> i64 {
    let midnight = d.and_hms_opt(0, 0, 0).expect("midnight");
    let local = (0..24)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + chrono::Duration::hours(h)))
                .earliest()
        })
        .expect("a day has a valid local hour");
    local.with_timezone(&Utc).timestamp_micros()
}

/// A group key; `None` fields are not grouped by.
#[derive(Debug, Default, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Group {
    day: Option<i64>,
    hour: Option<i64>,
    /// source, campaign, link, country, device: `Some(value)` when grouped by it.
    dims: [Option<Dimension>; 5],
}

impl Group {
    /// The value of one group column: a local date, an hour's local start with its offset
    /// (`Z` in UTC), or a dimension.
    fn value(&self, name: &str, tz: Tz) -> Option<String> {
        match name {
            "date" => self.day.map(|d| {
                NaiveDate::from_num_days_from_ce_opt(i32::try_from(d).unwrap_or_default())
                    .unwrap_or_default()
                    .format("%Y-%m-%d")
                    .to_string()
            }),
            "hour" => self.hour.map(|h| {
                DateTime::<Utc>::from_timestamp_micros(h)
                    .unwrap_or_default()
                    .with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }),
            other => {
                let i = GROUPS.iter().position(|n| n == &other)? - 2;
                self.dims[i].as_ref()?.as_deref().map(str::to_string)
            }
        }
    }
}

fn dim<'a>(k: &'a WindowKey, name: &str) -> &'a Dimension {
    match name {
        "source" => &k.source,
        "campaign" => &k.campaign,
        "link" => &k.link,
        "country" => &k.country,
        "device" => &k.device,
        _ => &None,
    }
}

use netrev_storage::money::display as money;

/// `100 × num / den` (or `num / den` when `percent` is false) rounded half-even to `places`;
/// `None` when `den` is zero.
fn ratio(num: Decimal, den: Decimal, percent: bool, places: u32) -> Option<Decimal> {
    if den.is_zero() {
        return None;
    }
    let scale = if percent {
        Decimal::ONE_HUNDRED
    } else {
        Decimal::ONE
    };
    let mut r =
        (scale * num / den).round_dp_with_strategy(places, RoundingStrategy::MidpointNearestEven);
    r.rescale(places);
    Some(r)
}

/// One metric of a row, as JSON: counts as integers, money as strings, ratios as numbers or
/// null.
fn metric(name: &str, m: &Measures) -> Value {
    let net = m.gross_revenue - m.refund_amount;
    let profit = net - m.cost;
    // Ratios are JSON numbers: the rounded decimal's digits, which a double prints back
    // unchanged (shortest round trip). Money never takes this path.
    let number = |d: Option<Decimal>| match d {
        Some(d) => d
            .to_string()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        None => Value::Null,
    };
    match name {
        "clicks" => json!(m.clicks),
        "conversions" => json!(m.conversions),
        "refunds" => json!(m.refunds),
        "chargebacks" => json!(m.chargebacks),
        "cost" => json!(money(m.cost)),
        "gross_revenue" => json!(money(m.gross_revenue)),
        "refund_amount" => json!(money(m.refund_amount)),
        "chargeback_amount" => json!(money(m.chargeback_amount)),
        "net_revenue" => json!(money(net)),
        "profit" => json!(money(profit)),
        "refund_rate" => number(ratio(
            m.refunded_conversions.into(),
            m.conversions.into(),
            true,
            2,
        )),
        "roi" => number(ratio(profit, m.cost, true, 2)),
        "epc" => number(ratio(net, m.clicks.into(), false, 4)),
        "cr" => number(ratio(m.conversions.into(), m.clicks.into(), true, 2)),
        _ => Value::Null,
    }
}

fn row_json(req: &Request, group: &Group, m: &Measures) -> Map<String, Value> {
    let mut row = Map::new();
    for g in &req.group_by {
        row.insert((*g).to_string(), json!(group.value(g, req.tz)));
    }
    for c in &req.columns {
        row.insert((*c).to_string(), metric(c, m));
    }
    row
}

/// One CSV cell. `text` cells (the group columns: dimensions from postbacks, dates, hours) are
/// neutralised against formula injection; metric cells are numbers and money (money is a JSON
/// string here, and a negative `-5.00` must stay a number), written as they are.
fn csv_field(v: &Value, text: bool) -> String {
    let cell = match v {
        Value::Null => return String::new(),
        Value::String(s) if text => neutralise_csv_formula(s).into_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

/// Reads decoding the hours of days before the live state's horizon at once: one per core.
static COLD_DECODES: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
});

pub async fn stats(
    State(live): State<Arc<Live>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let req = match Request::parse(&params, live.clock().now()) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // A read after an acknowledgement sees that event (unless the live thread is a second
    // behind, when the answer is what it has).
    if !live.catch_up().await {
        tracing::warn!(
            "stats read without waiting for the latest events: the live thread is behind"
        );
    }
    // Grouping reads many rows: off the async workers, which answer postbacks.
    let answer = tokio::task::spawn_blocking(move || {
        let guard = live.state.read().expect("live lock");
        let state = guard.as_ref()?;
        let (from, to) = req.hours();
        // The days before the live state's horizon whose hours are read: decoded after the
        // lock is let go.
        let mut cold = Vec::new();
        let mut grouped: HashMap<Group, Measures> = HashMap::new();
        let mut totals = Measures::default();
        // Days in UTC without hours: the day rows say the same with fewer rows; with at most
        // one dimension grouped or filtered, the rows by day and that dimension fewer still.
        let daily = req.utc_days && !req.group_by.contains(&"hour");
        let used: Vec<usize> = (0..5)
            .filter(|&i| {
                let name = GROUPS[i + 2];
                req.group_by.contains(&name) || req.filters.iter().any(|(f, _)| *f == name)
            })
            .collect();
        if daily && used.len() <= 1 {
            let i = used.first().copied().unwrap_or(0);
            let name = GROUPS[i + 2];
            let filter = req
                .filters
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(_, v)| v.as_str());
            let grouped_by = req.group_by.contains(&name);
            for (day, value, m) in state.days_by_dimension(i, from, to) {
                if filter.is_some_and(|f| value.as_deref() != Some(f)) {
                    continue;
                }
                let mut g = Group::default();
                if req.group_by.contains(&"date") {
                    g.day = Some(day_number(day, req.tz));
                }
                if grouped_by {
                    g.dims[i] = Some(value.clone());
                }
                grouped.entry(g).or_default().add(m, 1);
                totals.add(m, 1);
            }
        } else {
            let rows: Box<dyn Iterator<Item = (&WindowKey, &Measures)>> = if daily {
                Box::new(state.days_between(from, to))
            } else {
                cold = state.cold_between(from, to);
                Box::new(state.hot_rows_between(from, to))
            };
            for (k, m) in rows.filter(|(k, _)| req.matches(k)) {
                grouped.entry(req.group(k)).or_default().add(m, 1);
                totals.add(m, 1);
            }
        }
        drop(guard);
        for day in cold {
            // One day decoded at a time, by at most as many reads at once as there are
            // cores: memory stays that of a few days' rows, whatever the range.
            let _permit = futures::executor::block_on(COLD_DECODES.acquire())
                .expect("the semaphore is never closed");
            let rows = match day.rows() {
                Ok(rows) => rows,
                Err(e) => {
                    let e = ApiError::Internal(format!("reading the hourly rows: {e}"));
                    return Some(e.into_response());
                }
            };
            for (k, m) in rows.iter().filter(|(k, _)| req.matches(k)) {
                grouped.entry(req.group(k)).or_default().add(m, 1);
                totals.add(m, 1);
            }
        }
        let grouped: BTreeMap<Group, Measures> = grouped.into_iter().collect();
        Some(render(&req, &grouped, &totals))
    })
    .await
    .expect("stats task panicked");
    answer.unwrap_or_else(|| {
        ApiError::Unavailable(
            "the live stats are being built from the raw tables; retry shortly".into(),
        )
        .into_response()
    })
}

/// The CSV answer: a header, then one line per group; the group columns come first.
fn render_csv(req: &Request, grouped: &BTreeMap<Group, Measures>) -> String {
    let mut out = String::new();
    let header: Vec<&str> = req.group_by.iter().chain(&req.columns).copied().collect();
    out.push_str(&header.join(","));
    out.push('\n');
    for (group, m) in grouped {
        let row = row_json(req, group, m);
        let fields: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, h)| csv_field(&row[*h], i < req.group_by.len()))
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn render(req: &Request, grouped: &BTreeMap<Group, Measures>, totals: &Measures) -> Response {
    if req.csv {
        let out = render_csv(req, grouped);
        return ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response();
    }
    let rows: Vec<Value> = grouped
        .iter()
        .map(|(group, m)| Value::Object(row_json(req, group, m)))
        .collect();
    let mut total = Map::new();
    for c in &req.columns {
        total.insert((*c).to_string(), metric(c, totals));
    }
    axum::Json(json!({"rows": rows, "totals": Value::Object(total)})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn ratios_round_half_even_and_are_null_on_zero() {
        assert_eq!(ratio(d("1"), d("3"), true, 2), Some(d("33.33")));
        assert_eq!(ratio(d("2"), d("3"), true, 2), Some(d("66.67")));
        assert_eq!(ratio(d("1"), d("8"), true, 2), Some(d("12.50")));
        // 0.125 → 0.12 (half to even), 0.135 → 0.14
        assert_eq!(ratio(d("0.125"), d("1"), false, 2), Some(d("0.12")));
        assert_eq!(ratio(d("0.135"), d("1"), false, 2), Some(d("0.14")));
        assert_eq!(ratio(d("5"), d("0"), true, 2), None);
    }

    #[test]
    fn money_keeps_every_digit_and_at_least_cents() {
        assert_eq!(money(d("49.9900")), "49.99");
        assert_eq!(money(d("50")), "50.00");
        assert_eq!(money(d("0.0125")), "0.0125");
        assert_eq!(money(d("-3.5")), "-3.50");
    }

    #[test]
    fn csv_neutralises_group_cells_and_leaves_metrics_alone() {
        let req = Request {
            from: NaiveDate::from_ymd_opt(2026, 3, 8).unwrap(),
            to: NaiveDate::from_ymd_opt(2026, 3, 8).unwrap(),
            tz: Tz::UTC,
            utc_days: true,
            group_by: vec!["source", "campaign"],
            columns: vec!["clicks", "net_revenue", "profit", "roi"],
            filters: Vec::new(),
            csv: true,
        };
        // Refunded more than earned: net revenue -5.00, profit -6.00, ROI -600%.
        let m = Measures {
            clicks: 1,
            cost: d("1"),
            gross_revenue: d("10"),
            refund_amount: d("15"),
            ..Measures::default()
        };
        let mut grouped = BTreeMap::new();
        for (source, campaign) in [
            (r#"=HYPERLINK("http://x")"#, "-promo"),
            ("@SUM(1)", "\tc"),
            ("+1", "\rc"),
            ("fb", "summer-sale"),
        ] {
            let mut g = Group::default();
            g.dims[0] = Some(Some(source.into()));
            g.dims[1] = Some(Some(campaign.into()));
            grouped.insert(g, m.clone());
        }
        assert_eq!(
            render_csv(&req, &grouped),
            "source,campaign,clicks,net_revenue,profit,roi\n\
             '+1,\"'\rc\",1,-5.00,-6.00,-600.0\n\
             \"'=HYPERLINK(\"\"http://x\"\")\",'-promo,1,-5.00,-6.00,-600.0\n\
             '@SUM(1),'\tc,1,-5.00,-6.00,-600.0\n\
             fb,summer-sale,1,-5.00,-6.00,-600.0\n"
        );
    }

    #[test]
    fn metrics_follow_the_formulas() {
        let m = Measures {
            clicks: 3,
            cost: d("1.50"),
            conversions: 2,
            gross_revenue: d("100"),
            refunds: 1,
            refund_amount: d("30"),
            chargebacks: 1,
            chargeback_amount: d("30"),
            refunded_conversions: 1,
        };
        assert_eq!(metric("net_revenue", &m), json!("70.00"));
        assert_eq!(metric("profit", &m), json!("68.50"));
        assert_eq!(metric("refund_rate", &m).to_string(), "50.0");
        assert_eq!(metric("roi", &m).to_string(), "4566.67");
        assert_eq!(metric("epc", &m).to_string(), "23.3333");
        assert_eq!(metric("cr", &m).to_string(), "66.67");
        let empty = Measures::default();
        for r in ["refund_rate", "roi", "epc", "cr"] {
            assert_eq!(metric(r, &empty), Value::Null, "{r}");
        }
    }
}
