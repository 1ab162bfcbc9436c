//! Rate budgets: how much one key (a peer's key, an address, a chat
//! author, an overlay neighbour) may send per second before what it sends
//! is refused or dropped, and counted.
//!
//! A token bucket per key (governor's GCRA): `burst` at once, then `per_second`.
//! The buckets of keys that have been quiet long enough to be full again
//! carry no information and are forgotten ([`Budget::prune`], also run by
//! [`Budget::allow`] whenever the number of keys has doubled since the last
//! prune), so memory follows the keys that are active now, not every key
//! ever seen.

use std::{
    hash::Hash,
    num::NonZeroU32,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use governor::{
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::keyed::DefaultKeyedStateStore,
    Quota, RateLimiter,
};

/// Keys held before the first prune is tried.
pub const PRUNE_FLOOR: usize = 4096;

/// A budget: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }

    fn quota(self) -> Quota {
        let per_second = NonZeroU32::new(self.per_second.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(self.burst.max(1)).expect("at least 1");
        Quota::per_second(per_second).allow_burst(burst)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s (bursts of {})", self.per_second, self.burst)
    }
}

type Limiter<K, C> = RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A keyed rate budget with a refusal counter.
pub struct Budget<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    rate: Rate,
    limiter: Limiter<K, C>,
    clock: C,
    refused: AtomicU64,
    next_prune: AtomicUsize,
}

impl<K: Hash + Eq + Clone, C: Clock> std::fmt::Debug for Budget<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget").field("rate", &self.rate).field("refused", &self.refused.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> Budget<K> {
    pub fn new(rate: Rate) -> Self {
        Self::with_clock(rate, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Budget<K, C> {
    /// A budget on another clock (tests use a clock they move by hand).
    pub fn with_clock(rate: Rate, clock: C) -> Self {
        Self {
            rate,
            limiter: RateLimiter::dashmap_with_clock(rate.quota(), clock.clone()),
            clock,
            refused: AtomicU64::new(0),
            next_prune: AtomicUsize::new(PRUNE_FLOOR),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Spends one unit of `key`'s budget. `Err` (counted) holds how long
    /// until the next unit is available.
    pub fn allow(&self, key: &K) -> Result<(), Duration> {
        let outcome = self.limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(self.clock.now()));
        if self.limiter.len() >= self.next_prune.load(Ordering::Relaxed) {
            self.prune();
        }
        if outcome.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// Forgets the keys whose buckets are full again.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.next_prune.store((self.limiter.len() * 2).max(PRUNE_FLOOR), Ordering::Relaxed);
    }

    /// Refusals so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Keys with a bucket held now.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let clock = FakeRelativeClock::default();
        let budget = Budget::with_clock(Rate::new(10, 3), clock.clone());
        for _ in 0..3 {
            assert!(budget.allow(&"a").is_ok());
        }
        let wait = budget.allow(&"a").unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(budget.allow(&"b").is_ok(), "another key has its own budget");
        clock.advance(Duration::from_millis(100));
        assert!(budget.allow(&"a").is_ok(), "one more unit after 1/rate");
        assert_eq!(budget.refused(), 1);
    }

    #[test]
    fn memory_follows_the_active_keys_not_every_key_seen() {
        let clock = FakeRelativeClock::default();
        let budget = Budget::with_clock(Rate::new(10, 20), clock.clone());
        for i in 0..100_000u32 {
            assert!(budget.allow(&i).is_ok());
            if i % 1000 == 999 {
                // A thousand new keys every 10 seconds: the old ones are full again.
                clock.advance(Duration::from_secs(10));
            }
        }
        assert!(budget.keys() <= 2 * PRUNE_FLOOR, "{} keys held after 100,000 seen", budget.keys());
        clock.advance(Duration::from_secs(10));
        budget.prune();
        assert_eq!(budget.keys(), 0, "quiet keys are forgotten");
        assert_eq!(budget.refused(), 0, "honest keys were never refused");
    }
}
