//! Tracking links (docs/design.md §11): the link an advertiser puts in an ad.
//!
//! - The links are kept in `meta/links.json` under the data root, by slug ([`Links`]; changed
//!   through `/api/links`, `crate::api`).
//! - `GET /r/{slug}` ([`router`]) records a click exactly as `/api/click` does (same parsing,
//!   same durability: [`netrev_ingest::http::record_click`]) with `link` = the slug and the
//!   link's source, campaign, cost and subs, which the visit's own `sub1`…`sub5`, `source`,
//!   `campaign` and `cost` override. It then answers `302` to the link's URL with its macros
//!   ([`MACROS`], `{cid}` or `[cid]`) replaced by URL-encoded values.
//! - No open redirect: the destination is the link's; a macro may not stand in its scheme,
//!   host, port or user (refused when the link is saved), and a value is percent-encoded, so it
//!   cannot end the component it stands in.
//! - The visitor is the `netrev_vid` cookie (set on the first visit, one year); the device
//!   comes from the `User-Agent` (`woothee`), the country from a trusted header or a MaxMind
//!   database ([`Geo`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rust_decimal::Decimal;

use netrev_ingest::Ingestor;
use netrev_ingest::http::PostbackError;
use netrev_ingest::params::Params;
use netrev_ingest::postback;
use netrev_storage::settings::Settings;

use crate::api::ApiError;
use crate::rate_limit::ClientAddr;

/// Where the links are kept.
const SETTINGS: &str = "meta/links.json";

/// Longest slug.
pub const SLUG_MAX_CHARS: usize = 64;

/// Longest destination URL, in characters once non-ASCII ones are percent-encoded: the length
/// browsers and ad platforms take without trouble (as for webhook endpoints).
pub const URL_MAX_CHARS: usize = netrev_webhooks::URL_MAX_CHARS;

/// The most one click of a tracking link may cost (the link's cost or a visit's) when
/// `--links-max-click-cost` is not given. A visit is public, so its `cost` is anyone's to
/// choose: without a bound, two visits at the largest amount would take a day's sums past
/// `Decimal(18,4)`. 1,000 is above any real price of a click.
pub const MAX_CLICK_COST: Decimal = Decimal::from_parts(1000, 0, 0, false, 0);

/// Links kept when `--links-max` is not given. All are in memory and in one JSON document
/// rewritten on each change: 10,000 links of the longest URL are about 25 MB to rewrite, far
/// more than a tracker's operator makes by hand, while a key holder cannot grow it without end.
pub const LINKS_MAX: usize = 10_000;

/// The macros of a destination URL, written `{name}` or `[name]`.
pub const MACROS: [&str; 10] = [
    "cid", "vid", "source", "campaign", "link", "sub1", "sub2", "sub3", "sub4", "sub5",
];

/// The visitor cookie.
pub const COOKIE: &str = "netrev_vid";

/// Bytes of a `User-Agent` the device is read from: real agents are 100-300 bytes with the
/// platform first; a longer one is cut, so its parsing costs the same whatever a client sends.
const USER_AGENT_READ: usize = 512;

/// How long the visitor cookie lasts: a year.
const COOKIE_MAX_AGE_SECS: u64 = 365 * 24 * 3600;

/// What a macro's value is encoded with: everything but RFC 3986's unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One tracking link, as kept.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Link {
    pub slug: String,
    /// The destination, macros unreplaced; ASCII (other characters are percent-encoded).
    pub url: String,
    pub source: Option<String>,
    pub campaign: Option<String>,
    /// Cost of one click.
    #[serde(with = "rust_decimal::serde::str")]
    pub cost: Decimal,
    /// Fixed `sub1`…`sub5`.
    pub subs: [Option<String>; 5],
    pub enabled: bool,
    pub created: String,
}

impl Link {
    /// The link as the API answers it.
    pub fn public(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "slug": self.slug,
            "url": self.url,
            "source": self.source,
            "campaign": self.campaign,
            "cost": netrev_storage::money::display(self.cost),
            "enabled": self.enabled,
            "created": self.created,
            "path": format!("/r/{}", self.slug),
        });
        for (i, sub) in self.subs.iter().enumerate() {
            v[format!("sub{}", i + 1)] = serde_json::json!(sub);
        }
        v
    }

    /// The link's own click parameters (what a visit's query may override).
    fn params(&self) -> BTreeMap<&'static str, String> {
        let mut p = BTreeMap::new();
        let cost = self.cost.to_string();
        let fixed = [
            ("source", self.source.as_deref()),
            ("campaign", self.campaign.as_deref()),
            ("cost", Some(cost.as_str())),
        ];
        let subs = ["sub1", "sub2", "sub3", "sub4", "sub5"]
            .into_iter()
            .zip(self.subs.iter().map(Option::as_deref));
        for (name, value) in fixed.into_iter().chain(subs) {
            if let Some(v) = value {
                p.insert(name, v.to_string());
            }
        }
        p
    }
}

/// The parameters of a visit that override the link's.
const OVERRIDES: [&str; 8] = [
    "source", "campaign", "cost", "sub1", "sub2", "sub3", "sub4", "sub5",
];

/// A new link or a change to one (`POST`/`PATCH /api/links`): each field given replaces the
/// link's; `Some(None)` clears an optional one.
#[derive(Debug, Default)]
pub struct Change {
    /// Only on creation (generated when absent); ignored by [`Links::update`]: a link's slug
    /// is in the ads, it never changes.
    pub slug: Option<String>,
    pub url: Option<String>,
    pub source: Option<Option<String>>,
    pub campaign: Option<Option<String>>,
    /// A decimal amount; cleared: 0.
    pub cost: Option<Option<String>>,
    pub subs: [Option<Option<String>>; 5],
    pub enabled: Option<bool>,
}

/// Why a link was not saved.
#[derive(Debug)]
pub enum Refused {
    /// 400: a field is wrong.
    Invalid { field: String, error: String },
    /// 409: the slug is taken, or there are as many links as allowed.
    Conflict { field: &'static str, error: String },
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match r {
            Refused::Invalid { field, error } => ApiError::Invalid {
                field: Some(field_name(&field)),
                message: error,
            },
            Refused::Conflict { field, error } => ApiError::Conflict {
                field,
                message: error,
            },
        }
    }
}

/// The static name of a link's field (`body` for another).
fn field_name(field: &str) -> &'static str {
    ["slug", "url", "enabled"]
        .into_iter()
        .chain(OVERRIDES)
        .find(|f| *f == field)
        .unwrap_or("body")
}

fn invalid(field: &str, error: impl Into<String>) -> Refused {
    Refused::Invalid {
        field: field.to_string(),
        error: error.into(),
    }
}

/// The tracking links, in memory and in `meta/links.json`.
#[derive(Debug)]
pub struct Links {
    links: Settings<BTreeMap<String, Link>>,
    store: netrev_storage::Store,
    /// Most links kept (`--links-max`).
    max: usize,
    /// Most one click may cost (`--links-max-click-cost`).
    max_click_cost: Decimal,
}

impl Links {
    /// Loads the links of `store` (none yet is fine).
    pub async fn open(
        store: netrev_storage::Store,
        max: usize,
        max_click_cost: Decimal,
    ) -> netrev_storage::Result<Links> {
        Ok(Links {
            links: Settings::open(store.clone(), SETTINGS).await?,
            store,
            max,
            max_click_cost,
        })
    }

    /// Click parameters checked as `/api/click` checks its own, the cost bounded by
    /// `--links-max-click-cost`.
    fn click_fields(
        &self,
        p: &BTreeMap<&'static str, String>,
    ) -> Result<postback::ClickFields, netrev_ingest::params::Invalid> {
        let pairs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let fields = postback::click(&Params::from_pairs(&pairs))?;
        if fields.cost > self.max_click_cost {
            return Err(netrev_ingest::params::Invalid::new(
                "cost",
                format!(
                    "is above the most one click of a link may cost, {} (--links-max-click-cost)",
                    self.max_click_cost
                ),
            ));
        }
        Ok(fields)
    }

    /// Every link, by slug.
    pub fn list(&self) -> Arc<BTreeMap<String, Link>> {
        self.links.get()
    }

    pub fn get(&self, slug: &str) -> Option<Link> {
        self.links.get().get(slug).cloned()
    }

    /// Validates and adds a link (`url` required).
    pub async fn create(
        &self,
        change: Change,
    ) -> Result<Result<Link, Refused>, netrev_storage::Error> {
        let slug = match &change.slug {
            Some(s) => match check_slug(s) {
                Ok(()) => s.clone(),
                Err(r) => return Ok(Err(r)),
            },
            None => new_slug(),
        };
        if change.url.is_none() {
            return Ok(Err(invalid("url", "is required")));
        }
        let draft = Link {
            slug: slug.clone(),
            url: String::new(),
            source: None,
            campaign: None,
            cost: Decimal::ZERO,
            subs: Default::default(),
            enabled: true,
            created: self
                .store
                .clock()
                .now()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let link = match self.changed(draft, change) {
            Ok(link) => link,
            Err(r) => return Ok(Err(r)),
        };
        let max = self.max;
        self.links
            .try_change(|all| {
                if all.contains_key(&slug) {
                    return Err(Refused::Conflict {
                        field: "slug",
                        error: format!("a link {slug:?} exists already"),
                    });
                }
                if all.len() >= max {
                    return Err(Refused::Conflict {
                        field: "body",
                        error: format!(
                            "there are {max} links already, as many as allowed (--links-max)"
                        ),
                    });
                }
                all.insert(slug, link.clone());
                Ok(link)
            })
            .await
    }

    /// Applies `change` to link `slug`: the link as it is now, `None` when there is none.
    pub async fn update(
        &self,
        slug: &str,
        change: Change,
    ) -> Result<Result<Option<Link>, Refused>, netrev_storage::Error> {
        self.links
            .try_change(|all| {
                let Some(link) = all.get_mut(slug) else {
                    return Ok(None);
                };
                *link = self.changed(link.clone(), change)?;
                Ok(Some(link.clone()))
            })
            .await
    }

    /// `link` with `change` applied and every field checked as a click would be.
    fn changed(&self, mut link: Link, change: Change) -> Result<Link, Refused> {
        if let Some(url) = change.url {
            link.url = check_url(&url)?;
        }
        if let Some(v) = change.source {
            link.source = v;
        }
        if let Some(v) = change.campaign {
            link.campaign = v;
        }
        for (sub, v) in link.subs.iter_mut().zip(change.subs) {
            if let Some(v) = v {
                *sub = v;
            }
        }
        if let Some(enabled) = change.enabled {
            link.enabled = enabled;
        }
        let mut p = link.params();
        if let Some(cost) = change.cost {
            p.insert("cost", cost.unwrap_or_else(|| "0".into()));
        }
        // The same checks as a click's parameters: a link saved is a link whose clicks record.
        let fields = self
            .click_fields(&p)
            .map_err(|i| invalid(&i.field, i.error))?;
        // As a click keeps them: an empty text is absent.
        link.source = fields.source;
        link.campaign = fields.campaign;
        link.subs = fields.subs;
        link.cost = fields.cost;
        Ok(link)
    }

    /// Removes a link; `false` when there is none with that slug.
    pub async fn delete(&self, slug: &str) -> netrev_storage::Result<bool> {
        self.links.change(|all| all.remove(slug).is_some()).await
    }
}

/// A slug is 1–[`SLUG_MAX_CHARS`] of `A-Z a-z 0-9 _ -`.
fn check_slug(slug: &str) -> Result<(), Refused> {
    if slug.is_empty()
        || slug.len() > SLUG_MAX_CHARS
        || !slug
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "slug",
            format!("must be 1-{SLUG_MAX_CHARS} characters of A-Z a-z 0-9 _ -"),
        ));
    }
    Ok(())
}

/// A new slug: 8 characters of lowercase letters and digits (40 random bits; a collision is
/// refused with 409, and the operator retries).
fn new_slug() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    (0..8)
        .map(|_| ALPHABET[rand::random_range(0..32)] as char)
        .collect()
}

/// A destination as kept: an absolute `http` or `https` URL with a host, no whitespace or
/// control characters, other non-ASCII characters percent-encoded, at most [`URL_MAX_CHARS`];
/// no macro in its scheme, user, host or port (the two expansions below would differ there).
fn check_url(url: &str) -> Result<String, Refused> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "url",
            "contains whitespace or control characters; percent-encode them",
        ));
    }
    let ascii: String = url
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                utf8_percent_encode(c.encode_utf8(&mut [0; 4]), NON_ALPHANUMERIC).to_string()
            }
        })
        .collect();
    if ascii.len() > URL_MAX_CHARS {
        return Err(invalid(
            "url",
            format!("longer than {URL_MAX_CHARS} characters once percent-encoded"),
        ));
    }
    let parse = |value: &str| {
        url::Url::parse(&expand(&ascii, |_| Some(value)))
            .map_err(|e| invalid("url", format!("not an absolute URL: {e}")))
    };
    let (a, b) = (parse("a")?, parse("b")?);
    if !["http", "https"].contains(&a.scheme()) {
        return Err(invalid("url", "must be an http or https URL"));
    }
    if a.host().is_none() {
        return Err(invalid("url", "has no host"));
    }
    let origin = |u: &url::Url| {
        (
            u.scheme().to_string(),
            u.username().to_string(),
            u.password().map(str::to_string),
            u.host_str().map(str::to_string),
            u.port(),
        )
    };
    if origin(&a) != origin(&b) {
        return Err(invalid(
            "url",
            "a macro may stand in the path, query or fragment only, not in the scheme, \
             user, host or port",
        ));
    }
    Ok(ascii)
}

/// `url` with each macro (`{name}` or `[name]` of [`MACROS`]) replaced by its value from
/// `value`, percent-encoded (absent: empty); anything else is kept as it is.
pub fn expand<'a>(url: &str, value: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(url.len() + 32);
    let mut rest = url;
    while let Some(at) = rest.find(['{', '[']) {
        out.push_str(&rest[..at]);
        let close = if rest.as_bytes()[at] == b'{' {
            '}'
        } else {
            ']'
        };
        let after = &rest[at + 1..];
        let name = after
            .find(close)
            .map(|end| &after[..end])
            .filter(|name| MACROS.contains(name));
        match name {
            Some(name) => {
                out.extend(utf8_percent_encode(value(name).unwrap_or(""), COMPONENT));
                rest = &after[name.len() + 1..];
            }
            None => {
                out.push_str(&rest[at..=at]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The device of a `User-Agent`: `mobile`, `tablet`, `desktop` or `bot`; `None` when it
/// cannot tell. Only the first [`USER_AGENT_READ`] bytes are read.
pub fn device(user_agent: &str) -> Option<&'static str> {
    static PARSER: LazyLock<woothee::parser::Parser> = LazyLock::new(woothee::parser::Parser::new);
    let mut end = user_agent.len().min(USER_AGENT_READ);
    while !user_agent.is_char_boundary(end) {
        end -= 1;
    }
    let ua = &user_agent[..end];
    let parsed = PARSER.parse(ua)?;
    match parsed.category {
        "crawler" => Some("bot"),
        // Android tablets leave `Mobile` out of their agent (Google's advice to browsers).
        "smartphone"
            if parsed.os == "iPad" || (parsed.os == "Android" && !ua.contains("Mobile")) =>
        {
            Some("tablet")
        }
        "smartphone" | "mobilephone" => Some("mobile"),
        "pc" => Some("desktop"),
        _ => None,
    }
}

/// Where a visit's country comes from: a header a trusted proxy sets (`CF-IPCountry`), else
/// a MaxMind-format database (`--geoip-db`), else nothing.
#[derive(Default)]
pub struct Geo {
    pub header: Option<HeaderName>,
    pub db: Option<maxminddb::Reader<Vec<u8>>>,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo")
            .field("header", &self.header)
            .field("db", &self.db.as_ref().map(|d| &d.metadata.database_type))
            .finish()
    }
}

impl Geo {
    /// From the settings: the header's name and the database's path (read whole now).
    pub fn open(header: Option<&str>, db: Option<&std::path::Path>) -> Result<Geo, String> {
        let header = header
            .map(|h| {
                HeaderName::try_from(h)
                    .map_err(|e| format!("--geoip-header {h:?} is not a header name: {e}"))
            })
            .transpose()?;
        let db = db
            .map(|p| {
                maxminddb::Reader::open_readfile(p).map_err(|e| {
                    format!(
                        "--geoip-db {}: not a readable MaxMind database: {e}",
                        p.display()
                    )
                })
            })
            .transpose()?;
        Ok(Geo { header, db })
    }

    /// The two-letter country code of a visit.
    pub fn country(&self, headers: &HeaderMap, client: IpAddr) -> Option<String> {
        if let Some(name) = &self.header
            && let Some(code) = headers.get(name).and_then(|v| v.to_str().ok())
        {
            let code = code.trim();
            // Cloudflare's XX (unknown) is not a country; its T1 (Tor) fails the letters-only
            // check.
            if code.len() == 2
                && code.bytes().all(|b| b.is_ascii_alphabetic())
                && !code.eq_ignore_ascii_case("XX")
            {
                return Some(code.to_ascii_uppercase());
            }
        }
        let db = self.db.as_ref()?;
        let found = db.lookup(client).ok()?;
        let code: Option<String> = found
            .decode_path(&[
                maxminddb::PathElement::Key("country"),
                maxminddb::PathElement::Key("iso_code"),
            ])
            .ok()??;
        code.filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
    }
}

/// What `/r/{slug}` needs.
#[derive(Debug, Clone)]
struct Redirects {
    links: Arc<Links>,
    ingestor: Arc<Ingestor>,
    geo: Arc<Geo>,
}

/// `GET` (and `HEAD`) `/r/{slug}`. Public: behind the rate limit of the postback routes, not
/// the API key.
pub fn router(links: Arc<Links>, ingestor: Arc<Ingestor>, geo: Arc<Geo>) -> Router {
    Router::new()
        .route("/r/{slug}", get(visit))
        .with_state(Redirects {
            links,
            ingestor,
            geo,
        })
}

/// The visitor ID of the request's `netrev_vid` cookie, when it holds a valid one.
fn cookie_vid(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| {
            !v.is_empty()
                && v.len() <= postback::MAX_VID_CHARS
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .map(str::to_string)
}

async fn visit(
    State(r): State<Redirects>,
    method: Method,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    client: Option<axum::Extension<ClientAddr>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(link) = r.links.get(&slug) else {
        return ApiError::not_found("slug", format!("no link {slug:?}")).into_response();
    };
    if !link.enabled {
        return ApiError::Gone {
            field: "slug",
            message: format!("link {slug:?} is disabled"),
        }
        .into_response();
    }
    let client = client.map_or(peer.ip().to_canonical(), |c| c.0.0);
    let p = visit_params(&link, uri.query(), &headers, &r.geo, client);
    // Checked as a click's, also for HEAD: a malformed override is 400, nothing recorded.
    let fields = match r.links.click_fields(&p) {
        Ok(f) => f,
        Err(i) => return PostbackError::Invalid(i).into_response(),
    };
    if method == Method::HEAD {
        // A link checker's HEAD records nothing: where a visit would go, without a click.
        let location = expand(&link.url, |name| match name {
            "cid" => None,
            _ => p.get(name).map(String::as_str),
        });
        return found(&location, None);
    }
    let (cid, vid) = match netrev_ingest::http::record_click(&r.ingestor, fields).await {
        Ok(ids) => ids,
        Err(rejected) => return PostbackError::Unavailable(rejected).into_response(),
    };
    let location = expand(&link.url, |name| match name {
        "cid" => Some(cid.as_str()),
        "vid" => Some(vid.as_str()),
        _ => p.get(name).map(String::as_str),
    });
    found(&location, Some(&vid))
}

/// The click parameters of a visit to `link`: the link's own, the visit's overrides (the first
/// value of each of [`OVERRIDES`] in `query`; anything else in the query is ignored, however
/// malformed, so an ad platform's additions never cost a visitor), `link`, and the visitor
/// (cookie), country and device the request tells.
fn visit_params(
    link: &Link,
    query: Option<&str>,
    headers: &HeaderMap,
    geo: &Geo,
    client: IpAddr,
) -> BTreeMap<&'static str, String> {
    let mut p = link.params();
    let mut overridden = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if let Some(name) = OVERRIDES.into_iter().find(|o| *o == name)
            && !overridden.contains(&name)
        {
            overridden.push(name);
            p.insert(name, value.into_owned());
        }
    }
    p.insert("link", link.slug.clone());
    if let Some(vid) = cookie_vid(headers) {
        p.insert("vid", vid);
    }
    if let Some(country) = geo.country(headers, client) {
        p.insert("country", country);
    }
    if let Some(device) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(device)
    {
        p.insert("device", device.to_string());
    }
    p
}

/// `302 Found` to `location`, never cached (each visit is a click), setting the visitor
/// cookie when `vid` is given.
fn found(location: &str, vid: Option<&str>) -> Response {
    let Ok(location) = HeaderValue::from_str(location) else {
        // Cannot happen: a kept URL is ASCII without controls and values are percent-encoded.
        return ApiError::internal("a link's destination is not a valid header").into_response();
    };
    let mut resp = (StatusCode::FOUND, [(header::LOCATION, location)]).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(vid) = vid {
        let cookie = format!(
            "{COOKIE}={vid}; Max-Age={COOKIE_MAX_AGE_SECS}; Path=/; HttpOnly; SameSite=Lax"
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            headers.insert(header::SET_COOKIE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_are_replaced_url_encoded_in_both_spellings_and_others_kept() {
        let url = "https://o.example/p/{sub1}?c=[cid]&s={source}&x={unknown}&y=[&z={";
        let got = expand(url, |name| match name {
            "sub1" => Some("a&b=c"),
            "cid" => Some("ID-1"),
            _ => None,
        });
        assert_eq!(
            got,
            "https://o.example/p/a%26b%3Dc?c=ID-1&s=&x={unknown}&y=[&z={"
        );
    }

    #[test]
    fn a_destination_is_refused_where_a_macro_could_choose_the_host() {
        for bad in [
            "javascript:alert(1)",
            "ftp://example.com/",
            "/relative/{cid}",
            "{sub1}",
            "https://{sub1}/",
            "https://example.com{sub1}/",
            "https://{sub1}@example.com/",
            "https://example.com:{sub1}/",
            "https://exa mple.com/",
            "https://example.com/\n",
        ] {
            assert!(check_url(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(
            check_url("https://example.com/é?id={cid}&s=[sub1]").unwrap(),
            "https://example.com/%C3%A9?id={cid}&s=[sub1]"
        );
    }

    #[test]
    fn devices_from_user_agents() {
        let cases = [
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                Some("mobile"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
                Some("mobile"),
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.0 Mobile/15E148 Safari/604.1",
                Some("tablet"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                Some("tablet"),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                Some("desktop"),
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                Some("bot"),
            ),
            ("", None),
        ];
        for (ua, want) in cases {
            assert_eq!(device(ua), want, "{ua}");
        }
        // A long agent is cut at a character boundary, not refused.
        let long = format!("{}é", "a".repeat(511));
        let _ = device(&long);
    }

    #[test]
    fn the_cookie_is_read_only_when_valid() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; netrev_vid=v_123; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_vid(&h).as_deref(), Some("v_123"));
        h.insert(header::COOKIE, "netrev_vid=bad value;".parse().unwrap());
        assert_eq!(cookie_vid(&h), None);
        h.insert(header::COOKIE, "netrev_vid=".parse().unwrap());
        assert_eq!(cookie_vid(&h), None);
    }
}
