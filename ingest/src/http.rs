//! The postback routes: HTTP in, [`Ingestor::submit`] out.
//!
//! | route | answer |
//! |---|---|
//! | `GET/POST /api/click` | `{"ok":true,"cid":…,"vid":…}` |
//! | `GET/POST /api/conversion` | `{"ok":true}` |
//! | `GET/POST /api/conversion/refund` | `{"ok":true}` |
//! | `POST /api/ipn/{network}` | `OK` (text), see [`crate::ipn`] |
//!
//! Every answer is JSON; every error maps to its status in [`PostbackError`]'s one
//! `IntoResponse`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use netrev_storage::Event;

use crate::ingestor::{Ingestor, Outcome, Rejected};
use crate::ipn::{self, IpnSecrets, Network, Refused};
use crate::params::{self, BodyKind, Params};
use crate::postback::{self, Context, Invalid};
use crate::secret::Secret;

/// Settings of the postback routes.
#[derive(Debug, Clone)]
pub struct PostbackConfig {
    /// When set, every postback must carry it as the `token` parameter or the
    /// `X-Postback-Token` header.
    pub token: Option<String>,
    /// Largest request body accepted. Postbacks are a few hundred bytes; 64 KiB leaves room
    /// for verbose networks while keeping a flood of large bodies cheap to refuse.
    pub body_limit: usize,
    /// The secrets of the networks whose own notifications `/api/ipn/{network}` takes.
    pub ipn: IpnSecrets,
}

impl Default for PostbackConfig {
    fn default() -> Self {
        PostbackConfig {
            token: None,
            body_limit: 64 * 1024,
            ipn: IpnSecrets::default(),
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
    ipn: Arc<IpnSecrets>,
}

/// Why a postback was not acknowledged.
#[derive(Debug)]
pub enum PostbackError {
    /// 400: a parameter is missing or malformed; nothing was recorded.
    Invalid(Invalid),
    /// 401: the postback token is missing or wrong.
    Unauthorized,
    /// 401: a network's notification fails the network's own check.
    Unverified(String),
    /// 404: no such network, or its secret is not configured.
    NotFound(String),
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
            PostbackError::Unverified(why) => (StatusCode::UNAUTHORIZED, why, None, None),
            PostbackError::NotFound(why) => (
                StatusCode::NOT_FOUND,
                why,
                Some("network".to_string()),
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
                // The log's own error names files of the server: logged, not sent.
                let error = match r {
                    Rejected::Unavailable(why) => {
                        tracing::warn!(reason = %why, "postback refused: write-ahead log unavailable");
                        "write-ahead log unavailable; retry later".to_string()
                    }
                    r => r.to_string(),
                };
                (StatusCode::SERVICE_UNAVAILABLE, error, None, Some(secs))
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
        ipn: Arc::new(config.ipn.clone()),
    };
    Router::new()
        .route("/api/click", get(click).post(click))
        .route("/api/conversion", get(conversion).post(conversion))
        .route("/api/conversion/refund", get(refund).post(refund))
        .route("/api/ipn/{network}", get(ipn_probe).post(ipn_notification))
        .with_state(state)
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
        read_body(state, body).await?
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

/// The request body, at most the configured limit.
async fn read_body(state: &AppState, body: Body) -> Result<bytes::Bytes, PostbackError> {
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
        })
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
    let (cid, vid) = record_click(&state.ingestor, fields)
        .await
        .map_err(PostbackError::Unavailable)?;
    Ok(axum::Json(json!({"ok": true, "cid": cid, "vid": vid})).into_response())
}

/// Records a click as `/api/click` does (also the tracking links' `/r/{slug}`): netrev issues
/// its click ID, whose millisecond is the click time, and a visitor ID when `fields` has none;
/// answers both once the click is durable.
pub async fn record_click(
    ingestor: &Ingestor,
    fields: postback::ClickFields,
) -> Result<(String, String), Rejected> {
    let now = ingestor.clock().now_micros();
    let (cid, millis) = ingestor.issue_click_id((now / 1000) as u64);
    // The ID's millisecond is the click time; keep the microseconds when they agree.
    let ts = if (now / 1000) as u64 == millis {
        now
    } else {
        millis as i64 * 1000
    };
    let click = fields.into_click(cid, ts, postback::new_vid);
    let (cid, vid) = (click.cid.clone(), click.vid.clone());
    ingestor.submit(Event::Click(click)).await?;
    Ok((cid, vid))
}

async fn conversion(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, PostbackError> {
    let params = read_params(&state, req).await?;
    let ctx = Context {
        key: state.ingestor.click_id_key(),
        now_micros: state.ingestor.clock().now_micros(),
    };
    let event = postback::conversion(&params, &ctx)?;
    submit(&state, Event::Conversion(event)).await?;
    Ok(ok())
}

async fn refund(State(state): State<AppState>, req: Request) -> Result<Response, PostbackError> {
    let params = read_params(&state, req).await?;
    let ctx = Context {
        key: state.ingestor.click_id_key(),
        now_micros: state.ingestor.clock().now_micros(),
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

/// The network named in the route, if it is served here.
fn ipn_network(state: &AppState, name: &str) -> Result<(Network, String), PostbackError> {
    let network = Network::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Network::ALL.iter().map(|n| n.name()).collect();
        PostbackError::NotFound(format!(
            "unknown network {name:?}; IPN is taken from {}",
            known.join(", ")
        ))
    })?;
    let secret = state.ipn.get(network).ok_or_else(|| {
        PostbackError::NotFound(format!(
            "IPN from {name} is not configured (set --ipn-{name}-secret)"
        ))
    })?;
    Ok((network, secret.to_string()))
}

/// GET: networks (Digistore24) check that the URL answers before they post to it.
async fn ipn_probe(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, PostbackError> {
    ipn_network(&state, &name)?;
    Ok(ipn_ok())
}

async fn ipn_notification(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, PostbackError> {
    let (network, secret) = ipn_network(&state, &name)?;
    let body = read_body(&state, req.into_body()).await?;
    let notice = network.read(&secret, &body).map_err(|r| match r {
        Refused::Unverified(why) => {
            tracing::warn!(network = name, reason = %why, "IPN refused");
            PostbackError::Unverified(why)
        }
        Refused::Invalid(i) => PostbackError::Invalid(i),
    })?;
    let ctx = Context {
        key: state.ingestor.click_id_key(),
        now_micros: state.ingestor.clock().now_micros(),
    };
    match ipn::to_event(notice, &ctx)? {
        Ok(event) => {
            submit(&state, event).await?;
        }
        Err(why) => tracing::info!(network = name, reason = %why, "IPN acknowledged and ignored"),
    }
    Ok(ipn_ok())
}

/// What the networks expect: a 200, and for Digistore24 a body starting with `OK`.
fn ipn_ok() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        "OK",
    )
        .into_response()
}
