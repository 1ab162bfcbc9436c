//! The root's own relay, and how a member reaches and trusts a relay.
//!
//! A peer behind a home router cannot be dialed directly. iroh solves this
//! with a relay: every endpoint keeps a connection to its home relay, which
//! forwards packets between endpoints that cannot reach each other, and
//! whose QUIC address discovery (QAD) tells an endpoint its public address
//! so that two endpoints can punch holes through their NATs and talk
//! directly. peernet's root can run that relay itself (`peernet index
//! --relay PORT`), so no third-party service is involved:
//!
//! - [`RootRelay::spawn`] runs an `iroh-relay` server in process: the relay
//!   over HTTPS on TCP port `PORT` and QAD on UDP port `PORT`. Its
//!   certificate is self-signed, made at first start and kept in the data
//!   directory (`relay.crt`, `relay.key`), or one the operator gives
//!   (`--relay-cert`, `--relay-key`).
//! - Only members get in: a member presents
//!   [`NetworkKey::relay_token`] as its bearer token, which the relay checks
//!   against the endpoint id its handshake authenticated ([`MembersOnly`]).
//!   QAD answers anyone (it only tells a sender its own address).
//! - The ticket carries [`RelayInfo`]: the URL, the certificate's SHA-256
//!   when self-signed, and the QAD port. [`client_setup`] turns that into
//!   the endpoint's relay map and a certificate check that trusts exactly
//!   the pinned certificate for it ([`Pinned`]) and ordinary certificate
//!   authorities for a relay named with `--relay URL`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use iroh::{tls::CaTlsConfig, EndpointId, RelayConfig, RelayMap, RelayUrl};
use iroh_relay::{
    server::{
        Access, AccessControl, CertConfig, ClientRequest, QuicConfig, RelayConfig as ServerRelayConfig, Server, ServerConfig, TlsConfig,
    },
    RelayQuicConfig,
};
use peernet_proto::{key::NetworkKey, ticket::RelayInfo};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};
use sha2::{Digest, Sha256};
use tracing::{debug, info};

/// The reason a relay gives an endpoint without the network's proof.
pub const NOT_MEMBER_REASON: &str = "not a member of this network: the relay serves only peers holding its ticket";

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot make or read the relay's certificate in {path}: {why}; move the file away to make a new one")]
    Certificate { path: PathBuf, why: String },
    #[error("cannot start the relay on port {port}: {why}; choose another port with --relay")]
    Spawn { port: u16, why: String },
    #[error("the relay URL {url} in the ticket is not a URL; ask for a new ticket")]
    BadUrl { url: String },
}

/// How the root runs its relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Address to listen on: TCP for the relay, UDP for QAD, same port.
    pub bind: SocketAddr,
    /// The name or address members reach the relay by; by default the
    /// bind address, or this host's address on its default route.
    pub host: Option<String>,
    /// A certificate chain and key (PEM) that ordinary certificate
    /// authorities vouch for; without them the relay makes its own.
    pub cert: Option<(PathBuf, PathBuf)>,
}

/// Admission figures of the relay, as `status` shows them.
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub admitted: AtomicU64,
    pub refused: AtomicU64,
}

/// The relay's access control: members only.
#[derive(Debug)]
pub struct MembersOnly {
    key: NetworkKey,
    index: EndpointId,
    counters: Arc<RelayCounters>,
}

impl AccessControl for MembersOnly {
    async fn on_connect(&self, request: &ClientRequest) -> Access {
        let id = request.endpoint_id();
        // The relay's handshake proved that the client holds `id`'s secret
        // key, so a token is only good for the endpoint it was made for.
        match request.auth_token() {
            Some(token) if self.key.verify_relay_token(&id, &self.index, &token) => {
                self.counters.admitted.fetch_add(1, Ordering::Relaxed);
                Access::Allow
            }
            _ => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                debug!("relay refused {}: no valid membership token", id.fmt_short());
                Access::Deny { reason: Some(NOT_MEMBER_REASON.to_string()) }
            }
        }
    }
}

/// The relay server a root runs beside its index.
#[derive(Debug)]
pub struct RootRelay {
    /// Taken by [`RootRelay::shutdown`].
    server: tokio::sync::Mutex<Option<Server>>,
    info: RelayInfo,
    counters: Arc<RelayCounters>,
}

impl RootRelay {
    /// Starts the relay for the network of `key` whose index is `index`.
    pub async fn spawn(config: &ServeConfig, data_dir: &Path, key: NetworkKey, index: EndpointId) -> Result<Self, RelayError> {
        let port = config.bind.port();
        let (chain, private, pin) = match &config.cert {
            Some((cert, key)) => {
                let (chain, private) = read_pem(cert, key)?;
                (chain, private, None)
            }
            None => {
                let (chain, private) = own_certificate(data_dir)?;
                let pin = fingerprint(&chain[0]);
                (chain, private, Some(pin))
            }
        };
        let spawn_err = |why: String| RelayError::Spawn { port, why };
        let tls = rustls::ServerConfig::builder_with_provider(iroh_relay::tls::default_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| spawn_err(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| spawn_err(format!("the certificate and key do not fit together: {e}")))?;
        let counters = Arc::new(RelayCounters::default());
        // The plain-HTTP side only answers captive-portal probes.
        let mut relay = ServerRelayConfig::new(SocketAddr::new(config.bind.ip(), 0));
        relay.tls = Some(TlsConfig::new(config.bind, CertConfig::Manual { server_config: tls }));
        relay.key_cache_capacity = Some(4096);
        relay.access = Arc::new(MembersOnly { key, index, counters: counters.clone() });
        let mut server_config = ServerConfig::default();
        server_config.relay = Some(relay);
        // QAD inherits the relay's TLS configuration.
        server_config.quic = Some(QuicConfig::new(config.bind));
        let server = Server::spawn(server_config).await.map_err(|e| spawn_err(e.to_string()))?;
        let https = server.https_addr().ok_or_else(|| spawn_err("the relay did not open its HTTPS port".into()))?;
        let quic = server.quic_addr().map(|a| a.port());
        let host = config.host.clone().unwrap_or_else(|| default_host(config.bind.ip()).to_string());
        let info = RelayInfo { url: relay_url(&host, https.port()), cert_sha256: pin, quic_port: quic };
        info!("relay listening on {https} (tcp) and QAD on udp port {}; members reach it at {}", quic.unwrap_or(0), info.url);
        Ok(Self { server: tokio::sync::Mutex::new(Some(server)), info, counters })
    }

    pub fn info(&self) -> &RelayInfo {
        &self.info
    }

    /// Endpoints admitted and refused so far.
    pub fn counters(&self) -> (u64, u64) {
        (self.counters.admitted.load(Ordering::Relaxed), self.counters.refused.load(Ordering::Relaxed))
    }

    /// Stops the relay; later calls do nothing.
    pub async fn shutdown(&self) {
        if let Some(server) = self.server.lock().await.take() {
            if let Err(e) = server.shutdown().await {
                debug!("relay shutdown: {e}");
            }
        }
    }
}

/// `https://HOST:PORT`, with an IPv6 address in brackets.
fn relay_url(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("https://[{v6}]:{port}"),
        _ => format!("https://{host}:{port}"),
    }
}

/// The address members most likely reach this host by: the bind address
/// when it is one, otherwise the source address of the default route
/// (found by "connecting" a UDP socket, which sends nothing).
fn default_host(bind: IpAddr) -> IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// SHA-256 of a certificate's DER, as `openssl x509 -fingerprint -sha256` shows it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

/// The relay's own certificate: made at first start, then read back, so
/// tickets printed earlier keep trusting it.
fn own_certificate(data_dir: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), RelayError> {
    let cert_path = data_dir.join("relay.crt");
    let key_path = data_dir.join("relay.key");
    if !cert_path.exists() {
        let err = |why: String| RelayError::Certificate { path: cert_path.clone(), why };
        // Members check the fingerprint, not the name, so one name will do.
        let made = rcgen::generate_simple_self_signed(vec!["peernet-relay".to_string()]).map_err(|e| err(e.to_string()))?;
        crate::data_dir::write_file(&key_path, made.signing_key.serialize_pem().as_bytes(), true)
            .map_err(|e| RelayError::Certificate { path: key_path.clone(), why: e.to_string() })?;
        crate::data_dir::write_file(&cert_path, made.cert.pem().as_bytes(), false).map_err(|e| err(e.to_string()))?;
    }
    read_pem(&cert_path, &key_path)
}

fn read_pem(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), RelayError> {
    let cert_err = |why: String| RelayError::Certificate { path: cert.to_owned(), why };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("it holds no certificate".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| RelayError::Certificate { path: key.to_owned(), why: e.to_string() })?;
    Ok((chain, private))
}

/// How a member's endpoint uses relays.
#[derive(Debug, Clone)]
pub struct ClientSetup {
    pub map: RelayMap,
    pub tls: CaTlsConfig,
}

/// The relay map and certificate check for the network's relay (from the
/// ticket, with our membership token) and a relay the user named.
pub fn client_setup(
    network: Option<&RelayInfo>,
    named: Option<&RelayUrl>,
    key: &NetworkKey,
    me: &EndpointId,
    index: &EndpointId,
) -> Result<Option<ClientSetup>, RelayError> {
    let mut configs = Vec::new();
    let mut pin = None;
    if let Some(info) = network {
        let url: RelayUrl = info.url.parse().map_err(|_| RelayError::BadUrl { url: info.url.clone() })?;
        let quic = info.quic_port.map(RelayQuicConfig::new);
        configs.push(RelayConfig::new(url, quic).with_auth_token(key.relay_token(me, index)));
        pin = info.cert_sha256;
    }
    if let Some(url) = named {
        if !configs.iter().any(|c| &c.url == url) {
            configs.push(RelayConfig::new(url.clone(), None));
        }
    }
    if configs.is_empty() {
        return Ok(None);
    }
    // Certificate authorities are asked only about a relay the user named:
    // a relay URL some member advertises meets the pin and fails.
    let ask_authorities = named.is_some();
    let tls = match pin {
        None => CaTlsConfig::embedded(),
        Some(pin) => CaTlsConfig::custom_server_cert_verifier(Arc::new(move |provider: Arc<CryptoProvider>| {
            let others = match ask_authorities {
                true => Some(CaTlsConfig::embedded().server_cert_verifier(provider.clone())?),
                false => None,
            };
            Ok(Arc::new(Pinned { pin, provider, others }) as Arc<dyn ServerCertVerifier>)
        })),
    };
    Ok(Some(ClientSetup { map: configs.into_iter().collect(), tls }))
}

/// Trusts the one certificate whose SHA-256 is `pin`, whatever name it is
/// reached by (the root made it itself, and the ticket that carries the pin
/// is the secret members share); any other certificate must satisfy the
/// ordinary checks (`others`), or, when the user named no relay of their
/// own, is refused. Handshake signatures are checked either way, so only
/// the holder of the pinned certificate's key passes.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    others: Option<Arc<dyn ServerCertVerifier>>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.others {
            Some(others) => others.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            None => Err(rustls::Error::General("not this network's relay: its certificate is not the one the ticket names".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_bracket_ipv6_hosts() {
        assert_eq!(relay_url("203.0.113.7", 3340), "https://203.0.113.7:3340");
        assert_eq!(relay_url("relay.example.net", 443), "https://relay.example.net:443");
        assert_eq!(relay_url("2001:db8::1", 3340), "https://[2001:db8::1]:3340");
        for url in ["https://203.0.113.7:3340", "https://[2001:db8::1]:3340"] {
            assert!(url.parse::<RelayUrl>().is_ok(), "{url}");
        }
    }

    #[test]
    fn a_concrete_bind_address_is_the_default_host() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(default_host(ip), ip);
        assert!(!default_host(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).is_unspecified());
    }

    #[test]
    fn the_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = own_certificate(dir.path()).unwrap();
        let (again, _) = own_certificate(dir.path()).unwrap();
        assert_eq!(fingerprint(&first[0]), fingerprint(&again[0]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("relay.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the relay's key is private");
        }
    }

    #[test]
    fn only_the_pinned_certificate_passes_unless_authorities_are_asked() {
        let ours = rcgen::generate_simple_self_signed(vec!["peernet-relay".to_string()]).unwrap();
        let theirs = rcgen::generate_simple_self_signed(vec!["relay.example.net".to_string()]).unwrap();
        let provider = iroh_relay::tls::default_provider();
        let pinned = Pinned { pin: fingerprint(ours.cert.der()), provider, others: None };
        let name = ServerName::try_from("anything.example").unwrap();
        let check = |cert: &CertificateDer<'_>| pinned.verify_server_cert(cert, &[], &name, &[], UnixTime::now());
        assert!(check(ours.cert.der()).is_ok(), "the pinned certificate passes under any name");
        let err = check(theirs.cert.der()).unwrap_err();
        assert!(err.to_string().contains("not this network's relay"), "{err}");
    }

    #[test]
    fn a_network_relay_carries_the_token_and_a_named_one_does_not() {
        let key = NetworkKey::generate();
        let me = iroh::SecretKey::generate().public();
        let index = iroh::SecretKey::generate().public();
        let info = RelayInfo { url: "https://10.0.0.1:3340".into(), cert_sha256: Some([1; 32]), quic_port: Some(3340) };
        let named: RelayUrl = "https://relay.example.net".parse().unwrap();
        let setup = client_setup(Some(&info), Some(&named), &key, &me, &index).unwrap().unwrap();
        let ours = setup.map.get(&info.url.parse().unwrap()).expect("the network's relay is in the map");
        assert_eq!(ours.auth_token.as_deref(), Some(key.relay_token(&me, &index).as_str()));
        assert_eq!(ours.quic.as_ref().map(|q| q.port), Some(3340));
        let theirs = setup.map.get(&named).expect("the named relay is in the map");
        assert_eq!(theirs.auth_token, None, "our membership token goes to our own relay only");
        assert!(client_setup(None, None, &key, &me, &index).unwrap().is_none());
        let bad = RelayInfo { url: "not a url".into(), ..info };
        assert!(matches!(client_setup(Some(&bad), None, &key, &me, &index), Err(RelayError::BadUrl { .. })));
    }
}
