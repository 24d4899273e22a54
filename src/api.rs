//! The query API (DESIGN.md section 8) apart from `/api/stats`: read-only SQL, cohorts,
//! visitor profiles and the refund log, answered from the derived tables as the last recompute
//! wrote them; the API key; the OpenAPI description.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use datafusion::prelude::{DataFrame, SessionContext, col, lit};
use serde_json::{Value, json};

use netrev_ingest::http::Secret;
use netrev_pipeline::analysts::Analysts;
use netrev_pipeline::query::{self, Limits, QueryError};
use netrev_storage::Store;

use crate::live::Live;

/// The OpenAPI description, embedded.
pub const OPENAPI: &str = include_str!("openapi.json");

#[derive(Clone)]
pub struct ApiState {
    store: Store,
    /// Where the routes that plan SQL run, and their limits.
    analysts: Arc<Analysts>,
    webhooks: Arc<crate::webhooks::Webhooks>,
    outbox: Arc<crate::webhooks::outbox::Outbox>,
}

/// The query routes, behind `api_key` when one is configured, plus the OpenAPI description.
pub fn router(
    store: Store,
    live: Arc<Live>,
    hooks: Arc<crate::webhooks::Hooks>,
    api_key: Option<Secret>,
    analysts: Arc<Analysts>,
) -> Router {
    let state = ApiState {
        store,
        analysts,
        webhooks: hooks.webhooks.clone(),
        outbox: hooks.outbox.clone(),
    };
    let protected = Router::new()
        .route("/api/stats", get(crate::stats_api::stats).with_state(live))
        .route("/api/sql", post(sql))
        .route("/api/cohorts", get(cohorts))
        .route("/api/visitors/{vid}", get(visitor))
        .route("/api/refunds", get(refunds))
        .route("/api/refunds/unmatched", get(unmatched))
        .route("/api/webhooks", get(list_webhooks).post(create_webhook))
        .route("/api/webhooks/{id}", axum::routing::delete(delete_webhook))
        .route("/api/webhooks/{id}/deliveries", get(deliveries))
        .route(
            "/api/webhooks/{id}/deliveries/{message}/retry",
            post(retry_delivery),
        )
        .with_state(state)
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(api_key),
            require_key,
        ));
    protected.route(
        "/api/openapi.json",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
    )
}

/// `Authorization: Bearer <key>` on every query route when a key is configured: 401
/// otherwise, with nothing about the key in the answer or the logs.
async fn require_key(
    State(key): State<Arc<Option<Secret>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = key.as_ref() {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !key.matches(given) {
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key (Authorization: Bearer …)",
                None,
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    next.run(request).await
}

/// An error answer: `{"ok":false,"error":…,"field":…}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"ok": false, "error": self.message});
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

pub fn error(
    status: StatusCode,
    message: impl Into<String>,
    field: Option<&'static str>,
) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        field,
    }
}

/// 400 naming the parameter at fault.
pub fn bad(field: &'static str, message: impl Into<String>) -> ApiError {
    error(StatusCode::BAD_REQUEST, message, Some(field))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "query failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)
}

type Answer = Result<Response, ApiError>;

/// Runs `work` with a session of its own on the analysts' runtime ([`Analysts::run`]): its
/// planning and running are timed and bounded in memory, away from the postback threads.
/// `field` is the parameter a refusal names (`sql` for `POST /api/sql`).
async fn on_analysts<T, F, Fut>(
    state: &ApiState,
    field: Option<&'static str>,
    work: F,
) -> Result<T, ApiError>
where
    F: FnOnce(SessionContext) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
    T: Send + 'static,
{
    let (store, analysts) = (state.store.clone(), state.analysts.clone());
    state
        .analysts
        .run(async move {
            let ctx = analysts.session(&store).await?;
            Ok(work(ctx).await)
        })
        .await
        .map_err(|e| query_error(e, field))?
}

/// The answer to a query that was not answered. Planning and execution errors are the
/// query's own on `POST /api/sql` (400), the server's on the other routes (500); a store that
/// cannot be read or a panic is always the server's.
fn query_error(e: QueryError, field: Option<&'static str>) -> ApiError {
    match e {
        QueryError::Refused(m) => error(StatusCode::BAD_REQUEST, m, field),
        e @ QueryError::Timeout(_) if field.is_some() => {
            error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string(), field)
        }
        QueryError::Timeout(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the query took too long",
            None,
        ),
        QueryError::OutOfMemory(m) => error(StatusCode::UNPROCESSABLE_ENTITY, m, field),
        QueryError::Failed(e) if field.is_some() => {
            error(StatusCode::BAD_REQUEST, e.to_string(), field)
        }
        QueryError::Failed(e) => internal(e),
        QueryError::Server(m) => internal(m),
    }
}

/// Runs `df` and answers its rows as JSON objects (money as exact strings).
async fn rows(df: DataFrame, limits: Limits) -> Result<Vec<Value>, ApiError> {
    let answer = query::collect(df, limits.max_rows)
        .await
        .map_err(|e| query_error(e, None))?;
    let mut json = query::to_json(&answer).map_err(|e| query_error(e, None))?;
    Ok(match json["rows"].take() {
        Value::Array(rows) => rows,
        _ => Vec::new(),
    })
}

/// A `YYYY-MM-DD` parameter, when given.
pub fn date_param(
    params: &HashMap<String, String>,
    field: &'static str,
) -> Result<Option<NaiveDate>, ApiError> {
    params
        .get(field)
        .map(|s| {
            netrev_storage::model::parse_day(s)
                .ok_or_else(|| bad(field, format!("{s:?} is not a date (YYYY-MM-DD)")))
        })
        .transpose()
}

/// `POST /api/sql` with `{"sql": "…"}`; `format=json|csv|arrow` (query string or body).
async fn sql(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Answer {
    let request = serde_json::from_slice::<Value>(&body).ok();
    let text = request
        .as_ref()
        .and_then(|r| r.get("sql"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad("sql", r#"the body must be JSON: {"sql": "SELECT …"}"#))?;
    let format = params
        .get("format")
        .map(String::as_str)
        .or_else(|| request.as_ref()?.get("format")?.as_str())
        .unwrap_or("json");
    if !["json", "csv", "arrow"].contains(&format) {
        return Err(bad(
            "format",
            format!("unknown format {format:?}; json, csv or arrow"),
        ));
    }
    let limits = state.analysts.limits;
    let (text, format) = (text.to_string(), format.to_string());
    on_analysts(&state, Some("sql"), move |ctx| async move {
        let answer = query::run(&ctx, &text, limits)
            .await
            .map_err(|e| query_error(e, Some("sql")))?;
        render_answer(answer, &format)
    })
    .await
}

/// An answer of `POST /api/sql` in `format` (json, csv or arrow). Its body holds the memory
/// reserved for it until it is sent, in chunks, each of which counts as the connection's
/// activity (a slow reader of a large answer is not idle).
fn render_answer(answer: query::Answer, format: &str) -> Answer {
    let failed = |e| query_error(e, Some("sql"));
    let (content_type, bytes) = match format {
        "csv" => (
            "text/csv; charset=utf-8",
            query::to_csv(&answer).map_err(failed)?.into_bytes(),
        ),
        "arrow" => (
            "application/vnd.apache.arrow.stream",
            query::to_arrow_ipc(&answer).map_err(failed)?,
        ),
        _ => {
            let json = query::to_json(&answer).map_err(failed)?;
            let bytes = serde_json::to_vec(&json).map_err(|e| internal(e.to_string()))?;
            ("application/json", bytes)
        }
    };
    let truncated = if answer.truncated { "true" } else { "false" };
    let memory = answer.into_memory();
    memory
        .try_resize(bytes.len())
        .map_err(|e| failed(e.into()))?;
    let length = bytes.len();
    let chunks = futures::stream::unfold(
        (axum::body::Bytes::from(bytes), memory),
        |(mut rest, memory)| async move {
            if rest.is_empty() {
                return None;
            }
            let chunk = rest.split_to(rest.len().min(ANSWER_CHUNK));
            Some((Ok::<_, std::convert::Infallible>(chunk), (rest, memory)))
        },
    );
    let mut resp = axum::body::Body::from_stream(chunks).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert("x-netrev-truncated", HeaderValue::from_static(truncated));
    Ok(resp)
}

/// Bytes of an answer's body sent at a time.
const ANSWER_CHUNK: usize = 64 << 10;

/// The `from`/`to` days of a request, refused when `from` is after `to`.
fn range(
    params: &HashMap<String, String>,
) -> Result<(Option<NaiveDate>, Option<NaiveDate>), ApiError> {
    let (from, to) = (date_param(params, "from")?, date_param(params, "to")?);
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(bad("from", format!("from {f} is after to {t}")));
    }
    Ok((from, to))
}

/// Applies `filters` to `df`.
fn filtered(
    mut df: DataFrame,
    filters: Vec<datafusion::prelude::Expr>,
) -> Result<DataFrame, ApiError> {
    for f in filters {
        df = df.filter(f).map_err(internal)?;
    }
    Ok(df)
}

/// `GET /api/cohorts`: cohort LTV curves from `cohort_ltv`, by day, ISO week or month.
async fn cohorts(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let granularity = params.get("granularity").map_or("day", String::as_str);
    if !["day", "week", "month"].contains(&granularity) {
        return Err(bad(
            "granularity",
            format!("unknown granularity {granularity:?}; day, week or month"),
        ));
    }
    let (from, to) = range(&params)?;
    let max_age: i64 = match params.get("max_age").map(|s| s.parse::<i64>()) {
        None => 90,
        Some(Ok(n)) if (0..=365).contains(&n) => n,
        Some(_) => {
            return Err(bad(
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
        let df = filtered(ctx.table(table).await.map_err(internal)?, filters)?
            .sort(vec![
                col("cohort").sort(true, false),
                col("age").sort(true, false),
            ])
            .map_err(internal)?;
        let rows = rows(df, limits).await?;
        let grouped = crate::cohorts::group(&rows, &granularity).map_err(internal)?;
        Ok(axum::Json(grouped).into_response())
    })
    .await
}

/// `GET /api/visitors/{vid}`: the profile and refund history; 404 when unknown.
async fn visitor(State(state): State<ApiState>, Path(vid): Path<String>) -> Answer {
    let limits = state.analysts.limits;
    on_analysts(&state, None, move |ctx| visitor_profile(ctx, vid, limits)).await
}

async fn visitor_profile(ctx: SessionContext, vid: String, limits: Limits) -> Answer {
    let df = filtered(
        ctx.table("visitors").await.map_err(internal)?,
        vec![col("vid").eq(lit(vid.clone()))],
    )?;
    let mut profile = rows(df, limits).await?.into_iter().next().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("no visitor {vid:?}"),
            Some("vid"),
        )
    })?;
    let history = filtered(
        ctx.table("refund_links").await.map_err(internal)?,
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
    .map_err(internal)?;
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
async fn refunds(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    refund_log(state, params, false).await
}

/// `GET /api/refunds/unmatched`: refunds whose click is unknown.
async fn unmatched(
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
            return Err(bad(
                "type",
                format!("unknown type {other:?}; chargeback or customer_request"),
            ));
        }
    };
    let limit = match params.get("limit").map(|s| s.parse::<usize>()) {
        None => 1000,
        Some(Ok(n)) if (1..=state.analysts.limits.max_rows).contains(&n) => n,
        Some(_) => {
            return Err(bad(
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
        let df = filtered(ctx.table("refund_links").await.map_err(internal)?, filters)?
            .select_columns(REFUND_COLUMNS)
            .and_then(|d| {
                d.sort(vec![
                    col("ts").sort(false, false),
                    col("cid").sort(true, false),
                ])
            })
            .map_err(internal)?;
        Ok(axum::Json(json!({"refunds": rows(df, limits).await?})).into_response())
    })
    .await
}

/// `POST /api/webhooks` with `{"url", "events": ["refund", "conversion"], "description"}`:
/// 201 with the endpoint and its secret (shown only here).
async fn create_webhook(State(state): State<ApiState>, body: axum::body::Bytes) -> Answer {
    #[derive(serde::Deserialize)]
    struct New {
        url: String,
        events: Vec<String>,
        description: Option<String>,
    }
    let new: New = serde_json::from_slice(&body).map_err(|e| {
        bad(
            "body",
            format!(
                r#"expected {{"url": "https://…", "events": ["refund"], "description": "…"}}: {e}"#
            ),
        )
    })?;
    match state
        .webhooks
        .create(&new.url, &new.events, new.description)
        .await
    {
        Ok(endpoint) => Ok((
            StatusCode::CREATED,
            axum::Json(serde_json::to_value(&endpoint).map_err(internal)?),
        )
            .into_response()),
        Err(Ok(r)) => Err(bad(r.field, r.error)),
        Err(Err(e)) => Err(internal(e)),
    }
}

/// `GET /api/webhooks`: the endpoints, without their secrets.
async fn list_webhooks(State(state): State<ApiState>) -> Answer {
    let all: Vec<Value> = state
        .webhooks
        .list()
        .iter()
        .map(crate::webhooks::Endpoint::public)
        .collect();
    Ok(axum::Json(json!({ "webhooks": all })).into_response())
}

/// `DELETE /api/webhooks/{id}`: 204, or 404 when there is no such endpoint.
async fn delete_webhook(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    if state.webhooks.delete(&id).await.map_err(internal)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(error(
            StatusCode::NOT_FOUND,
            format!("no webhook endpoint {id:?}"),
            Some("id"),
        ))
    }
}

fn no_endpoint(id: &str) -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        format!("no webhook endpoint {id:?}"),
        Some("id"),
    )
}

/// `GET /api/webhooks/{id}/deliveries[?limit=N]`: the endpoint's messages, newest first, each
/// with its status, attempts (time, HTTP status or error, duration) and next attempt.
async fn deliveries(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let Some(endpoint) = state.webhooks.get(&id) else {
        return Err(no_endpoint(&id));
    };
    let limit = match params.get("limit") {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| bad("limit", "a number from 1 to 10000"))?,
    };
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let list: Vec<Value> = state
        .outbox
        .of_endpoint(&id, limit)
        .into_iter()
        .map(|d| {
            let attempts: Vec<Value> = d
                .attempts
                .iter()
                .map(|a| {
                    json!({
                        "at": time(a.at),
                        "status": a.status,
                        "error": a.error,
                        "duration_ms": a.duration_ms,
                    })
                })
                .collect();
            json!({
                "id": d.id,
                "type": d.event_type,
                "created": time(d.created),
                "status": d.status,
                "attempts": attempts,
                "next_attempt": d.next_attempt.and_then(time),
                "reason": d.reason,
            })
        })
        .collect();
    Ok(axum::Json(json!({"endpoint": endpoint.public(), "deliveries": list})).into_response())
}

/// `POST /api/webhooks/{id}/deliveries/{message}/retry`: attempt a delivery again now (a
/// pending one sooner than scheduled, a failed or delivered one once more). 202, or 404.
async fn retry_delivery(
    State(state): State<ApiState>,
    Path((id, message)): Path<(String, String)>,
) -> Answer {
    let Some(endpoint) = state.webhooks.get(&id) else {
        return Err(no_endpoint(&id));
    };
    if endpoint.disabled {
        return Err(error(
            StatusCode::CONFLICT,
            format!("webhook endpoint {id:?} is disabled (it answered 410 Gone)"),
            Some("id"),
        ));
    }
    use crate::webhooks::outbox::{Set, Status, now_ms};
    let key = (id, message);
    let outbox = state.outbox.clone();
    let asked = key.clone();
    // The outbox syncs its log: not on a thread that serves requests.
    let set = tokio::task::spawn_blocking(move || {
        outbox.set(&asked, Status::Pending, Some(now_ms()), None)
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    match set {
        Set::Done => {}
        Set::NoSuchDelivery => {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("no message {:?} for webhook endpoint {:?}", key.1, key.0),
                Some("message"),
            ));
        }
        Set::UnderWay => {
            return Err(error(
                StatusCode::CONFLICT,
                format!("message {:?} is being delivered right now", key.1),
                Some("message"),
            ));
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"ok": true, "id": key.1})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route netrev serves (`serve.rs`, `ingest/src/http.rs`, this file), as (method,
    /// path); `tests/integration/api.rs` also requests every described route from the server.
    const ROUTES: &[(&str, &str)] = &[
        ("get", "/api/click"),
        ("post", "/api/click"),
        ("get", "/api/conversion"),
        ("post", "/api/conversion"),
        ("get", "/api/conversion/refund"),
        ("post", "/api/conversion/refund"),
        ("get", "/api/ipn/{network}"),
        ("post", "/api/ipn/{network}"),
        ("get", "/api/health"),
        ("get", "/api/stats"),
        ("get", "/api/cohorts"),
        ("get", "/api/visitors/{vid}"),
        ("get", "/api/refunds"),
        ("get", "/api/refunds/unmatched"),
        ("post", "/api/sql"),
        ("get", "/api/openapi.json"),
        ("get", "/"),
        ("get", "/assets/{name}"),
        ("get", "/api/webhooks"),
        ("post", "/api/webhooks"),
        ("delete", "/api/webhooks/{id}"),
        ("get", "/api/webhooks/{id}/deliveries"),
        ("post", "/api/webhooks/{id}/deliveries/{message}/retry"),
    ];

    /// `/api/openapi.json` describes exactly the routes netrev serves.
    #[test]
    fn openapi_describes_every_route_and_no_other() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let mut described: Vec<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .expect("operations")
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        described.sort();
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_string(), (*p).to_string()))
            .collect();
        served.sort();
        assert_eq!(described, served);
    }
}
