//! The control API's request bodies, decoded as the daemon decodes them:
//! JSON for POST bodies, a URL query string for `search` and `messages`.
//! Whatever decodes must encode again and decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peernet_proto::control::{GetRequest, MessagesQuery, NickRequest, SayRequest, SearchQuery, ShareRequest, UnshareRequest};
use serde::{de::DeserializeOwned, Serialize};

fn json<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let again: T = serde_json::from_slice(&serde_json::to_vec(&value).expect("a decoded body encodes")).expect("and decodes");
        assert_eq!(again, value);
    }
}

fn query<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(value) = serde_urlencoded::from_bytes::<T>(data) {
        if let Ok(encoded) = serde_urlencoded::to_string(&value) {
            let again: T = serde_urlencoded::from_str(&encoded).expect("an encoded query decodes");
            assert_eq!(again, value);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    match which % 7 {
        0 => json::<ShareRequest>(body),
        1 => json::<UnshareRequest>(body),
        2 => json::<GetRequest>(body),
        3 => json::<SayRequest>(body),
        4 => json::<NickRequest>(body),
        5 => query::<SearchQuery>(body),
        _ => query::<MessagesQuery>(body),
    }
});
