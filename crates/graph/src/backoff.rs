//! Retry delays of failing objects: exponential backoff with jitter, shared by both
//! controllers so that no failure hot-loops and many failing together do not retry together.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Consecutive failures per object (namespace, name), for exponential backoff.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl Backoff {
    /// The delay before retrying after one more failure: 1 s doubling to 5 min, ±20 % jitter.
    pub fn next_delay(&self, key: (String, String)) -> Duration {
        let attempt = self.failures.lock().map_or(1, |mut failures| {
            let n = failures.entry(key).or_insert(0);
            *n = n.saturating_add(1);
            *n
        });
        let base = Duration::from_secs(1).saturating_mul(1_u32 << attempt.saturating_sub(1).min(9));
        let capped = base.min(Duration::from_secs(300));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = 0.8 + f64::from(nanos % 1000) / 1000.0 * 0.4;
        capped.mul_f64(jitter)
    }

    /// The delay before retrying after one more permanent failure (one that needs someone to
    /// change something): 30 s doubling to 30 min, ±20 % jitter. Retried all the same, slowly,
    /// in case the change happened somewhere no watch sees (RBAC, a registry).
    pub fn next_permanent_delay(&self, key: (String, String)) -> Duration {
        self.next_delay(key)
            .mul_f64(30.0)
            .min(Duration::from_secs(1800).mul_f64(1.2))
    }

    /// Forgets the failures of an object that reconciled.
    pub fn reset(&self, key: &(String, String)) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_a_cap_and_resets() {
        let backoff = Backoff::default();
        let key = ("ns".to_owned(), "g".to_owned());
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay(key.clone())).collect();
        let within =
            |d: Duration, base: f64| d.as_secs_f64() >= base * 0.8 && d.as_secs_f64() <= base * 1.2;
        assert!(within(delays[0], 1.0), "{delays:?}");
        assert!(within(delays[3], 8.0), "{delays:?}");
        assert!(within(delays[11], 300.0), "capped: {delays:?}");
        backoff.reset(&key);
        assert!(within(backoff.next_delay(key.clone()), 1.0));
        backoff.reset(&key);
        let slow: Vec<Duration> = (0..12)
            .map(|_| backoff.next_permanent_delay(key.clone()))
            .collect();
        assert!(within(slow[0], 30.0), "{slow:?}");
        assert!(within(slow[2], 120.0), "{slow:?}");
        assert!(
            slow[11] <= Duration::from_secs(2160),
            "capped near 30 min: {slow:?}"
        );
    }
}
