//! The index session as a pure state machine: join, heartbeat, back-off.
//!
//! Goals:
//! - keep the membership alive: join, publish every share, then heartbeat
//!   every interval the index asked for, each wait a little shorter at
//!   random ([`crate::timers::jittered`]) so peers started together do not
//!   heartbeat in the same instant;
//! - come back by itself: after a failed join or heartbeat, join again
//!   after a back-off that doubles from [`FIRST_BACKOFF`] up to the
//!   heartbeat interval and starts over after a success; a refused join
//!   waits the longest back-off at once;
//! - keep the map fresh: when the overlay neighbours change, a heartbeat
//!   carrying them goes out [`NEIGHBOUR_DEBOUNCE`] after the first change,
//!   so the index learns the new links at once instead of at the next
//!   periodic heartbeat; a burst of changes gives one heartbeat, and such
//!   early heartbeats are never closer than [`NEIGHBOUR_DEBOUNCE`] apart;
//! - tell the caller how the first attempt went, exactly once, so
//!   `peernet up` can fail fast on a wrong ticket or a taken nickname.
//!
//! Non-goals: any IO. The driver performs [`Action`]s one at a time and
//! feeds their outcomes back as [`Event`]s, together with the time since it
//! started. It keeps one timer: every call ends with at most one
//! [`Action::SetTimer`], which replaces the driver's timer (a call without
//! one clears it); when the timer fires the driver feeds [`Event::Timer`].
//! Failures are the driver's own error type `E`, handed back in
//! [`Status`] and [`Action::FirstOutcome`] untouched.

use std::time::Duration;

use iroh::EndpointId;
use rand::Rng;

use crate::timers::jittered;

/// First wait before joining again after a failure; doubles up to the
/// heartbeat interval.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest back-off before the index has told us its heartbeat.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a heartbeat for changed neighbours waits for more changes to
/// carry, and the least time between two heartbeats sent for changes. A
/// change reaches the index within this (plus one round trip) while the
/// overlay is churning at most one heartbeat per this period.
pub const NEIGHBOUR_DEBOUNCE: Duration = Duration::from_millis(300);

/// What happened, fed to [`Session::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<E> {
    /// Begin: join the index.
    Start,
    /// The index accepted our join and told us its timing.
    Joined {
        heartbeat: Duration,
        lease_ttl: Duration,
    },
    /// Every share is published (after a [`Action::PublishAll`]).
    Published,
    /// The join, or the publishing after it, failed; `refused` when the
    /// index said no (rather than not answering).
    JoinFailed {
        refused: bool,
        error: E,
    },
    HeartbeatOk,
    HeartbeatFailed {
        error: E,
    },
    /// The overlay's neighbours now are these.
    NeighboursChanged(Vec<EndpointId>),
    /// The timer last set has fired (or an earlier one; that is harmless).
    Timer,
    /// The session ends (leave or shutdown): nothing more is sent.
    Leave,
}

/// What the driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<E> {
    /// Join under the current nickname; answer with [`Event::Joined`] or
    /// [`Event::JoinFailed`].
    Join,
    /// Send unpublishes still owed and publish every share; answer with
    /// [`Event::Published`] or [`Event::JoinFailed`].
    PublishAll,
    /// Send a heartbeat carrying these neighbours; answer with
    /// [`Event::HeartbeatOk`] or [`Event::HeartbeatFailed`].
    Heartbeat { neighbours: Vec<EndpointId> },
    /// The link to the index changed.
    Status(Status<E>),
    /// Feed [`Event::Timer`] at this time since start (replaces any timer).
    SetTimer(Duration),
    /// How the first join went; given once per session.
    FirstOutcome(Result<(), E>),
}

/// The state of the link to the index, for `peernet status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status<E> {
    Joined { heartbeat: Duration, lease_ttl: Duration },
    Unreachable { error: E },
    Refused { error: E },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Joining,
    Publishing,
    Joined,
    /// Backing off until this time, then join again.
    Waiting(Duration),
    Stopped,
}

/// The index session of one peer.
#[derive(Debug)]
pub struct Session<R> {
    rng: R,
    phase: Phase,
    /// The index's heartbeat interval, once it told us.
    heartbeat: Option<Duration>,
    backoff: Duration,
    first_reported: bool,
    /// The overlay's neighbours, sorted.
    neighbours: Vec<EndpointId>,
    /// The neighbours the index holds for us; `None` when unknown (at the
    /// start, the index may hold a list from an earlier run, and after a
    /// failed heartbeat).
    recorded: Option<Vec<EndpointId>>,
    /// The neighbours carried by the heartbeat in flight.
    in_flight: Option<Vec<EndpointId>>,
    /// Since when `neighbours` differ from `recorded` without a heartbeat
    /// on its way to fix it.
    changed_at: Option<Duration>,
    next_periodic: Duration,
}

impl<R: Rng> Session<R> {
    pub fn new(rng: R) -> Self {
        Self {
            rng,
            phase: Phase::Idle,
            heartbeat: None,
            backoff: FIRST_BACKOFF,
            first_reported: false,
            neighbours: Vec::new(),
            recorded: None,
            in_flight: None,
            changed_at: None,
            next_periodic: Duration::ZERO,
        }
    }

    /// The longest back-off: one heartbeat interval, so a peer that comes
    /// back is in the map again within about one interval.
    fn max_backoff(&self) -> Duration {
        self.heartbeat.unwrap_or(DEFAULT_MAX_BACKOFF)
    }

    fn stale(&self) -> bool {
        self.recorded.as_ref() != Some(&self.neighbours)
    }

    /// When the next heartbeat is due, while joined and none is in flight.
    fn heartbeat_due(&self) -> Option<Duration> {
        if self.phase != Phase::Joined || self.in_flight.is_some() {
            return None;
        }
        // `changed_at` is cleared when a heartbeat goes out and set only by
        // a later change, so early heartbeats are at least the debounce apart.
        let early = self.changed_at.map(|changed| changed + NEIGHBOUR_DEBOUNCE);
        Some(early.map_or(self.next_periodic, |early| early.min(self.next_periodic)))
    }

    fn deadline(&self) -> Option<Duration> {
        match self.phase {
            Phase::Waiting(until) => Some(until),
            _ => self.heartbeat_due(),
        }
    }

    pub fn handle<E: Clone>(&mut self, event: Event<E>, now: Duration) -> Vec<Action<E>> {
        if self.phase == Phase::Stopped {
            return Vec::new();
        }
        let mut actions = Vec::new();
        match event {
            Event::Start => {
                if self.phase == Phase::Idle {
                    self.phase = Phase::Joining;
                    actions.push(Action::Join);
                }
            }
            Event::Joined { heartbeat, lease_ttl } => {
                if self.phase == Phase::Joining {
                    self.heartbeat = Some(heartbeat);
                    self.phase = Phase::Publishing;
                    actions.push(Action::Status(Status::Joined { heartbeat, lease_ttl }));
                    actions.push(Action::PublishAll);
                }
            }
            Event::Published => {
                if self.phase == Phase::Publishing {
                    self.phase = Phase::Joined;
                    self.backoff = FIRST_BACKOFF;
                    self.next_periodic = now + self.periodic_wait();
                    if self.stale() && self.changed_at.is_none() {
                        self.changed_at = Some(now);
                    }
                    self.report_first(&mut actions, Ok(()));
                }
            }
            Event::JoinFailed { refused, error } => {
                if matches!(self.phase, Phase::Joining | Phase::Publishing) {
                    self.report_first(&mut actions, Err(error.clone()));
                    let wait = if refused {
                        actions.push(Action::Status(Status::Refused { error }));
                        self.backoff = self.max_backoff();
                        self.backoff
                    } else {
                        actions.push(Action::Status(Status::Unreachable { error }));
                        self.next_backoff()
                    };
                    self.phase = Phase::Waiting(now + wait);
                }
            }
            Event::HeartbeatOk => {
                if let Some(sent) = self.in_flight.take() {
                    self.recorded = Some(sent);
                    self.next_periodic = now + self.periodic_wait();
                    if !self.stale() {
                        self.changed_at = None;
                    } else if self.changed_at.is_none() {
                        self.changed_at = Some(now);
                    }
                }
            }
            Event::HeartbeatFailed { error } => {
                if self.in_flight.take().is_some() {
                    self.recorded = None;
                    actions.push(Action::Status(Status::Unreachable { error }));
                    let wait = self.next_backoff();
                    self.phase = Phase::Waiting(now + wait);
                }
            }
            Event::NeighboursChanged(mut neighbours) => {
                neighbours.sort_unstable();
                neighbours.dedup();
                self.neighbours = neighbours;
                if !self.stale() {
                    self.changed_at = None;
                } else if self.changed_at.is_none() {
                    self.changed_at = Some(now);
                }
            }
            Event::Timer => match self.phase {
                Phase::Waiting(until) if now >= until => {
                    self.phase = Phase::Joining;
                    actions.push(Action::Join);
                }
                Phase::Joined if self.heartbeat_due().is_some_and(|due| now >= due) => {
                    let neighbours = self.neighbours.clone();
                    self.in_flight = Some(neighbours.clone());
                    self.changed_at = None;
                    actions.push(Action::Heartbeat { neighbours });
                }
                _ => {}
            },
            Event::Leave => {
                self.phase = Phase::Stopped;
                return Vec::new();
            }
        }
        if let Some(at) = self.deadline() {
            actions.push(Action::SetTimer(at.max(now)));
        }
        actions
    }

    fn periodic_wait(&mut self) -> Duration {
        jittered(self.heartbeat.unwrap_or(DEFAULT_MAX_BACKOFF), &mut self.rng)
    }

    /// This failure's wait; the next one waits twice as long, up to the max.
    fn next_backoff(&mut self) -> Duration {
        let wait = self.backoff.min(self.max_backoff());
        self.backoff = (self.backoff * 2).min(self.max_backoff());
        wait
    }

    fn report_first<E>(&mut self, actions: &mut Vec<Action<E>>, outcome: Result<(), E>) {
        if !std::mem::replace(&mut self.first_reported, true) {
            actions.push(Action::FirstOutcome(outcome));
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;
    use crate::timers::SPREAD;

    const HEARTBEAT: Duration = Duration::from_secs(10);
    const LEASE: Duration = Duration::from_secs(30);

    type A = Action<&'static str>;
    type Ev = Event<&'static str>;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn id(seed: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[seed; 32]).public()
    }

    /// A session plus a driver that answers every request as told and
    /// records what was sent when.
    struct Harness {
        session: Session<StdRng>,
        now: Duration,
        timer: Option<Duration>,
        log: Vec<(Duration, A)>,
        /// Whether the index answers.
        up: bool,
        refuse: bool,
    }

    impl Harness {
        fn new() -> Self {
            Self {
                session: Session::new(StdRng::seed_from_u64(3)),
                now: Duration::ZERO,
                timer: None,
                log: Vec::new(),
                up: true,
                refuse: false,
            }
        }

        /// Feeds an event, performs the IO actions at once, as a driver does.
        fn feed(&mut self, event: Ev) {
            let mut pending = vec![event];
            while let Some(event) = pending.pop() {
                self.timer = None;
                for action in self.session.handle(event, self.now) {
                    self.log.push((self.now, action.clone()));
                    match action {
                        Action::SetTimer(at) => self.timer = Some(at),
                        Action::Join if self.refuse => pending.push(Event::JoinFailed { refused: true, error: "refused" }),
                        Action::Join if !self.up => pending.push(Event::JoinFailed { refused: false, error: "down" }),
                        Action::Join => pending.push(Event::Joined { heartbeat: HEARTBEAT, lease_ttl: LEASE }),
                        Action::PublishAll => pending.push(Event::Published),
                        Action::Heartbeat { .. } if self.up => pending.push(Event::HeartbeatOk),
                        Action::Heartbeat { .. } => pending.push(Event::HeartbeatFailed { error: "down" }),
                        Action::Status(_) | Action::FirstOutcome(_) => {}
                    }
                }
            }
        }

        /// Lets time pass until `until`, firing the timer on the way.
        fn run_until(&mut self, until: Duration) {
            while let Some(at) = self.timer.filter(|at| *at <= until) {
                self.now = self.now.max(at);
                self.feed(Event::Timer);
            }
            self.now = until;
        }

        fn sent(&self, pick: impl Fn(&A) -> bool) -> Vec<Duration> {
            self.log.iter().filter(|(_, a)| pick(a)).map(|(t, _)| *t).collect()
        }

        fn heartbeats(&self) -> Vec<(Duration, Vec<EndpointId>)> {
            self.log
                .iter()
                .filter_map(|(t, a)| match a {
                    Action::Heartbeat { neighbours } => Some((*t, neighbours.clone())),
                    _ => None,
                })
                .collect()
        }

        fn joins(&self) -> Vec<Duration> {
            self.sent(|a| matches!(a, Action::Join))
        }

        /// Starts and lets the first (early, to clear whatever the index
        /// held from an earlier run) heartbeat go, then forgets the log.
        fn joined() -> Self {
            let mut h = Self::new();
            h.feed(Event::Start);
            h.run_until(ms(1000));
            assert_eq!(h.heartbeats(), vec![(NEIGHBOUR_DEBOUNCE, vec![])]);
            h.log.clear();
            h
        }
    }

    #[test]
    fn join_publish_then_heartbeats_at_jittered_intervals() {
        let mut h = Harness::new();
        h.feed(Event::Start);
        let kinds: Vec<&A> = h.log.iter().map(|(_, a)| a).collect();
        assert_eq!(kinds[0], &Action::Join);
        assert_eq!(kinds[1], &Action::Status(Status::Joined { heartbeat: HEARTBEAT, lease_ttl: LEASE }));
        assert_eq!(kinds[2], &Action::PublishAll);
        assert_eq!(kinds[3], &Action::FirstOutcome(Ok(())));
        h.run_until(Duration::from_secs(120));
        let beats: Vec<Duration> = h.heartbeats().into_iter().map(|(t, _)| t).collect();
        // The first one tells the index we have no neighbours yet.
        assert_eq!(beats[0], NEIGHBOUR_DEBOUNCE);
        assert!(beats.len() >= 12, "{beats:?}");
        let gaps: Vec<Duration> = beats.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g >= HEARTBEAT.mul_f64(1.0 - SPREAD) && *g <= HEARTBEAT), "{gaps:?}");
        let distinct: std::collections::BTreeSet<_> = gaps.iter().collect();
        assert!(distinct.len() > gaps.len() / 2, "the intervals vary: {gaps:?}");
        assert_eq!(h.joins().len(), 1);
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_heartbeat_then_reset() {
        let mut h = Harness::joined();
        h.up = false;
        h.run_until(Duration::from_secs(80));
        let failed_at = h.sent(|a| matches!(a, Action::Status(Status::Unreachable { .. })))[0];
        let joins = h.joins();
        let mut waits = vec![joins[0] - failed_at];
        waits.extend(joins.windows(2).map(|w| w[1] - w[0]));
        assert_eq!(&waits[..8], &[ms(250), ms(500), ms(1000), ms(2000), ms(4000), ms(8000), HEARTBEAT, HEARTBEAT]);
        assert!(waits[8..].iter().all(|w| *w == HEARTBEAT));
        // Back: joins, and the next failure starts from the first back-off again.
        h.up = true;
        let back_at = h.timer.unwrap();
        h.run_until(back_at + ms(1));
        assert_eq!(h.sent(|a| matches!(a, Action::Status(Status::Joined { .. }))).len(), 1);
        h.log.clear();
        h.up = false;
        h.run_until(back_at + Duration::from_secs(30));
        let failed_at = h.sent(|a| matches!(a, Action::Status(Status::Unreachable { .. })))[0];
        assert_eq!(h.joins()[0] - failed_at, FIRST_BACKOFF);
    }

    #[test]
    fn unreachable_at_first_backs_off_from_the_default_max() {
        let mut h = Harness::new();
        h.up = false;
        h.feed(Event::Start);
        h.run_until(Duration::from_secs(40));
        let joins = h.joins();
        let waits: Vec<Duration> = joins.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&waits[..6], &[ms(250), ms(500), ms(1000), ms(2000), ms(4000), DEFAULT_MAX_BACKOFF]);
    }

    #[test]
    fn a_refused_join_waits_the_longest_back_off() {
        let mut h = Harness::new();
        h.refuse = true;
        h.feed(Event::Start);
        assert!(h.log.iter().any(|(_, a)| *a == Action::Status(Status::Refused { error: "refused" })));
        h.run_until(Duration::from_secs(21));
        assert_eq!(h.joins(), vec![ms(0), DEFAULT_MAX_BACKOFF, DEFAULT_MAX_BACKOFF * 2, DEFAULT_MAX_BACKOFF * 3, DEFAULT_MAX_BACKOFF * 4]);
        assert!(h.heartbeats().is_empty());
    }

    #[test]
    fn the_first_outcome_is_reported_exactly_once() {
        let mut h = Harness::new();
        h.up = false;
        h.feed(Event::Start);
        h.run_until(Duration::from_secs(20));
        h.up = true;
        h.run_until(Duration::from_secs(60));
        let firsts: Vec<&A> = h.log.iter().map(|(_, a)| a).filter(|a| matches!(a, Action::FirstOutcome(_))).collect();
        assert_eq!(firsts, vec![&Action::FirstOutcome(Err("down"))]);

        let mut h = Harness::joined();
        h.up = false;
        h.run_until(Duration::from_secs(30));
        h.up = true;
        h.run_until(Duration::from_secs(60));
        assert!(h.log.iter().all(|(_, a)| !matches!(a, Action::FirstOutcome(_))));
    }

    #[test]
    fn a_burst_of_neighbour_changes_gives_one_heartbeat_within_a_second() {
        let mut h = Harness::joined();
        h.run_until(ms(3000));
        h.feed(Event::NeighboursChanged(vec![id(1)]));
        h.run_until(ms(3100));
        h.feed(Event::NeighboursChanged(vec![id(2), id(1)]));
        h.run_until(ms(3200));
        h.feed(Event::NeighboursChanged(vec![id(1), id(2), id(3)]));
        h.run_until(ms(5000));
        let mut all = vec![id(1), id(2), id(3)];
        all.sort();
        assert_eq!(h.heartbeats(), vec![(ms(3000) + NEIGHBOUR_DEBOUNCE, all.clone())]);

        // A change just after that heartbeat waits for the debounce, no more.
        h.log.clear();
        h.run_until(ms(5000));
        h.feed(Event::NeighboursChanged(vec![id(1)]));
        h.run_until(ms(7000));
        assert_eq!(h.heartbeats(), vec![(ms(5000) + NEIGHBOUR_DEBOUNCE, vec![id(1)])]);

        // A change undone before the heartbeat went sends nothing.
        h.log.clear();
        h.feed(Event::NeighboursChanged(vec![id(1), id(4)]));
        h.run_until(ms(7100));
        h.feed(Event::NeighboursChanged(vec![id(1)]));
        h.run_until(ms(8000));
        assert!(h.heartbeats().iter().all(|(t, _)| *t > ms(8000)), "{:?}", h.heartbeats());
    }

    #[test]
    fn churn_never_heartbeats_more_often_than_the_debounce() {
        let mut h = Harness::joined();
        let mut now = ms(1000);
        for i in 0..200u64 {
            h.run_until(now);
            h.feed(Event::NeighboursChanged(vec![id((i % 7) as u8 + 1)]));
            now += ms(37);
        }
        h.run_until(now + Duration::from_secs(1));
        let beats = h.heartbeats();
        assert!(beats.windows(2).all(|w| w[1].0 - w[0].0 >= NEIGHBOUR_DEBOUNCE), "{beats:?}");
        // And the last change still reached the index promptly.
        let last = beats.last().unwrap();
        assert_eq!(last.1, vec![id((199 % 7) as u8 + 1)]);
        assert!(last.0 <= now + NEIGHBOUR_DEBOUNCE);
    }

    #[test]
    fn a_change_during_a_heartbeat_in_flight_follows_once_it_is_answered() {
        let mut s: Session<StdRng> = Session::new(StdRng::seed_from_u64(5));
        let run = |s: &mut Session<StdRng>, e: Ev, t: u64| s.handle(e, ms(t));
        run(&mut s, Event::Start, 0);
        run(&mut s, Event::Joined { heartbeat: HEARTBEAT, lease_ttl: LEASE }, 0);
        run(&mut s, Event::Published, 0);
        assert!(run(&mut s, Event::Timer, 300).contains(&Action::Heartbeat { neighbours: vec![] }));
        // The answer is slow; a neighbour comes up meanwhile.
        assert_eq!(run(&mut s, Event::NeighboursChanged(vec![id(1)]), 400), vec![]);
        assert_eq!(run(&mut s, Event::Timer, 900), vec![]);
        assert_eq!(run(&mut s, Event::HeartbeatOk, 2000), vec![Action::SetTimer(ms(2000))]);
        assert_eq!(run(&mut s, Event::Timer, 2000), vec![Action::Heartbeat { neighbours: vec![id(1)] }]);
    }

    #[test]
    fn a_heartbeat_after_a_rejoin_carries_the_neighbours_again() {
        let mut h = Harness::joined();
        h.feed(Event::NeighboursChanged(vec![id(1)]));
        h.run_until(ms(2000));
        h.up = false;
        h.run_until(Duration::from_secs(12));
        h.up = true;
        h.log.clear();
        h.run_until(Duration::from_secs(20));
        let rejoined = h.joins()[0];
        assert_eq!(h.heartbeats()[0], (rejoined + NEIGHBOUR_DEBOUNCE, vec![id(1)]));
    }

    #[test]
    fn nothing_after_leave() {
        let mut h = Harness::joined();
        h.feed(Event::Leave);
        assert!(h.log.is_empty());
        h.feed(Event::NeighboursChanged(vec![id(1)]));
        h.run_until(Duration::from_secs(100));
        h.feed(Event::Timer);
        h.feed(Event::Start);
        assert!(h.log.is_empty(), "{:?}", h.log);

        // Also while backing off.
        let mut h = Harness::new();
        h.up = false;
        h.feed(Event::Start);
        h.log.clear();
        h.feed(Event::Leave);
        h.run_until(Duration::from_secs(100));
        h.feed(Event::Timer);
        assert!(h.log.is_empty());
    }
}
