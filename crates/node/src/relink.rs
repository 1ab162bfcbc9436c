//! What the overlay does about a neighbour that went down, as a schedule
//! with no sockets in it: [`Relinks::due`] says whom to dial and which
//! connections to close, and the overlay does it.
//!
//! - A neighbour whose connection was lost (no open gossip connection
//!   left, as when the direct path between two NATs is cut and the relay
//!   path had already idled out) is dialled again [`REDIAL_AFTER`] later,
//!   then after twice as long each time, up to [`REDIAL_TRIES`] dials.
//!   Gossip keeps no such peer as a spare, and the overlay asks the index
//!   for others only when it has no neighbour left, so without this two
//!   peers that lost their direct path would stay apart.
//! - A neighbour that was swapped out while its connections are up has
//!   them closed [`FORMER_GRACE`] later ([`crate::paths::Paths::close`]
//!   says why that is safe and needed).
//!
//! A neighbour that comes back cancels both.

use std::time::Duration;

use iroh::EndpointId;
use tokio::time::Instant;

/// How long after a neighbour's connection was lost we first dial it.
/// Each further try waits twice as long (2, 4, 8 and 16 s: 30 s in all),
/// since a dial can fail while the other side has not yet noticed the loss
/// or the relay path is still being set up.
pub const REDIAL_AFTER: Duration = Duration::from_secs(2);
/// Dials of a lost neighbour before we give up on it (gossip's own spares
/// and the index's referrals take over then).
pub const REDIAL_TRIES: u32 = 4;
/// How long after a neighbour left our neighbours (its connection still
/// up) we close the connections gossip used for it: time for the
/// disconnect message gossip sends on it to arrive.
pub const FORMER_GRACE: Duration = Duration::from_secs(5);

/// Neighbours that went down and are not back.
#[derive(Debug, Default)]
pub struct Relinks {
    /// Lost neighbours: when they are next dialled, and how often they were.
    lost: Vec<(EndpointId, Instant, u32)>,
    /// Former neighbours: when they left, and their connections then.
    former: Vec<(EndpointId, Instant, Vec<usize>)>,
}

/// What is due now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub redial: Vec<EndpointId>,
    pub close: Vec<(EndpointId, Vec<usize>)>,
}

impl Relinks {
    /// `peer` left our neighbours; `open` are the ids of its gossip
    /// connections still open (none: the connection was lost).
    pub fn down(&mut self, peer: EndpointId, open: Vec<usize>, now: Instant) {
        self.up(peer);
        if open.is_empty() {
            self.lost.push((peer, now + REDIAL_AFTER, 0));
        } else {
            self.former.push((peer, now, open));
        }
    }

    /// `peer` is a neighbour again: nothing more to do about it.
    pub fn up(&mut self, peer: EndpointId) {
        self.lost.retain(|(id, _, _)| *id != peer);
        self.former.retain(|(id, _, _)| *id != peer);
    }

    /// Whom to dial and what to close at `now`.
    pub fn due(&mut self, now: Instant) -> Due {
        let mut due = Due::default();
        self.lost.retain_mut(|(id, at, tries)| {
            if *at <= now {
                due.redial.push(*id);
                *tries += 1;
                *at = now + REDIAL_AFTER * 2u32.pow(*tries);
            }
            *tries < REDIAL_TRIES
        });
        self.former.retain_mut(|(id, since, open)| {
            if now.saturating_duration_since(*since) < FORMER_GRACE {
                return true;
            }
            due.close.push((*id, std::mem::take(open)));
            false
        });
        due
    }
}

#[cfg(test)]
mod tests {
    use iroh::SecretKey;

    use super::*;

    fn peer(n: u8) -> EndpointId {
        SecretKey::from_bytes(&[n; 32]).public()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_lost_neighbour_is_dialled_after_2_4_8_and_16_s_then_given_up() {
        let t0 = Instant::now();
        let mut relinks = Relinks::default();
        relinks.down(peer(1), Vec::new(), t0);
        let mut dialled = Vec::new();
        for s in 0..=60 {
            if relinks.due(t0 + secs(s)).redial == vec![peer(1)] {
                dialled.push(s);
            }
        }
        assert_eq!(dialled, vec![2, 6, 14, 30]);
    }

    #[test]
    fn a_neighbour_that_is_back_is_neither_dialled_nor_closed() {
        let t0 = Instant::now();
        let mut relinks = Relinks::default();
        relinks.down(peer(1), Vec::new(), t0);
        relinks.down(peer(2), vec![7], t0);
        relinks.up(peer(1));
        relinks.up(peer(2));
        assert_eq!(relinks.due(t0 + secs(60)), Due::default());
    }

    #[test]
    fn a_former_neighbours_connections_are_closed_once_after_the_grace() {
        let t0 = Instant::now();
        let mut relinks = Relinks::default();
        relinks.down(peer(2), vec![7, 9], t0);
        assert_eq!(relinks.due(t0 + FORMER_GRACE - secs(1)), Due::default(), "not before the grace");
        assert_eq!(relinks.due(t0 + FORMER_GRACE).close, vec![(peer(2), vec![7, 9])]);
        assert_eq!(relinks.due(t0 + secs(60)), Due::default(), "and only once");
    }

    #[test]
    fn going_down_again_starts_over() {
        let t0 = Instant::now();
        let mut relinks = Relinks::default();
        relinks.down(peer(1), vec![3], t0);
        relinks.down(peer(1), Vec::new(), t0 + secs(1));
        let due = relinks.due(t0 + secs(3));
        assert_eq!(due.redial, vec![peer(1)], "lost now: dialled 2 s after the loss");
        assert!(due.close.is_empty(), "the earlier swap-out is superseded");
    }
}
