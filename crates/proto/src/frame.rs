//! Length-prefixed frames: a 4-byte big-endian length, then a postcard body.
//!
//! The length is checked against the caller's maximum before the body is read,
//! so an oversized prefix costs the receiver nothing. The async read and write
//! halves live with the code that owns the streams; this module holds the
//! pure parts both sides share.

use serde::{de::DeserializeOwned, Serialize};

/// Size of the length prefix in bytes.
pub const PREFIX_LEN: usize = 4;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame body is malformed: {0}")]
    Malformed(String),
}

/// Encodes `msg` as prefix + body, refusing bodies larger than `max`.
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    check_len(body.len() as u64, max)?;
    let mut out = Vec::with_capacity(PREFIX_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the body length from a prefix and checks it against `max`.
pub fn body_len(prefix: [u8; PREFIX_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as u64;
    check_len(len, max)?;
    Ok(len as usize)
}

fn check_len(len: u64, max: usize) -> Result<(), FrameError> {
    if len > max as u64 {
        return Err(FrameError::TooLarge { len: len as usize, max });
    }
    Ok(())
}

/// Decodes a body; trailing bytes are an error so that two merged frames can
/// never be mistaken for one.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!("{} unexpected bytes after the message", rest.len())));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let msg = (String::from("hello"), 42u64);
        let bytes = encode(&msg, 1024).unwrap();
        let len = body_len(bytes[..4].try_into().unwrap(), 1024).unwrap();
        assert_eq!(len, bytes.len() - 4);
        let back: (String, u64) = decode(&bytes[4..]).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading() {
        let err = body_len(u32::MAX.to_be_bytes(), 1024).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 1024, .. }));
    }

    #[test]
    fn oversized_message_is_not_encoded() {
        let big = vec![7u8; 2000];
        assert!(matches!(encode(&big, 1024), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        let r: Result<(String, u64), _> = decode(&[0xff, 0xff, 0xff]);
        assert!(matches!(r, Err(FrameError::Malformed(_))));
        let mut bytes = postcard::to_stdvec(&5u8).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<u8>(&bytes), Err(FrameError::Malformed(_))));
    }
}
