//! The DHT layer's pure parts: the keys a member announces under, the
//! `peernet/dht/1` hello that tells a member where another member's DHT
//! node listens, which announces are due, and which answers are fresh.
//!
//! Keys are derived from the network key, so a DHT node that stores an
//! announce, or watches lookups go by, sees 20 random-looking bytes: it
//! cannot tell which network or which file they stand for, and someone who
//! knows a file's hash cannot look its providers up without the network
//! key.

use std::{collections::BTreeMap, net::SocketAddrV4};

use iroh_blobs::Hash;
use serde::{Deserialize, Serialize};

use crate::key::NetworkKey;

/// The protocol a member asks another member's DHT address with.
pub const HELLO_ALPN: &[u8] = b"peernet/dht/1";
/// Domain separation for the key the network itself is announced under.
const NETWORK_CONTEXT: &str = "peernet 2026 dht network v1";
/// Domain separation for the key files are announced under.
const FILE_CONTEXT: &str = "peernet 2026 dht file key v1";

/// Most files one peer announces (its newest shares); beyond them, its
/// files are found through the index and the overlay only.
pub const MAX_FILE_ANNOUNCES: usize = 200;
/// How often each announce is made again: DHT nodes forget, and a member's
/// addresses change.
pub const ANNOUNCE_REFRESH_MS: u64 = 15 * 60 * 1000;
/// Announces older than this are not believed: the announcer has not
/// refreshed them for three periods, so it has most likely gone.
pub const ANNOUNCE_MAX_AGE_MS: u64 = 3 * ANNOUNCE_REFRESH_MS;
/// Most announces made in one go; the rest wait for the next round, so a
/// peer with many shares does not hold its DHT node busy for long.
pub const MAX_ANNOUNCES_PER_ROUND: usize = 16;
/// After a failed announce, none is tried for this long.
pub const ANNOUNCE_BACKOFF_MS: u64 = 30_000;
/// When the number of DHT nodes this peer knows has grown or shrunk by half
/// since its announces were made, they are all made again (at most this
/// often): a DHT of a few members keeps each announce on few nodes, and a
/// newcomer or a death changes which nodes those should be.
pub const REANNOUNCE_MIN_GAP_MS: u64 = 10_000;
/// How far ahead of our clock an announce may be stamped and still count.
pub const MAX_FUTURE_SKEW_MS: u64 = 5 * 60 * 1000;
/// Most addresses one hello carries, and its size on the wire.
pub const MAX_HELLO_ADDRS: usize = 16;
pub const MAX_HELLO_BYTES: usize = 512;

/// A DHT key: 20 bytes, the size of the mainline DHT's ids.
pub type DhtKey = [u8; 20];

fn truncate(hash: [u8; 32]) -> DhtKey {
    let mut key = [0u8; 20];
    key.copy_from_slice(&hash[..20]);
    key
}

/// Where members announce that they belong to the network, so that one
/// whose index is gone can find others.
pub fn network_key(key: &NetworkKey) -> DhtKey {
    truncate(blake3::derive_key(NETWORK_CONTEXT, key.as_bytes()))
}

/// Where the providers of `hash` announce it: a keyed hash, so the file's
/// hash cannot be recovered from it, nor the key computed from the hash
/// without the network key.
pub fn file_key(key: &NetworkKey, hash: &Hash) -> DhtKey {
    let file_secret = blake3::derive_key(FILE_CONTEXT, key.as_bytes());
    truncate(*blake3::keyed_hash(&file_secret, hash.as_bytes()).as_bytes())
}

/// What a member answers on [`HELLO_ALPN`]: the IPv4 addresses its DHT node
/// listens on (the mainline DHT is IPv4 only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub addrs: Vec<SocketAddrV4>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("a DHT hello of {0} bytes is larger than {MAX_HELLO_BYTES}")]
    TooLarge(usize),
    #[error("a DHT hello could not be read")]
    Malformed,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let capped = Hello { addrs: self.addrs.iter().take(MAX_HELLO_ADDRS).copied().collect() };
        postcard::to_stdvec(&capped).expect("a hello always encodes")
    }

    /// Reads a hello, keeping at most [`MAX_HELLO_ADDRS`] addresses.
    pub fn decode(bytes: &[u8]) -> Result<Self, HelloError> {
        if bytes.len() > MAX_HELLO_BYTES {
            return Err(HelloError::TooLarge(bytes.len()));
        }
        let mut hello: Hello = postcard::from_bytes(bytes).map_err(|_| HelloError::Malformed)?;
        hello.addrs.truncate(MAX_HELLO_ADDRS);
        Ok(hello)
    }
}

/// What one peer announces, and when each announce was last made.
#[derive(Debug, Clone, Default)]
pub struct Announces {
    last: BTreeMap<DhtKey, u64>,
    /// DHT nodes known when the announces were last all made again.
    nodes: usize,
    renewed_at: u64,
    failed_at: Option<u64>,
}

/// One announce to make now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Network(DhtKey),
    File(Hash, DhtKey),
}

impl Due {
    pub fn key(&self) -> DhtKey {
        match self {
            Due::Network(k) | Due::File(_, k) => *k,
        }
    }
}

impl Announces {
    /// The announces due at `now_ms`, at most [`MAX_ANNOUNCES_PER_ROUND`]:
    /// the network's, then each of the newest [`MAX_FILE_ANNOUNCES`] shares
    /// (`shares` newest first) that was never announced or not within
    /// [`ANNOUNCE_REFRESH_MS`]; none for [`ANNOUNCE_BACKOFF_MS`] after a
    /// failure. Files no longer shared are forgotten, so a share added
    /// again is announced at once.
    pub fn due(&mut self, key: &NetworkKey, shares: &[Hash], now_ms: u64) -> Vec<Due> {
        if self.failed_at.is_some_and(|at| now_ms.saturating_sub(at) < ANNOUNCE_BACKOFF_MS) {
            return Vec::new();
        }
        let mut due = self.all_due(key, shares, now_ms);
        due.truncate(MAX_ANNOUNCES_PER_ROUND);
        due
    }

    fn all_due(&mut self, key: &NetworkKey, shares: &[Hash], now_ms: u64) -> Vec<Due> {
        let network = network_key(key);
        let files: Vec<(Hash, DhtKey)> = shares.iter().take(MAX_FILE_ANNOUNCES).map(|h| (*h, file_key(key, h))).collect();
        self.last.retain(|k, _| *k == network || files.iter().any(|(_, f)| f == k));
        let stale = |last: Option<&u64>| last.is_none_or(|t| now_ms.saturating_sub(*t) >= ANNOUNCE_REFRESH_MS);
        let mut due = Vec::new();
        if stale(self.last.get(&network)) {
            due.push(Due::Network(network));
        }
        due.extend(files.into_iter().filter(|(_, k)| stale(self.last.get(k))).map(|(h, k)| Due::File(h, k)));
        due
    }

    /// Records that `key` was announced at `now_ms`.
    pub fn made(&mut self, key: DhtKey, now_ms: u64) {
        self.last.insert(key, now_ms);
        self.failed_at = None;
    }

    /// Records a failed announce: the next waits [`ANNOUNCE_BACKOFF_MS`].
    pub fn failed(&mut self, now_ms: u64) {
        self.failed_at = Some(now_ms);
    }

    /// Tells the schedule how many DHT nodes this peer knows now; when that
    /// grew or shrank by half since the announces were last all made, they
    /// all fall due (at most every [`REANNOUNCE_MIN_GAP_MS`]). Returns
    /// whether they did.
    pub fn nodes_known(&mut self, nodes: usize, now_ms: u64) -> bool {
        if self.nodes == 0 {
            self.nodes = nodes;
            return false;
        }
        let moved = nodes * 2 >= self.nodes * 3 || nodes * 3 <= self.nodes * 2;
        if !moved || now_ms.saturating_sub(self.renewed_at) < REANNOUNCE_MIN_GAP_MS {
            return false;
        }
        self.last.clear();
        self.nodes = nodes;
        self.renewed_at = now_ms;
        true
    }

    /// How many keys are announced and not yet due again.
    pub fn count(&self) -> usize {
        self.last.len()
    }
}

/// Whether an announce stamped `stamped_us` (microseconds, as the mainline
/// DHT stamps signed announces) is recent enough at `now_ms` to believe.
pub fn fresh(stamped_us: u64, now_ms: u64) -> bool {
    let stamped_ms = stamped_us / 1000;
    now_ms.saturating_sub(stamped_ms) <= ANNOUNCE_MAX_AGE_MS && stamped_ms <= now_ms.saturating_add(MAX_FUTURE_SKEW_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> NetworkKey {
        NetworkKey::from_bytes([b; 32])
    }

    #[test]
    fn keys_differ_per_network_and_hide_the_hash() {
        let h = Hash::new("song");
        assert_ne!(file_key(&key(1), &h), file_key(&key(2), &h));
        assert_ne!(network_key(&key(1)), network_key(&key(2)));
        assert_ne!(file_key(&key(1), &h), file_key(&key(1), &Hash::new("other")));
        // The naive keys someone with only the hash would try.
        assert_ne!(&file_key(&key(1), &h)[..], &h.as_bytes()[..20]);
        assert_ne!(network_key(&key(1)), file_key(&key(1), &h));
        // Stable: the same key and hash always meet at the same place.
        assert_eq!(file_key(&key(1), &h), file_key(&key(1), &h));
    }

    #[test]
    fn hello_round_trips_and_is_bounded() {
        let hello = Hello { addrs: (0..40).map(|p| SocketAddrV4::new([127, 0, 0, 1].into(), 4000 + p)).collect() };
        let back = Hello::decode(&hello.encode()).unwrap();
        assert_eq!(back.addrs.len(), MAX_HELLO_ADDRS);
        assert_eq!(back.addrs[0], hello.addrs[0]);
        assert_eq!(Hello::decode(&[0xff; 3]), Err(HelloError::Malformed));
        assert_eq!(Hello::decode(&[0; MAX_HELLO_BYTES + 1]), Err(HelloError::TooLarge(MAX_HELLO_BYTES + 1)));
    }

    #[test]
    fn announces_are_capped_refreshed_and_forgotten() {
        let k = key(7);
        let shares: Vec<Hash> = (0..MAX_FILE_ANNOUNCES + 5).map(|i| Hash::new(i.to_string())).collect();
        let mut a = Announces::default();
        // Round by round, as the layer makes them.
        let mut made = Vec::new();
        loop {
            let due = a.due(&k, &shares, 0);
            assert!(due.len() <= MAX_ANNOUNCES_PER_ROUND);
            if due.is_empty() {
                break;
            }
            for d in &due {
                a.made(d.key(), 0);
            }
            made.extend(due);
        }
        assert_eq!(made.len(), 1 + MAX_FILE_ANNOUNCES, "the network and the newest shares, no more");
        assert_eq!(made[0], Due::Network(network_key(&k)));
        assert!(!made.iter().any(|d| *d == Due::File(shares[MAX_FILE_ANNOUNCES], file_key(&k, &shares[MAX_FILE_ANNOUNCES]))));
        assert!(a.due(&k, &shares, ANNOUNCE_REFRESH_MS - 1).is_empty(), "nothing is due before the refresh");
        assert_eq!(a.due(&k, &shares, ANNOUNCE_REFRESH_MS).len(), MAX_ANNOUNCES_PER_ROUND, "everything is due at the refresh");
        // Unsharing forgets; sharing again announces at once.
        let fewer = &shares[1..3];
        assert!(a.due(&k, fewer, 10).is_empty());
        assert_eq!(a.count(), 3);
        assert_eq!(a.due(&k, &shares[..3], 20), vec![Due::File(shares[0], file_key(&k, &shares[0]))]);
    }

    #[test]
    fn a_failure_backs_off_and_a_changed_dht_renews_everything() {
        let k = key(3);
        let shares = [Hash::new("a")];
        let mut a = Announces::default();
        a.failed(1_000);
        assert!(a.due(&k, &shares, 1_000 + ANNOUNCE_BACKOFF_MS - 1).is_empty());
        let due = a.due(&k, &shares, 1_000 + ANNOUNCE_BACKOFF_MS);
        assert_eq!(due.len(), 2);
        let t = 100_000;
        for d in &due {
            a.made(d.key(), t);
        }
        assert!(!a.nodes_known(4, t), "the first count is the baseline");
        assert!(!a.nodes_known(5, t + REANNOUNCE_MIN_GAP_MS), "a small change renews nothing");
        assert!(a.due(&k, &shares, t + REANNOUNCE_MIN_GAP_MS).is_empty());
        assert!(a.nodes_known(6, t + REANNOUNCE_MIN_GAP_MS), "half as many again renews everything");
        assert_eq!(a.due(&k, &shares, t + REANNOUNCE_MIN_GAP_MS).len(), 2);
        for d in a.due(&k, &shares, t + REANNOUNCE_MIN_GAP_MS) {
            a.made(d.key(), t + REANNOUNCE_MIN_GAP_MS);
        }
        assert!(!a.nodes_known(3, t + REANNOUNCE_MIN_GAP_MS + 1), "not again so soon");
        assert!(a.nodes_known(3, t + 2 * REANNOUNCE_MIN_GAP_MS), "half of them gone renews everything");
    }

    #[test]
    fn old_announces_are_not_believed() {
        let now_ms = 10 * ANNOUNCE_MAX_AGE_MS;
        assert!(fresh(now_ms * 1000, now_ms));
        assert!(fresh((now_ms - ANNOUNCE_MAX_AGE_MS) * 1000, now_ms));
        assert!(!fresh((now_ms - ANNOUNCE_MAX_AGE_MS - 1) * 1000, now_ms));
        // A clock slightly ahead is not a reason to refuse; far ahead is.
        assert!(fresh((now_ms + 5_000) * 1000, now_ms));
        assert!(!fresh((now_ms + MAX_FUTURE_SKEW_MS + 1) * 1000, now_ms));
    }
}
