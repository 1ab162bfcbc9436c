//! A single-file .torrent (BitTorrent v1) for the BitTorrent reference:
//! bencoded, SHA-1 piece hashes, and the info-hash a tracker whitelists.

use std::{io::Read, path::Path};

use anyhow::Context;

/// 1 MiB pieces, as common clients pick for files of this size.
const PIECE: usize = 1 << 20;

/// The torrent file's bytes and its info-hash.
pub fn make(file: &Path, announce: &str) -> anyhow::Result<(Vec<u8>, [u8; 20])> {
    let name = file.file_name().context("file has a name")?.to_string_lossy().into_owned();
    let mut f = std::fs::File::open(file)?;
    let mut pieces = Vec::new();
    let mut buf = vec![0u8; PIECE];
    let mut length = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        length += n as u64;
        pieces.extend_from_slice(&sha1_smol::Sha1::from(&buf[..n]).digest().bytes());
        if n < PIECE {
            break;
        }
    }
    let mut info = Vec::new();
    info.extend_from_slice(b"d");
    bytes(&mut info, b"length");
    int(&mut info, length);
    bytes(&mut info, b"name");
    bytes(&mut info, name.as_bytes());
    bytes(&mut info, b"piece length");
    int(&mut info, PIECE as u64);
    bytes(&mut info, b"pieces");
    bytes(&mut info, &pieces);
    info.extend_from_slice(b"e");
    let info_hash = sha1_smol::Sha1::from(&info).digest().bytes();
    let mut torrent = Vec::new();
    torrent.extend_from_slice(b"d");
    bytes(&mut torrent, b"announce");
    bytes(&mut torrent, announce.as_bytes());
    bytes(&mut torrent, b"info");
    torrent.extend_from_slice(&info);
    torrent.extend_from_slice(b"e");
    Ok((torrent, info_hash))
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("{}:", b.len()).as_bytes());
    out.extend_from_slice(b);
}

fn int(out: &mut Vec<u8>, i: u64) {
    out.extend_from_slice(format!("i{i}e").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_file_makes_a_well_formed_torrent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, vec![7u8; PIECE + 5]).unwrap();
        let (t, hash) = make(&path, "http://127.0.0.1:1/announce").unwrap();
        let text = String::from_utf8_lossy(&t);
        assert!(text.starts_with("d8:announce27:http://127.0.0.1:1/announce4:infod6:lengthi1048581e4:name5:f.bin"));
        // Two pieces, 20 bytes each.
        assert!(text.contains("6:pieces40:"));
        let info_start = t.windows(5).position(|w| w == b"infod").unwrap() + 4;
        assert_eq!(sha1_smol::Sha1::from(&t[info_start..t.len() - 1]).digest().bytes(), hash);
    }
}
