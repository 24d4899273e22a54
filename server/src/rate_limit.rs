//! Per-IP rate limit of the postback routes: a token bucket per client address, `rate`
//! postbacks per second with bursts of `burst`. Over it: 429 with `Retry-After` and nothing
//! recorded. The client address is the connection's peer; `X-Forwarded-For` is believed only
//! when the peer is a configured trusted proxy (then its right-most address that is not a
//! trusted proxy counts), so a forged header cannot buy a fresh bucket. An IPv6 client counts
//! by its /64, the block one subscriber gets: its other addresses share its bucket.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The address a request counts against (the peer, or behind a trusted proxy the client it
/// names), put in the request's extensions for the handlers (the tracking links' country).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Buckets kept before idle ones (full again) are dropped.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    trusted: Vec<IpAddr>,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimit {
    /// `rate` postbacks per second per client (0: no limit), bursts up to `burst`.
    pub fn new(rate: f64, burst: f64, trusted: Vec<IpAddr>) -> Arc<RateLimit> {
        Arc::new(RateLimit {
            rate,
            burst: burst.max(1.0),
            trusted,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The client a request counts against.
    /// IPv4 clients of a dual-stack listener arrive as `::ffff:a.b.c.d`: every address is
    /// taken in its canonical form, so they count (and are trusted) as the IPv4 they are.
    fn client(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted.contains(&peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .map(|a| a.to_canonical())
            .collect();
        forwarded
            .into_iter()
            .rev()
            .find(|a| !self.trusted.contains(a))
            .unwrap_or(peer)
    }

    /// Takes a token for `client` (its /64 for IPv6); on refusal, the seconds until one is
    /// available.
    fn take(&self, client: IpAddr, now: Instant) -> Result<(), f64> {
        let client = crate::http_server::address_key(client);
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *tokens) / self.rate)
        }
    }
}

/// The middleware of the postback routes.
pub async fn limit(
    State(limit): State<Arc<RateLimit>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = limit.client(peer.ip(), request.headers());
    request.extensions_mut().insert(ClientAddr(client));
    if limit.rate <= 0.0 {
        return next.run(request).await;
    }
    match limit.take(client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let secs = wait.ceil().max(1.0) as u64;
            crate::api::ApiError::TooManyRequests {
                client: client.to_string(),
                retry_after_secs: secs,
            }
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_rate_and_forged_headers_count_only_behind_a_trusted_proxy() {
        let l = RateLimit::new(2.0, 3.0, vec!["10.0.0.1".parse().unwrap()]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take(a, t0).is_ok());
        }
        let wait = l.take(a, t0).unwrap_err();
        assert!((wait - 0.5).abs() < 1e-9, "{wait}");
        assert!(
            l.take(a, t0 + std::time::Duration::from_millis(500))
                .is_ok()
        );

        // IPv6: one bucket per /64, whichever of its addresses asks.
        let v6 = |a: &str| a.parse::<IpAddr>().unwrap();
        for i in 0..3 {
            assert!(l.take(v6(&format!("2001:db8:1:2::{i}")), t0).is_ok());
        }
        assert!(l.take(v6("2001:db8:1:2:ffff::9"), t0).is_err());
        assert!(l.take(v6("2001:db8:1:3::1"), t0).is_ok(), "another /64");

        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.7, 10.0.0.1".parse().unwrap());
        // From an untrusted peer the header is ignored.
        assert_eq!(l.client(a, &h), a);
        // From the trusted proxy, the right-most address that is not a trusted proxy.
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            l.client(proxy, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // On a dual-stack listener the proxy arrives as ::ffff:10.0.0.1: still trusted, and
        // the client it names is the IPv4 address whatever its spelling.
        h.insert("x-forwarded-for", "::ffff:198.51.100.7".parse().unwrap());
        assert_eq!(
            l.client(v6("::ffff:10.0.0.1"), &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(l.client(v6("::ffff:192.0.2.1"), &h), a);
    }
}
