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

/// Picks the hit `target` names: a hash prefix must match exactly one hash;
/// a name prefers hits that some provider calls exactly that (then the same
/// ignoring case), and otherwise accepts a lone search hit. A hit picked by
/// its name carries that name, whatever its latest provider calls it, so a
/// file is saved as what was asked for.
pub fn choose(target: &str, hits: Vec<Hit>) -> Result<Hit, ResolveError> {
    let t = target.trim();
    let by_hash: Vec<Hit> = match peernet_proto::search::hash_prefix(t) {
        Some(prefix) => hits.iter().filter(|h| h.hash.to_hex().starts_with(&prefix)).cloned().collect(),
        None => Vec::new(),
    };
    let candidates: Vec<Hit> = if !by_hash.is_empty() {
        by_hash
    } else {
        let named = |same: &dyn Fn(&str) -> bool| -> Vec<Hit> {
            hits.iter()
                .filter_map(|h| {
                    let provider = h.providers.iter().find(|p| same(&p.name))?;
                    Some(Hit { name: provider.name.clone(), ..h.clone() })
                })
                .collect()
        };
        let exact = named(&|name| name == t);
        let loose = named(&|name| name.eq_ignore_ascii_case(t));
        if !exact.is_empty() {
            exact
        } else if !loose.is_empty() {
            loose
        } else {
            hits
        }
    };
    match <[Hit; 1]>::try_from(candidates) {
        Ok([one]) => Ok(one),
        Err(many) if many.is_empty() => Err(ResolveError::Unknown(t.to_string())),
        Err(many) => Err(ResolveError::Ambiguous {
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
                size: 1,
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
    fn a_hit_picked_by_name_carries_that_name() {
        // The latest provider saved it under a numbered local name; an
        // older one still calls it what it is.
        let mut h = hit("big sample (1).bin", "1");
        let mut original = h.providers[0].clone();
        original.name = "big sample.bin".into();
        h.providers.push(original);
        let chosen = choose("big sample.bin", vec![h, hit("big sample.bin.part", "2")]).unwrap();
        assert_eq!(chosen.hash, Hash::new("1"));
        assert_eq!(chosen.name, "big sample.bin", "saved under the name asked for, not the latest provider's");
    }

    #[test]
    fn nothing_found() {
        assert!(matches!(choose("x", vec![]), Err(ResolveError::Unknown(_))));
    }
}
