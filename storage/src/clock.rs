//! The time of day as the service sees it: the system clock, or a clock a test sets.
//!
//! Only the times that become data go through it: an event's time when it is received, "today"
//! of the live stats' window and of the stats' default range. Timers (flush intervals, timeouts,
//! rate limits, webhook retries) and webhook signatures keep the real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// The system clock ([`Clock::default`]), or a manual one ([`Clock::manual`]) that stands
/// still until it is set or advanced; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Microseconds since the Unix epoch of a manual clock; `None`: the system clock.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// A clock that reads `start` until it is [`set`](Clock::set) or
    /// [`advance`](Clock::advance)d.
    pub fn manual(start: DateTime<Utc>) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(start.timestamp_micros()))),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            None => Utc::now(),
            Some(_) => DateTime::from_timestamp_micros(self.now_micros()).unwrap_or_default(),
        }
    }

    /// Microseconds since the Unix epoch.
    pub fn now_micros(&self) -> i64 {
        match &self.manual {
            None => Utc::now().timestamp_micros(),
            Some(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Sets a manual clock to `to`.
    ///
    /// # Panics
    /// On the system clock, which nobody sets.
    pub fn set(&self, to: DateTime<Utc>) {
        self.manual
            .as_ref()
            .expect("only a manual clock can be set")
            .store(to.timestamp_micros(), Ordering::SeqCst);
    }

    /// Moves a manual clock forward by `by`.
    ///
    /// # Panics
    /// On the system clock.
    pub fn advance(&self, by: chrono::TimeDelta) {
        self.set(self.now() + by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_moved_and_clones_share_it() {
        let start = DateTime::parse_from_rfc3339("2026-03-01T23:59:59Z")
            .unwrap()
            .to_utc();
        let clock = Clock::manual(start);
        let twin = clock.clone();
        assert_eq!(clock.now(), start);
        twin.advance(chrono::TimeDelta::seconds(2));
        assert_eq!(clock.now().to_rfc3339(), "2026-03-02T00:00:01+00:00");
        assert_eq!(clock.now_micros(), start.timestamp_micros() + 2_000_000);
    }

    #[test]
    fn the_default_clock_is_the_system_clock() {
        let before = Utc::now();
        let read = Clock::default().now();
        assert!(read >= before && read <= Utc::now());
    }
}
