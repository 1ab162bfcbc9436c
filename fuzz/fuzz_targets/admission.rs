//! The admission exchange (`peernet/admit/1`): a `Hello` read as the
//! receiving peer reads it, checked as a proof, and a `Reply` read as the
//! dialer reads it, both within `MAX_ADMIT_FRAME`.
#![no_main]

use iroh::SecretKey;
use libfuzzer_sys::fuzz_target;
use peernet_fuzz::decode_both;
use peernet_proto::{
    admission::{Hello, Reply, MAX_ADMIT_FRAME, MAX_REASON_LEN},
    frame,
    key::NetworkKey,
};

fuzz_target!(|data: &[u8]| {
    let key = NetworkKey::from_bytes([9; 32]);
    let dialer = SecretKey::from_bytes(&[1; 32]).public();
    let receiver = SecretKey::from_bytes(&[2; 32]).public();
    for hello in decode_both::<Hello>(data, MAX_ADMIT_FRAME) {
        let genuine = key.admit_proof(&dialer, &receiver);
        assert_eq!(key.verify_admit(&dialer, &receiver, &hello.proof), hello.proof == genuine);
    }
    for reply in decode_both::<Reply>(data, MAX_ADMIT_FRAME) {
        if let Reply::Refused { reason } = reply {
            // What a receiver sends back always fits one frame.
            let ours = Reply::refused(&reason);
            assert!(frame::encode(&ours, MAX_ADMIT_FRAME).is_ok());
            let Reply::Refused { reason: cut } = ours else { unreachable!() };
            assert!(cut.len() <= MAX_REASON_LEN && reason.starts_with(&cut));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let Reply::Refused { reason } = Reply::refused(text) else { unreachable!() };
        assert!(reason.len() <= MAX_REASON_LEN && text.starts_with(&reason));
        assert!(frame::encode(&Reply::refused(text), MAX_ADMIT_FRAME).is_ok());
    }
});
