//! The join ticket: everything a newcomer needs to join a network.
//!
//! A ticket holds the index's address (key, direct addresses, optional
//! relay) and the network key. Its text form is `peernet1` followed by
//! lowercase base32 of the postcard encoding plus a 4-byte BLAKE3 checksum,
//! so a truncated or mistyped ticket is caught before anything dials out.
//! A ticket is a secret: anyone holding it can join.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{index::PeerAddr, key::NetworkKey};

const PREFIX: &str = "peernet1";
const CHECKSUM_LEN: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub index: PeerAddr,
    pub network_key: NetworkKey,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error(
        "this is not a peernet ticket: a ticket starts with '{PREFIX}'; copy the whole line printed by `peernet up` or `peernet index`"
    )]
    WrongPrefix,
    #[error("the ticket contains characters that cannot appear in a ticket; copy it again")]
    BadEncoding,
    #[error("the ticket is damaged or incomplete (checksum mismatch); copy it again")]
    Checksum,
    #[error("the ticket is from an incompatible peernet version: {0}")]
    Unreadable(String),
}

fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let h = blake3::hash(body);
    h.as_bytes()[..CHECKSUM_LEN].try_into().expect("hash is 32 bytes")
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = postcard::to_stdvec(self).map_err(|_| fmt::Error)?;
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum);
        let text = data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
        write!(f, "{PREFIX}{text}")
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let rest = s.strip_prefix(PREFIX).ok_or(TicketError::WrongPrefix)?;
        let bytes = data_encoding::BASE32_NOPAD.decode(rest.to_ascii_uppercase().as_bytes()).map_err(|_| TicketError::BadEncoding)?;
        if bytes.len() < CHECKSUM_LEN {
            return Err(TicketError::Checksum);
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if checksum(body) != sum {
            return Err(TicketError::Checksum);
        }
        postcard::from_bytes(body).map_err(|e| TicketError::Unreadable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ticket {
        Ticket {
            index: PeerAddr {
                id: iroh::SecretKey::from_bytes(&[3; 32]).public(),
                ip: vec!["127.0.0.1:4000".parse().unwrap(), "[::1]:4000".parse().unwrap()],
                relay: None,
            },
            network_key: NetworkKey::from_bytes([9; 32]),
        }
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let text = t.to_string();
        assert!(text.starts_with("peernet1"));
        assert_eq!(text.parse::<Ticket>().unwrap(), t);
        assert_eq!(format!("  {text}\n").parse::<Ticket>().unwrap(), t, "whitespace is forgiven");
    }

    #[test]
    fn damage_is_detected() {
        let text = sample().to_string();
        assert_eq!("hello".parse::<Ticket>(), Err(TicketError::WrongPrefix));
        assert_eq!(format!("{text}!").parse::<Ticket>(), Err(TicketError::BadEncoding));
        let truncated = &text[..text.len() - 8];
        assert!(truncated.parse::<Ticket>().is_err());
        // Flip one character in the middle.
        let mut chars: Vec<char> = text.chars().collect();
        let mid = chars.len() / 2;
        chars[mid] = if chars[mid] == 'a' { 'b' } else { 'a' };
        let flipped: String = chars.into_iter().collect();
        assert_eq!(flipped.parse::<Ticket>(), Err(TicketError::Checksum));
    }

    /// A ticket with a correct checksum around `body`, as a pasted ticket
    /// from another version (or a hostile one) could be.
    fn checksummed(body: &[u8]) -> String {
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(&checksum(body));
        format!("{PREFIX}{}", data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase())
    }

    proptest::proptest! {
        /// Any text: no panic. Random text almost never passes the
        /// checksum, so bodies with a valid checksum are tried too, and
        /// whatever parses prints as a ticket that parses back to itself.
        #[test]
        fn random_text_never_panics(text in "\\PC{0,120}", body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = text.parse::<Ticket>();
            let _ = format!("{PREFIX}{text}").parse::<Ticket>();
            if let Ok(t) = checksummed(&body).parse::<Ticket>() {
                proptest::prop_assert_eq!(t.to_string().parse::<Ticket>(), Ok(t));
            }
        }

        #[test]
        fn damaged_tickets_never_panic(at in proptest::prelude::any::<usize>(), c in proptest::prelude::any::<char>()) {
            let mut chars: Vec<char> = sample().to_string().chars().collect();
            let at = at % chars.len();
            chars[at] = c;
            let damaged: String = chars.into_iter().collect();
            if let Ok(t) = damaged.parse::<Ticket>() {
                proptest::prop_assert_eq!(t, sample(), "a damaged ticket parsed as another one");
            }
        }
    }
}
