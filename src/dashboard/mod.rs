//! The dashboard at `GET /`: one page and its assets, embedded in the binary (no build step,
//! no CDN; it works offline). The page reads the query API like any client; the Cohort LTV
//! chart is drawn with uPlot, vendored in `vendor/uplot` with its licence.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("index.html");

/// The assets by name: content type and bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("style.css"),
    ),
    (
        "uplot.js",
        "text/javascript; charset=utf-8",
        include_str!("vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "uplot.css",
        "text/css; charset=utf-8",
        include_str!("vendor/uplot/uPlot.min.css"),
    ),
];

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => page(content_type, body),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "ok": false,
                "error": format!("no asset {name:?}"),
                "field": "name",
            })),
        )
            .into_response(),
    }
}

/// `GET /` and `GET /assets/{name}`; open like the OpenAPI description (the page asks for the
/// API key and sends it with its API requests).
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route("/assets/{name}", get(asset))
}
