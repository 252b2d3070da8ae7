//! Rate limits shared by the host, the plugin and rtcd: a token bucket, and buckets
//! per key (user, address) whose number stays bounded however many keys a flood uses.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

use parking_lot::Mutex;

/// `rate` tokens a second up to `burst`; one per allowed event.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: f64) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last: Instant::now(),
        }
    }

    pub fn allow(&mut self, rate: f64, burst: f64) -> bool {
        self.allow_at(rate, burst, Instant::now())
    }

    pub fn allow_at(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }

    /// Full again: nothing to remember about this key.
    fn is_full(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        self.tokens >= burst
    }
}

/// A bucket per key. Past `MAX_KEYS`, full buckets are forgotten (they would allow
/// the next event anyway); if every bucket is in use, the least recently refilled go.
pub struct Buckets<K> {
    rate: f64,
    burst: f64,
    map: Mutex<HashMap<K, TokenBucket>>,
}

/// As Mattermost's `RateLimitSettings.MemoryStoreSize`.
pub const MAX_KEYS: usize = 10_000;

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(rate: f64, burst: f64) -> Buckets<K> {
        Buckets {
            rate,
            burst,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn allow(&self, key: &K) -> bool {
        let now = Instant::now();
        let mut map = self.map.lock();
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| !b.is_full(rate, burst, now));
            if map.len() >= MAX_KEYS {
                let mut ages: Vec<Instant> = map.values().map(|b| b.last).collect();
                ages.sort_unstable();
                let cut = ages[MAX_KEYS / 2];
                map.retain(|_, b| b.last > cut);
            }
        }
        map.entry(key.clone())
            .or_insert_with(|| TokenBucket::new(self.burst))
            .allow_at(self.rate, self.burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3.0);
        let allowed = (0..10).filter(|_| b.allow_at(2.0, 3.0, t0)).count();
        assert_eq!(allowed, 3);
        assert!(b.allow_at(2.0, 3.0, t0 + Duration::from_millis(500)));
        assert!(!b.allow_at(2.0, 3.0, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn keys_have_their_own_buckets_and_their_number_stays_bounded() {
        let b = Buckets::new(1.0, 2.0);
        let (a, other) = ("a".to_string(), "b".to_string());
        assert!(b.allow(&a) && b.allow(&a) && !b.allow(&a));
        assert!(b.allow(&other));
        for i in 0..(3 * MAX_KEYS) {
            b.allow(&i.to_string());
        }
        assert!(b.map.lock().len() <= MAX_KEYS);
    }
}
