//! Spreads periodic work in time.
//!
//! Peers started together (a script, a reboot, a bench) would otherwise
//! heartbeat the index and announce their presence to the room in the same
//! instant, every period, for as long as they run; on a small machine or a
//! busy index each such burst shows up as a latency spike for everyone.

use std::time::Duration;

/// The share of the period that is randomised: a wait lasts between
/// `(1 - SPREAD) * period` and `period`, never longer, so leases and
/// presence TTLs sized in periods still hold.
pub const SPREAD: f64 = 0.25;

/// A random wait of at most `period` and at least `(1 - SPREAD) * period`.
pub fn jittered(period: Duration) -> Duration {
    period.mul_f64(factor())
}

/// A random factor between `1 - SPREAD` and 1, for periods that are only
/// known when they are checked.
pub fn factor() -> f64 {
    1.0 - SPREAD * rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_within_the_period_and_vary() {
        let period = Duration::from_secs(10);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(period)).collect();
        assert!(waits.iter().all(|w| *w <= period && *w >= period.mul_f64(1.0 - SPREAD)));
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "waits are spread, not one value");
    }
}
