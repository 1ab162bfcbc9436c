//! What the blob provider tells us and asks us: whether to serve each
//! request (only what we share, [`Serving`]), the bytes each request served
//! (for the metrics), and `--upload-limit`, a cap on the bytes per second
//! this peer serves to all downloaders together, for people on thin uplinks
//! (and for tests and benchmarks that need a slow provider).
//!
//! iroh-blobs asks before sending each chunk (usually 16 KiB); we answer
//! when the chunk fits the rate. Reservations are made in order on one
//! shared clock, so the limit holds across connections.

use std::{sync::Arc, time::Duration};

use iroh_blobs::provider::events::{AbortReason, EventMask, EventSender, ProviderMessage, RequestMode, RequestUpdate, ThrottleMode};
use tokio::{sync::mpsc, time::Instant};

use crate::{metrics::PeerMetrics, serving::Serving, tasks::Tasks};

/// Provider events (and pending throttle decisions) buffered between the
/// provider and us.
const EVENT_CHANNEL: usize = 64;

/// When a chunk of `size` bytes may go, given the clock of the previous
/// reservation. Pure: returns (send at, new clock).
pub fn reserve(clock: Instant, now: Instant, size: u64, bytes_per_sec: u64) -> (Instant, Instant) {
    let start = clock.max(now);
    let cost = Duration::from_secs_f64(size as f64 / bytes_per_sec.max(1) as f64);
    (start, start + cost)
}

/// The event sender for [`iroh_blobs::BlobsProtocol`]: counts the bytes
/// each request served (when it ends) and, with a limit, throttles uploads.
///
/// The throttle has a task of its own that answers in the order requests
/// come: reservations are made in that order on one clock, so each answer
/// is due no earlier than the one before it, and waiting for each in turn
/// loses nothing; the counting waits behind it only when 64 chunks are
/// already waiting for the throttle.
pub fn provider_events(limit: Option<u64>, serving: Serving, metrics: Arc<PeerMetrics>, tasks: &Tasks) -> EventSender {
    let throttle = if limit.is_some() { ThrottleMode::Intercept } else { ThrottleMode::None };
    let mask = EventMask { get: RequestMode::InterceptLog, get_many: RequestMode::InterceptLog, throttle, ..EventMask::DEFAULT };
    let (tx, mut rx) = EventSender::channel(EVENT_CHANNEL, mask);
    let throttled = limit.map(|bytes_per_sec| {
        let (tx, mut rx) = mpsc::channel::<Throttled>(EVENT_CHANNEL);
        tasks.spawn(async move {
            let mut clock = Instant::now();
            while let Some(msg) = rx.recv().await {
                let (at, next) = reserve(clock, Instant::now(), msg.inner.size, bytes_per_sec);
                clock = next;
                tokio::time::sleep_until(at).await;
                msg.tx.send(Ok(())).await.ok();
            }
        });
        tx
    });
    let spawner = tasks.clone();
    tasks.spawn(async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                ProviderMessage::Throttle(msg) => {
                    if let Some(throttled) = &throttled {
                        throttled.send(msg).await.ok();
                    }
                }
                // Decided on a task of their own: a folder's parts may have
                // to be read from the store.
                ProviderMessage::GetRequestReceived(msg) => {
                    let (serving, metrics) = (serving.clone(), metrics.clone());
                    spawner.spawn(async move {
                        let allowed = serving.allows(&msg.inner.request.hash).await;
                        msg.tx.send(if allowed { Ok(()) } else { Err(AbortReason::Permission) }).await.ok();
                        if allowed {
                            count_served(msg.rx, metrics).await;
                        }
                    });
                }
                ProviderMessage::GetManyRequestReceived(msg) => {
                    let (serving, metrics) = (serving.clone(), metrics.clone());
                    spawner.spawn(async move {
                        let mut allowed = true;
                        for hash in &msg.inner.request.hashes {
                            allowed = allowed && serving.allows(hash).await;
                        }
                        msg.tx.send(if allowed { Ok(()) } else { Err(AbortReason::Permission) }).await.ok();
                        if allowed {
                            count_served(msg.rx, metrics).await;
                        }
                    });
                }
                _ => {}
            }
        }
    });
    tx
}

type Throttled = irpc::WithChannels<iroh_blobs::provider::events::Throttle, iroh_blobs::provider::events::ProviderProto>;

/// Adds what one request sent, once it completes or is aborted.
async fn count_served(mut updates: irpc::channel::mpsc::Receiver<RequestUpdate>, metrics: Arc<PeerMetrics>) {
    while let Ok(Some(update)) = updates.recv().await {
        match update {
            RequestUpdate::Completed(done) => metrics.bytes_served.inc_by(done.stats.payload_bytes_sent),
            RequestUpdate::Aborted(aborted) => metrics.bytes_served.inc_by(aborted.stats.payload_bytes_sent),
            _ => continue,
        };
        return;
    }
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
