//! `peernet index`: a root that only runs the index, without sharing files.
//!
//! It keeps its key, network key and port in its data directory, so it
//! prints the same ticket after every restart.

use std::net::SocketAddr;

use iroh::{protocol::Router, RelayUrl};
use peernet_index::IndexProtocol;
use peernet_proto::{key::NetworkKey, ticket::Ticket};

use crate::{
    data_dir::{DataDir, Membership},
    endpoint,
    node::{bind_endpoint, NodeError},
};

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub data_dir: std::path::PathBuf,
    pub bind: SocketAddr,
    pub relay: Option<RelayUrl>,
    pub index: peernet_index::Config,
}

#[derive(Debug)]
pub struct IndexHost {
    router: Router,
    ticket: Ticket,
    protocol: IndexProtocol,
}

impl IndexHost {
    pub async fn spawn(config: HostConfig) -> Result<Self, NodeError> {
        let data_dir = DataDir::open(&config.data_dir)?;
        let secret_key = data_dir.secret_key()?;
        let mut state = data_dir.load_state()?;
        let network_key = match &state.membership {
            Some(Membership::Host { network_key }) => *network_key,
            Some(Membership::Member { .. }) => return Err(NodeError::MemberDataDir),
            None => NetworkKey::generate(),
        };
        let alpns = vec![peernet_proto::index::ALPN.to_vec()];
        let (endpoint, _lookup) = bind_endpoint(config.bind, config.relay, &state, secret_key, alpns, true).await?;
        let protocol = peernet_index::open(&data_dir.index_db(), network_key, endpoint.id(), config.index)
            .map_err(|e| NodeError::IndexDb(e.to_string()))?;
        let ticket = Ticket { index: endpoint::own_addr(&endpoint), network_key };
        state.membership = Some(Membership::Host { network_key });
        state.port = endpoint.bound_sockets().first().map(|s| s.port());
        data_dir.save_state(&state)?;
        let router = Router::builder(endpoint).accept(peernet_proto::index::ALPN, protocol.clone()).spawn();
        Ok(Self { router, ticket, protocol })
    }

    pub fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    pub fn protocol(&self) -> &IndexProtocol {
        &self.protocol
    }

    pub async fn shutdown(self) {
        if let Err(e) = self.router.shutdown().await {
            tracing::warn!("router shutdown: {e}");
        }
    }
}
