//! `/api/links…`: the tracking links (create, list, read, change, delete); the visits
//! themselves are `crate::links`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::fields::Fields;
use super::{Answer, ApiError, ApiState};
use crate::links::{Change, Link};

/// The fields of a link's change.
const FIELDS: [&str; 10] = [
    "url", "source", "campaign", "cost", "sub1", "sub2", "sub3", "sub4", "sub5", "enabled",
];

/// The fields of a new link: those and its `slug` (it is in the ads: it never changes).
const NEW_FIELDS: [&str; 11] = [
    "slug", "url", "source", "campaign", "cost", "sub1", "sub2", "sub3", "sub4", "sub5", "enabled",
];

const EXAMPLE: &str = r#"{"slug": "spring", "url": "https://offer.example/?clickid={cid}", "source": "facebook", "campaign": "spring", "cost": "0.25"}"#;

/// The change a body asks for: a new link's (`new`, with its slug) or a link's change.
fn change(body: &[u8], new: bool) -> Result<Change, ApiError> {
    let known: &[&str] = if new { &NEW_FIELDS } else { &FIELDS };
    let f = Fields::read(body, known, EXAMPLE)?;
    Ok(Change {
        slug: f.string("slug")?,
        url: f.string("url")?,
        source: f.nullable_string("source")?,
        campaign: f.nullable_string("campaign")?,
        cost: f.money("cost")?,
        subs: [
            f.nullable_string("sub1")?,
            f.nullable_string("sub2")?,
            f.nullable_string("sub3")?,
            f.nullable_string("sub4")?,
            f.nullable_string("sub5")?,
        ],
        enabled: f.bool("enabled")?,
    })
}

fn no_link(slug: &str) -> ApiError {
    ApiError::not_found("slug", format!("no link {slug:?}"))
}

/// `POST /api/links`: 201 with the link; 409 when the slug is taken.
pub(super) async fn create(
    State(state): State<ApiState>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Answer {
    let body = super::body(body)?;
    let link = state
        .links
        .create(change(&body, true)?)
        .await
        .map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, axum::Json(link.public())).into_response())
}

/// `GET /api/links`: every link, by slug.
pub(super) async fn list(State(state): State<ApiState>) -> Answer {
    let all: Vec<serde_json::Value> = state.links.list().values().map(Link::public).collect();
    Ok(axum::Json(json!({ "links": all })).into_response())
}

/// `GET /api/links/{slug}`: the link, or 404.
pub(super) async fn get(State(state): State<ApiState>, Path(slug): Path<String>) -> Answer {
    let link = state.links.get(&slug).ok_or_else(|| no_link(&slug))?;
    Ok(axum::Json(link.public()).into_response())
}

/// `PATCH /api/links/{slug}` with any field but `slug` (`null` clears an optional one;
/// `"enabled": false` makes visits 410): 200 with the link, or 404.
pub(super) async fn update(
    State(state): State<ApiState>,
    Path(slug): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Answer {
    let body = super::body(body)?;
    let link = state
        .links
        .update(&slug, change(&body, false)?)
        .await
        .map_err(ApiError::internal)??
        .ok_or_else(|| no_link(&slug))?;
    Ok(axum::Json(link.public()).into_response())
}

/// `DELETE /api/links/{slug}`: 204, or 404. Its clicks stay; later visits are 404.
pub(super) async fn delete(State(state): State<ApiState>, Path(slug): Path<String>) -> Answer {
    if state
        .links
        .delete(&slug)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(no_link(&slug))
    }
}
