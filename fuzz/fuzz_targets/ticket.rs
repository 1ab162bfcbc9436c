//! Join tickets parsed from text. A random string almost never carries a
//! valid checksum, so the input is also wrapped as a well-formed ticket
//! (prefix, base32, correct checksum) around arbitrary postcard bytes: that
//! reaches the body's decoding, which a pasted ticket can reach too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peernet_proto::ticket::Ticket;

fn checked(body: &[u8]) -> String {
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&blake3::hash(body).as_bytes()[..4]);
    format!("peernet1{}", data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase())
}

fn parse_and_round_trip(text: &str) {
    if let Ok(ticket) = text.parse::<Ticket>() {
        let again = ticket.to_string();
        assert_eq!(again.parse::<Ticket>().as_ref(), Ok(&ticket), "a printed ticket does not parse back");
        let _ = ticket.index.to_endpoint_addr();
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        parse_and_round_trip(text);
    }
    parse_and_round_trip(&checked(data));
});
