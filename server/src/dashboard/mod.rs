//! The dashboard at `GET /`: one page and its assets, embedded in the binary (no build step,
//! no CDN; it works offline). The page reads the query API like any client; the Cohort LTV
//! chart is drawn with uPlot, vendored in `vendor/uplot` with its licence.

use axum::Router;
use axum::extract::Path;
use axum::http::header;
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

/// The page's Content-Security-Policy: only its own scripts, styles and API, nothing inline
/// and nothing from elsewhere, so an injected `<script>` or `style` attribute does nothing and
/// the API key typed into the page can go nowhere but this server. The page allows it: its
/// scripts and styles are files under `/assets/`, it builds elements with `textContent` and
/// styles them through the CSSOM (`el.style.x = …`, which CSP does not restrict; uPlot does
/// the same, and has no `eval` or `new Function`), draws on a canvas, and fetches only `/api/…`.
/// The CSV download is a `blob:` link with `download`, which is not fetched through CSP.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// An asset or the page, with the headers every dashboard answer carries: the CSP (also on
/// the assets, harmless there and right should one be opened directly), no framing
/// (clickjacking the API-key form), no content sniffing, no referrer to other sites.
fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => page(content_type, body),
        None => {
            crate::api::ApiError::not_found("name", format!("no asset {name:?}")).into_response()
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`CSP`] forbids is not in the page or its scripts: no inline script, style,
    /// handler or `javascript:` URL, no `eval`, no style attributes written as markup, and
    /// nothing loaded from another origin.
    #[test]
    fn the_page_needs_nothing_its_policy_forbids() {
        let page = INDEX.to_lowercase();
        assert_eq!(
            page.matches("<script").count(),
            page.matches("<script src=\"/assets/").count(),
            "inline scripts"
        );
        for forbidden in [
            "<style",
            "style=",
            " onclick",
            " onload",
            "javascript:",
            "http:",
            "https:",
        ] {
            assert!(!page.contains(forbidden), "index.html has {forbidden}");
        }
        for (name, _, body) in ASSETS {
            for forbidden in [
                "eval(",
                "new Function",
                "setAttribute(\"style",
                "style=",
                "@import",
                "url(",
            ] {
                assert!(!body.contains(forbidden), "{name} has {forbidden}");
            }
        }
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert!(!CSP.contains("unsafe"));
    }
}
