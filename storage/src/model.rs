//! The three event kinds, their public Arrow schemas and their conversion to record batches.
//!
//! Column names and types are public interface (docs/design.md §2): analysts' queries depend
//! on them, so they are defined once here and nowhere else.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Decimal128Type, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money;
use crate::{Error, Result};

/// A click on a tracking link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Click {
    pub cid: String,
    pub vid: String,
    /// Click time, microseconds since the Unix epoch (UTC).
    pub ts: i64,
    pub source: Option<String>,
    pub campaign: Option<String>,
    pub link: Option<String>,
    pub country: Option<String>,
    pub device: Option<String>,
    pub cost: Decimal,
    pub subs: [Option<String>; 5],
}

/// A sale reported by a network for a click.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversion {
    pub cid: String,
    pub ts: i64,
    pub amount: Decimal,
    pub txid: Option<String>,
    /// The network's own label (`sale`, `upsell`, `rebill`…); free text.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// Why money went back to the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundType {
    Chargeback,
    CustomerRequest,
}

impl RefundType {
    /// The stored spelling, as in the `type` column.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundType::Chargeback => "chargeback",
            RefundType::CustomerRequest => "customer_request",
        }
    }

    pub fn from_stored(s: &str) -> Option<Self> {
        match s {
            "chargeback" => Some(RefundType::Chargeback),
            "customer_request" => Some(RefundType::CustomerRequest),
            _ => None,
        }
    }
}

/// A refund or chargeback of (part of) a sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub cid: String,
    pub ts: i64,
    /// Always positive: the amount that went back.
    pub amount: Decimal,
    pub txid: Option<String>,
    #[serde(rename = "type")]
    pub kind: RefundType,
    /// The `txid` of the conversion being refunded, when the network names it.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
}

/// Any raw event.
// Clicks are the common case; boxing them would cost an allocation per postback to save
// memory only in short-lived vectors.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Click(Click),
    Conversion(Conversion),
    Refund(Refund),
}

impl Event {
    pub fn table(&self) -> Table {
        match self {
            Event::Click(_) => Table::Clicks,
            Event::Conversion(_) => Table::Conversions,
            Event::Refund(_) => Table::Refunds,
        }
    }

    /// The click ID the event belongs to.
    pub fn cid(&self) -> &str {
        match self {
            Event::Click(c) => &c.cid,
            Event::Conversion(c) => &c.cid,
            Event::Refund(r) => &r.cid,
        }
    }

    pub fn ts(&self) -> i64 {
        match self {
            Event::Click(c) => c.ts,
            Event::Conversion(c) => c.ts,
            Event::Refund(r) => r.ts,
        }
    }

    /// The UTC day of the event, which names its partition.
    pub fn date(&self) -> NaiveDate {
        date_of_micros(self.ts())
    }
}

/// A day written exactly `YYYY-MM-DD` (chrono alone would take `2026-3-8`).
pub fn parse_day(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    shaped
        .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
}

/// The first microsecond of UTC day `d` (the inverse of [`date_of_micros`]).
pub fn day_start_micros(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_micros()
}

/// The UTC calendar day of a timestamp in microseconds.
pub fn date_of_micros(ts: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_micros(ts)
        .unwrap_or_default()
        .date_naive()
}

/// The raw event tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Clicks,
    Conversions,
    Refunds,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Clicks, Table::Conversions, Table::Refunds];

    /// The table's public name, also its folder under `events/`.
    pub fn name(self) -> &'static str {
        match self {
            Table::Clicks => "clicks",
            Table::Conversions => "conversions",
            Table::Refunds => "refunds",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Clicks => CLICKS.clone(),
            Table::Conversions => CONVERSIONS.clone(),
            Table::Refunds => REFUNDS.clone(),
        }
    }
}

/// `Timestamp(Microsecond, "UTC")`, the type of every event time.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `Decimal128(18,4)`, the type of every money column.
pub fn money_type() -> DataType {
    DataType::Decimal128(money::PRECISION, money::SCALE as i8)
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

static CLICKS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        text("cid", false),
        text("vid", false),
        Field::new("ts", ts_type(), false),
        text("source", true),
        text("campaign", true),
        text("link", true),
        text("country", true),
        text("device", true),
        Field::new("cost", money_type(), false),
        text("sub1", true),
        text("sub2", true),
        text("sub3", true),
        text("sub4", true),
        text("sub5", true),
    ]))
});

static CONVERSIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        text("cid", false),
        Field::new("ts", ts_type(), false),
        Field::new("amount", money_type(), false),
        text("txid", true),
        text("type", true),
    ]))
});

static REFUNDS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        text("cid", false),
        Field::new("ts", ts_type(), false),
        Field::new("amount", money_type(), false),
        text("txid", true),
        text("type", false),
        text("ref", true),
    ]))
});

fn money_builder(capacity: usize) -> Decimal128Builder {
    Decimal128Builder::with_capacity(capacity)
        .with_precision_and_scale(money::PRECISION, money::SCALE as i8)
        .expect("valid decimal type")
}

fn ts_builder(capacity: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC")
}

fn units(value: Decimal) -> Result<i128> {
    money::to_units(value).ok_or_else(|| Error::Corrupt {
        path: "<batch>".into(),
        what: format!("amount {value} does not fit Decimal128(18,4)"),
    })
}

/// Builds the record batch of one table from events of that table; events of other tables are
/// an internal error.
pub fn to_batch<'a>(
    table: Table,
    events: impl IntoIterator<Item = &'a Event>,
) -> Result<RecordBatch> {
    let events: Vec<&Event> = events.into_iter().collect();
    let n = events.len();
    let mismatch = || Error::Corrupt {
        path: "<batch>".into(),
        what: format!("event of another table in a {} batch", table.name()),
    };
    let columns: Vec<ArrayRef> = match table {
        Table::Clicks => {
            let mut cid = StringBuilder::with_capacity(n, n * 24);
            let mut vid = StringBuilder::with_capacity(n, n * 16);
            let mut ts = ts_builder(n);
            let mut dims: Vec<StringBuilder> = (0..5)
                .map(|_| StringBuilder::with_capacity(n, n * 8))
                .collect();
            let mut cost = money_builder(n);
            let mut subs: Vec<StringBuilder> = (0..5)
                .map(|_| StringBuilder::with_capacity(n, n * 8))
                .collect();
            for e in &events {
                let Event::Click(c) = e else {
                    return Err(mismatch());
                };
                cid.append_value(&c.cid);
                vid.append_value(&c.vid);
                ts.append_value(c.ts);
                for (b, v) in
                    dims.iter_mut()
                        .zip([&c.source, &c.campaign, &c.link, &c.country, &c.device])
                {
                    b.append_option(v.as_deref());
                }
                cost.append_value(units(c.cost)?);
                for (b, v) in subs.iter_mut().zip(&c.subs) {
                    b.append_option(v.as_deref());
                }
            }
            let mut cols: Vec<ArrayRef> = vec![
                Arc::new(cid.finish()),
                Arc::new(vid.finish()),
                Arc::new(ts.finish()),
            ];
            cols.extend(dims.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
            cols.push(Arc::new(cost.finish()));
            cols.extend(subs.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
            cols
        }
        Table::Conversions => {
            let mut cid = StringBuilder::with_capacity(n, n * 24);
            let mut ts = ts_builder(n);
            let mut amount = money_builder(n);
            let mut txid = StringBuilder::with_capacity(n, n * 16);
            let mut kind = StringBuilder::with_capacity(n, n * 16);
            for e in &events {
                let Event::Conversion(c) = e else {
                    return Err(mismatch());
                };
                cid.append_value(&c.cid);
                ts.append_value(c.ts);
                amount.append_value(units(c.amount)?);
                txid.append_option(c.txid.as_deref());
                kind.append_option(c.kind.as_deref());
            }
            vec![
                Arc::new(cid.finish()),
                Arc::new(ts.finish()),
                Arc::new(amount.finish()),
                Arc::new(txid.finish()),
                Arc::new(kind.finish()),
            ]
        }
        Table::Refunds => {
            let mut cid = StringBuilder::with_capacity(n, n * 24);
            let mut ts = ts_builder(n);
            let mut amount = money_builder(n);
            let mut txid = StringBuilder::with_capacity(n, n * 16);
            let mut kind = StringBuilder::with_capacity(n, n * 16);
            let mut reference = StringBuilder::with_capacity(n, n * 16);
            for e in &events {
                let Event::Refund(r) = e else {
                    return Err(mismatch());
                };
                cid.append_value(&r.cid);
                ts.append_value(r.ts);
                amount.append_value(units(r.amount)?);
                txid.append_option(r.txid.as_deref());
                kind.append_value(r.kind.as_str());
                reference.append_option(r.reference.as_deref());
            }
            vec![
                Arc::new(cid.finish()),
                Arc::new(ts.finish()),
                Arc::new(amount.finish()),
                Arc::new(txid.finish()),
                Arc::new(kind.finish()),
                Arc::new(reference.finish()),
            ]
        }
    };
    Ok(RecordBatch::try_new(table.schema(), columns)?)
}

/// Reads events back from a batch of `table` (any column order; Utf8 or Utf8View strings).
pub fn from_batch(table: Table, batch: &RecordBatch) -> Result<Vec<Event>> {
    let col = |name: &str| -> Result<&ArrayRef> {
        batch.column_by_name(name).ok_or_else(|| Error::Corrupt {
            path: "<batch>".into(),
            what: format!("{} batch without column {name}", table.name()),
        })
    };
    let strings = |name: &str| -> Result<Vec<Option<String>>> {
        let a = arrow::compute::cast(col(name)?, &DataType::Utf8)?;
        let a = a.as_string::<i32>();
        Ok((0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
            .collect())
    };
    let required = |name: &str| -> Result<Vec<String>> {
        strings(name)?
            .into_iter()
            .map(|v| {
                v.ok_or_else(|| Error::Corrupt {
                    path: "<batch>".into(),
                    what: format!("null in required column {name}"),
                })
            })
            .collect()
    };
    let times = |name: &str| -> Result<Vec<i64>> {
        let a = col(name)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| Error::Corrupt {
                path: "<batch>".into(),
                what: format!("column {name} is not Timestamp(Microsecond)"),
            })?;
        Ok(a.values().to_vec())
    };
    let moneys = |name: &str| -> Result<Vec<Decimal>> {
        let a = col(name)?
            .as_primitive_opt::<Decimal128Type>()
            .ok_or_else(|| Error::Corrupt {
                path: "<batch>".into(),
                what: format!("column {name} is not Decimal128"),
            })?;
        let scale = match a.data_type() {
            DataType::Decimal128(_, s) => *s as u32,
            _ => unreachable!("checked above"),
        };
        Ok(a.values()
            .iter()
            .map(|&v| Decimal::from_i128_with_scale(v, scale))
            .collect())
    };
    let n = batch.num_rows();
    Ok(match table {
        Table::Clicks => {
            let (cid, vid, ts, cost) = (
                required("cid")?,
                required("vid")?,
                times("ts")?,
                moneys("cost")?,
            );
            let mut dims: Vec<_> = ["source", "campaign", "link", "country", "device"]
                .iter()
                .map(|n| strings(n).map(|v| v.into_iter()))
                .collect::<Result<_>>()?;
            let mut subs: Vec<_> = ["sub1", "sub2", "sub3", "sub4", "sub5"]
                .iter()
                .map(|n| strings(n).map(|v| v.into_iter()))
                .collect::<Result<_>>()?;
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let next = |v: &mut Vec<std::vec::IntoIter<Option<String>>>, k: usize| {
                    v[k].next().flatten()
                };
                out.push(Event::Click(Click {
                    cid: cid[i].clone(),
                    vid: vid[i].clone(),
                    ts: ts[i],
                    source: next(&mut dims, 0),
                    campaign: next(&mut dims, 1),
                    link: next(&mut dims, 2),
                    country: next(&mut dims, 3),
                    device: next(&mut dims, 4),
                    cost: cost[i],
                    subs: std::array::from_fn(|k| next(&mut subs, k)),
                }));
            }
            out
        }
        Table::Conversions => {
            let (cid, ts, amount, txid, kind) = (
                required("cid")?,
                times("ts")?,
                moneys("amount")?,
                strings("txid")?,
                strings("type")?,
            );
            (0..n)
                .map(|i| {
                    Event::Conversion(Conversion {
                        cid: cid[i].clone(),
                        ts: ts[i],
                        amount: amount[i],
                        txid: txid[i].clone(),
                        kind: kind[i].clone(),
                    })
                })
                .collect()
        }
        Table::Refunds => {
            let (cid, ts, amount, txid, kind, reference) = (
                required("cid")?,
                times("ts")?,
                moneys("amount")?,
                strings("txid")?,
                required("type")?,
                strings("ref")?,
            );
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let kind = RefundType::from_stored(&kind[i]).ok_or_else(|| Error::Corrupt {
                    path: "<batch>".into(),
                    what: format!("unknown refund type {:?}", kind[i]),
                })?;
                out.push(Event::Refund(Refund {
                    cid: cid[i].clone(),
                    ts: ts[i],
                    amount: amount[i],
                    txid: txid[i].clone(),
                    kind,
                    reference: reference[i].clone(),
                }));
            }
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn sample() -> Vec<Event> {
        vec![
            Event::Click(Click {
                cid: "c1".into(),
                vid: "v1".into(),
                ts: 1_795_000_000_123_456,
                source: Some("fb".into()),
                campaign: None,
                link: Some("l".into()),
                country: Some("DE".into()),
                device: None,
                cost: Decimal::from_str("0.1234").unwrap(),
                subs: [Some("a".into()), None, None, None, Some("e".into())],
            }),
            Event::Conversion(Conversion {
                cid: "c1".into(),
                ts: 1_795_000_100_000_000,
                amount: Decimal::from_str("49.99").unwrap(),
                txid: Some("t1".into()),
                kind: None,
            }),
            Event::Refund(Refund {
                cid: "c1".into(),
                ts: 1_795_000_200_000_000,
                amount: Decimal::from_str("10.5").unwrap(),
                txid: None,
                kind: RefundType::Chargeback,
                reference: Some("t1".into()),
            }),
        ]
    }

    #[test]
    fn batches_round_trip_exactly() {
        for event in sample() {
            let table = event.table();
            let batch = to_batch(table, [&event]).unwrap();
            assert_eq!(batch.schema(), table.schema());
            assert_eq!(from_batch(table, &batch).unwrap(), vec![event]);
        }
    }

    #[test]
    fn mixed_tables_are_refused() {
        let events = sample();
        assert!(to_batch(Table::Clicks, &events).is_err());
    }
}
