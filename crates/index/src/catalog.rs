//! Everything the index answers from, in memory.
//!
//! SQLite ([`crate::store`]) is the durable record; this is a copy of it
//! kept for reading. It is filled from the database when the index starts
//! and then changed only by [`Change`]s that the store hands over after
//! their transaction committed, so a reader never sees a change that is not
//! on disk, and every search, referral and map is answered without touching
//! SQLite: at a million files, SQLite's full-text prefix matching and page
//! reads were most of the index's time (see docs/benchmarks.md, the index bench).
//!
//! Searching follows [`peernet_proto::search`], the rules flood search uses
//! too: each file's name is split into its folded words, and each word
//! keeps the ids of the files whose name has it ([`Catalog::words`]). A query
//! word is looked up as the range of stored words it starts, in a sorted
//! map. File ids are SQLite's row ids, given in registration order, so the
//! newest files are the highest ids and a search walks the lists from
//! their ends and stops at its limit.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap},
};

use iroh::EndpointId;
use peernet_proto::{
    index::{FileEntry, Hit, Kind, OnlinePeer, PeerInfo, Provider},
    limits::{MAX_PROVIDERS_PER_HIT, ONLINE_PAGE_PEERS},
    search, Hash,
};
use rand::seq::IteratorRandom;
use rustc_hash::{FxHashMap, FxHashSet};

/// A peer row as the graph and status views need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    pub info: PeerInfo,
    pub lease_until: u64,
    pub neighbors: Vec<EndpointId>,
}

/// One committed change, as the store describes it after writing it.
#[derive(Debug, Clone)]
pub enum Change {
    /// A peer joined again or for the first time (the row as stored).
    Peer {
        info: PeerInfo,
        joined_at: u64,
        lease_until: u64,
    },
    /// A heartbeat renewed a lease.
    Lease {
        id: EndpointId,
        lease_until: u64,
        neighbors: Vec<EndpointId>,
    },
    Nickname {
        id: EndpointId,
        nickname: String,
    },
    /// A file row as stored (new, or a re-publish under the same id).
    File {
        id: u64,
        peer: EndpointId,
        entry: FileEntry,
        registered_at: u64,
    },
    /// A file row deleted.
    Unfile {
        id: u64,
    },
    /// A peer whose lease ran out long ago is forgotten with its files
    /// (it joins and publishes again when it comes back); its slot is
    /// reused, so memory follows the peers of now, not every key ever seen.
    Forget {
        id: EndpointId,
    },
    /// A peer left: its lease ended and its files are gone.
    Left {
        id: EndpointId,
    },
}

/// A query word that starts more stored words than this is checked on a
/// file by folding the file's name, not by a lookup in each word's list.
const MAX_LISTS_PER_CHECK: usize = 64;

#[derive(Debug)]
struct Peer {
    info: PeerInfo,
    joined_at: u64,
    lease_until: u64,
    neighbors: Vec<EndpointId>,
    files: FxHashSet<u64>,
}

#[derive(Debug)]
struct File {
    /// The owner's slot in [`Catalog::peers`] (4 bytes, not its 32-byte key:
    /// there are a million of these).
    peer: u32,
    hash: Hash,
    name: Box<str>,
    size: u64,
    kind: Kind,
    registered_at: u64,
}

#[derive(Debug, Default)]
pub struct Catalog {
    peers: Vec<Peer>,
    slots: HashMap<EndpointId, u32>,
    /// Slots of forgotten peers, for the next new one.
    free: Vec<u32>,
    /// Keyed by SQLite's row id: a fast hash (row ids come from our own
    /// database, not from the network), as every search looks up each
    /// candidate here.
    files: FxHashMap<u64, File>,
    /// File ids of each hash (a hash has a row per provider): looked up
    /// for every hit a search answers, so a hash map.
    hashes: FxHashMap<[u8; 32], Vec<u64>>,
    /// The same hashes in order, so that a hash prefix is a range.
    sorted_hashes: BTreeSet<[u8; 32]>,
    /// File ids of each folded word, ascending (oldest first).
    words: BTreeMap<Box<str>, Vec<u64>>,
}

impl Catalog {
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Peer { info, joined_at, lease_until } => match self.slots.get(&info.addr.id) {
                Some(&slot) => {
                    let peer = &mut self.peers[slot as usize];
                    (peer.info, peer.joined_at, peer.lease_until) = (info, joined_at, lease_until);
                }
                None => {
                    let id = info.addr.id;
                    let peer = Peer { info, joined_at, lease_until, neighbors: Vec::new(), files: FxHashSet::default() };
                    let slot = match self.free.pop() {
                        Some(slot) => {
                            self.peers[slot as usize] = peer;
                            slot
                        }
                        None => {
                            self.peers.push(peer);
                            self.peers.len() as u32 - 1
                        }
                    };
                    self.slots.insert(id, slot);
                }
            },
            Change::Lease { id, lease_until, neighbors } => {
                if let Some(peer) = self.peer_mut(&id) {
                    (peer.lease_until, peer.neighbors) = (lease_until, neighbors);
                }
            }
            Change::Nickname { id, nickname } => {
                if let Some(peer) = self.peer_mut(&id) {
                    peer.info.nickname = nickname;
                }
            }
            Change::File { id, peer, entry, registered_at } => {
                self.remove_file(id);
                let Some(&slot) = self.slots.get(&peer) else {
                    return;
                };
                for word in unique_words(&entry.name) {
                    // Looked up first: most words are known, and a new key
                    // is an allocation.
                    match self.words.get_mut(word.as_str()) {
                        Some(ids) => insert_sorted(ids, id),
                        None => {
                            self.words.insert(word.into(), vec![id]);
                        }
                    }
                }
                let ids = self.hashes.entry(*entry.hash.as_bytes()).or_default();
                if ids.is_empty() {
                    self.sorted_hashes.insert(*entry.hash.as_bytes());
                }
                insert_sorted(ids, id);
                self.peers[slot as usize].files.insert(id);
                let file =
                    File { peer: slot, hash: entry.hash, name: entry.name.into(), size: entry.size, kind: entry.kind, registered_at };
                self.files.insert(id, file);
            }
            Change::Unfile { id } => self.remove_file(id),
            Change::Forget { id } => {
                let Some(slot) = self.slots.remove(&id) else {
                    return;
                };
                let peer = &mut self.peers[slot as usize];
                let files = std::mem::take(&mut peer.files);
                // An offline placeholder until the slot is reused: scans of
                // `peers` skip it, as every one checks the lease.
                (peer.lease_until, peer.neighbors, peer.info.addr.ip, peer.info.addr.relay) = (0, Vec::new(), Vec::new(), None);
                peer.info.nickname.clear();
                for file in files {
                    self.remove_file(file);
                }
                self.free.push(slot);
            }
            Change::Left { id } => {
                let Some(peer) = self.peer_mut(&id) else {
                    return;
                };
                (peer.lease_until, peer.neighbors) = (0, Vec::new());
                for file in std::mem::take(&mut peer.files) {
                    self.remove_file(file);
                }
            }
        }
    }

    fn peer_mut(&mut self, id: &EndpointId) -> Option<&mut Peer> {
        self.slots.get(id).map(|&slot| &mut self.peers[slot as usize])
    }

    fn remove_file(&mut self, id: u64) {
        let Some(file) = self.files.remove(&id) else {
            return;
        };
        for word in unique_words(&file.name) {
            if let Some(ids) = self.words.get_mut(word.as_str()) {
                remove_sorted(ids, id);
                if ids.is_empty() {
                    self.words.remove(word.as_str());
                }
            }
        }
        if let Some(ids) = self.hashes.get_mut(file.hash.as_bytes()) {
            remove_sorted(ids, id);
            if ids.is_empty() {
                self.hashes.remove(file.hash.as_bytes());
                self.sorted_hashes.remove(file.hash.as_bytes());
            }
        }
        self.peers[file.peer as usize].files.remove(&id);
    }

    /// How many files are registered (online or not).
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Whether any peer, online or not, has registered a file with `hash`.
    pub fn provides(&self, hash: &Hash) -> bool {
        self.hashes.contains_key(hash.as_bytes())
    }

    /// Whether `id` has ever joined (a peer that left stays known).
    pub fn is_member(&self, id: &EndpointId) -> bool {
        self.slots.contains_key(id)
    }

    /// Whether `id` has joined and its lease runs now.
    pub fn has_lease(&self, id: &EndpointId, now: u64) -> bool {
        self.slots.get(id).is_some_and(|&slot| self.online(slot, now))
    }

    fn online(&self, slot: u32, now: u64) -> bool {
        self.peers[slot as usize].lease_until > now
    }

    /// Files of online peers that match `query` by [`search::matches`]: by
    /// the start of their hash, or by every word of the query starting a
    /// word of the name one of their providers gave them. Most recently
    /// registered first.
    pub fn search(&self, query: &str, limit: u32, now: u64) -> Vec<Hit> {
        let limit = limit as usize;
        let mut hashes: Vec<Hash> = Vec::new();
        if let Some(prefix) = search::hash_prefix(query) {
            hashes = self.by_hash_prefix(&prefix, limit, now);
        }
        let words = search::words(query);
        if !words.is_empty() && hashes.len() < limit {
            self.by_words(&words, limit, now, &mut hashes);
        }
        hashes.iter().filter_map(|h| self.hit(h, now)).collect()
    }

    /// Hashes starting with `prefix` (lower-case hex) that an online peer
    /// provides, newest registration first.
    fn by_hash_prefix(&self, prefix: &str, limit: usize, now: u64) -> Vec<Hash> {
        let bound = |fill: char| {
            let hex: String = prefix.chars().chain(std::iter::repeat(fill)).take(64).collect();
            hex.parse::<Hash>().map(|h| *h.as_bytes())
        };
        let (Ok(low), Ok(high)) = (bound('0'), bound('f')) else {
            return Vec::new();
        };
        let mut found: Vec<(u64, u64, Hash)> = self
            .sorted_hashes
            .range(low..=high)
            .filter_map(|hash| {
                let newest = self.hashes[hash]
                    .iter()
                    .map(|id| (id, &self.files[id]))
                    .filter(|(_, f)| self.online(f.peer, now))
                    .map(|(id, f)| (f.registered_at, *id))
                    .max()?;
                Some((newest.0, newest.1, self.files[&newest.1].hash))
            })
            .collect();
        found.sort_unstable_by_key(|&(at, id, _)| Reverse((at, id)));
        found.into_iter().take(limit).map(|(_, _, h)| h).collect()
    }

    /// Adds to `hashes` the hashes whose name has every query word as the
    /// start of one of its words, newest file first, until `limit`.
    fn by_words(&self, words: &[String], limit: usize, now: u64, hashes: &mut Vec<Hash>) {
        let mut groups: Vec<Vec<&Vec<u64>>> = words
            .iter()
            .map(|word| {
                self.words
                    .range::<str, _>((std::ops::Bound::Included(word.as_str()), std::ops::Bound::Unbounded))
                    .take_while(|(w, _)| w.starts_with(word.as_str()))
                    .map(|(_, ids)| ids)
                    .collect()
            })
            .collect();
        // The query word with the fewest files drives the walk; the others
        // are checked on each of its files.
        let Some(driver) = (0..groups.len()).min_by_key(|&i| groups[i].iter().map(|l| l.len()).sum::<usize>()) else {
            return;
        };
        let driver = groups.swap_remove(driver);
        // A file has a word starting with a query word exactly when its id
        // is in one of that word's lists: looked up there (no name to fold)
        // unless the word starts so many stored words that the lookups
        // cost more than folding the file's name.
        let by_lists = groups.iter().all(|lists| lists.len() <= MAX_LISTS_PER_CHECK);
        let mut cursors: Vec<Vec<Cursor<'_>>> =
            groups.iter().map(|lists| lists.iter().map(|l| Cursor { list: l.as_slice() }).collect()).collect();
        for id in Newest::new(&driver) {
            if hashes.len() >= limit {
                break;
            }
            if by_lists && !cursors.iter_mut().all(|lists| lists.iter_mut().any(|c| c.has(id))) {
                continue;
            }
            let file = &self.files[&id];
            if !self.online(file.peer, now) || hashes.contains(&file.hash) {
                continue;
            }
            if by_lists || search::words_match(words, &search::words(&file.name)) {
                hashes.push(file.hash);
            }
        }
    }

    /// All online providers of one hash, most recent registration first.
    pub fn hit(&self, hash: &Hash, now: u64) -> Option<Hit> {
        let ids = self.hashes.get(hash.as_bytes())?;
        let mut rows: Vec<(u64, &File)> = ids.iter().map(|id| (*id, &self.files[id])).filter(|(_, f)| self.online(f.peer, now)).collect();
        rows.sort_unstable_by_key(|&(id, f)| Reverse((f.registered_at, id)));
        if rows.len() > MAX_PROVIDERS_PER_HIT {
            // The newest half and the oldest half, newest first still.
            let keep = MAX_PROVIDERS_PER_HIT / 2;
            rows.drain(keep..rows.len() - keep);
        }
        let (_, first) = rows.first()?;
        Some(Hit {
            hash: *hash,
            size: first.size,
            kind: first.kind,
            name: first.name.to_string(),
            providers: rows
                .iter()
                .map(|(_, f)| Provider {
                    peer: self.peers[f.peer as usize].info.clone(),
                    name: f.name.to_string(),
                    registered_at: f.registered_at,
                    size: f.size,
                })
                .collect(),
        })
    }

    /// Online peers, oldest member first.
    fn online_sorted(&self, now: u64) -> Vec<&Peer> {
        let mut peers: Vec<&Peer> = self.peers.iter().filter(|p| p.lease_until > now).collect();
        peers.sort_unstable_by(|a, b| (a.joined_at, a.info.addr.id.as_bytes()).cmp(&(b.joined_at, b.info.addr.id.as_bytes())));
        peers
    }

    /// One page of online peers with their files, oldest member first.
    pub fn online_page(&self, page: u32, now: u64) -> (Vec<OnlinePeer>, Option<u32>) {
        let per_page = ONLINE_PAGE_PEERS as usize;
        let peers = self.online_sorted(now);
        let start = (page as usize).saturating_mul(per_page);
        let next_page = (peers.len() > start.saturating_add(per_page)).then_some(page + 1);
        let out = peers
            .into_iter()
            .skip(start)
            .take(per_page)
            .map(|p| {
                let mut files: Vec<FileEntry> = p
                    .files
                    .iter()
                    .map(|id| &self.files[id])
                    .map(|f| FileEntry { name: f.name.to_string(), size: f.size, hash: f.hash, kind: f.kind })
                    .collect();
                files.sort_unstable_by(|a, b| (&a.name, a.hash.as_bytes()).cmp(&(&b.name, b.hash.as_bytes())));
                OnlinePeer { peer: p.info.clone(), files, lease_until: p.lease_until }
            })
            .collect();
        (out, next_page)
    }

    /// Up to `k` random online peers other than `me`.
    pub fn referral(&self, me: &EndpointId, k: u32, now: u64) -> Vec<PeerInfo> {
        let mut rng = rand::rng();
        let mut picked = self
            .peers
            .iter()
            .filter(|p| p.lease_until > now && p.info.addr.id != *me)
            .map(|p| p.info.clone())
            .choose_multiple(&mut rng, k as usize);
        // `choose_multiple` keeps the order it met them in.
        rand::seq::SliceRandom::shuffle(picked.as_mut_slice(), &mut rng);
        picked
    }

    /// How many peers' leases run at `now`.
    pub fn online_count(&self, now: u64) -> u64 {
        self.peers.iter().filter(|p| p.lease_until > now).count() as u64
    }

    /// Every online peer with its reported neighbours, for the map.
    pub fn online_peers(&self, now: u64) -> Vec<PeerRecord> {
        self.online_sorted(now)
            .into_iter()
            .map(|p| PeerRecord { info: p.info.clone(), lease_until: p.lease_until, neighbors: p.neighbors.clone() })
            .collect()
    }
}

/// A name's distinct folded words.
fn unique_words(name: &str) -> Vec<String> {
    let mut words = search::words(name);
    words.sort_unstable();
    words.dedup();
    words
}

fn insert_sorted(ids: &mut Vec<u64>, id: u64) {
    // Almost always the newest: a push.
    match ids.last() {
        Some(&last) if last >= id => {
            if let Err(at) = ids.binary_search(&id) {
                ids.insert(at, id);
            }
        }
        _ => ids.push(id),
    }
}

fn remove_sorted(ids: &mut Vec<u64>, id: u64) {
    if let Ok(at) = ids.binary_search(&id) {
        ids.remove(at);
    }
}

/// Membership in an ascending list, for ids asked in descending order (a
/// walk of [`Newest`]): each answer drops the part of the list above the
/// id, and the next is found by galloping back from the end of what is
/// left, so a walk costs about the logarithm of the gap between two ids
/// asked, not of the whole list.
struct Cursor<'a> {
    list: &'a [u64],
}

impl Cursor<'_> {
    fn has(&mut self, id: u64) -> bool {
        let len = self.list.len();
        let mut back = 1;
        while back < len && self.list[len - back] > id {
            back *= 2;
        }
        let start = len.saturating_sub(back);
        let kept = start + self.list[start..].partition_point(|&x| x <= id);
        self.list = &self.list[..kept];
        self.list.last() == Some(&id)
    }
}

/// The ids of several ascending lists, merged, highest first, without
/// repeats (a file with two words that start the same query word is in
/// two lists), lazily: a search stops at its limit long before the end of
/// a common word's list.
struct Newest<'a> {
    lists: &'a [&'a Vec<u64>],
    /// (next id, list, its position), highest id on top.
    heads: BinaryHeap<(u64, usize, usize)>,
    last: Option<u64>,
}

impl<'a> Newest<'a> {
    fn new(lists: &'a [&'a Vec<u64>]) -> Self {
        let heads = lists.iter().enumerate().filter_map(|(i, l)| l.last().map(|&id| (id, i, l.len() - 1))).collect();
        Self { lists, heads, last: None }
    }
}

impl Iterator for Newest<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        loop {
            let (id, list, at) = self.heads.pop()?;
            if at > 0 {
                self.heads.push((self.lists[list][at - 1], list, at - 1));
            }
            if self.last != Some(id) {
                self.last = Some(id);
                return Some(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use iroh::SecretKey;
    use peernet_proto::index::PeerAddr;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;

    fn peer(seed: u8) -> EndpointId {
        SecretKey::from_bytes(&[seed; 32]).public()
    }

    /// Random joins, publishes (some of a hash another peer has, some
    /// re-publishing under a new name), unpublishes and leaves; after each
    /// step, every query finds exactly the hashes that a scan of every
    /// online provider with [`search::matches`] finds.
    #[test]
    fn search_finds_what_a_full_scan_finds() {
        const WORDS: &[&str] = &["café", "cat", "catalog", "dog", "Straße", "strand", "2024", "東京", "tar", "gz"];
        // "x" starts more words than MAX_LISTS_PER_CHECK: checked by name.
        const QUERIES: &[&str] =
            &["ca", "cafe", "cat dog", "stras", "str", "2024 gz", "東京", "c", "zzz", "", "cat catalog", "x cat", "dog x1"];
        let many: Vec<String> = (0..MAX_LISTS_PER_CHECK + 4).map(|k| format!("x{k}")).collect();
        let words: Vec<&str> = WORDS.iter().copied().chain(many.iter().map(String::as_str)).collect();
        for seed in 0..4 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut c = Catalog::default();
            // What a scan would read: (id, peer, entry, registered_at).
            let mut rows: Vec<(u64, EndpointId, FileEntry, u64)> = Vec::new();
            let mut online: HashSet<EndpointId> = HashSet::new();
            let mut next_id = 1;
            let now = 1_000;
            for step in 0..400u64 {
                let p = peer(rng.random_range(1..6));
                match rng.random_range(0..10) {
                    0 => {
                        let info = PeerInfo { addr: PeerAddr { id: p, ip: vec![], relay: None }, nickname: "n".into() };
                        c.apply(Change::Peer { info, joined_at: step, lease_until: now + 1 });
                        online.insert(p);
                    }
                    1 => {
                        c.apply(Change::Left { id: p });
                        rows.retain(|r| r.1 != p);
                        online.remove(&p);
                    }
                    2 => {
                        if let Some(at) = (!rows.is_empty()).then(|| rng.random_range(0..rows.len())) {
                            c.apply(Change::Unfile { id: rows.remove(at).0 });
                        }
                    }
                    _ if c.is_member(&p) => {
                        let name: Vec<&str> = (0..rng.random_range(1..4)).map(|_| words[rng.random_range(0..words.len())]).collect();
                        let hash = Hash::new([rng.random_range(0..30u8)]);
                        let entry = FileEntry { name: name.join("-"), size: 1, hash, kind: Kind::File };
                        // Re-publishing a hash keeps the row and its time.
                        let (id, at) = match rows.iter().position(|r| r.1 == p && r.2.hash == hash) {
                            Some(i) => {
                                let old = rows.remove(i);
                                (old.0, old.3)
                            }
                            None => (next_id, step),
                        };
                        next_id += 1;
                        c.apply(Change::File { id, peer: p, entry: entry.clone(), registered_at: at });
                        rows.push((id, p, entry, at));
                    }
                    _ => {}
                }
                let mut queries: Vec<String> = QUERIES.iter().map(|q| q.to_string()).collect();
                queries.push(Hash::new([3u8]).to_hex()[..4].to_string());
                for q in &queries {
                    let mut want: Vec<Hash> =
                        rows.iter().filter(|r| online.contains(&r.1) && search::matches(q, &r.2)).map(|r| r.2.hash).collect();
                    want.sort_unstable_by_key(|h| *h.as_bytes());
                    want.dedup();
                    let mut got: Vec<Hash> = c.search(q, 1000, now).into_iter().map(|h| h.hash).collect();
                    got.sort_unstable_by_key(|h| *h.as_bytes());
                    assert_eq!(got, want, "seed {seed}, step {step}, query {q:?}");
                }
            }
        }
    }

    /// A cursor answers membership exactly for ids asked in descending
    /// order, with gaps of every size between them.
    #[test]
    fn a_cursor_answers_for_descending_ids() {
        let list: Vec<u64> = (0..500u64).map(|k| k * k / 7 + k).collect();
        for step in [1, 2, 3, 17, 400] {
            let mut cursor = Cursor { list: &list };
            for id in (0..list[499] + 2).rev().step_by(step) {
                assert_eq!(cursor.has(id), list.contains(&id), "id {id}, step {step}");
            }
        }
    }

    /// A word shared by many files: the newest come first and the walk
    /// stops at the limit.
    #[test]
    fn the_newest_files_fill_the_limit() {
        let mut c = Catalog::default();
        let p = peer(1);
        let info = PeerInfo { addr: PeerAddr { id: p, ip: vec![], relay: None }, nickname: "n".into() };
        c.apply(Change::Peer { info, joined_at: 0, lease_until: 10 });
        for id in 1..=50u64 {
            let entry = FileEntry { name: format!("song {id}"), size: 1, hash: Hash::new(id.to_le_bytes()), kind: Kind::File };
            c.apply(Change::File { id, peer: p, entry, registered_at: id });
        }
        let names: Vec<String> = c.search("so", 3, 5).into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["song 50", "song 49", "song 48"]);
        assert!(c.search("so", 3, 10).is_empty(), "the lease ran out");
    }
}
