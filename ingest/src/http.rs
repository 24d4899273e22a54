//! The postback routes: HTTP in, [`Ingestor::submit`] out.
//!
//! | route | answer |
//! |---|---|
//! | `GET/POST /api/click` | `{"ok":true,"cid":…,"vid":…}` |
//! | `GET/POST /api/conversion` | `{"ok":true}` |
//! | `GET/POST /api/conversion/refund` | `{"ok":true}` |
//!
//! Every answer is JSON; every error maps to its status in [`PostbackError`]'s one
//! `IntoResponse`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use netrev_storage::Event;

use crate::ingestor::{Ingestor, Outcome, Rejected};
use crate::params::{self, BodyKind, Params};
use crate::postback::{self, Context, Invalid};

/// Settings of the postback routes.
#[derive(Debug, Clone)]
pub struct PostbackConfig {
    /// When set, every postback must carry it as the `token` parameter or the
    /// `X-Postback-Token` header.
    pub token: Option<String>,
    /// Largest request body accepted. Postbacks are a few hundred bytes; 64 KiB leaves room
    /// for verbose networks while keeping a flood of large bodies cheap to refuse.
    pub body_limit: usize,
}

impl Default for PostbackConfig {
    fn default() -> Self {
        PostbackConfig {
            token: None,
            body_limit: 64 * 1024,
        }
    }
}

/// Header that may carry the postback token instead of the `token` parameter.
pub const TOKEN_HEADER: &str = "x-postback-token";

#[derive(Clone)]
struct AppState {
    ingestor: Arc<Ingestor>,
    /// The configured postback token.
    token: Option<Secret>,
    body_limit: usize,
}

/// Why a postback was not acknowledged.
#[derive(Debug)]
pub enum PostbackError {
    /// 400: a parameter is missing or malformed; nothing was recorded.
    Invalid(Invalid),
    /// 401: the postback token is missing or wrong.
    Unauthorized,
    /// 413: the body is larger than the limit.
    TooLarge(usize),
    /// 405: HEAD (or another method without a handler) cannot record a postback.
    MethodNotAllowed,
    /// 503 with `Retry-After`: the buffer is full or the log cannot write; nothing recorded.
    Unavailable(Rejected),
}

impl IntoResponse for PostbackError {
    fn into_response(self) -> Response {
        let (status, error, field, retry_after) = match self {
            PostbackError::Invalid(i) => (StatusCode::BAD_REQUEST, i.error, Some(i.field), None),
            PostbackError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong postback token".to_string(),
                Some("token".to_string()),
                None,
            ),
            PostbackError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "postbacks are sent with GET or POST".to_string(),
                None,
                None,
            ),
            PostbackError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {limit} bytes"),
                None,
                None,
            ),
            PostbackError::Unavailable(r) => {
                let secs = match r {
                    Rejected::Busy => "1",
                    Rejected::Unavailable(_) | Rejected::ShuttingDown => "5",
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r.to_string(),
                    None,
                    Some(secs),
                )
            }
        };
        let mut body = json!({"ok": false, "error": error});
        if let Some(f) = field {
            body["field"] = json!(f);
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        resp
    }
}

impl From<Invalid> for PostbackError {
    fn from(i: Invalid) -> Self {
        PostbackError::Invalid(i)
    }
}

/// The postback routes over `ingestor`.
pub fn router(ingestor: Arc<Ingestor>, config: &PostbackConfig) -> Router {
    let state = AppState {
        ingestor,
        token: config.token.as_deref().map(Secret::new),
        body_limit: config.body_limit,
    };
    Router::new()
        .route("/api/click", get(click).post(click))
        .route("/api/conversion", get(conversion).post(conversion))
        .route("/api/conversion/refund", get(refund).post(refund))
        .with_state(state)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// Reads and checks the parameters of a postback: method, size limit, token, parsing.
async fn read_params(state: &AppState, req: Request) -> Result<Params, PostbackError> {
    let (parts, body) = req.into_parts();
    if parts.method == Method::HEAD {
        // axum answers HEAD with the GET handler; a HEAD must never record an event.
        return Err(PostbackError::MethodNotAllowed);
    }
    let query = parts.uri.query().map(str::to_owned);
    let kind = BodyKind::from_content_type(
        parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let body = if parts.method == Method::POST {
        axum::body::to_bytes(body, state.body_limit)
            .await
            .map_err(|e| {
                let too_large = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                    || e.into_inner().is::<http_body_util::LengthLimitError>();
                if too_large {
                    PostbackError::TooLarge(state.body_limit)
                } else {
                    PostbackError::Invalid(Invalid::new("", "the request body could not be read"))
                }
            })?
    } else {
        drop::<Body>(body);
        Default::default()
    };
    let parsed = params::parse(query.as_deref(), &body, kind);
    // Authenticate before judging the input, so a caller without the token learns nothing
    // about what would be accepted.
    if let Some(want) = &state.token {
        let given = parts
            .headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| match &parsed {
                Ok(p) => p.get("token").map(str::to_owned),
                Err(_) => params::find(query.as_deref().unwrap_or("").as_bytes(), "token")
                    .or_else(|| params::find(&body, "token")),
            });
        if !want.matches(given.as_deref()) {
            return Err(PostbackError::Unauthorized);
        }
    }
    Ok(parsed?)
}

/// A configured secret (postback token, API key), kept as its SHA-256: comparing fixed-size
/// digests in constant time leaks neither the secret nor its length.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    pub fn new(secret: &str) -> Self {
        Secret(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn matches(&self, given: Option<&str>) -> bool {
        let Some(given) = given else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

async fn submit(state: &AppState, event: Event) -> Result<Outcome, PostbackError> {
    state
        .ingestor
        .submit(event)
        .await
        .map_err(PostbackError::Unavailable)
}

async fn click(State(state): State<AppState>, req: Request) -> Result<Response, PostbackError> {
    let params = read_params(&state, req).await?;
    let fields = postback::click(&params)?;
    let now = now_micros();
    let (cid, millis) = state.ingestor.issue_click_id((now / 1000) as u64);
    // The ID's millisecond is the click time; keep the microseconds when they agree.
    let ts = if (now / 1000) as u64 == millis {
        now
    } else {
        millis as i64 * 1000
    };
    let click = fields.into_click(cid, ts, postback::new_vid);
    let (cid, vid) = (click.cid.clone(), click.vid.clone());
    submit(&state, Event::Click(click)).await?;
    Ok(axum::Json(json!({"ok": true, "cid": cid, "vid": vid})).into_response())
}

async fn conversion(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, PostbackError> {
    let params = read_params(&state, req).await?;
    let ctx = Context {
        key: state.ingestor.click_id_key(),
        now_micros: now_micros(),
    };
    let event = postback::conversion(&params, &ctx)?;
    submit(&state, Event::Conversion(event)).await?;
    Ok(ok())
}

async fn refund(State(state): State<AppState>, req: Request) -> Result<Response, PostbackError> {
    let params = read_params(&state, req).await?;
    let ctx = Context {
        key: state.ingestor.click_id_key(),
        now_micros: now_micros(),
    };
    let event = postback::refund(&params, &ctx)?;
    submit(&state, Event::Refund(event)).await?;
    Ok(ok())
}

fn ok() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        r#"{"ok":true}"#,
    )
        .into_response()
}
