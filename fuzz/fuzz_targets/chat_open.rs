//! Signed chat events as bytes off the overlay: `chat::open` and a room's
//! `receive` (which opens, then orders and delivers), at several clocks.
#![no_main]

use iroh::SecretKey;
use libfuzzer_sys::fuzz_target;
use peernet_fuzz::NOW_MS;
use peernet_proto::chat::{open, Room, HISTORY, MAX_EVENT_BYTES};

const TOPIC: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = open(data, &TOPIC, NOW_MS) {
        assert!(data.len() <= MAX_EVENT_BYTES);
        assert_eq!(event.topic, TOPIC);
    }
    let _ = open(data, &TOPIC, 0);
    let _ = open(data, &TOPIC, u64::MAX);
    let mut room = Room::new(TOPIC, Some(SecretKey::from_bytes(&[100; 32]).public()), 30_000);
    // The input split in pieces: several events in a row, as a stream of
    // gossip messages brings them.
    for piece in data.split(|b| *b == 0xff).chain(std::iter::once(data)) {
        let _ = room.receive(piece, NOW_MS);
    }
    let _ = room.tick(u64::MAX);
    let _ = room.members(NOW_MS);
    assert!(room.messages_after(0).len() <= HISTORY);
});
