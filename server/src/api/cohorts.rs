//! `GET /api/cohorts`: cohort curves from the rows of `cohort_ltv` (one per day cohort and
//! age), merged into ISO weeks or months when asked.
//!
//! A merged cohort adds its day cohorts' sizes and cumulative amounts age by age (ages count
//! from each visitor's own first click, so they add up), and recomputes `ltv = net / size`,
//! rounded half-even to 4 decimals like the table. It shows the ages every member has reached:
//! a week whose last day is 3 days old stops at age 3.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use datafusion::prelude::{col, lit};

use chrono::{Datelike, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

use netrev_pipeline::query::Limits;
use netrev_storage::money::display;

use super::{Answer, ApiError, ApiState, filtered, on_analysts, range, rows};

#[derive(Default)]
struct Point {
    gross: Decimal,
    refunds: Decimal,
    net: Decimal,
}

#[derive(Default)]
struct Merged {
    size: i64,
    /// The oldest age every member cohort has reached.
    ages: Option<i64>,
    points: BTreeMap<i64, Point>,
}

fn bucket(day: NaiveDate, granularity: &str) -> NaiveDate {
    match granularity {
        "week" => day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday())),
        "month" => day.with_day(1).expect("day 1 exists"),
        _ => day,
    }
}

/// Groups `rows` (JSON objects with `cohort`, `age`, `cohort_size`, `gross`, `refunds`, `net`).
pub fn group(rows: &[Value], granularity: &str) -> Result<Value, String> {
    // Per day cohort: size and its points.
    let mut days: BTreeMap<NaiveDate, (i64, BTreeMap<i64, Point>)> = BTreeMap::new();
    for r in rows {
        let day = r["cohort"]
            .as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .ok_or_else(|| format!("bad cohort in {r}"))?;
        let age = r["age"].as_i64().ok_or_else(|| format!("bad age in {r}"))?;
        let size = r["cohort_size"]
            .as_i64()
            .ok_or_else(|| format!("bad size in {r}"))?;
        let money = |k: &str| {
            r[k].as_str()
                .and_then(|s| Decimal::from_str(s).ok())
                .ok_or_else(|| format!("bad {k} in {r}"))
        };
        let entry = days.entry(day).or_insert_with(|| (size, BTreeMap::new()));
        entry.1.insert(
            age,
            Point {
                gross: money("gross")?,
                refunds: money("refunds")?,
                net: money("net")?,
            },
        );
    }
    let mut merged: BTreeMap<NaiveDate, Merged> = BTreeMap::new();
    for (day, (size, points)) in days {
        let m = merged.entry(bucket(day, granularity)).or_default();
        m.size += size;
        let last = points.keys().next_back().copied().unwrap_or(0);
        m.ages = Some(m.ages.map_or(last, |a| a.min(last)));
        for (age, p) in points {
            let q = m.points.entry(age).or_default();
            q.gross += p.gross;
            q.refunds += p.refunds;
            q.net += p.net;
        }
    }
    let cohorts: Vec<Value> = merged
        .into_iter()
        .map(|(start, m)| {
            let last = m.ages.unwrap_or(-1);
            let points: Vec<Value> = m
                .points
                .iter()
                .filter(|(age, _)| **age <= last)
                .map(|(age, p)| {
                    // Per visitor, rounded half-even to 4 decimals like cohort_ltv.sql.
                    let per_visitor = |amount: Decimal| {
                        if m.size == 0 {
                            Decimal::ZERO
                        } else {
                            (amount / Decimal::from(m.size))
                                .round_dp_with_strategy(4, RoundingStrategy::MidpointNearestEven)
                        }
                    };
                    json!({
                        "age": age,
                        "gross": display(p.gross),
                        "refunds": display(p.refunds),
                        "net": display(p.net),
                        "ltv": display(per_visitor(p.net)),
                        "gross_ltv": display(per_visitor(p.gross)),
                    })
                })
                .collect();
            json!({"cohort": start.format("%Y-%m-%d").to_string(), "size": m.size, "points": points})
        })
        .collect();
    Ok(json!({ "cohorts": cohorts }))
}

/// `GET /api/cohorts`: cohort LTV curves from `cohort_ltv`, by day, ISO week or month.
pub(super) async fn cohorts(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let granularity = params.get("granularity").map_or("day", String::as_str);
    if !["day", "week", "month"].contains(&granularity) {
        return Err(ApiError::invalid(
            "granularity",
            format!("unknown granularity {granularity:?}; day, week or month"),
        ));
    }
    let (from, to) = range(&params)?;
    let max_age: i64 = match params.get("max_age").map(|s| s.parse::<i64>()) {
        None => 90,
        Some(Ok(n)) if (0..=365).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid(
                "max_age",
                "must be a whole number of days from 0 to 365",
            ));
        }
    };
    let day = |d: NaiveDate| {
        lit(datafusion::scalar::ScalarValue::Date32(Some(
            arrow::datatypes::Date32Type::from_naive_date(d),
        )))
    };
    let mut filters = vec![col("age").lt_eq(lit(max_age))];
    // By source: the visitors whose first click came from it (`cohort_sources`).
    let table = match params.get("source") {
        Some(source) => {
            filters.push(col("source").eq(lit(source.clone())));
            "cohort_sources"
        }
        None => "cohort_ltv",
    };
    filters.extend(from.map(|f| col("cohort").gt_eq(day(f))));
    filters.extend(to.map(|t| col("cohort").lt_eq(day(t))));
    let limits = Limits {
        max_rows: usize::MAX,
        ..state.analysts.limits
    };
    let granularity = granularity.to_string();
    on_analysts(&state, None, move |ctx| async move {
        let df = filtered(ctx.table(table).await.map_err(ApiError::internal)?, filters)?
            .sort(vec![
                col("cohort").sort(true, false),
                col("age").sort(true, false),
            ])
            .map_err(ApiError::internal)?;
        let rows = rows(df, limits).await?;
        let grouped = group(&rows, &granularity).map_err(ApiError::internal)?;
        Ok(axum::Json(grouped).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(day: &str, age: i64, size: i64, gross: &str, refunds: &str) -> Value {
        let net = Decimal::from_str(gross).unwrap() - Decimal::from_str(refunds).unwrap();
        json!({"cohort": day, "age": age, "cohort_size": size, "gross": gross, "refunds": refunds, "net": net.to_string()})
    }

    #[test]
    fn weeks_add_sizes_and_amounts_and_stop_at_the_youngest_members_age() {
        // 2026-11-02 is a Monday; 11-03 the same ISO week, 11-09 the next one.
        let rows = vec![
            row("2026-11-02", 0, 2, "10", "0"),
            row("2026-11-02", 1, 2, "30", "5"),
            row("2026-11-02", 2, 2, "30", "5"),
            row("2026-11-03", 0, 1, "20", "0"),
            row("2026-11-03", 1, 1, "20", "20"),
            row("2026-11-09", 0, 3, "1", "0"),
        ];
        let v = group(&rows, "week").unwrap();
        let c = &v["cohorts"];
        assert_eq!(c[0]["cohort"], "2026-11-02");
        assert_eq!(c[0]["size"], 3);
        let p = c[0]["points"].as_array().unwrap();
        assert_eq!(p.len(), 2, "the 11-03 cohort has only reached age 1");
        assert_eq!(p[0]["gross"], "30.00");
        assert_eq!(p[1]["net"], "25.00");
        assert_eq!(p[1]["ltv"], "8.3333");
        // Gross per visitor, rounded half-even like ltv: 50 / 3.
        assert_eq!(p[1]["gross_ltv"], "16.6667");
        assert_eq!(c[1]["cohort"], "2026-11-09");
        let days = group(&rows, "day").unwrap();
        assert_eq!(days["cohorts"].as_array().unwrap().len(), 3);
        assert_eq!(group(&rows, "month").unwrap()["cohorts"][0]["size"], 6);
    }
}
