//! Building the node's iroh endpoint.
//!
//! The endpoint uses the `Minimal` preset: no third-party relay and no DNS
//! discovery are contacted. A relay is used only when the network's ticket
//! names the root's own relay or the user passes `--relay`
//! ([`crate::relay`]). Peers learn each other's addresses from the ticket
//! and from the index, and those addresses go into a [`MemoryLookup`] so
//! that dialing by key works.

use std::{net::SocketAddr, time::Duration};

use iroh::{
    address_lookup::memory::MemoryLookup,
    endpoint::{presets, QuicTransportConfig},
    Endpoint, RelayMode, SecretKey,
};
use peernet_proto::index::PeerAddr;

use crate::{
    admission::{Admission, AdmissionHooks},
    paths::Paths,
    relay::ClientSetup,
};

/// Keep-alive and idle timeout, the values iroh itself uses for a path. A
/// peer that vanishes (SIGKILL, cable pulled) is noticed within the idle
/// timeout, so a download moves on to another provider and the overlay
/// drops the neighbour, instead of waiting QUIC's default 30 s. While idle,
/// each end of every connection sends a ping per keep-alive and acknowledges
/// the other's: at 2 s (with 8 s to notice) that was a packet a second per
/// connection, and a member of a room of 200 holds over 20; 5 s took that
/// idle room from 0.94 to 0.75 cores (docs/benchmarks.md, "A room of 200").
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub secret_key: SecretKey,
    pub bind: SocketAddr,
    /// The relays to use and how to trust them; none by default.
    pub relay: Option<ClientSetup>,
    pub alpns: Vec<Vec<u8>>,
    pub congestion: Congestion,
}

/// QUIC's congestion controller. Measured here (docs/guide.md, "Links that are
/// slow and lossy"): over 200 ms and 5% loss, BBR moved 5 MB 33 times
/// faster than Cubic; on loopback, Cubic moved a file twice as fast.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Congestion {
    /// Loss-based (QUIC's default): fastest on clean, short links.
    #[default]
    Cubic,
    /// Model-based (BBRv3): keeps going on long, lossy links.
    Bbr,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot listen on {addr}: {why}; choose another address or port with --bind")]
    Bind { addr: SocketAddr, why: String },
}

/// Binds the endpoint and returns it with the lookup that peer addresses
/// learned later are added to. It admits anyone: for tests and tools that
/// talk only to the index, or to endpoints of their own.
pub async fn bind(config: EndpointConfig) -> Result<(Endpoint, MemoryLookup), EndpointError> {
    bind_with(config, None, None).await
}

/// Like [`bind`], with `paths` learning of every connection: for tests that
/// count a protocol's live connections ([`Paths::live`]).
pub async fn bind_tracked(config: EndpointConfig, paths: &Paths) -> Result<(Endpoint, MemoryLookup), EndpointError> {
    bind_with(config, None, Some(paths)).await
}

/// Binds the endpoint of a member: only keys that proved the network key get
/// through ([`crate::admission`]), and every outgoing connect proves ours
/// first. The admission ALPN is added to `config.alpns`; whoever builds the
/// router must serve [`Admission::protocol`] on it, and call
/// [`Admission::detach`] when the endpoint closes. `paths` learns of every
/// connection, to tell direct links from relayed ones.
pub async fn bind_member(
    mut config: EndpointConfig,
    admission: &Admission,
    paths: &Paths,
) -> Result<(Endpoint, MemoryLookup), EndpointError> {
    let alpn = peernet_proto::admission::ALPN.to_vec();
    if !config.alpns.contains(&alpn) {
        config.alpns.push(alpn);
    }
    let bound = bind_with(config, Some(admission.hooks()), Some(paths)).await?;
    admission.attach(&bound.0);
    Ok(bound)
}

async fn bind_with(
    config: EndpointConfig,
    hooks: Option<AdmissionHooks>,
    paths: Option<&Paths>,
) -> Result<(Endpoint, MemoryLookup), EndpointError> {
    let lookup = MemoryLookup::new();
    let controller: std::sync::Arc<dyn iroh::endpoint::ControllerFactory + Send + Sync> = match config.congestion {
        Congestion::Cubic => std::sync::Arc::new(noq_proto::congestion::CubicConfig::default()),
        Congestion::Bbr => std::sync::Arc::new(noq_proto::congestion::Bbr3Config::default()),
    };
    let transport = QuicTransportConfig::builder()
        .congestion_controller_factory(controller)
        .keep_alive_interval(KEEP_ALIVE)
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("15 s is a valid idle timeout")))
        .default_path_max_idle_timeout(IDLE_TIMEOUT)
        .default_path_keep_alive_interval(KEEP_ALIVE)
        .build();
    let bind_err = |why: String| EndpointError::Bind { addr: config.bind, why };
    let mut builder = Endpoint::builder(presets::Minimal)
        .secret_key(config.secret_key)
        .alpns(config.alpns)
        .transport_config(transport)
        .address_lookup(lookup.clone())
        .clear_ip_transports()
        .bind_addr(config.bind)
        .map_err(|e| bind_err(e.to_string()))?;
    if let Some(hooks) = hooks {
        builder = builder.hooks(hooks);
    }
    if let Some(paths) = paths {
        builder = builder.hooks(paths.hooks());
    }
    if let Some(relay) = config.relay {
        builder = builder.relay_mode(RelayMode::Custom(relay.map)).ca_tls_config(relay.tls);
    }
    let endpoint = builder.bind().await.map_err(|e| bind_err(e.to_string()))?;
    Ok((endpoint, lookup))
}

/// This endpoint's address as peers should learn it.
pub fn own_addr(endpoint: &Endpoint) -> PeerAddr {
    let mut addr = PeerAddr::from_endpoint_addr(&endpoint.addr());
    // When bound to one concrete address, that is the address to advertise;
    // interface enumeration may add addresses we do not listen on.
    let bound = endpoint.bound_sockets();
    if bound.iter().all(|s| !s.ip().is_unspecified()) {
        addr.ip = bound;
    }
    addr.ip.truncate(peernet_proto::limits::MAX_ADDRS_PER_PEER);
    addr
}

/// Tells the endpoint how to reach a peer we heard about.
pub fn remember(lookup: &MemoryLookup, peer: &PeerAddr) {
    lookup.add_endpoint_info(peer.to_endpoint_addr());
}
