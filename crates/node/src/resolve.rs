//! Choosing which file a `get NAME|HASH` means, from the index's hits.
//! Pure: tested without a network.

use peernet_proto::index::Hit;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no online peer shares a file named or hashed '{0}'; `peernet search` shows what is available")]
    Unknown(String),
    #[error("'{target}' matches {count} different files ({choices}); get one by its hash")]
    Ambiguous { target: String, count: usize, choices: String },
}

/// Is `target` a hash or hash prefix rather than a name?
pub fn looks_like_hash(target: &str) -> bool {
    let t = target.trim();
    t.len() >= peernet_proto::limits::MIN_HASH_PREFIX && t.len() <= 64 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Picks the hit `target` names: a hash prefix must match exactly one hash;
/// a name prefers exact matches (case-sensitive, then not), and otherwise
/// accepts a lone search hit.
pub fn choose(target: &str, hits: Vec<Hit>) -> Result<Hit, ResolveError> {
    let t = target.trim();
    let by_hash: Vec<&Hit> = if looks_like_hash(t) {
        let lower = t.to_ascii_lowercase();
        hits.iter().filter(|h| h.hash.to_hex().starts_with(&lower)).collect()
    } else {
        Vec::new()
    };
    let candidates: Vec<&Hit> = if !by_hash.is_empty() {
        by_hash
    } else {
        let named = |exact: bool| -> Vec<&Hit> {
            hits.iter().filter(|h| h.providers.iter().any(|p| if exact { p.name == t } else { p.name.eq_ignore_ascii_case(t) })).collect()
        };
        let exact = named(true);
        let loose = named(false);
        if !exact.is_empty() {
            exact
        } else if !loose.is_empty() {
            loose
        } else {
            hits.iter().collect()
        }
    };
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ResolveError::Unknown(t.to_string())),
        many => Err(ResolveError::Ambiguous {
            target: t.to_string(),
            count: many.len(),
            choices: many.iter().take(5).map(|h| format!("{} {}", h.name, h.hash.fmt_short())).collect::<Vec<_>>().join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use iroh_blobs::Hash;
    use peernet_proto::index::{PeerAddr, PeerInfo, Provider};

    use super::*;

    fn hit(name: &str, content: &str) -> Hit {
        let id = iroh::SecretKey::from_bytes(&[1; 32]).public();
        Hit {
            hash: Hash::new(content),
            size: 1,
            kind: Default::default(),
            name: name.into(),
            providers: vec![Provider {
                peer: PeerInfo { addr: PeerAddr { id, ip: vec![], relay: None }, nickname: "a".into() },
                name: name.into(),
                registered_at: 0,
            }],
        }
    }

    #[test]
    fn exact_name_beats_other_hits() {
        let hits = vec![hit("report.pdf", "1"), hit("report.pdf.bak", "2")];
        assert_eq!(choose("report.pdf", hits).unwrap().hash, Hash::new("1"));
    }

    #[test]
    fn case_insensitive_name_then_single_hit() {
        assert_eq!(choose("REPORT.PDF", vec![hit("report.pdf", "1")]).unwrap().hash, Hash::new("1"));
        assert_eq!(choose("report", vec![hit("report.pdf", "1")]).unwrap().hash, Hash::new("1"));
    }

    #[test]
    fn same_name_different_content_is_ambiguous() {
        let err = choose("a.txt", vec![hit("a.txt", "1"), hit("a.txt", "2")]).unwrap_err();
        assert!(matches!(err, ResolveError::Ambiguous { count: 2, .. }));
    }

    #[test]
    fn hash_prefix_picks_one() {
        let hits = vec![hit("a", "1"), hit("b", "2")];
        let hex = Hash::new("2").to_hex();
        assert_eq!(choose(&hex[..12], hits.clone()).unwrap().name, "b");
        assert_eq!(choose(&hex.to_uppercase(), hits).unwrap().name, "b");
    }

    #[test]
    fn nothing_found() {
        assert!(matches!(choose("x", vec![]), Err(ResolveError::Unknown(_))));
    }
}
