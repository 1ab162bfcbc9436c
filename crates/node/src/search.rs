//! Search: the index, the overlay (flood), or both, with one policy for
//! combining them ([`peernet_proto::answers::combine`]) used by `search`,
//! and one for `get` and `unshare` ([`Search::find`]): the index first, the
//! overlay when the index is down or knows nothing, and, for a whole hash,
//! the DHT last ([`crate::dht`], with `--dht`): it names the peers that
//! announced the hash, and they are asked directly, so what they answer is
//! signed by them like any flood answer.

use std::time::Duration;

use peernet_proto::{
    index::{Hit, Request, Response},
    limits::MAX_QUERY_BYTES,
};

use crate::{
    dht::DhtLayer,
    flood::FloodSearch,
    index_client::{IndexClient, IndexError},
    transfers::{BoxFuture, Finder},
};

/// How long a flood search collects answers unless told otherwise.
pub const FLOOD_WINDOW: Duration = Duration::from_millis(1500);

pub use peernet_proto::control::SearchMode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    Index(#[from] IndexError),
    #[error("this peer runs no DHT node; start it with `peernet up --dht` to search the DHT")]
    NoDht,
    #[error("the DHT finds files by their whole hash (64 hex digits); search names with the index and the overlay")]
    NotAHash,
    #[error("a search query has at most {MAX_QUERY_BYTES} bytes; this one has {0}: search for fewer or shorter words")]
    TooLong(usize),
}

/// The search handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Search {
    index: IndexClient,
    flood: FloodSearch,
    dht: Option<DhtLayer>,
}

impl Search {
    pub fn new(index: IndexClient, flood: FloodSearch, dht: Option<DhtLayer>) -> Self {
        Self { index, flood, dht }
    }

    /// The DHT's providers of a whole hash, asked directly for it; nothing
    /// without `--dht`, or for a name or a hash prefix (the DHT is keyed by
    /// whole hashes).
    pub async fn dht(&self, query: &str) -> Vec<Hit> {
        let (Some(dht), Ok(hash)) = (&self.dht, query.trim().parse::<iroh_blobs::Hash>()) else { return Vec::new() };
        let providers = dht.providers(&hash).await;
        if providers.is_empty() {
            return Vec::new();
        }
        self.flood.ask(&hash.to_hex(), &providers, FLOOD_WINDOW).await
    }

    /// Files whose names match `query` (or whose hash starts with it), from the index.
    pub async fn index(&self, query: &str, limit: u32) -> Result<Vec<Hit>, SearchError> {
        match self.index.request(Request::Search { query: query.to_string(), limit }).await? {
            Response::Hits(hits) => Ok(hits),
            _ => Err(IndexError::Unexpected.into()),
        }
    }

    /// Asks the overlay with a TTL, collecting answers for `window`.
    pub async fn flood(&self, query: &str, ttl: u8, window: Duration) -> Vec<Hit> {
        self.flood.search(query, ttl, window).await
    }

    /// The index's hits, none when the network has no index (a LAN network,
    /// where the overlay is the only place to ask).
    async fn index_if_any(&self, query: &str, limit: u32) -> Result<Vec<Hit>, SearchError> {
        match self.index(query, limit).await {
            Err(SearchError::Index(IndexError::NoIndex)) => Ok(Vec::new()),
            other => other,
        }
    }

    /// `search`: the index, the overlay, or both at once, merged by hash.
    pub async fn run(&self, query: &str, limit: u32, mode: SearchMode, ttl: u8, window: Duration) -> Result<Vec<Hit>, SearchError> {
        // The same limit everywhere: the index refuses longer queries, and
        // other peers drop longer flood queries.
        if query.len() > MAX_QUERY_BYTES {
            return Err(SearchError::TooLong(query.len()));
        }
        match mode {
            SearchMode::Index => self.index(query, limit).await,
            SearchMode::Flood => Ok(self.flood(query, ttl, window).await),
            SearchMode::Dht if self.dht.is_none() => Err(SearchError::NoDht),
            SearchMode::Dht if query.trim().parse::<iroh_blobs::Hash>().is_err() => Err(SearchError::NotAHash),
            SearchMode::Dht => Ok(self.dht(query).await),
            SearchMode::Both => {
                let (index, flood, dht) = tokio::join!(self.index_if_any(query, limit), self.flood(query, ttl, window), self.dht(query));
                let overlay = peernet_proto::answers::combine(Ok(flood), Ok(dht));
                peernet_proto::answers::combine(index, overlay)
            }
        }
    }

    /// `get` and `unshare`: the index first, since it answers at once; the
    /// overlay only when the index is down or has no hit; the DHT only when
    /// neither found anything.
    pub async fn find(&self, target: &str) -> Result<Vec<Hit>, SearchError> {
        match self.index_if_any(target, peernet_proto::limits::MAX_SEARCH_LIMIT).await {
            Ok(hits) if !hits.is_empty() => Ok(hits),
            index => {
                let flooded = self.flood(target, peernet_proto::flood::DEFAULT_TTL, FLOOD_WINDOW).await;
                if !flooded.is_empty() {
                    return peernet_proto::answers::combine(index, Ok(flooded));
                }
                peernet_proto::answers::combine(index, Ok(self.dht(target).await))
            }
        }
    }
}

impl Finder for Search {
    fn find<'a>(&'a self, target: &'a str) -> BoxFuture<'a, Result<Vec<Hit>, String>> {
        Box::pin(async move { Search::find(self, target).await.map_err(|e| e.to_string()) })
    }
}
