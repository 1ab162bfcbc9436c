//! The admission protocol, `peernet/admit/1`: who is a member of a network.
//!
//! Goals: a peer serves its protocols (blobs, flood, gossip, anything added
//! later) only to keys that proved they hold the network key, and a peer
//! talks only to keys that proved the same back. The proof works peer to
//! peer, with the index down or without any index, and a member that joined
//! a second ago is admitted on its first connect.
//!
//! Non-goals: telling members apart (anyone holding the key is a member;
//! excluding someone needs a new network key), hiding that a peer exists
//! (an outsider learns the refusal), and the index's own door: the index
//! checks its own [`Join`](crate::index::Join) proof.
//!
//! Wire format: the dialing peer opens a connection on [`ALPN`] and one
//! bidirectional stream, writes one frame ([`crate::frame`]: u32 big-endian
//! length, postcard body, at most [`MAX_ADMIT_FRAME`] bytes) holding a
//! [`Hello`] with
//! [`NetworkKey::admit_proof(dialer, receiver)`](crate::key::NetworkKey::admit_proof),
//! and finishes its side. The receiver checks the proof against the
//! connection's authenticated remote id and answers one [`Reply`]:
//! [`Reply::Welcome`] with its own proof
//! `admit_proof(receiver, dialer)` (admission is mutual: the dialer learns
//! that it talks to a member too), or [`Reply::Refused`] with a reason, and
//! closes the connection with [`close_code::REFUSED`]. Both proofs are bound
//! to both endpoint ids in order, so a proof is worth nothing to anyone else
//! and a reflected proof is not the other side's.
//!
//! Enforcement lives outside this exchange: every connection on any other
//! ALPN whose remote has not proved membership is closed right after the TLS
//! handshake with [`close_code::NOT_MEMBER`] and [`NOT_MEMBER_REASON`]; the
//! index ALPN and this one are the only exceptions.
//!
//! Cost: one extra round trip (and one short-lived connection) per new pair
//! of peers, repeated for a pair at most every [`REPROVE_AFTER_SECS`] when
//! they open new connections (so a peer that restarted and forgot us is
//! proved to again soon). A peer remembers at most [`MAX_ADMITTED`] admitted
//! keys, the least recently seen forgotten first; a forgotten member simply
//! proves again.

use serde::{Deserialize, Serialize};

/// The ALPN of the admission exchange.
pub const ALPN: &[u8] = b"peernet/admit/1";
/// Largest admission frame: a proof, or a refusal with its reason.
pub const MAX_ADMIT_FRAME: usize = 256;
/// Longest refusal reason sent, in bytes.
pub const MAX_REASON_LEN: usize = 160;
/// Most admitted keys a peer remembers; the least recently seen is forgotten
/// first when a new one arrives.
pub const MAX_ADMITTED: usize = 4096;
/// How long a dialer trusts that a peer still remembers it before proving
/// again on a new connection. A peer that restarted has forgotten everyone;
/// this bounds how long others may be refused by it.
pub const REPROVE_AFTER_SECS: u64 = 30;
/// How long one whole exchange may take, connect included.
pub const ADMIT_TIMEOUT_SECS: u64 = 10;

/// The reason sent with [`close_code::NOT_MEMBER`].
pub const NOT_MEMBER_REASON: &str =
    "not a member of this network: this peer serves only keys that proved the network key (join with the network's ticket)";

/// QUIC application close codes of admission.
pub mod close_code {
    /// The exchange is over and the proof was accepted.
    pub const ADMITTED: u32 = 0;
    /// The proof was refused (wrong key, malformed or missing frame).
    pub const REFUSED: u32 = 1;
    /// A connection on another ALPN from a key that has not proved membership.
    pub const NOT_MEMBER: u32 = 403;
}

/// The dialer's proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub proof: [u8; 32],
}

/// The receiver's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Admitted; the receiver's own proof to the dialer.
    Welcome { proof: [u8; 32] },
    /// Not admitted, and why.
    Refused { reason: String },
}

impl Reply {
    /// A refusal, its reason cut to [`MAX_REASON_LEN`] on a character
    /// boundary so the frame always fits.
    pub fn refused(reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Reply::Refused { reason: reason[..end].to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_within_the_limit() {
        let hello = Hello { proof: [7; 32] };
        let bytes = frame::encode(&hello, MAX_ADMIT_FRAME).unwrap();
        assert_eq!(frame::decode::<Hello>(&bytes[frame::PREFIX_LEN..]).unwrap(), hello);
        for reply in [Reply::Welcome { proof: [9; 32] }, Reply::refused(&"é".repeat(500))] {
            let bytes = frame::encode(&reply, MAX_ADMIT_FRAME).unwrap();
            assert_eq!(frame::decode::<Reply>(&bytes[frame::PREFIX_LEN..]).unwrap(), reply);
        }
    }

    #[test]
    fn refusal_reasons_are_cut_on_a_character_boundary() {
        let Reply::Refused { reason } = Reply::refused(&"é".repeat(500)) else { panic!("a refusal") };
        assert!(reason.len() <= MAX_REASON_LEN && reason.len() >= MAX_REASON_LEN - 1);
        assert!(reason.chars().all(|c| c == 'é'));
        assert_eq!(Reply::refused("short"), Reply::Refused { reason: "short".into() });
    }

    #[test]
    fn the_not_member_reason_says_so() {
        assert!(NOT_MEMBER_REASON.starts_with("not a member of this network: "));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = frame::decode::<Hello>(&bytes);
            let _ = frame::decode::<Reply>(&bytes);
        }

        #[test]
        fn replies_round_trip(proof in any::<[u8; 32]>(), reason in "\\PC{0,200}", welcome in any::<bool>()) {
            let reply = if welcome { Reply::Welcome { proof } } else { Reply::refused(&reason) };
            let bytes = frame::encode(&reply, MAX_ADMIT_FRAME).unwrap();
            prop_assert_eq!(frame::decode::<Reply>(&bytes[frame::PREFIX_LEN..]).unwrap(), reply);
        }
    }
}
