//! Every limit peernet enforces, in one place so they can be documented and
//! changed together. The README's "Limits" section lists these values.

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

/// A LAN network's name shorter than this many characters draws a warning
/// when a peer starts: its key comes from the name alone, and anyone on
/// the LAN can try names offline against the mDNS service name they hear.
/// Twelve characters rule out a single common word (few are longer) and
/// push towards two or three uncommon ones.
pub const LAN_NAME_SHORT_CHARS: usize = 12;
