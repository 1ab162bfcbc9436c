//! The hostile kit: a real iroh endpoint that joins a network as a member
//! (or stays an outsider) and then speaks peernet's protocols badly on
//! purpose: it floods, stalls, lies and sends what a terminal should never
//! print. Tests aim it at real `peernet` daemons.

use iroh::{address_lookup::memory::MemoryLookup, endpoint::Connection, Endpoint, EndpointId};
use peernet_node::{admission::Admission, index_client::IndexClient};
use peernet_proto::{
    flood::{FloodFrame, Query, MAX_FLOOD_FRAME},
    index::PeerAddr,
    ticket::Ticket,
};

/// One identity of the hostile party. Keys cost nothing to mint: a test
/// that wants many makes many.
pub struct Hostile {
    pub ep: Endpoint,
    pub lookup: MemoryLookup,
    /// The network's ticket; an outsider has none worth the name.
    pub ticket: Ticket,
    /// Keeps the admission exchange served while the endpoint lives.
    _router: iroh::protocol::Router,
}

impl Hostile {
    /// A member: it holds the ticket, proves the network key before each
    /// connect, and is admitted by everyone.
    pub async fn member(ticket: &str) -> Hostile {
        Self::member_serving(ticket, Serve::Nothing).await
    }

    /// A member that also serves blobs, honestly or not.
    pub async fn member_serving(ticket: &str, serve: Serve) -> Hostile {
        let ticket: Ticket = ticket.parse().expect("a valid ticket");
        let alpns = match serve {
            Serve::Nothing => vec![],
            Serve::Blobs(_) | Serve::Stall => vec![iroh_blobs::ALPN.to_vec()],
        };
        let (ep, lookup, admission): (Endpoint, MemoryLookup, Admission) = super::member_endpoint(alpns, ticket.network_key).await;
        let builder = iroh::protocol::Router::builder(ep.clone()).accept(peernet_proto::admission::ALPN, admission.protocol());
        let router = match serve {
            Serve::Nothing => builder.spawn(),
            Serve::Blobs(store) => builder.accept(iroh_blobs::ALPN, iroh_blobs::BlobsProtocol::new(&store, None)).spawn(),
            Serve::Stall => builder.accept(iroh_blobs::ALPN, Stall).spawn(),
        };
        peernet_node::endpoint::remember(&lookup, &ticket.index);
        Hostile { ep, lookup, ticket, _router: router }
    }

    /// An outsider: it knows the index's address (anyone on the path can
    /// learn it) but not the network key. It sends from `bind` (another
    /// loopback address plays another host).
    pub async fn outsider(ticket: &str, bind: std::net::SocketAddr) -> Hostile {
        let ticket: Ticket = ticket.parse().expect("a valid ticket");
        let (ep, lookup) = peernet_node::endpoint::bind(peernet_node::endpoint::EndpointConfig {
            secret_key: iroh::SecretKey::generate(),
            bind,
            relay: None,
            alpns: vec![],
            congestion: Default::default(),
        })
        .await
        .expect("bind the outsider");
        let router = iroh::protocol::Router::builder(ep.clone()).spawn();
        peernet_node::endpoint::remember(&lookup, &ticket.index);
        Hostile { ep, lookup, ticket, _router: router }
    }

    pub fn id(&self) -> EndpointId {
        self.ep.id()
    }

    /// A client of the network's index under this key (not joined yet).
    pub fn index(&self) -> IndexClient {
        let me = PeerAddr { id: self.ep.id(), ip: self.ep.bound_sockets(), relay: None };
        IndexClient::remote(self.ep.clone(), me, self.ticket.index.clone(), self.ticket.network_key)
    }

    /// A connection to daemon `d` on `alpn` (membership proved first).
    pub async fn dial(&self, d: &PeerAddr, alpn: &[u8]) -> Connection {
        peernet_node::endpoint::remember(&self.lookup, d);
        self.ep.connect(d.to_endpoint_addr(), alpn).await.expect("the daemon admits a member")
    }

    /// Sends one flood query on `conn`, as a neighbour would, with an id
    /// nobody used before.
    pub async fn flood_query(conn: &Connection, text: &str, ttl: u8) -> anyhow::Result<()> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut id = [0u8; 16];
        id.copy_from_slice(
            &blake3::hash(&[conn.remote_id().as_bytes().as_slice(), &n.to_le_bytes(), &std::process::id().to_le_bytes()].concat())
                .as_bytes()[..16],
        );
        let query = Query { id, text: text.to_string(), ttl };
        let mut send = conn.open_uni().await?;
        peernet_index::frame_io::write_frame(&mut send, &FloodFrame::Query(query), MAX_FLOOD_FRAME).await?;
        send.finish()?;
        Ok(())
    }

    /// Fetches `content` from daemon `d` by hash, as any member may try;
    /// the payload bytes received, or why the daemon would not serve it.
    pub async fn fetch(&self, d: &PeerAddr, content: iroh_blobs::HashAndFormat) -> anyhow::Result<u64> {
        let conn = self.dial(d, iroh_blobs::ALPN).await;
        let store = iroh_blobs::store::mem::MemStore::new();
        let stats = store.remote().fetch(conn.clone(), content).await?;
        conn.close(0u32.into(), b"done");
        Ok(stats.payload_bytes_read)
    }

    pub async fn close(self) {
        self.ep.close().await;
    }
}

/// A member in the network's room (the gossip overlay), attached through
/// one daemon, that signs events with any key the test mints.
pub struct RoomMember {
    sender: iroh_gossip::api::GossipSender,
    _receiver: iroh_gossip::api::GossipReceiver,
    topic: [u8; 32],
    authors: std::collections::HashMap<iroh::PublicKey, peernet_proto::chat::Author>,
    _router: iroh::protocol::Router,
    ep: Endpoint,
}

impl RoomMember {
    /// Joins the room of `ticket`'s network through daemon `via`.
    pub async fn join(ticket: &str, via: &PeerAddr) -> RoomMember {
        let ticket: Ticket = ticket.parse().expect("a valid ticket");
        Self::join_network(ticket.network_key, via, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Joins the room of the network `key` opens (a LAN network's key
    /// comes from its name) through daemon `via`, from `bind`.
    pub async fn join_network(key: peernet_proto::key::NetworkKey, via: &PeerAddr, bind: std::net::SocketAddr) -> RoomMember {
        let (ep, lookup, admission) = super::member_endpoint_on(vec![iroh_gossip::ALPN.to_vec()], key, bind).await;
        let gossip = iroh_gossip::net::Gossip::builder().max_message_size(8192).spawn(ep.clone());
        let router = iroh::protocol::Router::builder(ep.clone())
            .accept(peernet_proto::admission::ALPN, admission.protocol())
            .accept(iroh_gossip::ALPN, gossip.clone())
            .spawn();
        peernet_node::endpoint::remember(&lookup, via);
        let topic = key.topic();
        let joined =
            tokio::time::timeout(super::PATIENCE, gossip.subscribe_and_join(iroh_gossip::proto::TopicId::from_bytes(topic), vec![via.id]))
                .await
                .expect("joined the room in time")
                .expect("joined the room");
        let (sender, receiver) = joined.split();
        RoomMember { sender, _receiver: receiver, topic, authors: Default::default(), _router: router, ep }
    }

    /// Broadcasts `body` signed by `key` (a fresh author the first time).
    pub async fn send_as(&mut self, key: &iroh::SecretKey, body: peernet_proto::chat::Body) -> anyhow::Result<()> {
        let topic = self.topic;
        let author = self.authors.entry(key.public()).or_insert_with(|| peernet_proto::chat::Author::new(key.clone(), topic));
        let (_, bytes) = author.event(body, super::now_ms());
        self.sender.broadcast(bytes::Bytes::from(bytes)).await?;
        Ok(())
    }

    pub async fn close(self) {
        self.ep.close().await;
    }
}

/// What a member of the kit serves on the blobs protocol.
pub enum Serve {
    Nothing,
    /// This store's blobs, as any peer would.
    Blobs(iroh_blobs::store::mem::MemStore),
    /// Takes every request and never sends a byte.
    Stall,
}

/// A blob provider that accepts every request and answers none, holding
/// the streams until the asker gives up.
#[derive(Debug, Clone)]
struct Stall;

impl iroh::protocol::ProtocolHandler for Stall {
    async fn accept(&self, conn: Connection) -> Result<(), iroh::protocol::AcceptError> {
        let mut held = Vec::new();
        while let Ok(stream) = conn.accept_bi().await {
            held.push(stream);
        }
        Ok(())
    }
}
