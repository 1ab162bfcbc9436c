//! Reading endpoint ids off the wire without checking the same key twice.
//!
//! iroh checks every endpoint id it deserializes: the 32 bytes must be a
//! point on the ed25519 curve, and finding that out is a square root in the
//! curve's field. A search answer names a provider per hit, and the same
//! providers come back search after search, so a member that searches paid
//! that check twenty times an answer: in the index bench, whose clients
//! share the machine with the index, it was a seventh of the whole
//! machine's time (see docs/benchmarks.md, the index section). Each thread keeps the
//! keys it already checked, up to [`KNOWN_KEYS`], so a key is checked once.
//! Only ids inside a [`crate::index::PeerAddr`] are read this way; lists of
//! bare ids (neighbours, map links) are still checked every time.
//!
//! Nothing is trusted that was not checked: an id comes out of the cache
//! only if the same 32 bytes passed iroh's own check before.

use std::{cell::RefCell, collections::HashMap};

use iroh::EndpointId;
use serde::{Deserialize, Deserializer};

/// Checked keys each thread remembers; when full it forgets them all and
/// starts again (a bound, not a policy: a network's providers fit).
pub const KNOWN_KEYS: usize = 4096;

thread_local! {
    static CHECKED: RefCell<HashMap<[u8; 32], EndpointId>> = RefCell::new(HashMap::new());
}

/// The endpoint id for `bytes`, checked by iroh unless this thread already
/// checked the same bytes.
pub fn endpoint_id(bytes: [u8; 32]) -> Result<EndpointId, iroh::KeyParsingError> {
    // `try_with`: a thread that is ending has no cache left and checks.
    if let Some(id) = CHECKED.try_with(|known| known.borrow().get(&bytes).copied()).ok().flatten() {
        return Ok(id);
    }
    let id = EndpointId::from_bytes(&bytes)?;
    let _ = CHECKED.try_with(|known| {
        let mut known = known.borrow_mut();
        if known.len() >= KNOWN_KEYS {
            known.clear();
        }
        known.insert(bytes, id);
    });
    Ok(id)
}

/// For `#[serde(deserialize_with)]`: as iroh's own `Deserialize`, with the
/// binary form going through [`endpoint_id`]. The human-readable form
/// (JSON) is left to iroh.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<EndpointId, D::Error> {
    if deserializer.is_human_readable() {
        return EndpointId::deserialize(deserializer);
    }
    let bytes = <[u8; 32]>::deserialize(deserializer)?;
    endpoint_id(bytes).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_key_is_the_same_id_and_a_bad_one_is_refused_every_time() {
        let id = iroh::SecretKey::generate().public();
        assert_eq!(endpoint_id(*id.as_bytes()).unwrap(), id);
        assert_eq!(endpoint_id(*id.as_bytes()).unwrap(), id, "from the cache");
        // Not a point on the curve (y = 2 has no x): never cached, always refused.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        assert!(EndpointId::from_bytes(&bad).is_err(), "the test needs bytes iroh refuses");
        assert!(endpoint_id(bad).is_err());
        assert!(endpoint_id(bad).is_err());
    }

    #[test]
    fn the_cache_stays_bounded() {
        for _ in 0..KNOWN_KEYS + 10 {
            endpoint_id(*iroh::SecretKey::generate().public().as_bytes()).unwrap();
        }
        assert!(CHECKED.with_borrow(|known| known.len()) <= KNOWN_KEYS);
    }
}
