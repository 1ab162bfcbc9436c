//! What this peer learned of the providers it downloaded from: who stalled
//! (no verified bytes for [`STALL_TIMEOUT`]), who failed or sent data that
//! did not verify, who advertised a size the content does not have. A get
//! tries providers in the order this knowledge gives (libtorrent's
//! smart-ban in spirit): providers that misbehaved go last,
//! for the rest of the get and for later gets, and among the others those
//! on a direct path with the shortest round trip go first. Not who
//! registered last: registering someone else's file must not put a member
//! in front.
//!
//! Bounded: at most [`MAX_REMEMBERED`] providers are remembered (the one
//! heard of longest ago is forgotten first), and a fault weighs less as it
//! ages, so a provider that stalled once is not shunned for ever. Pure:
//! time is an argument.

use std::collections::HashMap;

use iroh::EndpointId;

use crate::paths::PathInfo;

/// A provider that sends no verified bytes for this long loses its turn:
/// its connection is closed and the part it was serving moves on.
pub const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Providers remembered at once.
pub const MAX_REMEMBERED: usize = 1024;
/// A fault counts fully for this long, then is forgotten.
pub const FAULT_MEMORY_MS: u64 = 30 * 60 * 1000;

/// What went wrong with a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Sent no verified bytes for [`STALL_TIMEOUT`].
    Stalled,
    /// The transfer failed (refused, closed, or data that did not verify).
    Failed,
    /// Advertised a size the content does not have (its hash proves it).
    Lied,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::Stalled, Fault::Failed, Fault::Lied];

    /// Its name in `status` and the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Fault::Stalled => "stalled",
            Fault::Failed => "failed",
            Fault::Lied => "lied",
        }
    }

    /// How much a fault of this kind counts against the provider: a lie is
    /// deliberate, and of the rest a stall costs the asker the most time.
    fn weight(self) -> u32 {
        match self {
            Fault::Lied => 8,
            Fault::Stalled => 4,
            Fault::Failed => 1,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Fault::Stalled => "sent no verified bytes in time",
            Fault::Failed => "failed or sent data that did not verify",
            Fault::Lied => "advertised a size its content does not have",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Record {
    /// (when, kind) of the faults still remembered.
    faults: Vec<(u64, Fault)>,
    last_heard_ms: u64,
}

/// The providers this peer knows, and how they behaved.
#[derive(Debug, Default)]
pub struct Reputation {
    records: HashMap<EndpointId, Record>,
}

impl Reputation {
    /// Records a fault of `provider` at `now_ms`.
    pub fn fault(&mut self, provider: EndpointId, fault: Fault, now_ms: u64) {
        if !self.records.contains_key(&provider) && self.records.len() >= MAX_REMEMBERED {
            if let Some(oldest) = self.records.iter().min_by_key(|(_, r)| r.last_heard_ms).map(|(id, _)| *id) {
                self.records.remove(&oldest);
            }
        }
        let record = self.records.entry(provider).or_default();
        record.faults.retain(|(at, _)| at.saturating_add(FAULT_MEMORY_MS) > now_ms);
        // A handful of faults say all there is to say.
        if record.faults.len() >= 8 {
            record.faults.remove(0);
        }
        record.faults.push((now_ms, fault));
        record.last_heard_ms = now_ms;
    }

    /// How much `provider`'s remembered faults weigh now (0: none).
    pub fn penalty(&self, provider: &EndpointId, now_ms: u64) -> u32 {
        self.records
            .get(provider)
            .map_or(0, |r| r.faults.iter().filter(|(at, _)| at.saturating_add(FAULT_MEMORY_MS) > now_ms).map(|(_, f)| f.weight()).sum())
    }

    /// `providers` in the order to try them: fewest faults first, then a
    /// direct path before a relayed or unknown one, then the shortest round
    /// trip; otherwise as given. `path` says what is known of each path.
    pub fn order(&self, providers: &[EndpointId], now_ms: u64, path: impl Fn(&EndpointId) -> Option<PathInfo>) -> Vec<EndpointId> {
        let mut ranked: Vec<(u32, u64, usize, EndpointId)> = providers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let rtt = match path(p) {
                    Some(info) if info.via == peernet_proto::topo::Via::Direct => info.rtt_ms,
                    Some(info) => info.rtt_ms.saturating_add(1_000_000),
                    None => u64::MAX,
                };
                (self.penalty(p, now_ms), rtt, i, *p)
            })
            .collect();
        ranked.sort();
        ranked.into_iter().map(|(_, _, _, p)| p).collect()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use peernet_proto::topo::Via;

    use super::*;

    fn id(seed: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[seed; 32]).public()
    }

    #[test]
    fn misbehaving_providers_go_last_and_are_forgiven_in_time() {
        let mut r = Reputation::default();
        let (a, b, c) = (id(1), id(2), id(3));
        r.fault(a, Fault::Stalled, 0);
        r.fault(b, Fault::Failed, 0);
        assert_eq!(r.order(&[a, b, c], 10, |_| None), vec![c, b, a], "a stall weighs more than a failure");
        assert_eq!(r.order(&[a, b, c], FAULT_MEMORY_MS + 1, |_| None), vec![a, b, c], "old faults are forgotten");
        let liar = id(4);
        r.fault(liar, Fault::Lied, 0);
        assert_eq!(r.order(&[liar, a, c], 10, |_| None), vec![c, a, liar], "a lie about a size weighs more than a stall");
    }

    #[test]
    fn among_good_providers_a_direct_short_path_goes_first() {
        let r = Reputation::default();
        let (a, b, c, d) = (id(1), id(2), id(3), id(4));
        let path = |p: &EndpointId| match p {
            p if *p == a => Some(PathInfo { via: Via::Relayed, rtt_ms: 5 }),
            p if *p == b => Some(PathInfo { via: Via::Direct, rtt_ms: 80 }),
            p if *p == c => Some(PathInfo { via: Via::Direct, rtt_ms: 3 }),
            _ => None,
        };
        assert_eq!(r.order(&[a, b, c, d], 0, path), vec![c, b, a, d]);
    }

    #[test]
    fn memory_is_bounded_whatever_keys_come() {
        let mut r = Reputation::default();
        for n in 0..(MAX_REMEMBERED as u32 + 100) {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&n.to_le_bytes());
            r.fault(iroh::SecretKey::from_bytes(&seed).public(), Fault::Failed, u64::from(n));
        }
        assert_eq!(r.len(), MAX_REMEMBERED);
        let noisy = id(9);
        for t in 0..100 {
            r.fault(noisy, Fault::Stalled, t);
        }
        assert!(r.penalty(&noisy, 100) <= 8 * 4, "a few faults are kept per provider");
    }
}
