//! Time as a parameter.
//!
//! Rules never read the wall clock themselves: the RPC layer asks a [`Clock`] once per call and
//! passes `now` down, so expiry and rotation are testable with a [`ManualClock`] instead of
//! sleeping.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// A source of "now". Readings are truncated to whole milliseconds so that every timestamp on
/// the wire and in the database has the same, stable precision, and never fall on a whole
/// second (see [`stored_precision`]).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    fn now(&self) -> DateTime<Utc> {
        stored_precision(Utc::now())
    }
}

/// A clock that only moves when told to; used by tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { now: Mutex::new(start) }
    }

    /// Starts at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        stored_precision(*self.now.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// `t` truncated to whole milliseconds, moved 1 ms later if that lands on a whole second.
///
/// SurrealDB keys a datetime index by its RFC 3339 text with as few fractional digits as are
/// exact, so `…:05Z` sorts after `…:05.999Z`, and a range scan on `expires_at` misses it or
/// starts past the rest of its second: a deadline on a whole second expired a second late, and
/// a read at a whole second did not see sessions expiring later in that second. With exactly
/// three fractional digits in every time authstore writes or compares, byte order is time
/// order. Every deadline is a reading plus whole seconds, so it inherits the property.
pub fn stored_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    let millis = t.timestamp_millis();
    let millis = if millis.rem_euclid(1000) == 0 { millis + 1 } else { millis };
    DateTime::from_timestamp_millis(millis).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_have_three_fractional_digits_and_never_a_whole_second() {
        let whole = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        assert_eq!(stored_precision(whole), whole + Duration::milliseconds(1));
        let inside = whole + Duration::nanoseconds(250_999_999);
        assert_eq!(stored_precision(inside), whole + Duration::milliseconds(250));
        let clock = ManualClock::new(whole);
        assert_eq!(clock.now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true), "2027-01-15T08:00:00.001Z");
        clock.advance(Duration::milliseconds(999));
        assert_eq!(clock.now().timestamp_subsec_millis(), 999);
        for _ in 0..3 {
            assert_ne!(SystemClock.now().timestamp_subsec_millis(), 0);
        }
    }
}
