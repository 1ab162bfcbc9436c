//! `--upload-limit`: a cap on the bytes per second this peer serves to all
//! downloaders together, for people on thin uplinks (and for tests and
//! benchmarks that need a slow provider).
//!
//! iroh-blobs asks before sending each chunk (usually 16 KiB); we answer
//! when the chunk fits the rate. Reservations are made in order on one
//! shared clock, so the limit holds across connections.

use std::time::Duration;

use iroh_blobs::provider::events::{EventMask, EventSender, ProviderMessage, ThrottleMode};
use tokio::time::Instant;

use crate::tasks::Tasks;

/// Pending throttle decisions buffered between the provider and us.
const THROTTLE_CHANNEL: usize = 64;

/// When a chunk of `size` bytes may go, given the clock of the previous
/// reservation. Pure: returns (send at, new clock).
pub fn reserve(clock: Instant, now: Instant, size: u64, bytes_per_sec: u64) -> (Instant, Instant) {
    let start = clock.max(now);
    let cost = Duration::from_secs_f64(size as f64 / bytes_per_sec.max(1) as f64);
    (start, start + cost)
}

/// An event sender for [`iroh_blobs::BlobsProtocol`] that throttles uploads.
///
/// One task answers the requests in the order they come: reservations are
/// made in that order on one clock, so each answer is due no earlier than
/// the one before it, and waiting for each in turn loses nothing.
pub fn upload_limiter(bytes_per_sec: u64, tasks: &Tasks) -> EventSender {
    let mask = EventMask { throttle: ThrottleMode::Intercept, ..EventMask::DEFAULT };
    let (tx, mut rx) = EventSender::channel(THROTTLE_CHANNEL, mask);
    tasks.spawn(async move {
        let mut clock = Instant::now();
        while let Some(msg) = rx.recv().await {
            if let ProviderMessage::Throttle(msg) = msg {
                let (at, next) = reserve(clock, Instant::now(), msg.inner.size, bytes_per_sec);
                clock = next;
                tokio::time::sleep_until(at).await;
                msg.tx.send(Ok(())).await.ok();
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_queue_at_the_rate() {
        let t0 = Instant::now();
        let (a, clock) = reserve(t0, t0, 1000, 1000);
        assert_eq!(a, t0);
        assert_eq!(clock, t0 + Duration::from_secs(1));
        let (b, clock) = reserve(clock, t0, 500, 1000);
        assert_eq!(b, t0 + Duration::from_secs(1), "the second chunk waits for the first");
        assert_eq!(clock, t0 + Duration::from_millis(1500));
        // After an idle period, sending starts now, not in the past.
        let later = t0 + Duration::from_secs(10);
        let (c, _) = reserve(clock, later, 1, 1000);
        assert_eq!(c, later);
    }
}
