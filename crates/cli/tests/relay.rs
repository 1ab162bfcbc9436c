//! The root's own relay on loopback: the ticket carries what members need
//! to reach and trust it, a member's endpoint is admitted, and an endpoint
//! without the network's proof is refused (with the relay's reason), while
//! the root keeps serving.

mod common;

use common::*;
use iroh::Watcher;
use peernet_node::{endpoint, relay};
use peernet_proto::{key::NetworkKey, ticket::Ticket};
use rustls::pki_types::{pem::PemObject, CertificateDer};

/// An endpoint that uses the ticket's relay with the token `key` makes.
async fn relay_client(ticket: &Ticket, key: &NetworkKey) -> iroh::Endpoint {
    let secret_key = iroh::SecretKey::generate();
    let setup = relay::client_setup(ticket.relay.as_ref(), None, key, &secret_key.public(), &ticket.index.id).unwrap();
    let (ep, _) = endpoint::bind(endpoint::EndpointConfig {
        secret_key,
        bind: "127.0.0.1:0".parse().unwrap(),
        relay: setup,
        alpns: vec![],
        congestion: Default::default(),
    })
    .await
    .unwrap();
    ep
}

/// Waits for the endpoint's relay status to satisfy `done`.
async fn relay_status(ep: &iroh::Endpoint, what: &str, done: impl Fn(&iroh::endpoint::RelayStatus) -> bool) {
    let mut watcher = ep.home_relay_status();
    let waited = tokio::time::timeout(PATIENCE, async {
        loop {
            if watcher.get().iter().any(&done) {
                return;
            }
            if watcher.updated().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}: {:?}", watcher.get());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roots_relay_admits_members_only() {
    let dir = tempfile::tempdir().unwrap();
    // A standalone root with its relay on a free port.
    let start_root = || {
        let args = ["index", "--bind", "127.0.0.1:0", "--relay", "0", "--heartbeat", HEARTBEAT, "--lease-ttl", LEASE_TTL];
        Daemon::start_in(None, "index", &dir.path().join("index"), &args, &[])
    };
    let root = start_root();
    let ticket: Ticket = root.ticket.parse().unwrap();
    let info = ticket.relay.clone().expect("the ticket of a network with a relay names it");
    assert!(info.url.starts_with("https://127.0.0.1:"), "{}", info.url);
    assert!(info.cert_sha256.is_some(), "a self-made certificate is pinned in the ticket");
    assert!(info.quic_port.is_some(), "address discovery is offered");
    let pem = std::fs::read(root.data_dir.join("relay.crt")).unwrap();
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    assert_eq!(Some(relay::fingerprint(&der)), info.cert_sha256, "the pin is the certificate's SHA-256");

    // A member, with the network's token: admitted.
    let member = relay_client(&ticket, &ticket.network_key).await;
    tokio::time::timeout(PATIENCE, member.online()).await.expect("a member comes online at the relay");

    // An outsider who knows the relay (even its certificate) but not the key.
    let outsider = relay_client(&ticket, &NetworkKey::generate()).await;
    relay_status(&outsider, "the relay to refuse the outsider", |r| {
        r.auth_denied_reason().is_some_and(|why| why.contains(relay::NOT_MEMBER_REASON))
    })
    .await;
    assert!(outsider.home_relay_status().get().iter().all(|r| !r.is_connected()));

    // The root counts both and keeps serving.
    let status = root.json(&["status"]);
    let server = &status["relay_server"];
    assert!(server["admitted"].as_u64().unwrap() >= 1, "{status}");
    assert!(server["refused"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(server["url"], info.url.as_str());
    member.close().await;
    outsider.close().await;

    // Restarted, the root keeps its certificate, so the ticket stays valid.
    drop(root);
    let again = start_root();
    let after: Ticket = again.ticket.parse().unwrap();
    assert_eq!(after.relay.unwrap().cert_sha256, info.cert_sha256, "same certificate after a restart");
}
