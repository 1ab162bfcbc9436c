//! How peernet configures gossip (iroh-gossip: HyParView for the overlay,
//! PlumTree for broadcasts), and why each value is what it is.
//!
//! The pruning rule is tested in iroh-gossip's own discrete-event
//! simulation of a room (below): no sockets, a seeded RNG, simulated time.

use std::time::Duration;

use iroh_gossip::{
    net::{Builder, Gossip},
    proto::{HyparviewConfig, PlumtreeConfig},
};

/// Gossip message cap: a signed chat event of the largest allowed text fits.
pub(crate) const MAX_MESSAGE: usize = peernet_proto::chat::MAX_EVENT_BYTES + 1024;

/// How long PlumTree gathers IHave announcements before sending them.
pub(crate) const LAZY_PUSH_EVERY: Duration = Duration::from_secs(1);

/// Duplicates in a row a neighbour must send before PlumTree prunes it
/// (upstream prunes on the first). One broadcast tree carries every
/// member's messages; when two members' messages cross a cycle of eager
/// links at once, the two ends prune different links of it and the tree
/// falls apart into pieces that hear each other only through IHave and
/// Graft, a second later. A link that is still the first path for some of
/// the traffic now keeps its place. In `peernet-bench chat --peers 200`
/// (10 messages a second from different members) p99 went from 2.4 s to
/// 64-123 ms over five runs; two in a row did as well there, but three
/// did better in the simulator with 10-100 ms links (the test below;
/// docs/benchmarks.md, "Latency in a room of 200"). The price is more duplicates
/// while people talk.
pub(crate) const PRUNE_AFTER_DUPLICATES: u8 = 3;

/// PlumTree's settings.
pub(crate) fn broadcast_config() -> PlumtreeConfig {
    PlumtreeConfig {
        // Expired broadcast ids are dropped every 5 s rather than every
        // second: one timer wake-up less per second on every idle peer,
        // and ids are kept 90 s anyway.
        cache_evict_interval: Duration::from_secs(5),
        // Announcements of messages to the neighbours that did not get
        // them in full (the lazy push) wait up to a second and go out
        // together, not after 5 ms each: in an idle room they were most of
        // a member's packets. They matter only when a message's eager path
        // is broken or slow, which then takes up to a second longer; at
        // 250 ms the idle room of 200 took 50% more CPU.
        dispatch_timeout: LAZY_PUSH_EVERY,
        prune_after_duplicates: PRUNE_AFTER_DUPLICATES,
        ..Default::default()
    }
}

/// The gossip builder. `PEERNET_OVERLAY_DEGREE` caps the active view (the
/// number of overlay neighbours); it exists so tests can build long, thin
/// overlays, and is not needed otherwise.
pub(crate) fn builder() -> Builder {
    let mut builder = Gossip::builder().max_message_size(MAX_MESSAGE).broadcast_config(broadcast_config());
    if let Some(degree) = std::env::var("PEERNET_OVERLAY_DEGREE").ok().and_then(|d| d.parse::<usize>().ok()) {
        builder = builder.membership_config(HyparviewConfig { active_view_capacity: degree.max(1), ..Default::default() });
    }
    builder
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;
    use iroh_gossip::proto::{
        sim::{LatencyConfig, NetworkConfig, Simulator, SimulatorConfig},
        Command, Config, Event, Scope, TopicId,
    };
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;

    const TOPIC: TopicId = TopicId::from_bytes([7; 32]);

    /// Delivery latencies (simulated ms) in a room of `peers` where
    /// `messages` are sent at `per_second`, each from a member picked at
    /// random, after the room has settled and carried two passes of such
    /// traffic already (the tree forms under load, as in a room people
    /// talk in).
    fn room_latencies(broadcast: PlumtreeConfig, peers: u64, messages: usize, per_second: u64, seed: u64) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let config = NetworkConfig {
            latency: LatencyConfig::random_ms(10, 100),
            proto: Config { broadcast, max_message_size: MAX_MESSAGE, ..Default::default() },
        };
        // The simulator's network, with its own seeded RNG.
        let mut sim = Simulator::new(SimulatorConfig { rng_seed: seed, peers: peers as usize, ..Default::default() }, config);
        let net = &mut sim.network;
        net.insert_and_join(0, TOPIC, vec![]);
        for peer in 1..peers {
            // Each newcomer is referred to a member already there.
            net.insert_and_join(peer, TOPIC, vec![rng.random_range(0..peer)]);
        }
        net.run_duration(Duration::from_secs(30));
        let mut latencies = Vec::new();
        for pass in 0..3 {
            let mut sent_at: HashMap<Bytes, Duration> = HashMap::new();
            let mut got = Vec::new();
            let gap = Duration::from_millis(1000 / per_second);
            let step = Duration::from_millis(1);
            let expected = messages * (peers as usize - 1);
            // Bounded: a message still missing by then fails the pass.
            let end = gap * messages as u32 + Duration::from_secs(30);
            let started = net.elapsed();
            while got.len() < expected && net.elapsed() - started < end {
                let k = ((net.elapsed() - started).as_millis() / gap.as_millis()) as usize;
                if k < messages && sent_at.len() == k {
                    let content = Bytes::from(format!("pass {pass} message {k}"));
                    let author = rng.random_range(0..peers);
                    sent_at.insert(content.clone(), net.elapsed());
                    net.command(author, TOPIC, Command::Broadcast(content, Scope::Swarm));
                }
                net.run_duration(step);
                let now = net.elapsed();
                for (_peer, _topic, event) in net.events() {
                    if let Event::Received(message) = event {
                        if let Some(at) = sent_at.get(&message.content) {
                            got.push((now - *at).as_millis() as u64);
                        }
                    }
                }
            }
            assert_eq!(got.len(), expected, "pass {pass}: every message reaches every other member");
            latencies = got;
        }
        latencies.sort();
        latencies
    }

    fn p99(sorted: &[u64]) -> u64 {
        sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
    }

    /// A room of 200 where ten members a second talk, over links of 10 to
    /// 100 ms (an internet's, or a busy machine's: several messages are
    /// under way at any time). With upstream's pruning p99 is seconds
    /// (deliveries waiting for IHave and Graft while the one broadcast tree
    /// falls apart); ours must at least halve it.
    #[test]
    fn busy_room_keeps_its_broadcast_tree_whole() {
        let ours = room_latencies(broadcast_config(), 200, 100, 10, 1);
        let upstream = room_latencies(PlumtreeConfig { prune_after_duplicates: 1, ..broadcast_config() }, 200, 100, 10, 1);
        let (ours, upstream) = (p99(&ours), p99(&upstream));
        eprintln!("delivery p99: {ours} ms; with upstream's pruning {upstream} ms");
        assert!(upstream > 2 * LAZY_PUSH_EVERY.as_millis() as u64, "the room shows the problem: upstream p99 {upstream} ms");
        assert!(ours < upstream / 2, "p99 {ours} ms, upstream {upstream} ms");
    }
}
