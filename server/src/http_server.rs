//! The HTTP server of `netrev serve`: hyper with the limits `axum::serve` does not set.
//!
//! - **Header read timeout**: a client that has not sent its request headers within
//!   `header_read_timeout` is disconnected (hyper's timer is installed, so the timeout applies).
//! - **Idle timeout**: a connection on which nothing happened for `idle_timeout` is closed: a
//!   request is being worked on, or a piece of an answer's body was taken to be sent (answers
//!   are sent in pieces, so a slow but steady reader is active and one that stopped reading
//!   is idle). That closes a client that connects and sends nothing, an HTTP/2 client that
//!   sent only its preface, a keep-alive connection left open and a reader that stopped.
//! - **Body timeout**: a request's body must arrive whole within `body_timeout` of its
//!   headers; one trickled a byte at a time gets 408 and its connection is closed.
//! - **HTTP/2**: pings every `http2_keep_alive` (a peer that does not answer within as long is
//!   dropped) and at most `http2_max_streams` requests at once on a connection.
//! - **Connection limits**: beyond `max_connections` open connections, or
//!   `max_connections_per_ip` from one client address (an IPv6 client by its /64, which one
//!   subscriber usually holds whole), a new one is closed at once instead of queueing. Trusted
//!   proxies are exempt from the per-address cap: every client behind them shares their address.
//! - Every request carries its peer address ([`ConnectInfo`]), for the per-IP rate limit.
//! - Shutdown stops accepting, then waits up to 10 s for requests in flight.

use std::collections::HashMap;
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Version, header};
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tower::ServiceExt as _;

/// Limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64) at most.
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// A request's body must have arrived whole this long after its headers.
    pub body_timeout: Duration,
    /// Interval of HTTP/2 pings, and how long an answer to one may take.
    pub http2_keep_alive: Duration,
    /// Requests in flight at once on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// Addresses exempt from `max_connections_per_ip` (the trusted reverse proxies).
    pub exempt: Vec<IpAddr>,
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(PerAddress::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keep_alive)
        .keep_alive_timeout(limits.http2_keep_alive)
        .max_concurrent_streams(limits.http2_max_streams);
    let builder = Arc::new(builder);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "connection limit reached: closing a new connection");
            drop(stream);
            continue;
        };
        let address = (!limits.exempt.contains(&peer.ip())).then(|| address_key(peer.ip()));
        let counted = match address {
            Some(key) => match per_ip.enter(key, limits.max_connections_per_ip) {
                Some(counted) => Some(counted),
                None => {
                    tracing::warn!(%peer, limit = limits.max_connections_per_ip, "connections per address reached: closing a new connection");
                    drop(stream);
                    continue;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let activity = Arc::new(Activity::new());
        let body_timeout = limits.body_timeout;
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                let version = req.version();
                let late = Arc::new(AtomicBool::new(false));
                let req = req.map(|body| {
                    Body::new(Deadline {
                        inner: body,
                        sleep: Box::pin(tokio::time::sleep(body_timeout)),
                        late: late.clone(),
                    })
                });
                let busy = InFlight::start(activity.clone());
                let app = app.clone();
                let activity = activity.clone();
                async move {
                    let response = app.oneshot(req).await?;
                    let response = if late.load(Ordering::Acquire) {
                        too_slow(body_timeout, version)
                    } else {
                        response
                    };
                    // The request is in flight while it is worked on. Its answer is then the
                    // client's to read: each part it takes counts as activity, and a client
                    // that stops reading is idle (else one that never reads, or an HTTP/2
                    // client with a window of 0, would hold the connection forever).
                    drop(busy);
                    Ok::<_, std::convert::Infallible>(response.map(|body| {
                        Body::new(Sending {
                            inner: body,
                            activity,
                        })
                    }))
                }
            })
        };
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            loop {
                let idle_until = activity.idle_deadline(idle_timeout);
                tokio::select! {
                    ended = &mut conn => {
                        if let Err(e) = ended {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = sleep_until(idle_until) => {
                        if activity.idle_deadline(idle_timeout).is_some_and(|d| d <= Instant::now()) {
                            tracing::debug!(%peer, "closing an idle connection");
                            break;
                        }
                    }
                }
            }
            drop(permit);
            drop(counted);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("requests still in flight after 10 s; stopping anyway");
        }
    }
    Ok(())
}

/// Sleeps until `deadline`, or for a while when there is none (a request is in flight; the
/// deadline is looked at again then).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => tokio::time::sleep(Duration::from_secs(1)).await,
    }
}

/// The 408 a request whose body did not arrive in time gets, closing its connection.
fn too_slow(limit: Duration, version: Version) -> axum::response::Response {
    let mut resp = crate::api::ApiError::BodyTooSlow {
        limit_secs: limit.as_secs_f64(),
    }
    .into_response();
    if version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// What the idle timeout of one connection looks at.
struct Activity {
    opened: Instant,
    /// Requests being worked on (until their handler answers).
    in_flight: AtomicUsize,
    /// When something last happened (a request was answered, a part of an answer was taken),
    /// in milliseconds since `opened`.
    last_done_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }

    /// When the connection becomes idle for `timeout`, unless a request comes; `None` while
    /// one is in flight.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        Some(self.opened + last + timeout)
    }

    /// Something happened on the connection now: the idle time starts again.
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_done_ms.fetch_max(ms, Ordering::AcqRel);
    }
}

/// A request being worked on, until dropped (when its handler has answered).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body, noting activity each time the connection takes a part of it.
struct Sending {
    inner: Body,
    activity: Arc<Activity>,
}

impl hyper::body::Body for Sending {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if frame.is_ready() {
            self.activity.touch();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails once its deadline has passed, noting so in `late`.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    late: Arc<AtomicBool>,
}

/// The error of a body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl hyper::body::Body for Deadline {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.late.store(true, Ordering::Release);
                Poll::Ready(Some(Err(Box::new(BodyTimeout))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The key of a client address for the per-address cap: an IPv4 address (or one mapped into
/// IPv6) whole, an IPv6 address by its /64.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// Counts a new connection from `key`, unless `max` are open already.
    fn enter(self: &Arc<Self>, key: IpAddr, max: usize) -> Option<Counted> {
        let mut open = self.open.lock().expect("per-address lock");
        let n = open.entry(key).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(Counted {
            of: self.clone(),
            key,
        })
    }
}

/// One open connection counted in [`PerAddress`], until dropped.
struct Counted {
    of: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.of.open.lock().expect("per-address lock");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_per_address_cap_counts_open_connections() {
        let per = Arc::new(PerAddress::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let first = per.enter(ip, 2).unwrap();
        let _second = per.enter(ip, 2).unwrap();
        assert!(per.enter(ip, 2).is_none());
        assert!(per.enter("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(per.enter(ip, 2).is_some());
    }
}
