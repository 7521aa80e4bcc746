//! When to try a request again and how long to wait: jittered exponential
//! backoff, `Retry-After`, and the deadline that bounds a whole call. Pure
//! arithmetic on durations; the loop that uses it is [`super::transport`].

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The first backoff.
const BASE: Duration = Duration::from_millis(100);
/// The longest backoff.
const CAP: Duration = Duration::from_secs(5);

/// The un-jittered wait before retry `n` (0-based): 100 ms × 2ⁿ, at most 5 s.
fn step(n: u32) -> Duration {
    BASE.saturating_mul(1u32 << n.min(16)).min(CAP)
}

/// The wait before retry `n`: [`step`] jittered into its upper half, so
/// clients that failed together do not retry together.
pub(super) fn backoff(n: u32) -> Duration {
    let full = step(n);
    // RandomState is seeded per thread and stepped per instance: enough
    // randomness for jitter without a dependency.
    let r = RandomState::new().build_hasher().finish() % 1024;
    full / 2 + full.mul_f64(r as f64 / 2048.0)
}

/// The most time `retries` backoffs can take.
fn backoff_total(retries: u32) -> Duration {
    (0..retries).map(step).sum()
}

/// The end of a call: each of the `retries + 1` attempts may take `attempt`,
/// plus the backoffs between them.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deadline {
    end: Instant,
}

impl Deadline {
    /// The deadline of a call starting now.
    pub fn new(attempt: Duration, retries: u32) -> Deadline {
        let total = attempt.saturating_mul(retries.saturating_add(1)) + backoff_total(retries);
        Deadline {
            end: Instant::now() + total,
        }
    }

    /// Time left, zero once past.
    pub fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// How long to sleep before the next attempt, given the wanted `wait`,
    /// leaving that attempt at least `min_attempt`; `None` if no attempt fits.
    pub fn sleep_for(&self, wait: Duration, min_attempt: Duration) -> Option<Duration> {
        let left = self.remaining().checked_sub(min_attempt)?;
        Some(wait.min(left))
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3); `None`
/// if unparseable.
pub(super) fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// IMF-fixdate, the only form senders may generate:
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(v: &str) -> Option<SystemTime> {
    let rest = v.split_once(", ")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    let [day, mon, year, hms, "GMT"] = f.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| x == mon)? as i64 + 1;
    let d: i64 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, mi, s] = t.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&d) || *h > 23 || *mi > 59 || *s > 60 {
        return None;
    }
    let secs = days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jittered_and_capped() {
        for n in 0..20 {
            let b = backoff(n);
            assert!(b >= step(n) / 2 && b <= step(n), "{n}: {b:?}");
        }
        assert_eq!(step(0), Duration::from_millis(100));
        assert_eq!(step(3), Duration::from_millis(800));
        assert_eq!(step(30), CAP);
        assert_eq!(backoff_total(3), Duration::from_millis(700));
    }

    #[test]
    fn deadline_bounds() {
        let d = Deadline::new(Duration::from_millis(300), 3);
        let left = d.remaining();
        assert!(left <= Duration::from_millis(1900) && left > Duration::from_millis(1800));
        assert_eq!(
            d.sleep_for(Duration::from_secs(1), Duration::from_millis(300)),
            Some(Duration::from_secs(1))
        );
        assert!(d
            .sleep_for(Duration::ZERO, Duration::from_secs(5))
            .is_none());
        let s = d
            .sleep_for(Duration::from_secs(60), Duration::from_millis(300))
            .unwrap();
        assert!(s < Duration::from_millis(1600));
    }

    #[test]
    fn retry_after() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770); // 1994-11-06 08:49:30 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now),
            None
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
