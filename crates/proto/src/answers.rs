//! Merging search answers (index hits and flood answers) into one list.
//!
//! One policy for every caller: hits are keyed by content hash, a hash
//! appears once, and its providers are the union of everyone who reported
//! it, in the order they were first heard of (a provider counts once, by
//! endpoint id). When the index and the overlay both answer, the index's
//! hits come first (they carry registration times and are ordered by the
//! index), and flood hits are merged into them.
//!
//! Pure functions: the caller gathers the answers, nothing here waits.

use std::collections::HashMap;

use crate::{
    flood::Answer,
    index::{Hit, PeerInfo, Provider},
    Hash,
};

/// Turns flood answers into hits: one per hash, providers in arrival order,
/// each provider once per hash.
pub fn from_answers(answers: Vec<Answer>) -> Vec<Hit> {
    let mut found = Vec::new();
    for answer in answers {
        let peer = PeerInfo { addr: answer.provider, nickname: answer.nickname };
        found.extend(answer.files.into_iter().map(|f| Hit {
            hash: f.hash,
            size: f.size,
            kind: f.kind,
            providers: vec![Provider { peer: peer.clone(), name: f.name.clone(), registered_at: 0, size: f.size }],
            name: f.name,
        }));
    }
    let mut hits = Vec::new();
    merge(&mut hits, found);
    hits
}

/// Adds `extra` into `hits`: a known hash gains the providers it did not
/// have yet (appended, order kept); a new hash is appended as a new hit.
pub fn merge(hits: &mut Vec<Hit>, extra: Vec<Hit>) {
    let mut position: HashMap<Hash, usize> = HashMap::with_capacity(hits.len() + extra.len());
    for (i, h) in hits.iter().enumerate() {
        position.entry(h.hash).or_insert(i);
    }
    for e in extra {
        match position.get(&e.hash) {
            Some(&i) => add_providers(&mut hits[i].providers, e.providers),
            None => {
                position.insert(e.hash, hits.len());
                let mut providers = Vec::with_capacity(e.providers.len());
                add_providers(&mut providers, e.providers);
                hits.push(Hit { providers, ..e });
            }
        }
    }
}

fn add_providers(into: &mut Vec<Provider>, more: Vec<Provider>) {
    for p in more {
        if !into.iter().any(|q| q.peer.addr.id == p.peer.addr.id) {
            into.push(p);
        }
    }
}

/// Combines an index search and a flood search made for the same query.
///
/// - both answered: index hits first, flood hits merged in by hash;
/// - only one answered: its hits (a failed flood never hides index hits);
/// - the index failed and the overlay found something: the flood hits, so an
///   unreachable index is not an error while the overlay still works;
/// - the index failed and the overlay found nothing, or both failed: the
///   index's error, which is the one that tells the user what to fix.
pub fn combine<E>(index: Result<Vec<Hit>, E>, flood: Result<Vec<Hit>, E>) -> Result<Vec<Hit>, E> {
    match (index, flood) {
        (Ok(mut hits), Ok(more)) => {
            merge(&mut hits, more);
            Ok(hits)
        }
        (Ok(hits), Err(_)) => Ok(hits),
        (Err(_), Ok(more)) if !more.is_empty() => Ok(more),
        (Err(e), _) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{FileEntry, PeerAddr};

    fn id(seed: u8) -> crate::EndpointId {
        iroh::SecretKey::from_bytes(&[seed; 32]).public()
    }

    fn peer(seed: u8) -> PeerInfo {
        PeerInfo { addr: PeerAddr { id: id(seed), ip: vec![], relay: None }, nickname: format!("p{seed}") }
    }

    fn file(content: &str) -> FileEntry {
        FileEntry { name: format!("{content}.txt"), size: content.len() as u64, hash: Hash::new(content), kind: Default::default() }
    }

    fn answer(seed: u8, files: &[&str]) -> Answer {
        let p = peer(seed);
        let key = iroh::SecretKey::from_bytes(&[seed; 32]);
        Answer::signed(&key, [1; 16], p.addr, p.nickname, files.iter().map(|f| file(f)).collect())
    }

    fn hit(content: &str, providers: &[u8]) -> Hit {
        let f = file(content);
        Hit {
            hash: f.hash,
            size: f.size,
            kind: f.kind,
            providers: providers
                .iter()
                .map(|&s| Provider { peer: peer(s), name: f.name.clone(), registered_at: 5, size: f.size })
                .collect(),
            name: f.name,
        }
    }

    fn provider_ids(hit: &Hit) -> Vec<crate::EndpointId> {
        hit.providers.iter().map(|p| p.peer.addr.id).collect()
    }

    #[test]
    fn answers_merge_by_hash_with_each_provider_once() {
        let hits = from_answers(vec![
            answer(1, &["a", "b"]),
            answer(2, &["a"]),
            answer(1, &["a", "a"]), // the same provider again, and twice in one answer
            answer(3, &["c", "a"]),
        ]);
        let hashes: Vec<Hash> = hits.iter().map(|h| h.hash).collect();
        assert_eq!(hashes, [Hash::new("a"), Hash::new("b"), Hash::new("c")], "first-seen order of hashes");
        assert_eq!(provider_ids(&hits[0]), [id(1), id(2), id(3)], "arrival order, each once");
        assert_eq!(provider_ids(&hits[1]), [id(1)]);
        assert_eq!(hits[0].providers[1].peer.nickname, "p2");
        assert_eq!(hits[0].providers[0].name, "a.txt");
        assert!(from_answers(vec![]).is_empty());
        assert!(from_answers(vec![answer(1, &[])]).is_empty());
    }

    #[test]
    fn merge_keeps_existing_order_and_appends_new_providers() {
        let mut hits = vec![hit("a", &[3, 1]), hit("b", &[2])];
        merge(&mut hits, vec![hit("c", &[4, 4]), hit("a", &[1, 5, 2]), hit("b", &[2])]);
        assert_eq!(hits.len(), 3);
        assert_eq!(provider_ids(&hits[0]), [id(3), id(1), id(5), id(2)]);
        assert_eq!(provider_ids(&hits[1]), [id(2)]);
        assert_eq!(hits[2].hash, Hash::new("c"));
        assert_eq!(provider_ids(&hits[2]), [id(4)], "a new hit's duplicate providers collapse too");
        // The index's record of a provider wins over the flood's.
        assert_eq!(hits[0].providers[1].registered_at, 5);
    }

    #[test]
    fn both_answers_put_index_hits_first() {
        let combined = combine::<&str>(Ok(vec![hit("a", &[1])]), Ok(vec![hit("b", &[2]), hit("a", &[2])])).unwrap();
        let hashes: Vec<Hash> = combined.iter().map(|h| h.hash).collect();
        assert_eq!(hashes, [Hash::new("a"), Hash::new("b")]);
        assert_eq!(provider_ids(&combined[0]), [id(1), id(2)]);
    }

    #[test]
    fn a_failed_side_falls_back_to_the_other() {
        assert_eq!(combine(Ok(vec![hit("a", &[1])]), Err("flood")), Ok(vec![hit("a", &[1])]));
        assert_eq!(combine(Ok(vec![]), Err("flood")), Ok(vec![]), "an empty index answer is still an answer");
        assert_eq!(combine(Err("index"), Ok(vec![hit("b", &[2])])), Ok(vec![hit("b", &[2])]), "flood hits hide an unreachable index");
        assert_eq!(combine(Err("index"), Ok(vec![])), Err("index"), "no flood hits: the index error stands");
        assert_eq!(combine::<&str>(Err("index"), Err("flood")), Err("index"), "both failed: the index error");
    }
}
