//! The request bodies of the local control API (HTTP/JSON on 127.0.0.1,
//! served by the daemon in `peernet_node::control`): what the CLI, and
//! anything else holding the token, sends. Here, free of the node, so that
//! the decoders can be fuzzed on their own. POST bodies are JSON; the
//! `search` and `messages` queries come as URL query strings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a search looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    Both,
    Index,
    Flood,
    /// The providers the DHT names for a whole hash (`--dht`).
    Dht,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareRequest {
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnshareRequest {
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchQuery {
    pub q: String,
    pub limit: Option<u32>,
    /// Index, overlay (flood), DHT or all of them; all when unset.
    pub mode: Option<SearchMode>,
    /// Flood TTL; clamped to 1..=7, default 4.
    pub ttl: Option<u8>,
    /// How long to collect flood answers, in milliseconds (at most 30 s).
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetRequest {
    /// A file name or a hash (prefix).
    pub target: String,
    /// Absolute directory to save into; the daemon's downloads dir if unset.
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SayRequest {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NickRequest {
    pub nickname: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesQuery {
    /// Only messages after this history index.
    pub after: Option<u64>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode_all(bytes: &[u8]) {
        let _ = serde_json::from_slice::<ShareRequest>(bytes);
        let _ = serde_json::from_slice::<UnshareRequest>(bytes);
        let _ = serde_json::from_slice::<GetRequest>(bytes);
        let _ = serde_json::from_slice::<SayRequest>(bytes);
        let _ = serde_json::from_slice::<NickRequest>(bytes);
        let _ = serde_urlencoded::from_bytes::<SearchQuery>(bytes);
        let _ = serde_urlencoded::from_bytes::<MessagesQuery>(bytes);
    }

    #[test]
    fn bodies_round_trip() {
        let q = SearchQuery { q: "a b".into(), limit: Some(3), mode: Some(SearchMode::Flood), ttl: Some(2), wait_ms: None };
        let encoded = serde_urlencoded::to_string(&q).unwrap();
        assert_eq!(serde_urlencoded::from_str::<SearchQuery>(&encoded).unwrap(), q);
        let g = GetRequest { target: "x".into(), out: Some("/tmp/y".into()) };
        assert_eq!(serde_json::from_slice::<GetRequest>(&serde_json::to_vec(&g).unwrap()).unwrap(), g);
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            decode_all(&bytes);
        }

        #[test]
        fn json_shaped_bodies_never_panic(text in "\\{\"(path|target|text|nickname|out)\":[\\PC\"\\\\\\[\\]{}:,0-9a-z]{0,40}\\}?") {
            decode_all(text.as_bytes());
        }
    }
}
