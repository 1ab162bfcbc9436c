//! Structured chat events with arbitrary fields (numbers, times, nicknames,
//! texts), signed for real, fed to a room among replays, forgeries, damaged
//! copies and ticks. A raw-byte fuzzer never gets past the signature; this
//! one reaches the room's ordering, replay and membership logic.
#![no_main]

use std::collections::HashSet;

use arbitrary::Arbitrary;
use iroh::SecretKey;
use libfuzzer_sys::fuzz_target;
use peernet_fuzz::Clock;
use peernet_proto::chat::{open, seal, Author, Body, Change, Event, Rejected, Room, HISTORY};

const TOPIC: [u8; 32] = [7; 32];
/// Key seed of the room's root, the only author whose Close counts.
const ROOT: u8 = 0;

#[derive(Debug, Arbitrary)]
enum ArbBody {
    Hello(String),
    Presence(String),
    Message(String),
    /// A long message: the text repeated.
    Long(String, u16),
    Rename(String),
    Leave,
    Close,
    /// A Links report naming `n` neighbours (derived from seeds).
    Links(String, u8),
}

impl ArbBody {
    fn body(self) -> Body {
        match self {
            ArbBody::Hello(nickname) => Body::Hello { nickname },
            ArbBody::Presence(nickname) => Body::Presence { nickname },
            ArbBody::Message(text) => Body::Message { text },
            ArbBody::Long(text, n) => Body::Message { text: text.repeat(usize::from(n % 512)) },
            ArbBody::Rename(nickname) => Body::Rename { nickname },
            ArbBody::Leave => Body::Leave,
            ArbBody::Close => Body::Close,
            ArbBody::Links(nickname, n) => Body::Links {
                nickname,
                links: (0..n).map(|seed| peernet_proto::index::LinkReport { id: key(seed).public(), path: None }).collect(),
            },
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// The next event of a real `Author`.
    Next {
        who: u8,
        body: ArbBody,
        sent: Clock,
        now: Clock,
    },
    /// An event with every field chosen, signed by `signer`.
    Sealed {
        signer: u8,
        /// Claim another author than the signer (a forgery).
        claim: Option<u8>,
        other_topic: bool,
        session: u64,
        seq: u64,
        nonce: [u8; 16],
        sent: Clock,
        body: ArbBody,
        now: Clock,
    },
    /// An earlier event again.
    Replay {
        pick: u16,
        now: Clock,
    },
    /// An earlier event with one byte changed.
    Damage {
        pick: u16,
        at: u16,
        xor: u8,
        now: Clock,
    },
    /// An earlier event cut short.
    Truncate {
        pick: u16,
        len: u16,
        now: Clock,
    },
    Tick {
        now: Clock,
    },
}

fn key(seed: u8) -> SecretKey {
    SecretKey::from_bytes(&[seed % 4; 32])
}

fuzz_target!(|steps: Vec<Step>| {
    let mut room = Room::new(TOPIC, Some(key(ROOT).public()), 30_000);
    let mut authors: Vec<Author> = (0..4).map(|s| Author::new(key(s), TOPIC)).collect();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut accepted: HashSet<Vec<u8>> = HashSet::new();
    for step in steps.into_iter().take(256) {
        let (bytes, now) = match step {
            Step::Next { who, body, sent, now } => {
                let (event, bytes) = authors[usize::from(who % 4)].event(body.body(), sent.ms());
                let opened = open(&bytes, &TOPIC, event.sent_at_ms);
                if let Ok(opened) = &opened {
                    assert_eq!(opened, &event, "an event changed between seal and open");
                }
                (bytes, now)
            }
            Step::Sealed { signer, claim, other_topic, session, seq, nonce, sent, body, now } => {
                let author = key(claim.unwrap_or(signer)).public();
                let topic = if other_topic { [8; 32] } else { TOPIC };
                let event = Event { author, topic, session, seq, nonce, sent_at_ms: sent.ms(), body: body.body() };
                (seal(&key(signer), &event), now)
            }
            Step::Replay { pick, now } | Step::Damage { pick, now, xor: 0, .. } => {
                let Some(bytes) = pick_from(&sent, pick) else { continue };
                if accepted.contains(&bytes) {
                    let got = room.receive(&bytes, now.ms());
                    assert!(got.is_err(), "a replayed event was accepted: {got:?}");
                    continue;
                }
                (bytes, now)
            }
            Step::Damage { pick, at, xor, now } => {
                let Some(mut bytes) = pick_from(&sent, pick) else { continue };
                if bytes.is_empty() {
                    continue;
                }
                let at = usize::from(at) % bytes.len();
                bytes[at] ^= xor;
                (bytes, now)
            }
            Step::Truncate { pick, len, now } => {
                let Some(mut bytes) = pick_from(&sent, pick) else { continue };
                bytes.truncate(usize::from(len) % (bytes.len() + 1));
                (bytes, now)
            }
            Step::Tick { now } => {
                let _ = room.tick(now.ms());
                continue;
            }
        };
        match room.receive(&bytes, now.ms()) {
            Ok(changes) => {
                let event = open(&bytes, &TOPIC, now.ms()).expect("the room accepted what open refuses");
                if changes.contains(&Change::Closed) {
                    assert_eq!(event.author, key(ROOT).public(), "a Close not from the root counted");
                }
                accepted.insert(bytes.clone());
            }
            Err(Rejected::Replay) => assert!(!accepted.is_empty(), "a replay of nothing"),
            Err(_) => {}
        }
        sent.push(bytes);
        let _ = room.members(now.ms());
        assert!(room.messages_after(0).len() <= HISTORY);
    }
});

fn pick_from(sent: &[Vec<u8>], pick: u16) -> Option<Vec<u8>> {
    (!sent.is_empty()).then(|| sent[usize::from(pick) % sent.len()].clone())
}
