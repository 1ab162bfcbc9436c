//! Finding peers on the LAN with mDNS.
//!
//! Every peer announces its endpoint id and addresses under an mDNS service
//! derived from the network key ([`NetworkKey::mdns_service`]), so the
//! networks on one LAN stay apart and the service name does not reveal the
//! key. [`announce`] adds the announcer to the endpoint's address lookup: a
//! peer dialed by id is found at its current LAN address even while the
//! index is away. On a LAN network, which has no index to refer anyone,
//! [`meet`] attaches the overlay to every peer mDNS discovers. An mDNS
//! record is a claim, not a proof: each connection still proves membership
//! ([`crate::admission`]) before anything is served.

use std::{collections::BTreeSet, time::Duration};

use iroh::{Endpoint, EndpointId};
use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};
use n0_future::StreamExt;
use peernet_proto::key::NetworkKey;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::overlay::Overlay;

/// Peers remembered from discovery, to re-attach to.
pub const MAX_LAN_PEERS: usize = 256;
/// How often a peer without neighbours tries the peers it knows again.
const REATTACH: Duration = Duration::from_secs(3);
/// How many known peers one re-attach tries.
const REATTACH_FANOUT: usize = 8;

/// Starts announcing this endpoint on the LAN, and finding others there.
pub fn announce(endpoint: &Endpoint, key: &NetworkKey) -> Result<MdnsAddressLookup, String> {
    let mdns = MdnsAddressLookup::builder().service_name(key.mdns_service()).build(endpoint.id()).map_err(|e| e.to_string())?;
    endpoint.address_lookup().map_err(|e| e.to_string())?.add(mdns.clone());
    Ok(mdns)
}

/// Attaches the overlay to the peers mDNS finds, until `cancel`; a peer
/// left without neighbours tries the ones it knows again.
pub async fn meet(mdns: MdnsAddressLookup, overlay: Overlay, cancel: CancellationToken) {
    let mut events = mdns.subscribe().await;
    let mut known: BTreeSet<EndpointId> = BTreeSet::new();
    let mut reattach = tokio::time::interval(REATTACH);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            event = events.next() => match event {
                Some(DiscoveryEvent::Discovered { endpoint_info, .. }) => {
                    let id = endpoint_info.endpoint_id;
                    debug!("found {} on the LAN", id.fmt_short());
                    if known.len() < MAX_LAN_PEERS {
                        known.insert(id);
                    }
                    overlay.join(vec![id]).await;
                }
                Some(DiscoveryEvent::Expired { endpoint_id }) => {
                    known.remove(&endpoint_id);
                }
                Some(_) => {}
                None => break,
            },
            _ = reattach.tick() => {
                if overlay.neighbors().is_empty() && !known.is_empty() {
                    overlay.join(known.iter().take(REATTACH_FANOUT).copied().collect()).await;
                }
            }
        }
    }
}
