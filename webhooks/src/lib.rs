//! # netrev-webhooks: refunds and conversions told to CRMs
//!
//! **In:** events the live stats attributed to their click ([`Attributed`]), and the
//! endpoints an operator configured. **Out:** signed HTTP deliveries (Standard Webhooks).
//! **Guarantees:** a message is durable in the [`outbox`] before it is delivered, and retried
//! until it is delivered, given up, or its endpoint disabled; one message id per event, so a
//! receiver can drop repeats.
//!
//! - Settings → Webhooks: `POST/GET /api/webhooks`, `PATCH/DELETE /api/webhooks/{id}`, kept in
//!   `meta/webhooks.json` under the data root (rewritten whole and atomically on every change).
//! - When the live stats attribute a conversion or refund to its click, [`Hooks::announce`]
//!   builds one message per subscribed endpoint (with the click's context and the visitor's
//!   totals after the event) and puts it in the durable [`outbox`].
//! - [`deliver`] sends them: Standard Webhooks signatures, retries with backoff and jitter,
//!   410 disables the endpoint, internal addresses refused at connect time.

pub mod deliver;
pub mod outbox;

/// What can go wrong with webhooks' own state (not with a delivery: those are recorded as
/// attempts).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data root, where the endpoints are kept, failed.
    #[error(transparent)]
    Store(#[from] netrev_storage::Error),
    /// A file of the outbox failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A file is damaged: the endpoints' settings or a line of the outbox. The operator's to
    /// repair (the message says which).
    #[error("{0}")]
    Damaged(String),
    /// Writing the settings or a message as JSON failed.
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The delivery thread or its runtime could not start.
    #[error("starting the delivery thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The HTTP client for deliveries could not be made.
    #[error("the webhook client: {0}")]
    Client(#[from] reqwest::Error),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use netrev_live::Attributed;
use netrev_storage::Event;
use sha2::Sha256;

/// Prefix of an endpoint secret.
const SECRET_PREFIX: &str = "whsec_";

/// A new endpoint secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// Why a secret cannot sign.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is whsec_ followed by the base64 of 24 to 64 bytes")]
pub struct BadSecret;

/// The `webhook-signature` header value for a message: `v1,` and the base64 of
/// HMAC-SHA256(key, "{id}.{timestamp}.{body}"), the key being the secret's decoded bytes.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let key = STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).ok_or(BadSecret)?)
        .map_err(|_| BadSecret)?;
    if !(24..=64).contains(&key.len()) {
        return Err(BadSecret);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Whether a webhook may connect to `ip` when private targets are not allowed: never to
/// loopback, private (RFC 1918, unique local), link-local, shared (CGNAT, 100.64/10),
/// multicast, broadcast, unspecified or documentation addresses, nor to IPv6 forms of IPv4
/// ones (mapped, compatible, NAT64 well-known prefix) that are.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space (CGNAT) 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) IPv6
/// address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(tail),
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_loopback() && !ip.is_unspecified() => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        _ => None,
    }
}

/// The literal address of a webhook URL's host, as a client would parse it (`2130706433` and
/// `0x7f.1` are 127.0.0.1); `None` when the host is a name to resolve.
pub fn literal_address(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Events an endpoint can subscribe to.
pub const EVENTS: &[&str] = &["refund", "conversion"];

/// Where the settings live under the data root.
const SETTINGS: &str = "meta/webhooks.json";

/// Longest endpoint URL, in characters, as written and as stored (percent-encoded). 2,048 is
/// what browsers, proxies and webhook receivers commonly accept; longer URLs are rarely real
/// and every one is kept in memory, rewritten with the settings and sent with each attempt.
pub const URL_MAX_CHARS: usize = 2048;

/// Longest endpoint description, in characters (not bytes, so every script gets the same
/// room). It is a label for people ("CRM win-back flow"); 1,000 is ample for a note while
/// keeping `meta/webhooks.json`, which is rewritten whole on every change, and the listing,
/// which shows every description, small.
pub const DESCRIPTION_MAX_CHARS: usize = 1000;

/// One endpoint, as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub secret: String,
    pub created: String,
    #[serde(default)]
    pub disabled: bool,
}

impl Endpoint {
    /// The endpoint as listed: everything but the secret, which is shown once, on creation.
    pub fn public(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("serializable");
        if let Some(o) = v.as_object_mut() {
            o.remove("secret");
        }
        v
    }
}

/// The endpoints, in memory and in `meta/webhooks.json`.
pub struct Webhooks {
    endpoints: netrev_storage::settings::Settings<Vec<Endpoint>>,
    store: netrev_storage::Store,
    allow_private: bool,
}

/// A change to an endpoint (`PATCH /api/webhooks/{id}`): each field given replaces the
/// endpoint's.
#[derive(Debug, Default)]
pub struct Change {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `Some(None)` removes the description.
    pub description: Option<Option<String>>,
    /// `true` re-enables an endpoint disabled by a 410 Gone.
    pub enabled: Option<bool>,
}

/// A refused endpoint: which field and why.
#[derive(Debug)]
pub struct Refused {
    pub field: &'static str,
    pub error: String,
}

fn refused(field: &'static str, error: impl Into<String>) -> Refused {
    Refused {
        field,
        error: error.into(),
    }
}

impl Webhooks {
    /// Loads the settings of `store` (none yet is fine).
    pub async fn open(store: netrev_storage::Store, allow_private: bool) -> Result<Self> {
        Ok(Webhooks {
            endpoints: netrev_storage::settings::Settings::open(store.clone(), SETTINGS).await?,
            store,
            allow_private,
        })
    }

    /// Validates and adds an endpoint; returns it with its secret.
    pub async fn create(
        &self,
        url: &str,
        events: &[String],
        description: Option<String>,
    ) -> Result<Endpoint, Result<Refused, Error>> {
        let url = self.check_url(url).map_err(Ok)?;
        let events = check_events(events).map_err(Ok)?;
        if let Some(d) = &description {
            check_description(d).map_err(Ok)?;
        }
        let id: [u8; 8] = rand::random();
        let endpoint = Endpoint {
            id: format!("wh_{}", hex::encode(id)),
            url,
            events,
            description,
            secret: new_secret(),
            created: self
                .store
                .clock()
                .now()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            disabled: false,
        };
        let added = endpoint.clone();
        self.endpoints
            .change(|all| all.push(added))
            .await
            .map_err(|e| Err(e.into()))?;
        Ok(endpoint)
    }

    /// Applies `change` to endpoint `id`, each field validated as on creation: the endpoint
    /// as it is now, `None` when there is none with that id.
    pub async fn update(
        &self,
        id: &str,
        change: Change,
    ) -> Result<Option<Endpoint>, Result<Refused, Error>> {
        let url = change
            .url
            .map(|u| self.check_url(&u))
            .transpose()
            .map_err(Ok)?;
        let events = change
            .events
            .map(|e| check_events(&e))
            .transpose()
            .map_err(Ok)?;
        if let Some(Some(d)) = &change.description {
            check_description(d).map_err(Ok)?;
        }
        self.endpoints
            .change(|all| {
                let endpoint = all.iter_mut().find(|e| e.id == id)?;
                if let Some(url) = url {
                    endpoint.url = url;
                }
                if let Some(events) = events {
                    endpoint.events = events;
                }
                if let Some(description) = change.description {
                    endpoint.description = description;
                }
                if let Some(enabled) = change.enabled {
                    endpoint.disabled = !enabled;
                }
                Some(endpoint.clone())
            })
            .await
            .map_err(|e| Err(e.into()))
    }

    /// An endpoint's URL as stored: an `http` or `https` URL with a host, at most
    /// [`URL_MAX_CHARS`], and not an internal address unless those are allowed.
    fn check_url(&self, url: &str) -> Result<String, Refused> {
        if url.chars().count() > URL_MAX_CHARS {
            return Err(refused(
                "url",
                format!("longer than {URL_MAX_CHARS} characters"),
            ));
        }
        let parsed = url::Url::parse(url).map_err(|e| refused("url", format!("not a URL: {e}")))?;
        if parsed.as_str().len() > URL_MAX_CHARS {
            return Err(refused(
                "url",
                format!("longer than {URL_MAX_CHARS} characters once percent-encoded"),
            ));
        }
        if !["http", "https"].contains(&parsed.scheme()) {
            return Err(refused("url", "must be an http or https URL"));
        }
        if parsed.host().is_none() {
            return Err(refused("url", "has no host"));
        }
        if !self.allow_private
            && let Some(ip) = literal_address(&parsed)
            && !is_public(ip)
        {
            return Err(refused(
                "url",
                format!(
                    "{ip} is a private, loopback or otherwise internal address \
                     (serve --webhooks-allow-private allows it, for development)"
                ),
            ));
        }
        Ok(parsed.to_string())
    }

    pub fn list(&self) -> Arc<Vec<Endpoint>> {
        self.endpoints.get()
    }

    pub fn get(&self, id: &str) -> Option<Endpoint> {
        self.list().iter().find(|e| e.id == id).cloned()
    }

    /// Removes an endpoint; `false` when there is none with that id.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        Ok(self
            .endpoints
            .change(|all| {
                let before = all.len();
                all.retain(|e| e.id != id);
                all.len() != before
            })
            .await?)
    }

    /// Disables an endpoint (it answered 410 Gone): nothing more is sent to it.
    pub async fn disable(&self, id: &str) -> Result<bool> {
        Ok(self
            .endpoints
            .change(|all| {
                all.iter_mut()
                    .find(|e| e.id == id)
                    .map(|e| e.disabled = true)
                    .is_some()
            })
            .await?)
    }
}

/// The events subscribed to, sorted and without repeats: at least one, each of [`EVENTS`].
fn check_events(events: &[String]) -> Result<Vec<String>, Refused> {
    if events.is_empty() {
        return Err(refused(
            "events",
            "subscribe to at least one of refund, conversion",
        ));
    }
    if let Some(e) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(refused(
            "events",
            format!("unknown event {e:?}; refund or conversion"),
        ));
    }
    let mut events: Vec<String> = events.to_vec();
    events.sort();
    events.dedup();
    Ok(events)
}

/// Refuses a description longer than [`DESCRIPTION_MAX_CHARS`] or with control characters
/// other than tab and line breaks (a NUL or an escape sequence is never part of a label, and
/// would reach whatever shows or logs it).
fn check_description(d: &str) -> Result<(), Refused> {
    if d.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(refused(
            "description",
            format!("longer than {DESCRIPTION_MAX_CHARS} characters"),
        ));
    }
    if let Some(c) = d
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(refused(
            "description",
            format!("contains the control character {c:?}"),
        ));
    }
    Ok(())
}

/// The event name endpoints subscribe to, and the message type, of an attributed event.
fn kind(event: &Event) -> Option<(&'static str, &'static str)> {
    match event {
        Event::Conversion(_) => Some(("conversion", "conversion.created")),
        Event::Refund(_) => Some(("refund", "refund.created")),
        Event::Click(_) => None,
    }
}

/// The message ID of an event: the same for every copy and retry of the event (its
/// deduplication key, docs/design.md §4, hashed), so announcing it again is recognised.
pub fn message_id(event: &Event) -> String {
    let key = match event {
        Event::Conversion(c) => format!("conversion\0{}\0{:?}", c.cid, c.txid),
        Event::Refund(r) => match &r.txid {
            Some(t) => format!("refund\0{}\0txid\0{t}", r.cid),
            None => format!(
                "refund\0{}\0{}\0{:?}\0{}",
                r.cid,
                r.kind.as_str(),
                r.reference,
                r.amount.normalize()
            ),
        },
        Event::Click(c) => format!("click\0{}", c.cid),
    };
    let digest = <Sha256 as sha2::Digest>::digest(key.as_bytes());
    format!("msg_{}", hex::encode(&digest[..16]))
}

fn time(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

/// The JSON body of the message `id` for an attributed event.
pub fn message_body(
    a: &Attributed,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    use netrev_storage::money::display;
    let (_, message_type) = kind(&a.event).unwrap_or(("", ""));
    let mut data = match &a.event {
        Event::Conversion(c) => serde_json::json!({
            "cid": c.cid,
            "ts": time(c.ts),
            "amount": display(c.amount),
            "txid": c.txid,
            "conversion_type": c.kind,
        }),
        Event::Refund(r) => serde_json::json!({
            "cid": r.cid,
            "ts": time(r.ts),
            "amount": display(r.amount),
            "refund_type": r.kind.as_str(),
            "txid": r.txid,
            "ref": r.reference,
        }),
        Event::Click(_) => serde_json::json!({}),
    };
    let w = &a.window;
    data["vid"] = serde_json::json!(a.vid);
    data["click"] = serde_json::json!({
        "ts": time(a.click_ts),
        "source": w.source,
        "campaign": w.campaign,
        "link": w.link,
        "country": w.country,
        "device": w.device,
    });
    data["visitor"] = serde_json::json!({
        "vid": a.vid,
        "gross": display(a.visitor.gross),
        "refunds": display(a.visitor.refunds),
        "net": display(a.visitor.net()),
    });
    serde_json::json!({
        "id": id,
        "type": message_type,
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
}

/// Turns attributed events into outbox messages for the endpoints subscribed to them.
pub struct Hooks {
    pub webhooks: Arc<Webhooks>,
    pub outbox: Arc<outbox::Outbox>,
}

/// The webhooks receive every attribution of the live state.
impl netrev_live::AttributionSink for Hooks {
    fn attributed(
        &self,
        events: &[Attributed],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.announce(events)?)
    }
}

impl Hooks {
    /// Accepts the messages of `events` for delivery (durably, before returning). Events
    /// already announced are recognised by their message ID and not sent again.
    pub fn announce(&self, events: &[Attributed]) -> Result<()> {
        let endpoints = self.webhooks.list();
        if endpoints.iter().all(|e| e.disabled) {
            return Ok(());
        }
        let now = self.webhooks.store.clock().now();
        let mut messages = Vec::new();
        for a in events {
            let Some((event, message_type)) = kind(&a.event) else {
                continue;
            };
            let subscribed: Vec<&Endpoint> = endpoints
                .iter()
                .filter(|e| !e.disabled && e.events.iter().any(|x| x == event))
                .collect();
            if subscribed.is_empty() {
                continue;
            }
            let id = message_id(&a.event);
            let body = message_body(a, &id, now).to_string();
            for e in subscribed {
                messages.push(outbox::NewMessage {
                    id: id.clone(),
                    endpoint: e.id.clone(),
                    event_type: message_type.to_string(),
                    body: body.clone(),
                });
            }
        }
        if !messages.is_empty() {
            let new = self.outbox.enqueue(messages)?;
            tracing::debug!(new, "webhook messages accepted");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vector of the Standard Webhooks specification.
    #[test]
    fn signs_the_standard_webhooks_reference_vector() {
        let sig = sign(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Ok("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
    }

    #[test]
    fn new_secrets_sign_and_bad_ones_do_not() {
        let s = new_secret();
        assert!(s.starts_with("whsec_"));
        assert!(sign(&s, "msg_1", 1, b"{}").is_ok());
        assert_ne!(new_secret(), s);
        for bad in [
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_!!!",
            "whsec_AAAA",
        ] {
            assert_eq!(sign(bad, "m", 1, b""), Err(BadSecret), "{bad}");
        }
    }

    /// The field and message of a refused creation.
    async fn refusal(
        webhooks: &Webhooks,
        url: &str,
        description: Option<String>,
    ) -> (&'static str, String) {
        match webhooks
            .create(url, &["refund".to_string()], description)
            .await
        {
            Err(Ok(r)) => (r.field, r.error),
            Err(Err(e)) => panic!("failed instead of refused: {e}"),
            Ok(e) => panic!("created {e:?}"),
        }
    }

    #[tokio::test]
    async fn long_descriptions_and_urls_and_control_characters_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = netrev_storage::Store::open(dir.path().to_str().unwrap()).unwrap();
        let webhooks = Webhooks::open(store, false).await.unwrap();
        let url = "https://example.com/hook";

        let (field, error) = refusal(&webhooks, url, Some("x".repeat(10_000))).await;
        assert_eq!(field, "description");
        assert!(error.contains("1000"), "{error}");
        // Counted in characters: 1,000 of them is fine even at 4 bytes each.
        let most = "🙂".repeat(DESCRIPTION_MAX_CHARS);
        let made = webhooks
            .create(url, &["refund".to_string()], Some(most.clone()))
            .await
            .unwrap();
        assert_eq!(made.description.as_deref(), Some(most.as_str()));
        let (field, _) = refusal(&webhooks, url, Some(format!("{most}x"))).await;
        assert_eq!(field, "description");
        for bad in ["a\0b", "\u{1b}[31mred", "bell\u{7}", "c1\u{85}"] {
            let (field, error) = refusal(&webhooks, url, Some(bad.to_string())).await;
            assert_eq!(field, "description", "{bad:?}");
            assert!(error.contains("control character"), "{error}");
        }
        webhooks
            .create(
                url,
                &["refund".to_string()],
                Some("CRM\twin-back\r\nsecond line".into()),
            )
            .await
            .unwrap();

        let long = format!("https://example.com/{}", "a".repeat(URL_MAX_CHARS));
        assert_eq!(refusal(&webhooks, &long, None).await.0, "url");
        // Short as written, too long once every byte of "é" is percent-encoded.
        let encoded = format!("https://example.com/{}", "é".repeat(URL_MAX_CHARS / 3));
        assert!(encoded.chars().count() <= URL_MAX_CHARS);
        assert_eq!(refusal(&webhooks, &encoded, None).await.0, "url");
        let longest = format!(
            "https://example.com/{}",
            "a".repeat(URL_MAX_CHARS - "https://example.com/".len())
        );
        webhooks
            .create(&longest, &["refund".to_string()], None)
            .await
            .unwrap();
        assert_eq!(webhooks.list().len(), 3, "the refusals added nothing");
    }

    #[test]
    fn private_targets_are_refused_in_every_spelling() {
        for target in [
            "http://127.0.0.1/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/",
            "http://[::ffff:10.0.0.1]/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://100.64.0.1/",
            "http://192.168.1.10/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
            "http://[64:ff9b::a00:1]/",
            "http://[::ffff:0:a00:1]/",
            "http://[64:ff9b:1::a00:1]/",
        ] {
            let url = url::Url::parse(target).unwrap();
            let ip = literal_address(&url).unwrap_or_else(|| panic!("{target} is a literal"));
            assert!(!is_public(ip), "{target} ({ip}) must be refused");
        }
        for target in [
            "http://93.184.216.34/",
            "http://[2606:4700::1111]/",
            "http://8.8.8.8/",
        ] {
            let url = url::Url::parse(target).unwrap();
            assert!(is_public(literal_address(&url).unwrap()), "{target}");
        }
        assert_eq!(
            literal_address(&url::Url::parse("https://example.com/hook").unwrap()),
            None
        );
    }
}
