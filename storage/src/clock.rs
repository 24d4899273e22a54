//! The time of day as the service sees it: the system clock, a clock a test sets, or a clock
//! that runs faster than real time (for a benchmark of a month of operation in half an hour).
//!
//! Only the times that become data go through it: an event's time when it is received, "today"
//! of the live stats' window and of the stats' default range, and the times of day the ingest
//! buffer is flushed at. Other timers (timeouts, rate limits, webhook retries, the recompute
//! schedule) and webhook signatures keep the real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// The system clock ([`Clock::default`]), a manual one ([`Clock::manual`]) that stands
/// still until it is set or advanced, or an accelerated one ([`Clock::accelerated`]); clones
/// share it.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Microseconds since the Unix epoch of a manual clock; `None`: the system clock.
    manual: Option<Arc<AtomicI64>>,
    /// (real start in microseconds, speed): the clock reads `start + (real - start) × speed`.
    accelerated: Option<(i64, u32)>,
}

impl Clock {
    /// A clock that starts at the real time now and runs `speed` times as fast (1440: a day
    /// a minute). Timers that follow it ([`Clock::real_wait`]) shrink accordingly.
    pub fn accelerated(speed: u32) -> Clock {
        Clock {
            manual: None,
            accelerated: Some((Utc::now().timestamp_micros(), speed.max(1))),
        }
    }

    /// How long to wait in real time for this clock to advance by `span` (the clock's time
    /// of the next flush, say). A manual clock does not advance by itself: its timers keep
    /// real time, `span` unchanged.
    pub fn real_wait(&self, span: std::time::Duration) -> std::time::Duration {
        match self.accelerated {
            Some((_, speed)) => span / speed,
            None => span,
        }
    }

    /// Microseconds since the Unix epoch by which timers of this clock are set: its own time,
    /// except for a manual clock, whose timers keep real time.
    pub fn timer_micros(&self) -> i64 {
        match self.manual {
            Some(_) => Utc::now().timestamp_micros(),
            None => self.now_micros(),
        }
    }

    /// A clock that reads `start` until it is [`set`](Clock::set) or
    /// [`advance`](Clock::advance)d.
    pub fn manual(start: DateTime<Utc>) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(start.timestamp_micros()))),
            accelerated: None,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match (&self.manual, self.accelerated) {
            (None, None) => Utc::now(),
            _ => DateTime::from_timestamp_micros(self.now_micros()).unwrap_or_default(),
        }
    }

    /// Microseconds since the Unix epoch.
    pub fn now_micros(&self) -> i64 {
        match (&self.manual, self.accelerated) {
            (Some(t), _) => t.load(Ordering::SeqCst),
            (None, Some((start, speed))) => {
                let real = Utc::now().timestamp_micros();
                start + (real - start) * i64::from(speed)
            }
            (None, None) => Utc::now().timestamp_micros(),
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
    fn an_accelerated_clock_runs_its_speed_times_as_fast() {
        let clock = Clock::accelerated(1000);
        let (real, fast) = (Utc::now(), clock.now());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let elapsed = (clock.now() - fast).num_milliseconds();
        let real_elapsed = (Utc::now() - real).num_milliseconds();
        assert!(elapsed >= 20_000, "{elapsed} ms in {real_elapsed} real ms");
        assert!(
            elapsed <= (real_elapsed + 5) * 1000,
            "{elapsed} ms in {real_elapsed} real ms"
        );
        let wait = clock.real_wait(std::time::Duration::from_secs(1800));
        assert_eq!(wait, std::time::Duration::from_millis(1800));
    }

    #[test]
    fn the_default_clock_is_the_system_clock() {
        let before = Utc::now();
        let read = Clock::default().now();
        assert!(read >= before && read <= Utc::now());
    }
}
