//! Measures what deriving a LAN network's key from its name costs, the
//! price of one guess for anyone trying names offline:
//! `cargo run -p peernet-proto --example lan_kdf [NAME] [RUNS]`.
//! (Dependencies are optimised even in the dev profile, so this measures
//! optimised Argon2.)

use std::time::Instant;

use peernet_proto::key::{NetworkKey, LAN_KDF_LANES, LAN_KDF_MEMORY_KIB, LAN_KDF_PASSES};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "kitchen".to_string());
    let runs: u32 = args.next().map(|r| r.parse()).transpose()?.unwrap_or(5);
    println!("Argon2id, {} MiB, {LAN_KDF_PASSES} passes, {LAN_KDF_LANES} lane(s), {runs} runs:", LAN_KDF_MEMORY_KIB / 1024);
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        NetworkKey::from_lan_name(&name)?;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("min {:.3} s, median {median:.3} s, max {:.3} s per derivation", times[0], times[times.len() - 1]);
    Ok(())
}
