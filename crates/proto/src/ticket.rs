//! The join ticket: everything a newcomer needs to join a network.
//!
//! A ticket holds the index's address (key, direct addresses, optional
//! relay), the network key and, when the network's root runs a relay, what
//! members need to reach and trust it ([`RelayInfo`]). Its text form is a
//! prefix naming the format, then lowercase base32 of the postcard
//! encoding plus a 4-byte BLAKE3 checksum, so a truncated or mistyped ticket
//! is caught before anything dials out. A ticket is a secret: anyone holding
//! it can join.
//!
//! Formats:
//! - `peernet1`: the index's address and the network key (the first
//!   format; still read, never written).
//! - `peernet2`: a `version` number first, then the index, the key and the
//!   relay. The format grows at its end: a later peernet may append fields,
//!   which this one skips. `version` is the oldest reader that can use the
//!   ticket; a ticket whose version is newer than [`VERSION`] is refused
//!   with a sentence asking for an upgrade, instead of being half read.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{index::PeerAddr, key::NetworkKey};

const PREFIX_V1: &str = "peernet1";
const PREFIX: &str = "peernet2";
const CHECKSUM_LEN: usize = 4;
/// The ticket version this peernet writes, and the newest it reads.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub index: PeerAddr,
    pub network_key: NetworkKey,
    /// The relay the network's members use, when its root runs one (or
    /// names one).
    pub relay: Option<RelayInfo>,
}

/// What a member needs to reach and trust the network's relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// `https://HOST:PORT`, where members reach the relay over TCP.
    pub url: String,
    /// SHA-256 of the relay's certificate (DER) when the root made it
    /// itself: members trust exactly that certificate, whatever name it is
    /// reached by. `None`: the relay has a certificate that ordinary
    /// certificate authorities vouch for.
    pub cert_sha256: Option<[u8; 32]>,
    /// The UDP port of the relay's QUIC address discovery (which tells a
    /// peer behind NAT its public address, for hole punching), if offered.
    pub quic_port: Option<u16>,
}

/// The `peernet2` body. New fields go at the end.
#[derive(Serialize, Deserialize)]
struct WireV2 {
    version: u32,
    index: PeerAddr,
    network_key: NetworkKey,
    relay: Option<RelayInfo>,
}

/// The `peernet1` body.
#[derive(Serialize, Deserialize)]
struct WireV1 {
    index: PeerAddr,
    network_key: NetworkKey,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error(
        "this is not a peernet ticket: a ticket starts with '{PREFIX}' (or '{PREFIX_V1}'); copy the whole line printed by `peernet up` or `peernet index`"
    )]
    WrongPrefix,
    #[error("the ticket contains a character that cannot appear in a ticket ({0}); copy it again")]
    BadEncoding(String),
    #[error("the ticket is incomplete: characters at its end are missing; copy the whole line again")]
    Truncated,
    #[error("the ticket is damaged or incomplete (checksum mismatch); copy it again")]
    Checksum,
    #[error("the ticket is from an incompatible peernet version: {0}")]
    Unreadable(String),
    #[error("the ticket needs a newer peernet (ticket version {0}, this peernet reads up to {VERSION}); upgrade peernet")]
    TooNew(u32),
}

fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let h = blake3::hash(body);
    h.as_bytes()[..CHECKSUM_LEN].try_into().expect("hash is 32 bytes")
}

/// `prefix` + base32(body + checksum).
fn armor(prefix: &str, body: &[u8]) -> String {
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&checksum(body));
    format!("{prefix}{}", data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase())
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wire = WireV2 { version: VERSION, index: self.index.clone(), network_key: self.network_key, relay: self.relay.clone() };
        let body = postcard::to_stdvec(&wire).map_err(|_| fmt::Error)?;
        f.write_str(&armor(PREFIX, &body))
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (v1, rest) = match (s.strip_prefix(PREFIX), s.strip_prefix(PREFIX_V1)) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => return Err(TicketError::WrongPrefix),
        };
        let bytes = data_encoding::BASE32_NOPAD.decode(rest.to_ascii_uppercase().as_bytes()).map_err(|e| match e.kind {
            // A length no encoding has, or a last character whose unused
            // bits are set: the copy lost its last characters.
            data_encoding::DecodeKind::Length | data_encoding::DecodeKind::Trailing => TicketError::Truncated,
            _ => {
                let at = e.position + (s.len() - rest.len());
                let c = s.get(at..).and_then(|t| t.chars().next()).map(|c| format!("{c:?} at position {}", at + 1));
                TicketError::BadEncoding(c.unwrap_or_else(|| format!("at position {}", at + 1)))
            }
        })?;
        if bytes.len() < CHECKSUM_LEN {
            return Err(TicketError::Checksum);
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if checksum(body) != sum {
            return Err(TicketError::Checksum);
        }
        let unreadable = |e: postcard::Error| TicketError::Unreadable(e.to_string());
        if v1 {
            let wire: WireV1 = postcard::from_bytes(body).map_err(unreadable)?;
            return Ok(Ticket { index: wire.index, network_key: wire.network_key, relay: None });
        }
        // The version comes first, so a newer ticket is recognised even
        // when the rest has changed shape.
        let (version, _) = postcard::take_from_bytes::<u32>(body).map_err(unreadable)?;
        if version > VERSION {
            return Err(TicketError::TooNew(version));
        }
        // Fields a later version appended are left unread.
        let wire: WireV2 = postcard::from_bytes(body).map_err(unreadable)?;
        Ok(Ticket { index: wire.index, network_key: wire.network_key, relay: wire.relay })
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
            relay: Some(RelayInfo { url: "https://relay.example.net:3340".into(), cert_sha256: Some([7; 32]), quic_port: Some(3340) }),
        }
    }

    fn v2_body(version: u32, t: &Ticket) -> Vec<u8> {
        let wire = WireV2 { version, index: t.index.clone(), network_key: t.network_key, relay: t.relay.clone() };
        postcard::to_stdvec(&wire).unwrap()
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let text = t.to_string();
        assert!(text.starts_with("peernet2"));
        assert_eq!(text.parse::<Ticket>().unwrap(), t);
        assert_eq!(format!("  {text}\n").parse::<Ticket>().unwrap(), t, "whitespace is forgiven");
        let plain = Ticket { relay: None, ..t };
        assert_eq!(plain.to_string().parse::<Ticket>().unwrap(), plain);
    }

    /// A ticket printed by peernet before tickets had versions (the sample's
    /// index and key, printed by commit 5f1433f's `Ticket::to_string`).
    const OLD_TICKET: &str = "peernet15vesrrri2hbmn2xjam4jawmvmeuvsjz2lrr7snrwyfdbjlehg7iqead7aaaadia7aeaaaaaaaaaaaaaaaaaaaaaaaaa2ahyabeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbee6i6536a";

    #[test]
    fn tickets_of_the_first_format_still_work() {
        let t: Ticket = OLD_TICKET.parse().expect("an old ticket parses");
        assert_eq!(t, Ticket { relay: None, ..sample() });
        let body = postcard::to_stdvec(&WireV1 { index: t.index.clone(), network_key: t.network_key }).unwrap();
        assert_eq!(armor(PREFIX_V1, &body), OLD_TICKET, "the first format is read as it was written");
    }

    #[test]
    fn a_ticket_from_a_newer_peernet_is_refused_with_a_sentence() {
        let text = armor(PREFIX, &v2_body(VERSION + 1, &sample()));
        let err = text.parse::<Ticket>().unwrap_err();
        assert_eq!(err, TicketError::TooNew(VERSION + 1));
        assert!(err.to_string().contains("upgrade peernet"), "{err}");
    }

    #[test]
    fn fields_a_later_version_appends_are_skipped() {
        let mut body = v2_body(VERSION, &sample());
        body.extend_from_slice(&[1, 2, 3, 0xff, 0x80, 9]);
        assert_eq!(armor(PREFIX, &body).parse::<Ticket>().unwrap(), sample());
    }

    #[test]
    fn damage_is_detected() {
        let text = sample().to_string();
        assert_eq!("hello".parse::<Ticket>(), Err(TicketError::WrongPrefix));
        let at = text.len() / 3;
        let bad = format!("{}!{}", &text[..at], &text[at + 1..]).parse::<Ticket>().unwrap_err();
        assert_eq!(bad, TicketError::BadEncoding(format!("'!' at position {}", at + 1)));
        // A copy that lost its last characters is called incomplete, never
        // a ticket with characters that cannot appear.
        for missing in 1..=8 {
            let truncated = &text[..text.len() - missing];
            let err = truncated.parse::<Ticket>().unwrap_err();
            assert!(matches!(err, TicketError::Truncated | TicketError::Checksum), "{missing} missing: {err}");
            assert!(err.to_string().contains("incomplete"), "{err}");
        }
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
        armor(PREFIX, body)
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
