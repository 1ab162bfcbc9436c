//! A seeded simulation of flood search: one [`Flood`] state machine per
//! simulated peer, on generated overlays of 200+ peers, with a simulator
//! that carries every forwarded copy to its neighbour. It checks the
//! properties of the whole network that the per-peer unit tests cannot:
//!
//! - TTL bound: no copy travels further than the TTL from the origin, every
//!   forwarded copy has a TTL of at least 1 that drops by exactly one per
//!   hop, and an inflated TTL from a hostile sender is clamped to `MAX_TTL`;
//! - once-only: each peer answers a query at most once however many copies
//!   reach it, and its `handled`/`duplicates` counters account for them all;
//! - reach: with hop-synchronous delivery on overlays whose degree stays
//!   within the fan-out, the peers that answer are exactly those at distance
//!   1..=ttl from the origin; with a random delivery order they are a subset
//!   that always holds the origin's neighbours; past the fan-out a peer
//!   forwards to at most `MAX_FANOUT` neighbours, the lowest ids first.
//!
//! Everything is seeded, so a failure names its shape, seed and TTL and
//! replays exactly.

use std::collections::{BTreeSet, HashMap, VecDeque};

use iroh::{SecretKey, Signature};
use peernet_proto::{
    flood::{clamp_ttl, Action, Answer, Flood, Query, MAX_FANOUT, MAX_TTL},
    index::PeerAddr,
    EndpointId,
};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

/// Seeds per overlay shape.
const SEEDS: u64 = 20;
/// Fewest peers in a generated overlay.
const MIN_PEERS: usize = 200;

/// An undirected overlay: peer `i` has neighbours `adj[i]`.
struct Graph {
    name: &'static str,
    adj: Vec<Vec<usize>>,
}

impl Graph {
    fn new(name: &'static str, n: usize) -> Self {
        Self { name, adj: vec![Vec::new(); n] }
    }

    fn len(&self) -> usize {
        self.adj.len()
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.adj[a].contains(&b)
    }

    fn link(&mut self, a: usize, b: usize) {
        if a != b && !self.linked(a, b) {
            self.adj[a].push(b);
            self.adj[b].push(a);
        }
    }

    fn degree(&self, v: usize) -> usize {
        self.adj[v].len()
    }

    fn max_degree(&self) -> usize {
        (0..self.len()).map(|v| self.degree(v)).max().unwrap_or(0)
    }

    /// Hop distances from `from` (breadth first), not passing through `avoid`.
    fn distances(&self, from: usize, avoid: Option<usize>) -> Vec<Option<u32>> {
        let mut dist = vec![None; self.len()];
        dist[from] = Some(0);
        let mut queue = VecDeque::from([from]);
        while let Some(v) = queue.pop_front() {
            let d = dist[v].expect("queued peers have a distance");
            for &w in &self.adj[v] {
                if dist[w].is_none() && Some(w) != avoid {
                    dist[w] = Some(d + 1);
                    queue.push_back(w);
                }
            }
        }
        dist
    }

    /// Peers at distance `min..=max` from `from`, not passing through `avoid`.
    fn ball(&self, from: usize, avoid: Option<usize>, min: u32, max: u32) -> BTreeSet<usize> {
        let dist = self.distances(from, avoid);
        (0..self.len()).filter(|&v| Some(v) != avoid && dist[v].is_some_and(|d| (min..=max).contains(&d))).collect()
    }
}

fn line(n: usize) -> Graph {
    let mut g = Graph::new("line", n);
    for i in 1..n {
        g.link(i - 1, i);
    }
    g
}

fn ring(n: usize) -> Graph {
    let mut g = line(n);
    g.name = "ring";
    g.link(n - 1, 0);
    g
}

fn grid(width: usize, height: usize) -> Graph {
    let mut g = Graph::new("grid", width * height);
    for y in 0..height {
        for x in 0..width {
            let v = y * width + x;
            if x + 1 < width {
                g.link(v, v + 1);
            }
            if y + 1 < height {
                g.link(v, v + width);
            }
        }
    }
    g
}

/// A random spanning tree plus random extra links, no peer above `max_degree`.
fn random_bounded(n: usize, max_degree: usize, extra: usize, rng: &mut StdRng) -> Graph {
    let mut g = Graph::new("random", n);
    for v in 1..n {
        loop {
            let u = rng.random_range(0..v);
            if g.degree(u) < max_degree {
                g.link(u, v);
                break;
            }
        }
    }
    for _ in 0..extra {
        let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
        if g.degree(a) < max_degree && g.degree(b) < max_degree {
            g.link(a, b);
        }
    }
    g
}

/// A tree where every inner peer has `branching` children (a star of stars),
/// filled breadth first up to `n` peers.
fn tree(branching: usize, n: usize) -> Graph {
    let mut g = Graph::new("tree", n);
    for v in 1..n {
        g.link((v - 1) / branching, v);
    }
    g
}

/// `hubs` hubs linked to each other, each with `leaves` leaves: hubs have
/// far more neighbours than the fan-out.
fn hubs(hubs: usize, leaves: usize) -> Graph {
    let mut g = Graph::new("hubs", hubs * (leaves + 1));
    for h in 0..hubs {
        for other in 0..h {
            g.link(h, other);
        }
        for l in 0..leaves {
            g.link(h, hubs + h * leaves + l);
        }
    }
    g
}

/// The shapes whose degree stays within the fan-out (+1 for the sender).
fn bounded_shapes(rng: &mut StdRng) -> Vec<Graph> {
    vec![
        line(MIN_PEERS),
        ring(MIN_PEERS),
        grid(15, 15),
        random_bounded(250, MAX_FANOUT + 1, 500, rng),
        // Inner peers have MAX_FANOUT children and a parent: exactly the
        // most a peer can have and still forward to all but its sender.
        tree(MAX_FANOUT, 223),
    ]
}

/// One copy of a query on its way from `from` to `to`.
struct Copy {
    from: usize,
    to: usize,
    query: Query,
    /// Links travelled, this one included.
    hops: u32,
}

#[derive(Clone, Copy, Debug)]
enum Delivery {
    /// Every copy sent in round k arrives before any of round k + 1 (in a
    /// random order within the round).
    Rounds,
    /// Any copy in flight may arrive next.
    Random,
}

/// What one query did.
struct Outcome {
    /// Peers that answered.
    answered: BTreeSet<usize>,
    /// Copies that reached each peer.
    copies: Vec<u64>,
    /// Answers that made it back to the asker.
    delivered: usize,
}

impl Outcome {
    fn reached(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.copies.len()).filter(|&v| self.copies[v] > 0)
    }
}

/// The peers of one overlay, each with its own flood state.
struct Net<'g> {
    graph: &'g Graph,
    ids: &'g [EndpointId],
    by_id: HashMap<EndpointId, usize>,
    neighbors: Vec<Vec<EndpointId>>,
    floods: Vec<Flood>,
    now_ms: u64,
    /// The query id of the current run.
    last_query: [u8; 16],
    /// A peer playing the asker without flood state of its own.
    hostile: Option<usize>,
}

impl<'g> Net<'g> {
    fn new(graph: &'g Graph, ids: &'g [EndpointId]) -> Self {
        assert!(ids.len() >= graph.len());
        Self {
            graph,
            ids,
            by_id: ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
            neighbors: graph.adj.iter().map(|n| n.iter().map(|&w| ids[w]).collect()).collect(),
            floods: (0..graph.len()).map(|_| Flood::default()).collect(),
            now_ms: 1_000,
            last_query: [0; 16],
            hostile: None,
        }
    }

    fn addr(&self, v: usize) -> PeerAddr {
        PeerAddr { id: self.ids[v], ip: vec![], relay: None }
    }

    /// Checks a list of forward targets: neighbours of `v`, distinct, within
    /// the fan-out, never the `except`ed peers; returns their indices.
    fn targets(&self, v: usize, to: &[EndpointId], except: &[EndpointId]) -> Vec<usize> {
        assert!(to.len() <= MAX_FANOUT, "{}: peer {v} forwards to {} peers", self.graph.name, to.len());
        let distinct: BTreeSet<_> = to.iter().collect();
        assert_eq!(distinct.len(), to.len(), "{}: peer {v} forwards twice to one neighbour", self.graph.name);
        to.iter()
            .map(|t| {
                assert!(!except.contains(t), "{}: peer {v} forwards back to the sender or the origin", self.graph.name);
                let w = self.by_id[t];
                assert!(self.graph.linked(v, w), "{}: peer {v} forwards to {w}, not a neighbour", self.graph.name);
                w
            })
            .collect()
    }

    /// The origin starts a query: its first copies.
    fn start(&mut self, origin: usize, ttl: u8, id: [u8; 16]) -> Vec<Copy> {
        self.now_ms += 1;
        self.last_query = id;
        let action = self.floods[origin].start(id, "song".into(), ttl, &self.neighbors[origin], self.now_ms);
        let Action::Forward { query, to } = action else { panic!("start always forwards: {action:?}") };
        assert_eq!(query.ttl, clamp_ttl(ttl), "the origin clamps its own TTL");
        self.targets(origin, &to, &[self.ids[origin]])
            .into_iter()
            .map(|w| Copy { from: origin, to: w, query: query.clone(), hops: 1 })
            .collect()
    }

    /// Carries copies until none is left, checking every step.
    fn run(&mut self, first: Vec<Copy>, delivery: Delivery, rng: &mut StdRng) -> Outcome {
        let n = self.graph.len();
        let Some(head) = first.first() else { return Outcome { answered: BTreeSet::new(), copies: vec![0; n], delivered: 0 } };
        // The first copies come from the asker (or from a hostile peer
        // playing one, which runs no flood state).
        let (id, origin) = (head.query.id, head.from);
        let mut delivered = 0;
        // The TTL a copy has after its first hop's clamp, for the per-hop check.
        let top = head.query.ttl.min(MAX_TTL);
        let before: Vec<(u64, u64)> = self.floods.iter().map(|f| (f.handled, f.duplicates)).collect();
        let mut answers = vec![0u32; n];
        let mut copies = vec![0u64; n];
        let mut in_flight: Vec<Copy> = Vec::new();
        let mut next_round: Vec<Copy> = first;
        loop {
            let copy = match delivery {
                Delivery::Rounds => {
                    if in_flight.is_empty() {
                        in_flight = std::mem::take(&mut next_round);
                        in_flight.shuffle(rng);
                    }
                    match in_flight.pop() {
                        Some(c) => c,
                        None => break,
                    }
                }
                Delivery::Random => {
                    in_flight.append(&mut next_round);
                    if in_flight.is_empty() {
                        break;
                    }
                    let i = rng.random_range(0..in_flight.len());
                    in_flight.swap_remove(i)
                }
            };
            let v = copy.to;
            let ttl = copy.query.ttl;
            assert!(ttl >= 1, "{}: a copy with TTL 0 was sent to {v}", self.graph.name);
            assert_eq!(u32::from(ttl.min(MAX_TTL)) + copy.hops - 1, u32::from(top), "{}: TTL drops by one per hop", self.graph.name);
            copies[v] += 1;
            self.now_ms += 1;
            if self.hostile == Some(v) {
                // It plays the asker and runs no flood state: copies that
                // reach it go no further.
                continue;
            }
            let sender = self.ids[copy.from];
            for action in self.floods[v].handle(copy.query, sender, &self.neighbors[v], self.now_ms) {
                match action {
                    Action::Answer { query: q, back } => {
                        assert_eq!((q.id, back), (id, sender), "{}: peer {v} answers toward the sender", self.graph.name);
                        answers[v] += 1;
                        let hops = self.route_back(v, back, origin);
                        assert_eq!(hops, copy.hops, "{}: peer {v}'s answer retraces the query's path", self.graph.name);
                        delivered += 1;
                    }
                    Action::Forward { query, to } => {
                        assert_eq!(query.ttl, ttl.min(MAX_TTL) - 1, "{}: peer {v} forwards with TTL {}", self.graph.name, query.ttl);
                        assert!(query.ttl >= 1, "{}: peer {v} forwards a spent query", self.graph.name);
                        for w in self.targets(v, &to, &[sender]) {
                            next_round.push(Copy { from: v, to: w, query: query.clone(), hops: copy.hops + 1 });
                        }
                    }
                    other => panic!("{}: handling a query gave {other:?}", self.graph.name),
                }
            }
        }
        for v in (0..n).filter(|v| self.hostile != Some(*v)) {
            let (handled, duplicates) = (self.floods[v].handled - before[v].0, self.floods[v].duplicates - before[v].1);
            assert!(answers[v] <= 1, "{}: peer {v} answered {} times", self.graph.name, answers[v]);
            assert_eq!(handled, u64::from(answers[v]), "{}: peer {v} handled count", self.graph.name);
            assert_eq!(handled + duplicates, copies[v], "{}: peer {v} saw {} copies", self.graph.name, copies[v]);
        }
        Outcome { answered: (0..n).filter(|&v| answers[v] == 1).collect(), copies, delivered }
    }

    /// Carries `v`'s answer back, hop by hop as each peer's state says,
    /// until the asker takes it; returns the number of hops.
    fn route_back(&mut self, v: usize, back: EndpointId, origin: usize) -> u32 {
        let answer = Answer {
            query: [0; 16],
            provider: self.addr(v),
            nickname: String::new(),
            files: Vec::new(),
            // Routing does not check signatures; the receiving node does.
            signature: Signature::from_bytes(&[0; 64]),
        };
        let query = self.last_query;
        let answer = Answer { query, ..answer };
        let (mut from, mut to, mut hops) = (v, self.by_id[&back], 1);
        loop {
            assert!(hops <= u32::from(MAX_TTL), "{}: an answer from {v} wanders", self.graph.name);
            if to == origin && self.hostile == Some(origin) {
                return hops;
            }
            match self.floods[to].answer_arrived(answer.clone(), self.ids[from], self.now_ms) {
                Some(Action::Deliver(_)) => {
                    assert_eq!(to, origin, "{}: {v}'s answer delivered at {to}, not the asker", self.graph.name);
                    return hops;
                }
                Some(Action::Reply { to: next, .. }) => {
                    (from, to, hops) = (to, self.by_id[&next], hops + 1);
                }
                other => panic!("{}: {v}'s answer stuck at {to}: {other:?}", self.graph.name),
            }
        }
    }
}

fn peer_ids(n: usize) -> Vec<EndpointId> {
    (0..n)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            SecretKey::from_bytes(&seed).public()
        })
        .collect()
}

fn query_id(seed: u64, n: u8) -> [u8; 16] {
    let mut id = [n; 16];
    id[..8].copy_from_slice(&seed.to_le_bytes());
    id
}

/// A random peer with at most `max_degree` neighbours.
fn pick(graph: &Graph, max_degree: usize, rng: &mut StdRng) -> usize {
    loop {
        let v = rng.random_range(0..graph.len());
        if graph.degree(v) <= max_degree {
            return v;
        }
    }
}

#[test]
fn queries_reach_exactly_the_ttl_ball_in_rounds_and_part_of_it_in_any_order() {
    let ids = peer_ids(300);
    // Runs where a random order reached fewer peers than rounds, by shape.
    let mut shortfalls: HashMap<&str, u32> = HashMap::new();
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(seed);
        for graph in bounded_shapes(&mut rng) {
            let name = graph.name;
            assert!(graph.len() >= MIN_PEERS, "{name}: {} peers", graph.len());
            assert!(graph.max_degree() <= MAX_FANOUT + 1, "{name}: degree {}", graph.max_degree());
            let mut net = Net::new(&graph, &ids);
            // An origin forwards to all its neighbours only if they fit the fan-out.
            let origin = pick(&graph, MAX_FANOUT, &mut rng);
            // Every TTL, and once an inflated one the origin must clamp.
            let ttl = if seed == SEEDS - 1 { u8::MAX } else { 1 + (seed % u64::from(MAX_TTL)) as u8 };
            let radius = u32::from(clamp_ttl(ttl));
            let ball = graph.ball(origin, None, 1, radius);
            let neighbors = graph.ball(origin, None, 1, 1);
            let dist = graph.distances(origin, None);
            let context = format!("{name}, seed {seed}, origin {origin}, ttl {ttl}");

            let first = net.start(origin, ttl, query_id(seed, 1));
            let rounds = net.run(first, Delivery::Rounds, &mut rng);
            assert_eq!(rounds.answered, ball, "{context}: in rounds, exactly the peers within the TTL answer");

            let first = net.start(origin, ttl, query_id(seed, 2));
            let random = net.run(first, Delivery::Random, &mut rng);
            assert!(random.answered.is_subset(&ball), "{context}: in any order, only peers within the TTL answer");
            assert!(neighbors.is_subset(&random.answered), "{context}: the origin's neighbours always answer");
            if matches!(name, "line" | "ring" | "tree") {
                // One path to each peer within reach: the order cannot matter.
                assert_eq!(random.answered, ball, "{context}: with a single path, any order reaches the whole ball");
            }
            if random.answered != ball {
                *shortfalls.entry(name).or_default() += 1;
            }

            for outcome in [&rounds, &random] {
                assert!(!outcome.answered.contains(&origin), "{context}: the origin answered its own query");
                for v in outcome.reached() {
                    assert!(dist[v].is_some_and(|d| d <= radius), "{context}: a copy reached {v} at distance {:?}", dist[v]);
                }
            }
        }
    }
    // With several paths, a peer reached first by a long path forwards a
    // spent copy: the known price of flooding without rounds. Seen at least
    // once, or the random order is not really random.
    for shape in ["grid", "random"] {
        assert!(shortfalls.get(shape).is_some_and(|&n| n > 0), "{shape}: random order always reached the whole ball");
    }
}

#[test]
fn an_inflated_ttl_from_a_hostile_neighbour_is_clamped() {
    let ids = peer_ids(300);
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        for graph in bounded_shapes(&mut rng) {
            let mut net = Net::new(&graph, &ids);
            // The hostile peer sends a copy claiming a huge TTL and itself as
            // the origin; it runs no flood state of its own.
            let entry = pick(&graph, MAX_FANOUT + 1, &mut rng);
            let hostile = graph.adj[entry][rng.random_range(0..graph.degree(entry))];
            let query = Query { id: query_id(seed, 3), text: "song".into(), ttl: u8::MAX };
            net.last_query = query.id;
            net.hostile = Some(hostile);
            let first = vec![Copy { from: hostile, to: entry, query, hops: 1 }];
            let outcome = net.run(first, Delivery::Rounds, &mut rng);
            // Clamped at the entry to MAX_TTL, which counts the hop that
            // delivered it: the entry and MAX_TTL - 1 hops beyond it answer.
            let expected = graph.ball(entry, Some(hostile), 0, u32::from(MAX_TTL) - 1);
            assert_eq!(outcome.answered, expected, "{}, seed {seed}: reach of a hostile TTL", graph.name);
            assert_eq!(outcome.delivered, outcome.answered.len(), "{}: every answer goes back to the hostile asker", graph.name);
            let dist = graph.distances(hostile, None);
            assert!(outcome.reached().all(|v| dist[v].is_some_and(|d| d <= u32::from(MAX_TTL))));
        }
    }
}

#[test]
fn past_the_fan_out_a_peer_forwards_to_the_lowest_ids_only() {
    let ids = peer_ids(300);
    let graph = hubs(10, 25);
    assert!(graph.len() >= MIN_PEERS && graph.max_degree() > MAX_FANOUT + 1);
    // The peers a hub forwards to when `origin` sent it the query.
    let chosen = |hub: usize, origin: usize| -> BTreeSet<usize> {
        let mut others: Vec<usize> = graph.adj[hub].iter().copied().filter(|&w| w != origin).collect();
        others.sort_by_key(|&w| ids[w]);
        others.into_iter().take(MAX_FANOUT).collect()
    };
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(2000 + seed);
        let mut net = Net::new(&graph, &ids);
        let leaf = pick(&graph, 1, &mut rng);
        let hub = graph.adj[leaf][0];
        let delivery = if seed % 2 == 0 { Delivery::Rounds } else { Delivery::Random };
        let mut run = |origin: usize, ttl: u8, n: u8| {
            let first = net.start(origin, ttl, query_id(seed, n));
            net.run(first, delivery, &mut rng)
        };

        // A hub's own query reaches only MAX_FANOUT of its many neighbours.
        assert_eq!(run(hub, 1, 1).answered, chosen(hub, hub), "seed {seed}: the hub's query");
        // From a leaf: its hub, then the hub's MAX_FANOUT lowest other neighbours.
        assert_eq!(run(leaf, 1, 2).answered, BTreeSet::from([hub]));
        let mut expected = chosen(hub, leaf);
        expected.insert(hub);
        assert_eq!(run(leaf, 2, 3).answered, expected, "seed {seed}: two hops from leaf {leaf}");
        // Further, the cap keeps the reach well inside the TTL ball, and
        // within what MAX_FANOUT per hop allows.
        for ttl in 3..=MAX_TTL {
            let outcome = run(leaf, ttl, 10 + ttl);
            let ball = graph.ball(leaf, None, 1, u32::from(ttl));
            assert!(outcome.answered.is_subset(&ball) && outcome.answered.len() < ball.len(), "seed {seed}, ttl {ttl}");
            // The hub at hop 1, then at most MAX_FANOUT^(k-1) new peers at hop k.
            let most: usize = 1 + (1..u32::from(ttl)).map(|k| MAX_FANOUT.pow(k)).sum::<usize>();
            assert!(outcome.answered.len() <= most, "seed {seed}, ttl {ttl}: {} answered", outcome.answered.len());
        }
    }
}

#[test]
fn clocks_at_the_ends_of_the_range_do_not_overflow() {
    let ids = peer_ids(3);
    let query = |n: u8| Query { id: [n; 16], text: "x".into(), ttl: 2 };
    let mut flood = Flood::default();
    for (n, now) in [(1, u64::MAX - 1), (2, u64::MAX - 1), (3, 0), (1, 0), (4, u64::MAX)] {
        // Handling must not panic; id 1 is remembered across a clock that
        // went back, every other id is new.
        let actions = flood.handle(query(n), ids[1], &[ids[1], ids[2]], now);
        assert_eq!(actions.is_empty(), n == 1 && now == 0, "query {n} at {now}: {actions:?}");
    }
    assert_eq!((flood.handled, flood.duplicates), (4, 1));
}
