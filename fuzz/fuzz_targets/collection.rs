//! A shared folder as a downloader meets it: an iroh-blobs `Collection`
//! loaded from a store the way the node loads one (`Collection::load`: the
//! root hash sequence, then the metadata blob it names), then every entry's
//! path through `save::safe_relative` and the name sanitizer.
#![no_main]

use arbitrary::Arbitrary;
use iroh_blobs::{format::collection::Collection, Hash};
use libfuzzer_sys::fuzz_target;
use peernet_fuzz::{assert_stays_inside, block_on, save::safe_relative, MemStore};
use peernet_proto::names::{sanitize_file_name, validate_file_name};

#[derive(Debug, Arbitrary)]
enum Meta {
    /// Well-formed metadata with these names.
    Names(Vec<String>),
    /// Any bytes where the metadata blob should be.
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Input {
    meta: Meta,
    /// Child hashes after the metadata's; `None` for a blob the store lacks.
    links: Vec<Option<u8>>,
    /// Any bytes as the root hash sequence instead of a well-formed one.
    raw_root: Option<Vec<u8>>,
}

fuzz_target!(|input: Input| {
    let mut store = MemStore::default();
    let meta = match input.meta {
        Meta::Names(names) => {
            let mut meta = iroh_blobs::format::collection::CollectionMeta::default();
            *meta.names_mut() = names;
            postcard::to_stdvec(&meta).expect("metadata encodes")
        }
        Meta::Raw(bytes) => bytes,
    };
    let meta_hash = store.add(meta);
    let root = match input.raw_root {
        Some(raw) => raw,
        None => {
            let mut seq = meta_hash.as_bytes().to_vec();
            for link in input.links.iter().take(4096) {
                let child = match link {
                    Some(b) => store.add(vec![*b]),
                    None => Hash::new([0xee; 3]),
                };
                seq.extend_from_slice(child.as_bytes());
            }
            seq
        }
    };
    let root_hash = store.add(root);
    let Ok(collection) = block_on(Collection::load(root_hash, &store)) else { return };
    for (name, _) in collection.iter() {
        if let Some(relative) = safe_relative(name) {
            assert_stays_inside(name, &relative);
        }
        let top = sanitize_file_name(name, "fallback");
        assert!(validate_file_name(&top).is_ok(), "{name:?} sanitized to the invalid {top:?}");
    }
});
