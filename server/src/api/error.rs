//! Why a request to the service was not answered: one enum, and one `IntoResponse` that is the
//! only place the query API, the dashboard and the HTTP server's own guards choose an error
//! status (the postback routes have theirs in `netrev_ingest::http`).
//!
//! Every error answers `{"ok":false,"error":"…","field":"…"}` (`field` when a parameter is at
//! fault). Who is at fault chooses the status: the sender's mistakes are 4xx and say what to
//! change; a server that is busy or not ready yet is 503 with `Retry-After`, since the same
//! request later will do; the server's own failures are 500, their text logged with a
//! reference that the answer gives instead.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use netrev_pipeline::query::QueryError;

/// Seconds a client is told to wait before it retries a 503.
const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug)]
pub enum ApiError {
    /// 400: a parameter or the body is wrong; `field` names the parameter when one is at fault.
    Invalid {
        field: Option<&'static str>,
        message: String,
    },
    /// 401 with `WWW-Authenticate: Bearer`: no API key, or not the configured one. The answer
    /// says nothing about the key.
    Unauthorized,
    /// 403: a `Host` this server does not serve without an API key (DNS rebinding).
    ForeignHost,
    /// 404: what the path names does not exist.
    NotFound {
        field: &'static str,
        message: String,
    },
    /// 410: what the path names existed and was turned off (a disabled tracking link).
    Gone {
        field: &'static str,
        message: String,
    },
    /// 408, connection closed: the request's body did not arrive within the body timeout.
    BodyTooSlow { limit_secs: f64 },
    /// 413: the request's body is larger than the limit of the route.
    TooLarge { limit_bytes: usize },
    /// 409: the request conflicts with the state of what it names (a disabled endpoint, a
    /// delivery under way).
    Conflict {
        field: &'static str,
        message: String,
    },
    /// 415: a state-changing request that is not `application/json` (a cross-site form post).
    NotJson,
    /// 422: the query asks more memory, work or time than an analyst's query may use; the
    /// message names the flag that sets the limit.
    TooExpensive {
        field: Option<&'static str>,
        message: String,
    },
    /// 429 with `Retry-After`: the client sent more than its rate allows.
    TooManyRequests {
        client: String,
        retry_after_secs: u64,
    },
    /// 503 with `Retry-After`: not ready yet or too busy; the same request later will do.
    Unavailable(String),
    /// 500: the server failed. The text is logged, never sent: it can name files, addresses
    /// or internals.
    Internal(String),
}

impl ApiError {
    /// 400 naming the parameter at fault.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: Some(field),
            message: message.into(),
        }
    }

    /// 404 naming the parameter whose value names nothing.
    pub fn not_found(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            field,
            message: message.into(),
        }
    }

    /// 500 for a failure of the server's own.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(e.to_string())
    }

    /// The answer to a query that was not answered, on a route whose SQL is the sender's
    /// (`field`: `POST /api/sql`) or the server's own (`None`: cohorts, visitors, refunds).
    /// Refused SQL is the sender's (400); SQL that fails to plan or run is the sender's on
    /// `/api/sql` (400) and the server's elsewhere (500); a query past its memory is 422; past
    /// its time, 422 when the sender wrote it, 503 when the server did (it was busy); a store
    /// that cannot be read is 503 (try again), a file that cannot be decoded or a panic 500.
    pub fn from_query(e: QueryError, field: Option<&'static str>) -> ApiError {
        match e {
            QueryError::Refused(message) => ApiError::Invalid { field, message },
            QueryError::OutOfMemory(message) => ApiError::TooExpensive { field, message },
            e @ QueryError::Timeout(_) if field.is_some() => ApiError::TooExpensive {
                field,
                message: e.to_string(),
            },
            QueryError::Timeout(_) => {
                ApiError::Unavailable("the query took too long; the server is busy".into())
            }
            QueryError::Failed(e) if field.is_some() => ApiError::Invalid {
                field,
                message: e.to_string(),
            },
            QueryError::Failed(e) => ApiError::internal(e),
            QueryError::StoreUnavailable(m) => {
                // The store's error names paths and addresses: logged, not sent.
                tracing::warn!(error = %m, "a query could not read the data store");
                ApiError::Unavailable("the data store could not be read; retry shortly".into())
            }
            QueryError::Server(m) => ApiError::Internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message, field) = match self {
            ApiError::Invalid { field, message } => (StatusCode::BAD_REQUEST, message, field),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key (Authorization: Bearer …)".into(),
                None,
            ),
            ApiError::ForeignHost => (
                StatusCode::FORBIDDEN,
                "this Host is not served without an API key: use http://127.0.0.1 or \
                 http://localhost, add the name with --allowed-host, or set --api-key"
                    .into(),
                None,
            ),
            ApiError::NotFound { field, message } => (StatusCode::NOT_FOUND, message, Some(field)),
            ApiError::Gone { field, message } => (StatusCode::GONE, message, Some(field)),
            ApiError::BodyTooSlow { limit_secs } => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {limit_secs} s (--body-timeout-secs)"
                ),
                None,
            ),
            ApiError::TooLarge { limit_bytes } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {limit_bytes} bytes"),
                None,
            ),
            ApiError::Conflict { field, message } => (StatusCode::CONFLICT, message, Some(field)),
            ApiError::NotJson => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send Content-Type: application/json".into(),
                None,
            ),
            ApiError::TooExpensive { field, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, message, field)
            }
            ApiError::TooManyRequests {
                client,
                retry_after_secs,
            } => {
                let message =
                    format!("too many requests from {client}; retry in {retry_after_secs} s");
                let mut resp = answer(StatusCode::TOO_MANY_REQUESTS, message, None);
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                return resp;
            }
            ApiError::Unavailable(message) => {
                let mut resp = answer(StatusCode::SERVICE_UNAVAILABLE, message, None);
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
                return resp;
            }
            ApiError::Internal(text) => {
                let reference = format!("{:016x}", rand::random::<u64>());
                tracing::error!(reference, error = %text, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error (reference {reference} in the server's log)"),
                    None,
                )
            }
        };
        let mut resp = answer(status, message, field);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// `{"ok":false,"error":…,"field":…}` with `status`.
fn answer(status: StatusCode, message: String, field: Option<&'static str>) -> Response {
    let mut body = json!({"ok": false, "error": message});
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn the_server_s_failures_are_logged_not_sent() {
        let resp =
            ApiError::internal("open /secret/path/x.parquet: permission denied").into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let error = body(resp).await["error"].as_str().unwrap().to_string();
        assert!(!error.contains("/secret"), "{error}");
        assert!(error.contains("reference"), "{error}");
    }

    #[tokio::test]
    async fn who_is_at_fault_chooses_the_status() {
        let timeout = || QueryError::Timeout(std::time::Duration::from_secs(30));
        for (e, status) in [
            (ApiError::invalid("from", "x"), StatusCode::BAD_REQUEST),
            (ApiError::Unauthorized, StatusCode::UNAUTHORIZED),
            (ApiError::ForeignHost, StatusCode::FORBIDDEN),
            (ApiError::not_found("vid", "x"), StatusCode::NOT_FOUND),
            (ApiError::NotJson, StatusCode::UNSUPPORTED_MEDIA_TYPE),
            // A timeout is the sender's when the SQL is theirs, a busy server's otherwise.
            (
                ApiError::from_query(timeout(), Some("sql")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                ApiError::from_query(timeout(), None),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                ApiError::from_query(QueryError::Server("panic".into()), Some("sql")),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            // The store is down: not the query's fault, and worth trying again.
            (
                ApiError::from_query(
                    QueryError::StoreUnavailable("GET s3://bucket/x: timed out".into()),
                    Some("sql"),
                ),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ] {
            let resp = e.into_response();
            assert_eq!(resp.status(), status);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert!(resp.headers().contains_key(header::RETRY_AFTER));
            }
            if status == StatusCode::UNAUTHORIZED {
                assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
            }
            assert_eq!(body(resp).await["ok"], false);
        }
    }
}
