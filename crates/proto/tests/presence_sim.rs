//! A seeded simulation of who-is-online in rooms of 50 and 200 members,
//! with the pure parts the overlay uses (`timers::Timers`,
//! `timers::scaled`, `chat::Room`) and a broadcast that delivers every
//! event to every live member after a random delay (what gossip does when
//! it works; its own repair is tested elsewhere).
//!
//! Checked at 200 members: a member that joins is seen online by everyone,
//! and sees everyone, within the lease; a member that leaves is seen
//! offline at once; one that crashes is seen offline within the lease; no
//! live member is ever shown offline. And the cost: the presences each
//! member receives per second at 200 members are at most 1.3 times those
//! at 50 (with a fixed period they would be 4 times).

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    time::Duration,
};

use iroh::{EndpointId, SecretKey};
use peernet_proto::{
    chat::{Body, Event, Room},
    timers::{self, Action, Timers},
};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// The index's default heartbeat and lease, which presence follows.
const PERIOD: Duration = Duration::from_secs(10);
const TTL: Duration = Duration::from_secs(30);
const TICK_MS: u64 = 1000;
/// Delivery delay of the broadcast, uniformly in this range.
const DELAY_MS: (u64, u64) = (5, 150);
/// Members join during the first this many seconds.
const JOIN_SPREAD_MS: u64 = 20_000;
const TOPIC: [u8; 32] = [9; 32];

struct Member {
    id: EndpointId,
    room: Room,
    timers: Timers<StdRng>,
    session: u64,
    seq: u64,
    joined_ms: u64,
    /// When it left gracefully or crashed; it sends and receives nothing after.
    gone_ms: Option<u64>,
    /// Presences (and hellos) it received.
    received: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Stays,
    Leaves(u64),
    Crashes(u64),
}

struct Sim {
    rng: StdRng,
    members: Vec<Member>,
    fates: Vec<Fate>,
    /// (deliver at, to, event)
    queue: BinaryHeap<Reverse<(u64, usize, u64)>>,
    events: BTreeMap<u64, Event>,
    next_event: u64,
    /// Whether presence slows down with the room (peernet's rule) or not.
    scaled: bool,
}

fn id(i: usize) -> EndpointId {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    SecretKey::from_bytes(&bytes).public()
}

impl Sim {
    /// `n` members join in the first 20 s; `late` more join at `late_ms`.
    fn new(seed: u64, n: usize, late: usize, late_ms: u64, scaled: bool) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut members = Vec::new();
        for i in 0..n + late {
            let joined_ms = if i < n { rng.random_range(0..JOIN_SPREAD_MS) } else { late_ms + rng.random_range(0..1000) };
            let timers_rng = StdRng::seed_from_u64(rng.random());
            members.push(Member {
                id: id(i),
                room: Room::new(TOPIC, None, TTL.as_millis() as u64),
                timers: Timers::new(true, PERIOD, Duration::from_millis(joined_ms), timers_rng),
                session: rng.random(),
                seq: 0,
                joined_ms,
                gone_ms: None,
                received: 0,
            });
        }
        let fates = vec![Fate::Stays; members.len()];
        Sim { rng, members, fates, queue: BinaryHeap::new(), events: BTreeMap::new(), next_event: 0, scaled }
    }

    fn live(&self, i: usize, now: u64) -> bool {
        let m = &self.members[i];
        m.joined_ms <= now && m.gone_ms.is_none()
    }

    fn broadcast(&mut self, from: usize, body: Body, now: u64) {
        let m = &mut self.members[from];
        let event = Event { author: m.id, topic: TOPIC, session: m.session, seq: m.seq, nonce: self.rng.random(), sent_at_ms: now, body };
        m.seq += 1;
        m.room.accept(event.clone(), now).ok();
        let key = self.next_event;
        self.next_event += 1;
        self.events.insert(key, event);
        for to in 0..self.members.len() {
            if to != from && self.live(to, now) {
                let at = now + self.rng.random_range(DELAY_MS.0..DELAY_MS.1);
                self.queue.push(Reverse((at, to, key)));
            }
        }
    }

    /// Delivers everything due by `now`.
    fn deliver(&mut self, now: u64) {
        while let Some(Reverse((at, to, key))) = self.queue.peek().copied() {
            if at > now {
                break;
            }
            self.queue.pop();
            if self.members[to].gone_ms.is_some() {
                continue;
            }
            let event = self.events[&key].clone();
            let m = &mut self.members[to];
            m.received += 1;
            m.room.accept(event, at).ok();
        }
    }

    fn step(&mut self, now: u64) {
        self.deliver(now);
        for i in 0..self.members.len() {
            let joined = self.members[i].joined_ms;
            if joined > now || self.members[i].gone_ms.is_some() {
                continue;
            }
            match self.fates[i] {
                Fate::Leaves(at) if at <= now => {
                    self.broadcast(i, Body::Leave, now);
                    self.members[i].timers.handle(timers::Event::Leave, Duration::from_millis(now));
                    self.members[i].gone_ms = Some(now);
                    continue;
                }
                Fate::Crashes(at) if at <= now => {
                    self.members[i].gone_ms = Some(now);
                    continue;
                }
                _ => {}
            }
            let elapsed = Duration::from_millis(now);
            let actions = if now < joined + TICK_MS {
                // Just joined: a hello, as the overlay sends at start.
                self.broadcast(i, Body::Hello { nickname: format!("m{i}") }, now);
                self.members[i].timers.handle(timers::Event::NeighbourUp, elapsed)
            } else {
                let m = &mut self.members[i];
                let (period, ttl) = if self.scaled {
                    let members = m.room.recent_members(now, m.room.presence_ttl_ms() * 2) + 1;
                    timers::scaled(PERIOD, TTL, members)
                } else {
                    (PERIOD, TTL)
                };
                m.room.set_presence_ttl(ttl.as_millis() as u64);
                m.timers.handle(timers::Event::PresencePeriod(period), elapsed);
                m.timers.handle(timers::Event::Tick, elapsed)
            };
            if actions.contains(&Action::SendPresence) {
                self.broadcast(i, Body::Presence { nickname: format!("m{i}") }, now);
            }
        }
    }

    /// The members `observer` shows online at `now`.
    fn online_at(&self, observer: usize, now: u64) -> std::collections::HashSet<EndpointId> {
        self.members[observer].room.members(now).into_iter().filter(|m| m.online).map(|m| m.id).collect()
    }
}

/// What one run found.
struct Outcome {
    /// Presences each live member received per second, in the steady window.
    received_per_member_s: f64,
    /// The lease at the room's size.
    lease: Duration,
    checks: usize,
}

/// A room of `n` members for `end_ms`; at `churn_ms` a tenth leaves and a
/// tenth crashes, and a twentieth more joins. Panics on a wrong view.
fn run(seed: u64, n: usize, scaled: bool, check: bool) -> Outcome {
    let lease = if scaled { timers::scaled(PERIOD, TTL, n).1 } else { TTL };
    let steady = (JOIN_SPREAD_MS + lease.as_millis() as u64, JOIN_SPREAD_MS + 3 * lease.as_millis() as u64);
    let churn_ms = steady.1;
    let late = n / 20;
    let end_ms = churn_ms + 2 * lease.as_millis() as u64 + 10_000;
    let mut sim = Sim::new(seed, n, late, churn_ms + 5_000, scaled);
    for i in 0..n / 10 {
        sim.fates[i] = Fate::Leaves(churn_ms);
        sim.fates[n / 10 + i] = Fate::Crashes(churn_ms);
    }
    let lease_ms = lease.as_millis() as u64;
    // A little slack for delivery and the one-second tick.
    let slack = 2 * TICK_MS + DELAY_MS.1;
    // Presences received by everyone at the start and the end of the steady window.
    let (mut received_at_start, mut received_at_end) = (0, 0);
    let mut checks = 0;
    let mut now = 0;
    while now <= end_ms {
        sim.step(now);
        if now.abs_diff(steady.0) < TICK_MS / 2 + 1 {
            received_at_start = sim.members.iter().map(|m| m.received).sum();
        }
        if now.abs_diff(steady.1) < TICK_MS / 2 + 1 {
            received_at_end = sim.members.iter().map(|m| m.received).sum();
        }
        if check && now % 10_000 == 0 && now >= JOIN_SPREAD_MS {
            for o in (0..sim.members.len()).filter(|&o| sim.live(o, now)) {
                let view = sim.online_at(o, now);
                for s in (0..sim.members.len()).filter(|&s| s != o && sim.members[s].joined_ms <= now) {
                    let both_since = sim.members[o].joined_ms.max(sim.members[s].joined_ms);
                    let online = view.contains(&sim.members[s].id);
                    match (sim.fates[s], sim.members[s].gone_ms) {
                        (Fate::Leaves(at), Some(_)) if now >= at + slack => {
                            assert!(!online, "seed {seed}: m{o} shows m{s} online {} ms after it left", now - at)
                        }
                        (Fate::Crashes(at), Some(_)) if now >= at + lease_ms + slack => {
                            assert!(!online, "seed {seed}: m{o} shows m{s} online {} ms after it crashed (lease {lease_ms} ms)", now - at)
                        }
                        (_, None) if now >= both_since + lease_ms + slack => {
                            assert!(online, "seed {seed}: m{o} shows live m{s} offline (together for {} ms)", now - both_since)
                        }
                        _ => continue,
                    }
                    checks += 1;
                }
            }
        }
        now += TICK_MS;
    }
    let received = received_at_end - received_at_start;
    let window_s = (steady.1 - steady.0) as f64 / 1000.0;
    Outcome { received_per_member_s: received as f64 / n as f64 / window_s, lease, checks }
}

#[test]
fn who_is_online_is_right_at_200_and_costs_what_it_costs_at_50() {
    for seed in [1, 2] {
        let big = run(seed, 200, true, true);
        let small = run(seed, 50, true, true);
        let ratio = big.received_per_member_s / small.received_per_member_s;
        eprintln!(
            "seed {seed}: 200 members: {:.2} presences/s each, lease {:?}, {} checks; 50 members: {:.2}/s, lease {:?}; ratio {ratio:.2}",
            big.received_per_member_s, big.lease, big.checks, small.received_per_member_s, small.lease
        );
        assert!(big.checks > 100_000, "the views were checked: {}", big.checks);
        assert!(ratio <= 1.3, "seed {seed}: each member receives {ratio:.2}x as many presences at 200 as at 50");
    }
}

#[test]
fn a_fixed_period_would_cost_four_times_as_much() {
    // The same measure with presence at a fixed period: the check above
    // can fail.
    let big = run(3, 200, false, false);
    let small = run(3, 50, false, false);
    let ratio = big.received_per_member_s / small.received_per_member_s;
    eprintln!("fixed period: {:.2} vs {:.2} presences/s each; ratio {ratio:.2}", big.received_per_member_s, small.received_per_member_s);
    assert!(ratio > 3.0, "{ratio}");
}
