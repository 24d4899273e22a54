//! `/api/webhooks…`: webhook endpoints (create, list, change, delete) and their deliveries
//! (list, retry).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{Answer, ApiError, ApiState};

/// `POST /api/webhooks` with `{"url", "events": ["refund", "conversion"], "description"}`:
/// 201 with the endpoint and its secret (shown only here).
pub(super) async fn create(
    State(state): State<ApiState>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Answer {
    let body = super::body(body)?;
    #[derive(serde::Deserialize)]
    struct New {
        url: String,
        events: Vec<String>,
        description: Option<String>,
    }
    let new: New = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
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
            axum::Json(serde_json::to_value(&endpoint).map_err(ApiError::internal)?),
        )
            .into_response()),
        Err(Ok(r)) => Err(ApiError::invalid(r.field, r.error)),
        Err(Err(e)) => Err(ApiError::internal(e)),
    }
}

/// `GET /api/webhooks`: the endpoints, without their secrets.
pub(super) async fn list(State(state): State<ApiState>) -> Answer {
    let all: Vec<Value> = state
        .webhooks
        .list()
        .iter()
        .map(netrev_webhooks::Endpoint::public)
        .collect();
    Ok(axum::Json(json!({ "webhooks": all })).into_response())
}

/// `PATCH /api/webhooks/{id}` with any of `url`, `events`, `description` (`null` removes
/// it) and `enabled` (`true` re-enables an endpoint a 410 Gone disabled): 200 with the
/// endpoint (without its secret), or 404.
pub(super) async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Answer {
    let body = super::body(body)?;
    let fields = super::fields::Fields::read(
        &body,
        &["url", "events", "description", "enabled"],
        r#"{"events": ["refund", "conversion"], "enabled": true}"#,
    )?;
    let change = netrev_webhooks::Change {
        url: fields.string("url")?,
        events: fields.strings("events")?,
        description: fields.nullable_string("description")?,
        enabled: fields.bool("enabled")?,
    };
    match state.webhooks.update(&id, change).await {
        Ok(Some(endpoint)) => Ok(axum::Json(endpoint.public()).into_response()),
        Ok(None) => Err(no_endpoint(&id)),
        Err(Ok(r)) => Err(ApiError::invalid(r.field, r.error)),
        Err(Err(e)) => Err(ApiError::internal(e)),
    }
}

/// `DELETE /api/webhooks/{id}`: 204, or 404 when there is no such endpoint.
pub(super) async fn delete(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    if state
        .webhooks
        .delete(&id)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(no_endpoint(&id))
    }
}

fn no_endpoint(id: &str) -> ApiError {
    ApiError::not_found("id", format!("no webhook endpoint {id:?}"))
}

/// `GET /api/webhooks/{id}/deliveries[?limit=N]`: the endpoint's messages, newest first, each
/// with its status, attempts (time, HTTP status or error, duration) and next attempt.
pub(super) async fn deliveries(
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
            .ok_or_else(|| ApiError::invalid("limit", "a number from 1 to 10000"))?,
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
pub(super) async fn retry_delivery(
    State(state): State<ApiState>,
    Path((id, message)): Path<(String, String)>,
) -> Answer {
    let Some(endpoint) = state.webhooks.get(&id) else {
        return Err(no_endpoint(&id));
    };
    if endpoint.disabled {
        return Err(ApiError::Conflict {
            field: "id",
            message: format!("webhook endpoint {id:?} is disabled (it answered 410 Gone)"),
        });
    }
    use netrev_webhooks::outbox::{Set, Status, now_ms};
    let key = (id, message);
    let outbox = state.outbox.clone();
    let asked = key.clone();
    // The outbox syncs its log: not on a thread that serves requests.
    let set = tokio::task::spawn_blocking(move || {
        outbox.set(&asked, Status::Pending, Some(now_ms()), None)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    match set {
        Set::Done => {}
        Set::NoSuchDelivery => {
            return Err(ApiError::not_found(
                "message",
                format!("no message {:?} for webhook endpoint {:?}", key.1, key.0),
            ));
        }
        Set::UnderWay => {
            return Err(ApiError::Conflict {
                field: "message",
                message: format!("message {:?} is being delivered right now", key.1),
            });
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"ok": true, "id": key.1})),
    )
        .into_response())
}
