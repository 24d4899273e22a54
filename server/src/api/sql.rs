//! `POST /api/sql`: an analyst's read-only SQL over the raw and derived tables, answered as
//! JSON, CSV or an Arrow IPC stream within the analysts' limits
//! ([`netrev_pipeline::analysts`]).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use serde_json::Value;

use netrev_pipeline::query;

use super::{Answer, ApiError, ApiState, on_analysts};

/// `POST /api/sql` with `{"sql": "…"}`; `format=json|csv|arrow` (query string or body).
pub(super) async fn sql(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Answer {
    let body = super::body(body)?;
    let request = serde_json::from_slice::<Value>(&body).ok();
    let text = request
        .as_ref()
        .and_then(|r| r.get("sql"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("sql", r#"the body must be JSON: {"sql": "SELECT …"}"#))?;
    // Either place may say it (the query string wins); a wrong one is refused wherever it is.
    let in_body = match request.as_ref().and_then(|r| r.get("format")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_str().unwrap_or("")),
    };
    for given in [params.get("format").map(String::as_str), in_body]
        .into_iter()
        .flatten()
    {
        if !["json", "csv", "arrow"].contains(&given) {
            return Err(ApiError::invalid(
                "format",
                format!("unknown format {given:?}; json, csv or arrow"),
            ));
        }
    }
    let format = params
        .get("format")
        .map(String::as_str)
        .or(in_body)
        .unwrap_or("json");
    let limits = state.analysts.limits;
    let (text, format) = (text.to_string(), format.to_string());
    on_analysts(&state, Some("sql"), move |ctx| async move {
        let answer = query::run(&ctx, &text, limits)
            .await
            .map_err(|e| ApiError::from_query(e, Some("sql")))?;
        render_answer(answer, &format)
    })
    .await
}

/// An answer of `POST /api/sql` in `format` (json, csv or arrow). Its body holds the memory
/// reserved for it until it is sent, in chunks, each of which counts as the connection's
/// activity (a slow reader of a large answer is not idle).
fn render_answer(answer: query::Answer, format: &str) -> Answer {
    let failed = |e| ApiError::from_query(e, Some("sql"));
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
            let bytes = serde_json::to_vec(&json).map_err(|e| ApiError::internal(e.to_string()))?;
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
