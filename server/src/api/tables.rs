//! `GET /api/visitors/{vid}`, `/api/refunds` and `/api/refunds/unmatched`: a visitor's
//! profile and refund history, and the refund log, from the derived tables as the last
//! recompute wrote them.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use datafusion::prelude::{SessionContext, col, lit};
use serde_json::{Value, json};

use netrev_pipeline::query::Limits;

use super::{Answer, ApiError, ApiState, filtered, on_analysts, range, rows};

/// `GET /api/visitors/{vid}`: the profile and refund history; 404 when unknown.
pub(super) async fn visitor(State(state): State<ApiState>, Path(vid): Path<String>) -> Answer {
    let limits = state.analysts.limits;
    on_analysts(&state, None, move |ctx| visitor_profile(ctx, vid, limits)).await
}

async fn visitor_profile(ctx: SessionContext, vid: String, limits: Limits) -> Answer {
    let df = filtered(
        ctx.table("visitors").await.map_err(ApiError::internal)?,
        vec![col("vid").eq(lit(vid.clone()))],
    )?;
    let mut profile = rows(df, limits)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("vid", format!("no visitor {vid:?}")))?;
    let history = filtered(
        ctx.table("refund_links")
            .await
            .map_err(ApiError::internal)?,
        vec![col("vid").eq(lit(vid))],
    )?
    .select_columns(&[
        "ts",
        "cid",
        "amount",
        "type",
        "txid",
        "ref",
        "conversion_txid",
        "conversion_ts",
        "conversion_amount",
        "over_refund",
    ])
    .and_then(|t| t.sort(vec![col("ts").sort(true, false)]))
    .map_err(ApiError::internal)?;
    profile["refund_history"] = Value::Array(rows(history, limits).await?);
    Ok(axum::Json(profile).into_response())
}

const REFUND_COLUMNS: &[&str] = &[
    "ts",
    "cid",
    "vid",
    "source",
    "amount",
    "type",
    "txid",
    "ref",
    "linked",
    "conversion_txid",
    "conversion_amount",
    "over_refund",
    "unmatched",
];

/// `GET /api/refunds`: the refund log, newest first; filters `from`, `to` (UTC days of the
/// refund), `source`, `type`, and `limit` (default 1,000).
pub(super) async fn refunds(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    refund_log(state, params, false).await
}

/// `GET /api/refunds/unmatched`: refunds whose click is unknown.
pub(super) async fn unmatched(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    refund_log(state, params, true).await
}

async fn refund_log(
    state: ApiState,
    params: HashMap<String, String>,
    only_unmatched: bool,
) -> Answer {
    let (from, to) = range(&params)?;
    let kind = match params.get("type").map(String::as_str) {
        None => None,
        Some(t @ ("chargeback" | "customer_request")) => Some(t.to_string()),
        Some(other) => {
            return Err(ApiError::invalid(
                "type",
                format!("unknown type {other:?}; chargeback or customer_request"),
            ));
        }
    };
    let limit = match params.get("limit").map(|s| s.parse::<usize>()) {
        None => state.analysts.limits.max_rows.min(1000),
        Some(Ok(n)) if (1..=state.analysts.limits.max_rows).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid(
                "limit",
                format!(
                    "must be a whole number from 1 to {}",
                    state.analysts.limits.max_rows
                ),
            ));
        }
    };
    let micros = netrev_storage::model::day_start_micros;
    let ts = |m: i64| {
        lit(datafusion::scalar::ScalarValue::TimestampMicrosecond(
            Some(m),
            Some("UTC".into()),
        ))
    };
    let mut filters = Vec::new();
    if only_unmatched {
        filters.push(col("unmatched"));
    }
    filters.extend(from.map(|f| col("ts").gt_eq(ts(micros(f)))));
    filters.extend(to.map(|t| col("ts").lt(ts(micros(t) + 86_400_000_000))));
    filters.extend(
        params
            .get("source")
            .map(|s| col("source").eq(lit(s.clone()))),
    );
    filters.extend(kind.map(|k| col(r#""type""#).eq(lit(k))));
    let limits = Limits {
        max_rows: limit,
        ..state.analysts.limits
    };
    on_analysts(&state, None, move |ctx| async move {
        let df = filtered(
            ctx.table("refund_links")
                .await
                .map_err(ApiError::internal)?,
            filters,
        )?
        .select_columns(REFUND_COLUMNS)
        .and_then(|d| {
            d.sort(vec![
                col("ts").sort(false, false),
                col("cid").sort(true, false),
            ])
        })
        .map_err(ApiError::internal)?;
        Ok(axum::Json(json!({"refunds": rows(df, limits).await?})).into_response())
    })
    .await
}
