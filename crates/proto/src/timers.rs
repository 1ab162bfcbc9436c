//! The overlay's timers as a pure state machine: presence and re-referral.
//!
//! Goals:
//! - a chat member shows it is there: a presence event after every quiet
//!   period, where any signed event it sends counts as presence (a peer that
//!   talks pays for no separate broadcast), and one at once when a neighbour
//!   comes up, so newcomers learn who we are without waiting a period;
//! - a peer without neighbours re-attaches by itself: after
//!   [`LONELY_AFTER`] alone it asks the index for a referral, and again
//!   every [`LONELY_AFTER`] while it stays alone;
//! - periodic work is spread in time ([`jittered`]), so peers started
//!   together do not announce themselves in the same instant every period.
//!
//! Non-goals: sending anything, or knowing what a presence event holds. The
//! overlay's task feeds [`Event`]s with the time since it started and
//! performs the [`Action`]s; the randomness comes from an RNG handed in, so
//! tests are deterministic with a seeded one.

use std::time::Duration;

use rand::Rng;

/// The share of a period that is randomised: a wait lasts between
/// `(1 - SPREAD) * period` and `period`, never longer, so leases and
/// presence TTLs sized in periods still hold.
pub const SPREAD: f64 = 0.25;

/// Without neighbours for this long, ask the index for a new referral.
pub const LONELY_AFTER: Duration = Duration::from_secs(2);

/// Members a room holds before presence slows down. Every member sends one
/// presence per period to everyone, so at a fixed period each member
/// receives a number of presences that grows with the room, and the room as
/// a whole with its square. Beyond this many members the period (and the
/// presence TTL with it) grows in proportion to the room: each member then
/// receives about `ROOM_AT_BASE_PERIOD` presences per base period whatever
/// the room's size, and a crash is noticed within the longer TTL.
pub const ROOM_AT_BASE_PERIOD: usize = 32;

/// How far presence slows down at most: beyond `ROOM_AT_BASE_PERIOD`
/// times this many members (256) the period stays at 8 base periods, so a
/// member who mints keys to swell the room cannot make a crashed peer look
/// online for long (at most 8 leases: 4 minutes with the default 30 s).
pub const MAX_PERIOD_FACTOR: f64 = 8.0;

/// The presence period and TTL for a room of `members` (ourselves
/// included), from the base timing (the index's heartbeat and lease).
pub fn scaled(period: Duration, ttl: Duration, members: usize) -> (Duration, Duration) {
    let factor = (members as f64 / ROOM_AT_BASE_PERIOD as f64).clamp(1.0, MAX_PERIOD_FACTOR);
    (period.mul_f64(factor), ttl.mul_f64(factor))
}

/// A random factor between `1 - SPREAD` and 1, for periods that are only
/// known when they are checked.
pub fn jitter_factor(rng: &mut impl Rng) -> f64 {
    1.0 - SPREAD * rng.random::<f64>()
}

/// A random wait of at most `period` and at least `(1 - SPREAD) * period`.
pub fn jittered(period: Duration, rng: &mut impl Rng) -> Duration {
    period.mul_f64(jitter_factor(rng))
}

/// What happened to the overlay. Times are durations since the overlay
/// started, passed to [`Timers::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A gossip neighbour came up.
    NeighbourUp,
    /// A gossip neighbour went down; `left` neighbours remain.
    NeighbourDown { left: usize },
    /// We broadcast a signed event (any kind): the room saw us.
    Sent,
    /// The presence period changed (the index told us its timing).
    PresencePeriod(Duration),
    /// Time passed; the overlay ticks a few times a second.
    Tick,
    /// We announced our leave (or are shutting down): nothing more goes
    /// out, or receivers would count us back in.
    Leave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Broadcast a presence event to the room.
    SendPresence,
    /// Ask the index for peers to attach to.
    AskReferral,
}

/// The presence and re-referral timers of one overlay member.
#[derive(Debug)]
pub struct Timers<R> {
    rng: R,
    /// Whether we announce ourselves (chat members do; a standalone index
    /// does not, but it still re-attaches when alone).
    chatty: bool,
    stopped: bool,
    period: Duration,
    /// This period's share of `period`, drawn anew after each presence.
    factor: f64,
    last_sent: Duration,
    /// Since when we have had no neighbours (or since the last referral).
    lonely_since: Option<Duration>,
}

impl<R: Rng> Timers<R> {
    /// Timers for an overlay that starts at `now` without neighbours.
    pub fn new(chatty: bool, period: Duration, now: Duration, mut rng: R) -> Self {
        let factor = jitter_factor(&mut rng);
        Self { rng, chatty, stopped: false, period, factor, last_sent: now, lonely_since: Some(now) }
    }

    /// Whether presence events still go out.
    pub fn present(&self) -> bool {
        self.chatty && !self.stopped
    }

    pub fn handle(&mut self, event: Event, now: Duration) -> Vec<Action> {
        if self.stopped {
            return Vec::new();
        }
        let mut actions = Vec::new();
        match event {
            Event::NeighbourUp => {
                self.lonely_since = None;
                if self.chatty {
                    self.presence_sent(now);
                    actions.push(Action::SendPresence);
                }
            }
            Event::NeighbourDown { left } => {
                if left == 0 && self.lonely_since.is_none() {
                    self.lonely_since = Some(now);
                }
            }
            Event::Sent => self.last_sent = self.last_sent.max(now),
            Event::PresencePeriod(period) => self.period = period,
            Event::Tick => {
                if self.chatty && now.saturating_sub(self.last_sent) >= self.period.mul_f64(self.factor) {
                    self.presence_sent(now);
                    actions.push(Action::SendPresence);
                }
                if self.lonely_since.is_some_and(|since| now.saturating_sub(since) >= LONELY_AFTER) {
                    self.lonely_since = Some(now);
                    actions.push(Action::AskReferral);
                }
            }
            Event::Leave => self.stopped = true,
        }
        actions
    }

    /// The earliest time at which [`Event::Tick`] will ask for something
    /// (a presence, a referral), as things stand; `None` when nothing is
    /// due ever. A caller may sleep until then instead of ticking; anything
    /// that changes the answer comes in as an event, after which it asks
    /// again.
    pub fn next_due(&self) -> Option<Duration> {
        if self.stopped {
            return None;
        }
        let presence = self.chatty.then(|| self.last_sent + self.period.mul_f64(self.factor));
        let referral = self.lonely_since.map(|since| since + LONELY_AFTER);
        presence.into_iter().chain(referral).min()
    }

    fn presence_sent(&mut self, now: Duration) {
        self.last_sent = self.last_sent.max(now);
        self.factor = jitter_factor(&mut self.rng);
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    const PERIOD: Duration = Duration::from_secs(10);
    const TICK: Duration = Duration::from_millis(250);

    fn timers(chatty: bool) -> Timers<StdRng> {
        Timers::new(chatty, PERIOD, Duration::ZERO, StdRng::seed_from_u64(7))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Ticks from `from` (exclusive) to `to` (inclusive), returning the
    /// actions with the time they were asked for.
    fn run(t: &mut Timers<StdRng>, from: Duration, to: Duration) -> Vec<(Duration, Action)> {
        let mut out = Vec::new();
        let mut now = from + TICK;
        while now <= to {
            out.extend(t.handle(Event::Tick, now).into_iter().map(|a| (now, a)));
            now += TICK;
        }
        out
    }

    fn presences(actions: &[(Duration, Action)]) -> Vec<Duration> {
        actions.iter().filter(|(_, a)| *a == Action::SendPresence).map(|(t, _)| *t).collect()
    }

    fn referrals(actions: &[(Duration, Action)]) -> Vec<Duration> {
        actions.iter().filter(|(_, a)| *a == Action::AskReferral).map(|(t, _)| *t).collect()
    }

    #[test]
    fn next_due_is_when_a_tick_first_acts() {
        for chatty in [true, false] {
            let mut t = timers(chatty);
            t.handle(Event::NeighbourUp, ms(100));
            let due = t.next_due();
            if !chatty {
                assert_eq!(due, None, "a quiet member with neighbours has nothing due");
                continue;
            }
            let due = due.expect("a presence is due");
            assert!(due <= ms(100) + PERIOD && due >= ms(100) + PERIOD.mul_f64(1.0 - SPREAD));
            assert!(t.handle(Event::Tick, due - ms(1)).is_empty(), "nothing before it");
            assert_eq!(t.handle(Event::Tick, due), vec![Action::SendPresence], "the presence at it");
        }
        let mut alone = timers(false);
        assert_eq!(alone.next_due(), Some(LONELY_AFTER), "alone since the start");
        assert_eq!(alone.handle(Event::Tick, LONELY_AFTER), vec![Action::AskReferral]);
        assert_eq!(alone.next_due(), Some(LONELY_AFTER * 2), "and again while alone");
        alone.handle(Event::Leave, LONELY_AFTER * 2);
        assert_eq!(alone.next_due(), None, "nothing after leaving");
    }

    #[test]
    fn presence_slows_down_in_proportion_beyond_a_room_size() {
        let ttl = PERIOD * 3;
        assert_eq!(scaled(PERIOD, ttl, 1), (PERIOD, ttl));
        assert_eq!(scaled(PERIOD, ttl, ROOM_AT_BASE_PERIOD), (PERIOD, ttl));
        let (p, t) = scaled(PERIOD, ttl, ROOM_AT_BASE_PERIOD * 4);
        assert_eq!((p, t), (PERIOD * 4, ttl * 4));
        // What each member receives per base period stays the same.
        let per_member = |n: usize| n as f64 / scaled(PERIOD, ttl, n).0.as_secs_f64();
        assert!((per_member(200) - per_member(50)).abs() < 1e-9);
        // Minted keys cannot stretch it without end.
        assert_eq!(scaled(PERIOD, ttl, 100_000), (PERIOD.mul_f64(MAX_PERIOD_FACTOR), ttl.mul_f64(MAX_PERIOD_FACTOR)));
    }

    #[test]
    fn jittered_waits_stay_within_the_period_and_vary() {
        let mut rng = StdRng::seed_from_u64(1);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(PERIOD, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w <= PERIOD && *w >= PERIOD.mul_f64(1.0 - SPREAD)));
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "waits are spread, not one value");
    }

    #[test]
    fn presence_after_a_quiet_jittered_period() {
        let mut t = timers(true);
        t.handle(Event::NeighbourUp, Duration::ZERO);
        let sent = presences(&run(&mut t, Duration::ZERO, Duration::from_secs(60)));
        assert!(sent.len() >= 6, "one presence per period at least: {sent:?}");
        let mut last = Duration::ZERO;
        for at in sent {
            let gap = at - last;
            assert!(gap >= PERIOD.mul_f64(1.0 - SPREAD) && gap <= PERIOD + TICK, "gap {gap:?}");
            last = at;
        }
    }

    #[test]
    fn presence_suppressed_while_talking() {
        let mut t = timers(true);
        t.handle(Event::NeighbourUp, Duration::ZERO);
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(60) {
            let acts = run(&mut t, now, now + Duration::from_secs(1));
            assert!(presences(&acts).is_empty(), "a talking peer sends no presence (at {now:?})");
            now += Duration::from_secs(1);
            t.handle(Event::Sent, now);
        }
        // Falls quiet: presence comes back within one period.
        let sent = presences(&run(&mut t, now, now + PERIOD + TICK));
        assert_eq!(sent.len(), 1);
        assert!(sent[0] - now >= PERIOD.mul_f64(1.0 - SPREAD));
    }

    #[test]
    fn presence_at_once_on_neighbour_up() {
        let mut t = timers(true);
        assert!(run(&mut t, Duration::ZERO, ms(1000)).is_empty());
        assert_eq!(t.handle(Event::NeighbourUp, ms(1100)), vec![Action::SendPresence]);
        assert_eq!(t.handle(Event::NeighbourUp, ms(1200)), vec![Action::SendPresence]);
        // That presence restarts the quiet period.
        let sent = presences(&run(&mut t, ms(1200), ms(1200) + PERIOD + TICK));
        assert_eq!(sent.len(), 1);
        assert!(sent[0] - ms(1200) >= PERIOD.mul_f64(1.0 - SPREAD));
    }

    #[test]
    fn a_silent_member_never_sends_presence_but_still_reattaches() {
        let mut t = timers(false);
        assert!(!t.present());
        assert!(t.handle(Event::NeighbourUp, ms(10)).is_empty());
        t.handle(Event::NeighbourDown { left: 0 }, ms(20));
        let acts = run(&mut t, ms(20), Duration::from_secs(40));
        assert!(presences(&acts).is_empty());
        assert!(!referrals(&acts).is_empty());
    }

    #[test]
    fn the_presence_period_follows_the_index() {
        let mut t = timers(true);
        t.handle(Event::NeighbourUp, Duration::ZERO);
        t.handle(Event::PresencePeriod(Duration::from_secs(2)), Duration::ZERO);
        let sent = presences(&run(&mut t, Duration::ZERO, Duration::from_secs(10)));
        assert!(sent.len() >= 5, "{sent:?}");
        assert!(sent.windows(2).all(|w| w[1] - w[0] <= Duration::from_secs(2) + TICK), "{sent:?}");
    }

    #[test]
    fn lonely_asks_for_referrals_every_lonely_after_until_a_neighbour_is_up() {
        let mut t = timers(true);
        let acts = run(&mut t, Duration::ZERO, ms(7000));
        assert_eq!(referrals(&acts), vec![ms(2000), ms(4000), ms(6000)]);
        t.handle(Event::NeighbourUp, ms(7000));
        assert!(referrals(&run(&mut t, ms(7000), ms(20_000))).is_empty());
        // Losing one of two neighbours is not lonely; losing the last is.
        t.handle(Event::NeighbourUp, ms(20_000));
        t.handle(Event::NeighbourDown { left: 1 }, ms(20_000));
        assert!(referrals(&run(&mut t, ms(20_000), ms(25_000))).is_empty());
        t.handle(Event::NeighbourDown { left: 0 }, ms(25_000));
        let acts = run(&mut t, ms(25_000), ms(29_500));
        assert_eq!(referrals(&acts), vec![ms(27_000), ms(29_000)]);
    }

    #[test]
    fn nothing_after_leave() {
        let mut t = timers(true);
        t.handle(Event::Leave, ms(100));
        assert!(!t.present());
        assert!(t.handle(Event::NeighbourUp, ms(200)).is_empty());
        t.handle(Event::NeighbourDown { left: 0 }, ms(300));
        assert!(run(&mut t, ms(300), Duration::from_secs(60)).is_empty());
    }
}
