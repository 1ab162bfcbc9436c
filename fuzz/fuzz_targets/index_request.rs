//! Index request frames, read as the index reads them (length prefix checked
//! against `MAX_REQUEST_FRAME` first), then the checks the index makes on a
//! request's names and query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peernet_fuzz::decode_both;
use peernet_proto::{index::Request, limits::MAX_REQUEST_FRAME, names, search};

fuzz_target!(|data: &[u8]| {
    for request in decode_both::<Request>(data, MAX_REQUEST_FRAME) {
        match request {
            Request::Join(join) => {
                let _ = names::validate_nickname(&join.nickname);
                let _ = join.addr.to_endpoint_addr();
            }
            Request::Rename { nickname } => {
                let _ = names::validate_nickname(&nickname);
            }
            Request::Publish { files } => {
                for file in files {
                    let _ = names::validate_file_name(&file.name);
                    let _ = search::terms(&file.name);
                }
            }
            Request::Search { query, .. } => {
                let _ = search::hash_prefix(&query);
                let words = search::words(&query);
                let _ = search::words_match(&words, &words);
            }
            _ => {}
        }
    }
});
