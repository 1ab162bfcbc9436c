//! Every limit peernet enforces, in one place so they can be documented and
//! changed together. docs/security.md, "Limits", lists these values.

/// Largest request frame the index accepts (bytes after the length prefix).
/// A Publish of [`MAX_FILES_PER_PUBLISH`] files with the longest names fits.
pub const MAX_REQUEST_FRAME: usize = 256 * 1024;

/// Largest response frame a client accepts. An Online page of
/// [`ONLINE_PAGE_PEERS`] peers with [`MAX_FILES_PER_PEER`] files each fits.
pub const MAX_RESPONSE_FRAME: usize = 4 * 1024 * 1024;

/// Nicknames are 1 to 32 printable characters.
pub const MAX_NICKNAME_CHARS: usize = 32;

/// A file name is at most 255 bytes of UTF-8, like most file systems allow.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// How many files one peer may have registered at the index at once.
pub const MAX_FILES_PER_PEER: usize = 1000;

/// How many files one Publish request may carry; clients send larger sets in
/// several requests.
pub const MAX_FILES_PER_PUBLISH: usize = 256;

/// Longest search query, in bytes.
pub const MAX_QUERY_BYTES: usize = 256;

/// Most hits one search returns.
pub const MAX_SEARCH_LIMIT: u32 = 100;

/// Peers per Online page.
pub const ONLINE_PAGE_PEERS: u32 = 4;

/// Most peers one Referral returns.
pub const MAX_REFERRAL: u32 = 32;

/// Most addresses a peer may advertise.
pub const MAX_ADDRS_PER_PEER: usize = 16;

/// Most concurrent connections the index serves; more are refused.
pub const MAX_INDEX_CONNECTIONS: usize = 4096;

/// Most requests in flight on one index connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// Shortest hash prefix accepted as a hash search (hex characters).
pub const MIN_HASH_PREFIX: usize = 6;

/// Longest relay URL a peer may advertise, in bytes (real ones are a few
/// dozen; every search answer naming the peer carries it).
pub const MAX_RELAY_URL_BYTES: usize = 256;

/// Most providers one search hit names: the 16 that registered the file
/// longest ago and the 16 newest, so that neither keys registered early
/// nor a burst of new keys can keep the others out, and a search answer
/// of [`MAX_SEARCH_LIMIT`] hits stays far below [`MAX_RESPONSE_FRAME`].
pub const MAX_PROVIDERS_PER_HIT: usize = 32;

/// Connections to the index whose key has not joined yet (a member whose
/// lease has run out and a newcomer, or an outsider), served at once, all
/// addresses together. They come from their own pool, so they can never
/// take a member's place among [`MAX_INDEX_CONNECTIONS`].
pub const MAX_UNJOINED_CONNECTIONS: usize = 256;

/// Connections to the index that have not joined, from one address (one
/// IPv4 address, or one /64 of IPv6) or, through the relay, one key.
pub const MAX_UNJOINED_PER_ADDRESS: usize = 16;

/// Connections to the index that one joined key may hold at once.
pub const MAX_CONNECTIONS_PER_KEY: usize = 8;

/// A LAN network's name shorter than this many characters draws a warning
/// when a peer starts: its key comes from the name alone, and anyone on
/// the LAN can try names offline against the mDNS service name they hear.
/// Twelve characters rule out a single common word (few are longer) and
/// push towards two or three uncommon ones.
pub const LAN_NAME_SHORT_CHARS: usize = 12;
