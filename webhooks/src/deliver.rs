//! Delivery of the outbox's messages: signed as the Standard Webhooks specification says,
//! retried on a schedule with jitter, a bounded number at once, and never to an internal
//! address unless private targets are allowed.
//!
//! The address check happens where the connection is made: names are resolved by
//! [`GuardedResolver`], which refuses the whole name when any address it resolves to is not
//! public, so the client only ever connects to checked addresses (no second lookup that could
//! answer differently). Literal addresses skip resolution and are checked before each attempt.
//! Redirects are not followed (a 3xx is a failed attempt) and proxies from the environment are
//! not used.
//!
//! A failed attempt is recorded, for `GET /api/webhooks/{id}/deliveries`, as a fixed phrase per
//! kind of failure ([`failure`]), never the error's own text: that could name the addresses a
//! name resolved to, telling whoever may create webhooks about the internal network. The full
//! error goes to the log, for the operator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::outbox::{Attempt, Delivery, Outbox, Status, now_ms};
use super::{Webhooks, is_public, literal_address, sign};

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Delay before each attempt: the first is the delay after the message is accepted,
    /// each next one the delay after the previous attempt failed.
    pub schedule: Vec<Duration>,
    /// Deliveries attempted at once.
    pub concurrency: usize,
    /// Time allowed for one attempt (connect, send, answer).
    pub timeout: Duration,
    /// Whether private, loopback and link-local targets are allowed.
    pub allow_private: bool,
}

/// The Standard Webhooks retry schedule: about 0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const SCHEDULE_SECS: [u64; 8] = [0, 5, 300, 1800, 7200, 18000, 36000, 36000];

/// Longest wait a `Retry-After` header can ask for.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            schedule: SCHEDULE_SECS
                .iter()
                .map(|&s| Duration::from_secs(s))
                .collect(),
            concurrency: 16,
            timeout: Duration::from_secs(15),
            allow_private: false,
        }
    }
}

/// Parses a schedule written as seconds separated by commas (`0,5,300`).
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let schedule: Vec<Duration> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{p:?} is not a number of seconds"))
        })
        .collect::<Result<_, _>>()?;
    if schedule.is_empty() {
        return Err("at least one attempt".into());
    }
    Ok(schedule)
}

/// Why the webhook client's resolver gave no address. Its text is what a failed attempt
/// records: it names no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unresolved {
    /// The name has a private, loopback, link-local or otherwise internal address.
    Internal,
    /// The lookup failed or found nothing.
    Failed,
}

impl Unresolved {
    /// What the deliveries route shows: the same for both, so that creating webhooks cannot
    /// tell which internal names exist (a name that fails to resolve and one that resolves to
    /// an internal address look alike). The log says which it was.
    fn text(self) -> &'static str {
        match self {
            Unresolved::Internal | Unresolved::Failed => {
                "the host has no public address (DNS lookup failed, or it resolves to a \
                 private, loopback, link-local or otherwise internal address): refused \
                 (serve --webhooks-allow-private allows internal ones, for development)"
            }
        }
    }
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for Unresolved {}

/// Resolves names for the webhook client; unless private targets are allowed, refuses names
/// with a non-public address. Failures are logged with their detail (the addresses, the
/// resolver's reason) and returned as an [`Unresolved`] that has none.
#[derive(Debug)]
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => addrs.collect(),
                Err(e) => {
                    tracing::warn!(%host, error = %e, "webhook target: DNS lookup failed");
                    return Err(Unresolved::Failed.into());
                }
            };
            if addrs.is_empty() {
                tracing::warn!(%host, "webhook target: DNS lookup found no address");
                return Err(Unresolved::Failed.into());
            }
            if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                tracing::warn!(
                    %host,
                    address = %bad.ip(),
                    "webhook target resolves to an internal address: refused"
                );
                return Err(Unresolved::Internal.into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client deliveries use.
fn client(config: &DeliveryConfig) -> crate::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(config.timeout)
        .user_agent(concat!("netrev-webhooks/", env!("CARGO_PKG_VERSION")))
        // Ours even when private targets are allowed, so lookup failures are recognised.
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: config.allow_private,
        }));
    Ok(builder.build()?)
}

/// Starts the delivery loop on a thread and runtime of its own: its attempts, and the outbox
/// writes (fsync) that record them, never take a thread that serves postbacks. It runs until
/// the process ends or [`Delivering::stop`].
pub fn start(
    outbox: Arc<Outbox>,
    webhooks: Arc<Webhooks>,
    config: DeliveryConfig,
) -> crate::Result<Delivering> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Built here (requests run on the runtime they are made on, the new thread's).
    let client = client(&config)?;
    let delivering = Delivering {
        stopped: Arc::new(AtomicBool::new(false)),
        outbox: outbox.clone(),
    };
    let stopped = delivering.stopped.clone();
    std::thread::Builder::new()
        .name("netrev-webhooks".into())
        .spawn(move || rt.block_on(run(outbox, webhooks, config, client, &stopped)))?;
    Ok(delivering)
}

/// The running delivery loop ([`start`]).
pub struct Delivering {
    stopped: Arc<AtomicBool>,
    outbox: Arc<Outbox>,
}

impl Delivering {
    /// Ends the loop; attempts under way are dropped, as a crash would drop them (the outbox
    /// tries them again when it is next opened).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.outbox.wake.notify_one();
    }
}

async fn run(
    outbox: Arc<Outbox>,
    webhooks: Arc<Webhooks>,
    config: DeliveryConfig,
    client: reqwest::Client,
    stopped: &AtomicBool,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let config = Arc::new(config);
    while !stopped.load(Ordering::SeqCst) {
        let free = slots.available_permits();
        for delivery in outbox.take_due(now_ms(), free) {
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let (outbox, webhooks, config, client) = (
                outbox.clone(),
                webhooks.clone(),
                config.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                attempt(&outbox, &webhooks, &config, &client, delivery).await;
                drop(permit);
                // A slot is free: whatever waits for one may go.
                outbox.wake.notify_one();
            });
        }
        // With every slot taken, only a finished attempt (which wakes us) can start another.
        let wait = match outbox.next_due() {
            Some(t) if slots.available_permits() > 0 => {
                Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0))
            }
            _ => Duration::from_secs(60),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
            _ = outbox.wake.notified() => {}
        }
    }
}

/// What an attempt came to.
enum Answer {
    Status(u16, Option<Duration>),
    Error(String),
}

async fn attempt(
    outbox: &Outbox,
    webhooks: &Webhooks,
    config: &DeliveryConfig,
    client: &reqwest::Client,
    d: Delivery,
) {
    let key = (d.endpoint.clone(), d.id.clone());
    let give_up = |reason: &str| {
        if let Err(e) = outbox.set(&key, Status::Failed, None, Some(reason.to_string())) {
            tracing::error!(error = %e, "recording a webhook delivery failed");
        }
    };
    let Some(endpoint) = webhooks.get(&d.endpoint) else {
        return give_up("the endpoint was deleted");
    };
    if endpoint.disabled {
        return give_up("the endpoint is disabled");
    }
    let at = now_ms();
    let started = Instant::now();
    let answer = send(client, config, &endpoint.url, &endpoint.secret, &d).await;
    let attempt = Attempt {
        at,
        status: match &answer {
            Answer::Status(s, _) => Some(*s),
            Answer::Error(_) => None,
        },
        error: match &answer {
            Answer::Error(e) => Some(e.clone()),
            Answer::Status(..) => None,
        },
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let made = d.attempts.len() + 1;
    let (next, status, reason) = match answer {
        Answer::Status(s, _) if (200..300).contains(&s) => (None, Status::Delivered, None),
        Answer::Status(410, _) => {
            if let Err(e) = webhooks.disable(&d.endpoint).await {
                tracing::error!(error = %e, endpoint = %d.endpoint, "disabling a webhook endpoint failed");
            }
            tracing::warn!(endpoint = %d.endpoint, "webhook endpoint answered 410 Gone: disabled");
            (
                None,
                Status::Failed,
                Some("410 Gone: the endpoint is disabled".to_string()),
            )
        }
        answer => match config.schedule.get(made) {
            Some(delay) => {
                let asked = match answer {
                    Answer::Status(429 | 503, Some(after)) => Some(after.min(RETRY_AFTER_MAX)),
                    _ => None,
                };
                let delay = asked.unwrap_or_else(|| jitter(*delay));
                // Counted from the failure: after a 15 s timeout, 5 s more.
                let next = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                (Some(next), Status::Pending, None)
            }
            None => (
                None,
                Status::Failed,
                Some(format!("no answer in 2xx after {made} attempts")),
            ),
        },
    };
    if let Err(e) = outbox.record(&key, attempt, next, status, reason) {
        tracing::error!(error = %e, "recording a webhook attempt failed");
    }
}

/// A delay with ±20% jitter, so retries of many messages do not arrive together.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.8..1.2))
}

async fn send(
    client: &reqwest::Client,
    config: &DeliveryConfig,
    url: &str,
    secret: &str,
    d: &Delivery,
) -> Answer {
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Answer::Error(format!("not a URL: {e}")),
    };
    if !config.allow_private
        && let Some(ip) = literal_address(&parsed)
        && !is_public(ip)
    {
        return Answer::Error(format!(
            "{ip} is a private, loopback or otherwise internal address: refused"
        ));
    }
    let timestamp = chrono::Utc::now().timestamp();
    let signature = match sign(secret, &d.id, timestamp, d.body.as_bytes()) {
        Ok(s) => s,
        Err(e) => return Answer::Error(e.to_string()),
    };
    let request = client
        .post(parsed)
        .header("content-type", "application/json")
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(d.body.to_string());
    match request.send().await {
        Ok(r) => {
            let after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(retry_after);
            Answer::Status(r.status().as_u16(), after)
        }
        Err(e) => {
            let recorded = failure(&e);
            tracing::warn!(
                message_id = %d.id,
                endpoint = %d.endpoint,
                recorded,
                error = %error_chain(&e),
                detail = ?e,
                "webhook attempt failed"
            );
            Answer::Error(recorded.to_string())
        }
    }
}

/// What a failed request records: a fixed phrase for its kind of failure. Nothing of the
/// error's own text is kept (see the module doc).
fn failure(e: &reqwest::Error) -> &'static str {
    use std::error::Error as _;
    use std::io::ErrorKind;
    let chain = || std::iter::successors(e.source(), |&s| s.source());
    if let Some(u) = chain().find_map(|s| s.downcast_ref::<Unresolved>()) {
        return u.text();
    }
    if e.is_timeout() {
        return "timed out";
    }
    // An I/O error wrapped in another is hidden from `source()` (the TLS connector wraps
    // rustls's InvalidData in an Other): look inside each.
    let kinds: Vec<ErrorKind> = chain()
        .filter_map(|s| s.downcast_ref::<std::io::Error>())
        .flat_map(|io| {
            std::iter::successors(Some(io), |io| {
                io.get_ref()
                    .and_then(|inner| inner.downcast_ref::<std::io::Error>())
            })
        })
        .map(std::io::Error::kind)
        .collect();
    let any = |wanted: &[ErrorKind]| kinds.iter().any(|k| wanted.contains(k));
    if any(&[ErrorKind::ConnectionRefused]) {
        return "connection refused";
    }
    if any(&[
        ErrorKind::ConnectionReset,
        ErrorKind::ConnectionAborted,
        ErrorKind::BrokenPipe,
    ]) {
        return "connection reset";
    }
    if any(&[
        ErrorKind::NetworkUnreachable,
        ErrorKind::HostUnreachable,
        ErrorKind::NotConnected,
    ]) {
        return "network unreachable";
    }
    if e.is_connect() {
        // rustls reports a failed handshake or a refused certificate as invalid data;
        // connecting over TCP never does.
        if any(&[ErrorKind::InvalidData]) {
            return "TLS error";
        }
        return "could not connect";
    }
    if let Some(h) = chain().find_map(|s| s.downcast_ref::<hyper::Error>()) {
        if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
            return "connection closed before an answer";
        }
        if h.is_parse() || h.is_parse_status() {
            return "the answer is not valid HTTP";
        }
    }
    "request failed"
}

/// A `Retry-After` value: seconds, or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let ms = at.timestamp_millis() - now_ms();
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// An error with its causes (reqwest's own message hides the resolver's reason).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_and_retry_after_parse() {
        assert_eq!(
            parse_schedule("0, 0.5,300").unwrap(),
            vec![
                Duration::ZERO,
                Duration::from_millis(500),
                Duration::from_secs(300)
            ]
        );
        assert!(parse_schedule("1,-2").is_err());
        assert!(parse_schedule("x").is_err());
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Tue, 01 Jan 2008 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused_without_naming_them() {
        use reqwest::dns::Resolve as _;
        let name = || "localhost".parse::<reqwest::dns::Name>().unwrap();
        let resolver = GuardedResolver {
            allow_private: false,
        };
        let err = match resolver.resolve(name()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("refused"), "{err}");
        assert!(!err.chars().any(|c| c.is_ascii_digit()), "{err}");
        assert!(!err.contains("::"), "{err}");
        let allowed = GuardedResolver {
            allow_private: true,
        };
        assert!(allowed.resolve(name()).await.is_ok());
    }

    /// The text `url` records when sent with a client for `config`.
    async fn recorded(config: &DeliveryConfig, url: &str) -> String {
        match client(config).unwrap().post(url).body("{}").send().await {
            Ok(r) => panic!("{url} answered {}", r.status()),
            Err(e) => failure(&e).to_string(),
        }
    }

    /// A local port that serves `answer` (raw bytes) to every connection, then closes it.
    async fn serving(answer: &'static [u8]) -> u16 {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = s.write_all(answer).await;
                    if answer.is_empty() {
                        // Say nothing for longer than the client waits.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn failed_attempts_record_a_fixed_phrase_and_no_address() {
        let guarded = DeliveryConfig {
            timeout: Duration::from_millis(500),
            ..DeliveryConfig::default()
        };
        let open = DeliveryConfig {
            allow_private: true,
            ..guarded.clone()
        };
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cases = [
            (
                &guarded,
                format!("http://localhost:{closed}/hook"),
                Unresolved::Internal.text(),
            ),
            (
                // Time for a slow resolver to say no.
                &DeliveryConfig {
                    timeout: Duration::from_secs(30),
                    ..open.clone()
                },
                "http://netrev-test.invalid/hook".to_string(),
                Unresolved::Failed.text(),
            ),
            (
                &open,
                format!("http://127.0.0.1:{closed}/hook"),
                "connection refused",
            ),
            (
                &open,
                format!("http://127.0.0.1:{}/hook", serving(b"").await),
                "timed out",
            ),
            (
                &open,
                format!(
                    "https://127.0.0.1:{}/hook",
                    serving(b"HTTP/1.1 400 Bad Request\r\n\r\n").await
                ),
                "TLS error",
            ),
            (
                &open,
                format!(
                    "http://127.0.0.1:{}/hook",
                    serving(b"nonsense\r\n\r\n").await
                ),
                "the answer is not valid HTTP",
            ),
        ];
        for (config, url, expected) in cases {
            let got = recorded(config, &url).await;
            assert_eq!(got, expected, "{url}");
            assert!(
                !got.contains("127.0.0.1")
                    && !got.contains("::1")
                    && !got.contains(&closed.to_string()),
                "{url}: {got}"
            );
        }
    }
}
