//! Search: the index, the overlay (flood), or both, with one policy for
//! combining them ([`peernet_proto::answers::combine`]) used by `search`,
//! and one for `get` and `unshare` ([`Search::find`]): the index first, the
//! overlay when the index is down or knows nothing.

use std::time::Duration;

use peernet_proto::index::{Hit, Request, Response};

use crate::{
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
}

/// The search handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Search {
    index: IndexClient,
    flood: FloodSearch,
}

impl Search {
    pub fn new(index: IndexClient, flood: FloodSearch) -> Self {
        Self { index, flood }
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
        match mode {
            SearchMode::Index => self.index(query, limit).await,
            SearchMode::Flood => Ok(self.flood(query, ttl, window).await),
            SearchMode::Both => {
                let (index, flood) = tokio::join!(self.index_if_any(query, limit), self.flood(query, ttl, window));
                peernet_proto::answers::combine(index, Ok(flood))
            }
        }
    }

    /// `get` and `unshare`: the index first, since it answers at once; the
    /// overlay only when the index is down or has no hit.
    pub async fn find(&self, target: &str) -> Result<Vec<Hit>, SearchError> {
        match self.index_if_any(target, peernet_proto::limits::MAX_SEARCH_LIMIT).await {
            Ok(hits) if !hits.is_empty() => Ok(hits),
            index => {
                let flooded = self.flood(target, peernet_proto::flood::DEFAULT_TTL, FLOOD_WINDOW).await;
                peernet_proto::answers::combine(index, Ok(flooded))
            }
        }
    }
}

impl Finder for Search {
    fn find<'a>(&'a self, target: &'a str) -> BoxFuture<'a, Result<Vec<Hit>, String>> {
        Box::pin(async move { Search::find(self, target).await.map_err(|e| e.to_string()) })
    }
}
