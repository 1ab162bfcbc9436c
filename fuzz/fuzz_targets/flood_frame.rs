//! Flood frames, read as a peer reads them from a neighbour (length prefix
//! checked against `MAX_FLOOD_FRAME` first): an answer's signature is
//! checked, and the frame goes through the flood state machine as the node
//! hands it over.
#![no_main]

use iroh::SecretKey;
use libfuzzer_sys::fuzz_target;
use peernet_fuzz::{decode_both, NOW_MS};
use peernet_proto::{
    answers,
    flood::{Action, Flood, FloodFrame, MAX_FLOOD_FRAME, MAX_TTL},
};

fuzz_target!(|data: &[u8]| {
    let from = SecretKey::from_bytes(&[1; 32]).public();
    let neighbours = [from, SecretKey::from_bytes(&[2; 32]).public()];
    let mut flood = Flood::default();
    for frame in decode_both::<FloodFrame>(data, MAX_FLOOD_FRAME) {
        match frame {
            FloodFrame::Query(query) => {
                for action in flood.handle(query, from, &neighbours, NOW_MS) {
                    if let Action::Forward { query, to } = action {
                        assert!(query.ttl < MAX_TTL, "a forwarded TTL was not lowered below the clamp");
                        assert!(!to.contains(&from), "a query went back to its sender");
                    }
                }
            }
            FloodFrame::Answer(answer) => {
                if answer.verify() {
                    let _ = answer.provider.to_endpoint_addr();
                    let _ = answers::from_answers(vec![answer.clone()]);
                    let _ = flood.answer_arrived(answer, from, NOW_MS);
                }
            }
        }
    }
});
