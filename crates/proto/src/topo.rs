//! The network map: a graph of online peers and their overlay links, built
//! from what the index learned through heartbeats (or, on a LAN network,
//! from what the peers report in the room), with the path each link takes
//! (direct or relayed, and its round-trip time) where its ends reported it;
//! and its renderings (text for terminals, Graphviz DOT, JSON via serde).

use std::collections::{BTreeMap, BTreeSet};

use iroh::EndpointId;
use serde::{Deserialize, Serialize};

use crate::{
    index::{LinkMap, LinkReport, Topology},
    names::visible,
};

/// How a link reaches its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Straight to one of the peer's addresses (on a LAN, or through a
    /// hole punched in the NATs between them).
    Direct,
    /// Through a relay server.
    Relayed,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Via::Direct => "direct",
            Via::Relayed => "relayed",
        })
    }
}

/// A link's path as its reporter saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    pub via: Via,
    /// Smoothed round-trip time of the selected path, in milliseconds.
    pub rtt_ms: u64,
}

impl std::fmt::Display for PathInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {} ms", self.via, self.rtt_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub short_id: String,
    pub nickname: String,
    pub root: bool,
}

/// What one online peer says about itself: who it is and its overlay
/// links, with their paths when it knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub id: EndpointId,
    pub nickname: String,
    pub links: Vec<LinkReport>,
}

/// One link of the map with the path it takes, when one of its ends said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub a: String,
    pub b: String,
    pub path: Option<PathInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// Undirected links, each once, as (smaller id, larger id).
    pub edges: Vec<(String, String)>,
    /// The same links, in the same order, with the path each takes.
    #[serde(default)]
    pub links: Vec<Link>,
}

impl Graph {
    /// Builds the graph. A link counts when either end reports it and both
    /// ends are online peers (or the root); links to peers whose lease ran
    /// out are left out, so the map shows exactly who is online.
    pub fn from_topology(t: &Topology) -> Self {
        Self::from_link_map(&LinkMap::from(t.clone()))
    }

    /// [`Graph::from_topology`], with the paths the peers reported.
    pub fn from_link_map(m: &LinkMap) -> Self {
        let reports: Vec<Report> =
            m.peers.iter().map(|p| Report { id: p.peer.addr.id, nickname: p.peer.nickname.clone(), links: p.links.clone() }).collect();
        Self::from_reports(Some(m.root), &reports)
    }

    /// Builds the graph from what each online peer reports about itself;
    /// `root` is marked (and drawn as the index when it is not a peer but
    /// someone links to it). A network without an index has no root.
    pub fn from_reports(root: Option<EndpointId>, reports: &[Report]) -> Self {
        let node = |id: EndpointId, nickname: String| Node {
            id: id.to_string(),
            short_id: id.fmt_short().to_string(),
            nickname,
            root: Some(id) == root,
        };
        let mut nodes: BTreeMap<EndpointId, Node> = reports.iter().map(|r| (r.id, node(r.id, r.nickname.clone()))).collect();
        if let Some(root) = root {
            let reported_root = reports.iter().any(|r| r.links.iter().any(|l| l.id == root));
            if !nodes.contains_key(&root) && reported_root {
                // A standalone index: part of the overlay but not a peer.
                nodes.insert(root, node(root, "index".into()));
            }
        }
        // Either end may report a link; the first report with a path wins.
        let mut edges: BTreeMap<(EndpointId, EndpointId), Option<PathInfo>> = BTreeMap::new();
        for r in reports {
            for l in &r.links {
                if l.id != r.id && nodes.contains_key(&l.id) {
                    let key = if r.id < l.id { (r.id, l.id) } else { (l.id, r.id) };
                    let path = edges.entry(key).or_default();
                    *path = path.or(l.path);
                }
            }
        }
        let links: Vec<Link> = edges.iter().map(|((x, y), path)| Link { a: x.to_string(), b: y.to_string(), path: *path }).collect();
        let edges = links.iter().map(|l| (l.a.clone(), l.b.clone())).collect();
        Self { nodes: nodes.into_values().collect(), edges, links }
    }

    /// The map of a network without an index, as `me` sees it from the
    /// reports in the room. A report is only a claim, and keys cost
    /// nothing to mint, so a peer is shown only when it is `me` or is
    /// reached from `me` over links that both their ends report: a key
    /// that only sends presence, or claims links no real peer confirms,
    /// is not drawn. `me`'s own report is first hand.
    pub fn seen_from(me: EndpointId, reports: &[Report]) -> Self {
        let claims: BTreeSet<(EndpointId, EndpointId)> = reports.iter().flat_map(|r| r.links.iter().map(move |l| (r.id, l.id))).collect();
        let confirmed = |a: EndpointId, b: EndpointId| a != b && claims.contains(&(a, b)) && claims.contains(&(b, a));
        let mut reached = BTreeSet::from([me]);
        let mut todo = vec![me];
        while let Some(a) = todo.pop() {
            for r in reports.iter().filter(|r| r.id != a && confirmed(a, r.id)) {
                if reached.insert(r.id) {
                    todo.push(r.id);
                }
            }
        }
        let seen: Vec<Report> = reports
            .iter()
            .filter(|r| reached.contains(&r.id))
            .map(|r| Report { links: r.links.iter().filter(|l| confirmed(r.id, l.id)).cloned().collect(), ..r.clone() })
            .collect();
        Self::from_reports(None, &seen)
    }

    /// Whether every node can reach every other (true for zero or one node).
    pub fn is_connected(&self) -> bool {
        let Some(first) = self.nodes.first() else { return true };
        let mut adjacent: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (a, b) in &self.edges {
            adjacent.entry(a).or_default().push(b);
            adjacent.entry(b).or_default().push(a);
        }
        let mut seen = BTreeSet::from([first.id.as_str()]);
        let mut todo = vec![first.id.as_str()];
        while let Some(n) = todo.pop() {
            for m in adjacent.get(n).into_iter().flatten() {
                if seen.insert(m) {
                    todo.push(m);
                }
            }
        }
        seen.len() == self.nodes.len()
    }

    fn label(&self, id: &str) -> String {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| format!("{} ({}){}", visible(&n.nickname), n.short_id, if n.root { " [root]" } else { "" }))
            .unwrap_or_else(|| id.to_string())
    }

    /// One line per peer with its links, for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = format!("{} peer(s) online, {} link(s)\n", self.nodes.len(), self.edges.len());
        for n in &self.nodes {
            let links: Vec<String> = self
                .edges
                .iter()
                .filter_map(|(a, b)| {
                    if *a == n.id {
                        Some(b)
                    } else if *b == n.id {
                        Some(a)
                    } else {
                        None
                    }
                })
                .map(|other| {
                    self.nodes
                        .iter()
                        .find(|m| m.id == *other)
                        .map(|m| format!("{} ({})", visible(&m.nickname), m.short_id))
                        .unwrap_or_default()
                })
                .collect();
            let links = if links.is_empty() { "(no links)".to_string() } else { links.join(", ") };
            out.push_str(&format!("{:<40} -- {}\n", self.label(&n.id), links));
        }
        out
    }

    /// Graphviz DOT; labels are escaped, ids are quoted.
    pub fn to_dot(&self) -> String {
        let esc = |s: &str| visible(s).replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::from("graph peernet {\n  node [shape=box, style=rounded];\n");
        for n in &self.nodes {
            let style = if n.root { ", style=\"rounded,bold\", peripheries=2" } else { "" };
            out.push_str(&format!("  \"{}\" [label=\"{}\\n{}\"{}];\n", n.short_id, esc(&n.nickname), esc(&n.short_id), style));
        }
        for (a, b) in &self.edges {
            let short = |id: &str| self.nodes.iter().find(|n| n.id == id).map(|n| n.short_id.clone()).unwrap_or_default();
            out.push_str(&format!("  \"{}\" -- \"{}\";\n", short(a), short(b)));
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{PeerAddr, PeerInfo, TopologyPeer};

    fn id(seed: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[seed; 32]).public()
    }

    fn peer(seed: u8, nick: &str, neighbors: &[u8]) -> TopologyPeer {
        TopologyPeer {
            peer: PeerInfo { addr: PeerAddr { id: id(seed), ip: vec![], relay: None }, nickname: nick.into() },
            neighbors: neighbors.iter().map(|s| id(*s)).collect(),
        }
    }

    #[test]
    fn links_are_undirected_and_only_between_online_peers() {
        let t = Topology { root: id(1), peers: vec![peer(1, "root", &[2]), peer(2, "b", &[1, 3, 9]), peer(3, "c", &[2])] };
        let g = Graph::from_topology(&t);
        assert_eq!(g.nodes.len(), 3);
        assert_eq!(g.edges.len(), 2, "1-2 reported twice counts once; 9 is offline");
        assert!(g.is_connected());
        assert!(g.nodes.iter().find(|n| n.nickname == "root").unwrap().root);
    }

    #[test]
    fn disconnected_graphs_are_detected() {
        let t = Topology { root: id(1), peers: vec![peer(1, "a", &[]), peer(2, "b", &[3]), peer(3, "c", &[])] };
        assert!(!Graph::from_topology(&t).is_connected());
    }

    #[test]
    fn dot_escapes_labels() {
        let t = Topology { root: id(1), peers: vec![peer(1, "evil\" -- \"x", &[])] };
        let dot = Graph::from_topology(&t).to_dot();
        assert!(dot.contains("evil\\\" -- \\\"x"));
        assert!(dot.starts_with("graph peernet {"));
    }

    #[test]
    fn standalone_root_appears_when_peers_link_to_it() {
        let t = Topology { root: id(1), peers: vec![peer(2, "b", &[1])] };
        let g = Graph::from_topology(&t);
        assert_eq!(g.nodes.len(), 2);
        assert!(g.is_connected());
    }

    #[test]
    fn a_network_without_an_index_has_no_root() {
        let relayed = PathInfo { via: Via::Relayed, rtt_ms: 40 };
        let report = |seed: u8, links: &[(u8, Option<PathInfo>)]| Report {
            id: id(seed),
            nickname: format!("p{seed}"),
            links: links.iter().map(|(s, path)| LinkReport { id: id(*s), path: *path }).collect(),
        };
        let g = Graph::from_reports(None, &[report(1, &[(2, None)]), report(2, &[(1, Some(relayed)), (3, None)]), report(3, &[])]);
        assert_eq!(g.nodes.len(), 3);
        assert_eq!(g.edges.len(), 2, "2-3 counts although only 2 reports it");
        assert!(g.nodes.iter().all(|n| !n.root));
        assert!(g.is_connected());
        let one_two = g.links.iter().find(|l| [&l.a, &l.b].contains(&&id(1).to_string())).unwrap();
        assert_eq!(one_two.path, Some(relayed), "a path either end reported is kept");
        assert_eq!(g.links.iter().filter(|l| l.path.is_none()).count(), 1);
    }

    #[test]
    fn a_lan_map_shows_only_peers_reached_over_links_both_ends_report() {
        let report = |seed: u8, links: &[u8]| Report {
            id: id(seed),
            nickname: format!("p{seed}"),
            links: links.iter().map(|s| LinkReport { id: id(*s), path: None }).collect(),
        };
        // 1 is me; 2 and 3 are real, linked 1-2-3. 7 only sends presence;
        // 8 claims a link to me that I do not report; 9 and 4 confirm
        // each other but no real peer links to either.
        let reports =
            [report(1, &[2]), report(2, &[1, 3]), report(3, &[2]), report(7, &[]), report(8, &[1, 2]), report(9, &[4]), report(4, &[9])];
        let g = Graph::seen_from(id(1), &reports);
        let mut shown: Vec<&str> = g.nodes.iter().map(|n| n.nickname.as_str()).collect();
        shown.sort();
        assert_eq!(shown, ["p1", "p2", "p3"]);
        assert_eq!(g.edges.len(), 2);
        assert!(g.is_connected());
        assert_eq!(Graph::seen_from(id(1), &[report(1, &[])]).nodes.len(), 1, "alone, I am still on my map");
    }
}
