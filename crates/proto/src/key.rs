//! The network key: 32 secret bytes that define a peernet network.
//!
//! Whoever holds the ticket holds the key. The index admits a peer only with a
//! proof derived from the key, and the gossip topic is derived from it, so
//! nobody without the ticket can join the index or find the chat.

use iroh::EndpointId;
use serde::{Deserialize, Serialize};

/// Domain separation for the join proof.
const JOIN_CONTEXT: &[u8] = b"peernet/join/1";
/// Domain separation for the admission proof between two peers.
const ADMIT_CONTEXT: &[u8] = b"peernet/admit/1";
/// Domain separation for the relay's auth token.
const RELAY_CONTEXT: &[u8] = b"peernet/relay/1";
/// Domain separation for the gossip topic.
const TOPIC_CONTEXT: &str = "peernet 2026 gossip topic v1";
/// Domain separation for a LAN network's key, derived from its name; the
/// salt of that derivation (v2: Argon2id; v1 was a plain BLAKE3 hash).
const LAN_CONTEXT: &str = "peernet 2026 lan network key v2";
/// What one derivation of a LAN key costs: Argon2id with 64 MiB, 3
/// passes, 1 lane. Anyone on the LAN hears a network's mDNS service
/// name, which is derived from the key, so they can test guessed names
/// offline; each guess costs them this much. About 0.15 s on one core of
/// the project's 2-core test machine (`cargo run -p peernet-proto
/// --example lan_kdf`), paid once per start by a member: RFC 9106's
/// second recommended setting, with one lane. Changing any of these
/// changes every LAN network's key.
pub const LAN_KDF_MEMORY_KIB: u32 = 64 * 1024;
pub const LAN_KDF_PASSES: u32 = 3;
pub const LAN_KDF_LANES: u32 = 1;
/// Domain separation for the mDNS service name.
const MDNS_CONTEXT: &str = "peernet 2026 mdns service v1";

/// The LAN key derivation failed: with fixed, valid parameters and a
/// name of at most 64 characters, only when its memory cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("cannot derive the LAN network's key from its name (it needs {} MiB of memory); free some memory and start again", LAN_KDF_MEMORY_KIB / 1024)]
pub struct LanKeyError(#[source] argon2::Error);

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkKey([u8; 32]);

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret itself; the topic id is enough to tell keys apart.
        write!(f, "NetworkKey(topic {})", data_encoding::HEXLOWER.encode(&self.topic()[..4]))
    }
}

impl NetworkKey {
    pub fn generate() -> Self {
        Self(rand::random())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key of the LAN network called `name`. Anyone who knows (or
    /// guesses) the name derives the same key: a LAN network is as closed
    /// as its name is secret. The derivation is slow on purpose (see
    /// [`LAN_KDF_MEMORY_KIB`]): call it off an async runtime's workers.
    ///
    /// The salt is fixed, [`LAN_CONTEXT`]: every member must derive the
    /// same key from the same name, with nothing else shared, so there is
    /// nothing per network to salt with; a salt of peernet's own at least
    /// makes tables built for other programs useless here.
    pub fn from_lan_name(name: &str) -> Result<Self, LanKeyError> {
        let params = argon2::Params::new(LAN_KDF_MEMORY_KIB, LAN_KDF_PASSES, LAN_KDF_LANES, Some(32)).map_err(LanKeyError)?;
        let kdf = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        kdf.hash_password_into(name.trim().as_bytes(), LAN_CONTEXT.as_bytes(), &mut key).map_err(LanKeyError)?;
        Ok(Self(key))
    }

    /// The mDNS service this network's peers announce themselves under, so
    /// networks on one LAN stay apart. It is derived one way from the key,
    /// so hearing it on the LAN does not reveal the key.
    pub fn mdns_service(&self) -> String {
        let tag = blake3::derive_key(MDNS_CONTEXT, &self.0);
        format!("pn{}", data_encoding::HEXLOWER.encode(&tag[..6]))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Proof that `joiner` knows the key, bound to both ends of the connection
    /// so a proof overheard for one peer or one index is useless elsewhere.
    pub fn join_proof(&self, joiner: &EndpointId, index: &EndpointId) -> [u8; 32] {
        self.pair_proof(JOIN_CONTEXT, joiner, index)
    }

    /// A MAC under the network key of `context` and two ids, in order.
    fn pair_proof(&self, context: &[u8], first: &EndpointId, second: &EndpointId) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(context);
        hasher.update(first.as_bytes());
        hasher.update(second.as_bytes());
        *hasher.finalize().as_bytes()
    }

    /// Checks a join proof in constant time.
    pub fn verify_join(&self, joiner: &EndpointId, index: &EndpointId, proof: &[u8; 32]) -> bool {
        blake3::Hash::from(self.join_proof(joiner, index)) == blake3::Hash::from(*proof)
    }

    /// Proof that `from` knows the key, addressed to `to` alone: the
    /// admission exchange ([`crate::admission`]). The order of the two ids
    /// matters, so a proof `from` sent to `to` is neither valid for anyone
    /// else nor, reflected, a proof from `to` to `from`. The context differs
    /// from the join proof's, so neither can stand in for the other.
    pub fn admit_proof(&self, from: &EndpointId, to: &EndpointId) -> [u8; 32] {
        self.pair_proof(ADMIT_CONTEXT, from, to)
    }

    /// Checks an admission proof in constant time.
    pub fn verify_admit(&self, from: &EndpointId, to: &EndpointId, proof: &[u8; 32]) -> bool {
        blake3::Hash::from(self.admit_proof(from, to)) == blake3::Hash::from(*proof)
    }

    /// The token a member shows the root's relay: a proof that `member`
    /// knows the key, bound to the index (whose root runs the relay). The
    /// relay checks it against the key the TLS handshake authenticated, so
    /// a token seen on the wire is useless to anyone else. Hex, as it
    /// travels in an HTTP header.
    pub fn relay_token(&self, member: &EndpointId, index: &EndpointId) -> String {
        data_encoding::HEXLOWER.encode(&self.pair_proof(RELAY_CONTEXT, member, index))
    }

    /// Checks a relay token in constant time.
    pub fn verify_relay_token(&self, member: &EndpointId, index: &EndpointId, token: &str) -> bool {
        let Ok(bytes) = data_encoding::HEXLOWER.decode(token.as_bytes()) else { return false };
        let Ok(proof) = <[u8; 32]>::try_from(bytes.as_slice()) else { return false };
        blake3::Hash::from(self.pair_proof(RELAY_CONTEXT, member, index)) == blake3::Hash::from(proof)
    }

    /// The gossip topic of this network.
    pub fn topic(&self) -> [u8; 32] {
        blake3::derive_key(TOPIC_CONTEXT, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    #[test]
    fn proof_is_bound_to_key_and_both_ends() {
        let key = NetworkKey::generate();
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        let index = SecretKey::generate().public();
        let proof = key.join_proof(&a, &index);
        assert!(key.verify_join(&a, &index, &proof));
        assert!(!key.verify_join(&b, &index, &proof), "another peer cannot reuse it");
        assert!(!key.verify_join(&a, &b, &proof), "another index cannot reuse it");
        assert!(!NetworkKey::generate().verify_join(&a, &index, &proof), "wrong key");
    }

    #[test]
    fn admit_proof_is_bound_to_key_direction_and_both_ends() {
        let key = NetworkKey::generate();
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        let c = SecretKey::generate().public();
        let proof = key.admit_proof(&a, &b);
        assert!(key.verify_admit(&a, &b, &proof));
        assert!(!key.verify_admit(&b, &a, &proof), "a reflected proof is not the other side's");
        assert!(!key.verify_admit(&a, &c, &proof), "another receiver cannot reuse it");
        assert!(!key.verify_admit(&c, &b, &proof), "another sender cannot reuse it");
        assert!(!NetworkKey::generate().verify_admit(&a, &b, &proof), "wrong key");
        assert!(!key.verify_join(&a, &b, &proof), "an admission proof is no join proof");
        assert!(!key.verify_admit(&a, &b, &key.join_proof(&a, &b)), "a join proof is no admission proof");
    }

    #[test]
    fn relay_token_is_bound_to_key_member_and_index() {
        let key = NetworkKey::generate();
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        let index = SecretKey::generate().public();
        let token = key.relay_token(&a, &index);
        assert!(key.verify_relay_token(&a, &index, &token));
        assert!(!key.verify_relay_token(&b, &index, &token), "another endpoint cannot reuse it");
        assert!(!key.verify_relay_token(&a, &b, &token), "another root's relay refuses it");
        assert!(!NetworkKey::generate().verify_relay_token(&a, &index, &token), "wrong key");
        let join = data_encoding::HEXLOWER.encode(&key.join_proof(&a, &index));
        assert!(!key.verify_relay_token(&a, &index, &join), "a join proof is no relay token");
        for garbage in ["", "zz", &token[..10], &format!("{token}00")] {
            assert!(!key.verify_relay_token(&a, &index, garbage));
        }
    }

    #[test]
    fn lan_names_give_keys_and_services_apart() {
        let lan = |name| NetworkKey::from_lan_name(name).unwrap();
        let home = lan("home");
        assert_eq!(home, lan("home"), "the same name always gives the same key");
        assert_eq!(home, lan(" home "), "surrounding blanks do not count");
        assert_ne!(home, lan("Home"));
        assert_ne!(home.mdns_service(), lan("office").mdns_service());
        let service = home.mdns_service();
        assert!(service.len() <= 15 && service.chars().all(|c| c.is_ascii_alphanumeric()), "{service}");
        assert!(!service.contains(&data_encoding::HEXLOWER.encode(&home.as_bytes()[..6])));
    }

    #[test]
    fn lan_key_is_argon2id_of_the_name_not_the_old_fast_hash() {
        let key = NetworkKey::from_lan_name("kitchen").unwrap();
        // The old derivation, which let a guess cost one BLAKE3 call.
        assert_ne!(key.as_bytes(), &blake3::derive_key("peernet 2026 lan network key v1", b"kitchen"));
        // Pinned, so a change of crate version or parameters that would
        // split old and new peers of one LAN network fails here first.
        assert_eq!(data_encoding::HEXLOWER.encode(key.as_bytes()), PINNED_KITCHEN_KEY);
    }

    /// Argon2id (version 0x13, m = 64 MiB, t = 3, p = 1, salt =
    /// LAN_CONTEXT, 32 bytes) of "kitchen"; the reference C implementation
    /// (libargon2's `argon2id_hash_raw`) gives the same.
    const PINNED_KITCHEN_KEY: &str = "ffba69b86e21a1b170fb37403c753a2a471e4a583e254ef83a21ebb8a2b008d9";

    #[test]
    fn debug_does_not_leak_the_secret() {
        let key = NetworkKey::from_bytes([0xab; 32]);
        assert!(!format!("{key:?}").contains("abababab"));
    }
}
