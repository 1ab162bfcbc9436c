//! The index protocol, `peernet/index/1`.
//!
//! Goals: let peers of one network register themselves and their files, keep
//! a lease alive, find files by name or hash, list who is online, and refer
//! newcomers to peers already present. Every request is attributed to the
//! QUIC connection's authenticated remote key; nothing in a request body says
//! who is asking.
//!
//! Non-goals: carrying file data (that is iroh-blobs), chat (gossip), and
//! trust in names: nicknames are labels, keys are identities.
//!
//! Wire format: a client opens one bidirectional stream per request, writes
//! one frame ([`crate::frame`]: u32 big-endian length, postcard body) holding
//! a [`Request`], and finishes its side. The index answers with one frame
//! holding a [`Response`] and finishes. A frame larger than
//! [`MAX_REQUEST_FRAME`](crate::limits::MAX_REQUEST_FRAME), or one that does
//! not decode, makes the index close that connection with
//! [`close_code::TOO_LARGE`] or [`close_code::MALFORMED`]; other connections
//! are not affected. The first request on a connection may be anything, but
//! everything except `Join` is refused with [`ErrorCode::NotJoined`] until
//! the key has joined (membership survives reconnects and restarts, and
//! ends one lease after the lease ran out). A connection whose key holds
//! no lease must join within the index's deadline or is closed with
//! [`close_code::JOIN_TIMEOUT`]; such connections come from a small pool
//! of their own ([`crate::limits::MAX_UNJOINED_CONNECTIONS`]).

use std::net::SocketAddr;

use iroh::EndpointId;
use iroh_blobs::Hash;
use serde::{Deserialize, Serialize};

/// The ALPN of the index protocol. Bump the version on any incompatible
/// change to the types below.
pub const ALPN: &[u8] = b"peernet/index/1";
/// Version 2 adds [`Request::HeartbeatLinks`] and [`Request::LinkMap`]
/// (links with their paths). An index serves both versions; a client
/// offers 2 and 1 and sends the version-2 requests only when the index
/// chose 2, so old and new peers and indexes work together.
pub const ALPN_V2: &[u8] = b"peernet/index/2";

/// Whether `alpn` is a version of the index protocol.
pub fn is_index_alpn(alpn: &[u8]) -> bool {
    alpn == ALPN || alpn == ALPN_V2
}

/// QUIC application close codes the index uses.
pub mod close_code {
    /// Normal close.
    pub const NORMAL: u32 = 0;
    /// A frame did not decode.
    pub const MALFORMED: u32 = 1;
    /// A length prefix exceeded the limit.
    pub const TOO_LARGE: u32 = 2;
    /// The index is at its connection limit.
    pub const BUSY: u32 = 3;
    /// The index is shutting down.
    pub const SHUTDOWN: u32 = 4;
    /// A connection whose key had not joined did not join within the
    /// index's deadline.
    pub const JOIN_TIMEOUT: u32 = 5;
}

/// How to reach a peer: its key plus direct addresses and an optional relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddr {
    /// Read through [`crate::known_keys`]: search answers repeat providers.
    #[serde(deserialize_with = "crate::known_keys::deserialize")]
    pub id: EndpointId,
    pub ip: Vec<SocketAddr>,
    pub relay: Option<String>,
}

impl PeerAddr {
    pub fn to_endpoint_addr(&self) -> iroh::EndpointAddr {
        let mut addr = iroh::EndpointAddr::new(self.id);
        for ip in &self.ip {
            addr = addr.with_ip_addr(*ip);
        }
        if let Some(relay) = self.relay.as_ref().and_then(|r| r.parse().ok()) {
            addr = addr.with_relay_url(relay);
        }
        addr
    }

    pub fn from_endpoint_addr(addr: &iroh::EndpointAddr) -> Self {
        Self { id: addr.id, ip: addr.ip_addrs().copied().collect(), relay: addr.relay_urls().next().map(|u| u.to_string()) }
    }
}

/// What a published hash stands for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One file: a raw blob.
    #[default]
    File,
    /// A shared directory: an iroh-blobs collection (a hash sequence of
    /// the files, with their relative paths). Its size is the files' total.
    Folder,
}

/// A file as published: its name (one path component), size, BLAKE3 hash
/// and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub hash: Hash,
    pub kind: Kind,
}

/// A peer as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub addr: PeerAddr,
    pub nickname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub nickname: String,
    /// [`crate::key::NetworkKey::join_proof`] for this peer and this index.
    pub proof: [u8; 32],
    /// Where others can reach this peer.
    pub addr: PeerAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Join(Join),
    /// Renews the lease. `neighbors` are the peer's current overlay links.
    Heartbeat {
        neighbors: Vec<EndpointId>,
    },
    /// Registers files under the caller's key. Publishing a file the caller
    /// already registered updates its name and is otherwise a no-op.
    Publish {
        files: Vec<FileEntry>,
    },
    /// Removes the caller's registration of a hash.
    Unpublish {
        hash: Hash,
    },
    /// Words and prefixes of file names, or a hash or hash prefix (hex).
    Search {
        query: String,
        limit: u32,
    },
    /// Online peers with their files, [`crate::limits::ONLINE_PAGE_PEERS`] a page.
    Online {
        page: u32,
    },
    /// Up to `k` random online peers other than the caller.
    Referral {
        k: u32,
    },
    /// Changes the caller's nickname.
    Rename {
        nickname: String,
    },
    /// Ends the lease now and removes every registration of the caller.
    Leave,
    /// Every online peer with the overlay neighbours it last reported.
    Topology,
    /// Version 2: a heartbeat whose links carry their paths.
    HeartbeatLinks {
        links: Vec<LinkReport>,
    },
    /// Version 2: [`Request::Topology`] with the paths of the links.
    LinkMap,
}

impl Request {
    /// The request's kind, as metrics and logs name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join(_) => "join",
            Self::Heartbeat { .. } => "heartbeat",
            Self::Publish { .. } => "publish",
            Self::Unpublish { .. } => "unpublish",
            Self::Search { .. } => "search",
            Self::Online { .. } => "online",
            Self::Referral { .. } => "referral",
            Self::Rename { .. } => "rename",
            Self::Leave => "leave",
            Self::Topology => "topology",
            Self::HeartbeatLinks { .. } => "heartbeat_links",
            Self::LinkMap => "link_map",
        }
    }
}

/// An overlay link as its reporter sees it: the neighbour, and the path to
/// it when a connection is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    pub id: EndpointId,
    pub path: Option<crate::topo::PathInfo>,
}

/// The answer to [`Request::LinkMap`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkMap {
    pub root: EndpointId,
    pub peers: Vec<LinkedPeer>,
}

impl LinkReport {
    /// A link whose path its reporter did not say (a version-1 heartbeat).
    pub fn unknown(id: EndpointId) -> Self {
        Self { id, path: None }
    }
}

/// A version-1 topology is a link map whose paths are unknown.
impl From<Topology> for LinkMap {
    fn from(t: Topology) -> Self {
        let peers = t
            .peers
            .into_iter()
            .map(|p| LinkedPeer { peer: p.peer, links: p.neighbors.into_iter().map(LinkReport::unknown).collect() })
            .collect();
        Self { root: t.root, peers }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedPeer {
    pub peer: PeerInfo,
    pub links: Vec<LinkReport>,
}

/// One provider of a search hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub peer: PeerInfo,
    /// The name this provider published the file under.
    pub name: String,
    /// Unix milliseconds of the registration.
    pub registered_at: u64,
    /// The size this provider advertised. The hash proves the content, not
    /// this: a get cuts the download here and names a provider whose
    /// figure the content proves wrong.
    pub size: u64,
}

/// All online providers of one hash, most recent registration first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub hash: Hash,
    pub size: u64,
    pub kind: Kind,
    /// The name of the most recent registration.
    pub name: String,
    pub providers: Vec<Provider>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlinePeer {
    pub peer: PeerInfo,
    pub files: Vec<FileEntry>,
    /// Unix milliseconds until which the lease runs.
    pub lease_until: u64,
}

/// The overlay as the index knows it from heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The index's key: the root of the network.
    pub root: EndpointId,
    pub peers: Vec<TopologyPeer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyPeer {
    pub peer: PeerInfo,
    pub neighbors: Vec<EndpointId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The proof does not match this network's key.
    NotMember,
    /// The caller must Join first.
    NotJoined,
    NicknameTaken,
    InvalidNickname,
    InvalidFileName,
    /// Only the key that registered a file can unpublish it.
    NotOwner,
    NotFound,
    /// A named limit was exceeded.
    LimitExceeded,
    InvalidRequest,
    Internal,
    /// Too many requests from this key: wait, then try again.
    SlowDown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Join accepted. Intervals are the index's; clients follow them.
    Joined {
        heartbeat_ms: u64,
        lease_ttl_ms: u64,
    },
    Ok,
    Published {
        count: u32,
    },
    Hits(Vec<Hit>),
    Online {
        peers: Vec<OnlinePeer>,
        next_page: Option<u32>,
    },
    Peers(Vec<PeerInfo>),
    Topology(Topology),
    /// A refusal. `message` is one sentence meant for the person at the keyboard.
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Version 2: the answer to [`Request::LinkMap`].
    LinkMap(LinkMap),
}

impl Response {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error { code, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;
    use proptest::prelude::*;

    fn id(seed: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[seed; 32]).public()
    }

    fn arb_entry() -> impl Strategy<Value = FileEntry> {
        ("\\PC{0,40}", any::<u64>(), any::<[u8; 32]>()).prop_map(|(name, size, h)| FileEntry {
            name,
            size,
            hash: Hash::from_bytes(h),
            kind: Kind::File,
        })
    }

    /// Socket addresses as the wire carries them: serde keeps no IPv6 flow
    /// info or scope id, so those are not part of the format.
    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            ("\\PC{0,40}", any::<[u8; 32]>(), any::<u8>(), proptest::collection::vec(arb_addr(), 0..4)).prop_map(
                |(nickname, proof, seed, ip)| Request::Join(Join { nickname, proof, addr: PeerAddr { id: id(seed), ip, relay: None } })
            ),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(|s| Request::Heartbeat { neighbors: s.into_iter().map(id).collect() }),
            proptest::collection::vec(arb_entry(), 0..8).prop_map(|files| Request::Publish { files }),
            any::<[u8; 32]>().prop_map(|h| Request::Unpublish { hash: Hash::from_bytes(h) }),
            ("\\PC{0,60}", any::<u32>()).prop_map(|(query, limit)| Request::Search { query, limit }),
            any::<u32>().prop_map(|page| Request::Online { page }),
            any::<u32>().prop_map(|k| Request::Referral { k }),
            Just(Request::Leave),
            proptest::collection::vec((any::<u8>(), any::<Option<(bool, u64)>>()), 0..8).prop_map(|links| Request::HeartbeatLinks {
                links: links
                    .into_iter()
                    .map(|(seed, path)| LinkReport {
                        id: id(seed),
                        path: path.map(|(relayed, rtt_ms)| crate::topo::PathInfo {
                            via: if relayed { crate::topo::Via::Relayed } else { crate::topo::Via::Direct },
                            rtt_ms,
                        }),
                    })
                    .collect()
            }),
            Just(Request::LinkMap),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in arb_request()) {
            let bytes = frame::encode(&req, usize::MAX).unwrap();
            let back: Request = frame::decode(&bytes[frame::PREFIX_LEN..]).unwrap();
            prop_assert_eq!(back, req);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = frame::decode::<Request>(&bytes);
            let _ = frame::decode::<Response>(&bytes);
        }
    }

    #[test]
    fn responses_round_trip() {
        let hit = Hit {
            hash: Hash::new(b"x"),
            size: 1,
            kind: Kind::Folder,
            name: "x".into(),
            providers: vec![Provider {
                peer: PeerInfo {
                    addr: PeerAddr { id: id(1), ip: vec!["127.0.0.1:4".parse().unwrap()], relay: None },
                    nickname: "a".into(),
                },
                name: "x".into(),
                registered_at: 9,
                size: 1,
            }],
        };
        for resp in
            [Response::Hits(vec![hit]), Response::error(ErrorCode::NotOwner, "no"), Response::Joined { heartbeat_ms: 1, lease_ttl_ms: 2 }]
        {
            let bytes = frame::encode(&resp, usize::MAX).unwrap();
            let back: Response = frame::decode(&bytes[frame::PREFIX_LEN..]).unwrap();
            assert_eq!(back, resp);
        }
    }
}
