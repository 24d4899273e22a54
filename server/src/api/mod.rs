//! The query API: `/api/stats` from the live state ([`stats`]), and from the derived tables
//! as the last recompute wrote them, read-only SQL ([`sql`]), cohorts ([`cohorts`]), visitor
//! profiles and the refund log ([`tables`]); webhook endpoints and deliveries ([`webhooks`]);
//! tracking links ([`links`]); the API key; the OpenAPI description. Every error is an [`ApiError`].

mod cohorts;
mod error;
mod fields;
mod links;
mod sql;
pub mod stats;
mod tables;
mod webhooks;

pub use error::ApiError;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use chrono::NaiveDate;
use datafusion::prelude::{DataFrame, SessionContext};
use serde_json::Value;

use netrev_ingest::Secret;
use netrev_pipeline::analysts::Analysts;
use netrev_pipeline::query::{self, Limits};
use netrev_storage::Store;

use netrev_live::Live;

/// The OpenAPI description, embedded.
pub const OPENAPI: &str = include_str!("../openapi.json");

#[derive(Clone)]
pub struct ApiState {
    store: Store,
    /// Where the routes that plan SQL run, and their limits.
    analysts: Arc<Analysts>,
    webhooks: Arc<netrev_webhooks::Webhooks>,
    outbox: Arc<netrev_webhooks::outbox::Outbox>,
    links: Arc<crate::links::Links>,
}

/// The query routes, behind `api_key` when one is configured, plus the OpenAPI description.
pub fn router(
    store: Store,
    live: Arc<Live>,
    hooks: Arc<netrev_webhooks::Hooks>,
    links: Arc<crate::links::Links>,
    api_key: Option<Secret>,
    analysts: Arc<Analysts>,
) -> Router {
    let state = ApiState {
        store,
        analysts,
        webhooks: hooks.webhooks.clone(),
        outbox: hooks.outbox.clone(),
        links,
    };
    let protected = Router::new()
        .route("/api/stats", get(stats::stats).with_state(live))
        .route("/api/sql", json_post(sql::sql))
        .route("/api/cohorts", get(cohorts::cohorts))
        .route("/api/visitors/{vid}", get(tables::visitor))
        .route("/api/refunds", get(tables::refunds))
        .route("/api/refunds/unmatched", get(tables::unmatched))
        .route(
            "/api/webhooks",
            get(webhooks::list).merge(json_post(webhooks::create)),
        )
        .route(
            "/api/webhooks/{id}",
            axum::routing::delete(webhooks::delete).patch(webhooks::update),
        )
        .route("/api/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route(
            "/api/links",
            get(links::list).merge(json_post(links::create)),
        )
        .route(
            "/api/links/{slug}",
            get(links::get).patch(links::update).delete(links::delete),
        )
        .route(
            "/api/webhooks/{id}/deliveries/{message}/retry",
            json_post(webhooks::retry_delivery),
        )
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(api_key),
            require_key,
        ));
    protected.route(
        "/api/openapi.json",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
    )
}

/// Largest request body of the query routes (`POST /api/sql` is further bounded by
/// `--sql-max-bytes`).
const BODY_LIMIT: usize = 2 << 20;

/// A request's body, or why it has none: 413 past [`BODY_LIMIT`], 400 when it could not be
/// read (a body that arrived too slowly is answered 408 by the HTTP server).
fn body(read: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    read.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge {
                limit_bytes: BODY_LIMIT,
            }
        } else {
            ApiError::invalid("body", rejection.body_text())
        }
    })
}

/// A `POST` route that takes only `Content-Type: application/json` (415 otherwise, before
/// the handler: [`crate::guard::require_json`]). Every `POST` of the query routes is one.
fn json_post<H, T>(handler: H) -> MethodRouter<ApiState>
where
    H: Handler<T, ApiState>,
    T: 'static,
{
    post(handler).route_layer(axum::middleware::from_fn(crate::guard::require_json))
}

/// `Authorization: Bearer <key>` on every query route when a key is configured: 401
/// otherwise, with nothing about the key in the answer or the logs.
async fn require_key(
    State(key): State<Arc<Option<Secret>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = key.as_ref()
        && !key.matches(bearer(request.headers()))
    {
        return ApiError::Unauthorized.into_response();
    }
    next.run(request).await
}

/// The key of an `Authorization: Bearer <key>` header, if the request has one.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme's name is case-insensitive (RFC 9110 §11.1).
            let (scheme, key) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(key)
        })
}

/// A route's answer: its response, or why there is none.
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
        .map_err(|e| ApiError::from_query(e, field))?
}

/// Runs `df` and answers its rows as JSON objects (money as exact strings).
async fn rows(df: DataFrame, limits: Limits) -> Result<Vec<Value>, ApiError> {
    let answer = query::collect(df, limits.max_rows)
        .await
        .map_err(|e| ApiError::from_query(e, None))?;
    let mut json = query::to_json(&answer).map_err(|e| ApiError::from_query(e, None))?;
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
            netrev_storage::model::parse_day(s).ok_or_else(|| {
                ApiError::invalid(field, format!("{s:?} is not a date (YYYY-MM-DD)"))
            })
        })
        .transpose()
}

/// The `from`/`to` days of a request, refused when `from` is after `to`.
fn range(
    params: &HashMap<String, String>,
) -> Result<(Option<NaiveDate>, Option<NaiveDate>), ApiError> {
    let (from, to) = (date_param(params, "from")?, date_param(params, "to")?);
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::invalid(
            "from",
            format!("from {f} is after to {t}"),
        ));
    }
    Ok((from, to))
}

/// Applies `filters` to `df`.
fn filtered(
    mut df: DataFrame,
    filters: Vec<datafusion::prelude::Expr>,
) -> Result<DataFrame, ApiError> {
    for f in filters {
        df = df.filter(f).map_err(ApiError::internal)?;
    }
    Ok(df)
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
        ("patch", "/api/webhooks/{id}"),
        ("get", "/api/links"),
        ("post", "/api/links"),
        ("get", "/api/links/{slug}"),
        ("patch", "/api/links/{slug}"),
        ("delete", "/api/links/{slug}"),
        ("get", "/r/{slug}"),
        ("head", "/r/{slug}"),
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
        // `/api/ipn/{network}` is described network by network, since each network's body
        // has a format of its own.
        let networks = netrev_ingest::ipn::Network::ALL.map(|n| n.name());
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .flat_map(|(m, p)| match p.strip_suffix("{network}") {
                Some(prefix) => networks
                    .iter()
                    .map(|n| ((*m).to_string(), format!("{prefix}{n}")))
                    .collect(),
                None => vec![((*m).to_string(), (*p).to_string())],
            })
            .collect();
        served.sort();
        assert_eq!(described, served);
    }
}
