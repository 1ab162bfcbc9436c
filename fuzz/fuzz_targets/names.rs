//! Name rules: nicknames, file names to publish, the sanitizer that turns an
//! advertised name into a file name on our disk, numbered alternatives, and
//! `save::safe_relative` for the paths inside a shared folder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peernet_fuzz::{assert_stays_inside, save::safe_relative};
use peernet_proto::{
    limits::{MAX_FILE_NAME_BYTES, MAX_NICKNAME_CHARS},
    names::{numbered_alternative, sanitize_file_name, validate_file_name, validate_nickname},
};

// The input is plain bytes so a unit test in `peernet_proto::names` can
// replay committed inputs without `arbitrary`: four bytes of `n` (little
// endian), then the name, any invalid UTF-8 replaced.
fuzz_target!(|data: &[u8]| {
    let Some((n, name)) = data.split_first_chunk::<4>() else { return };
    let n = u32::from_le_bytes(*n);
    let name = &*String::from_utf8_lossy(name);
    if validate_nickname(name).is_ok() {
        assert!(!name.is_empty() && name.chars().count() <= MAX_NICKNAME_CHARS && name.trim() == name);
    }
    if validate_file_name(name).is_ok() {
        assert!(name.len() <= MAX_FILE_NAME_BYTES && !name.contains(['/', '\\']) && name != "..");
    }
    let clean = sanitize_file_name(name, "fallback");
    assert!(validate_file_name(&clean).is_ok(), "{name:?} sanitized to the invalid {clean:?}");
    assert!(!clean.starts_with(char::is_whitespace) && !clean.ends_with(char::is_whitespace), "{name:?} sanitized to {clean:?}");
    assert!(!clean.chars().all(|c| c == '.'), "{name:?} sanitized to the dots-only {clean:?}");
    let numbered = numbered_alternative(&clean, n);
    assert!(validate_file_name(&numbered).is_ok(), "{clean:?} numbered {n} to the invalid {numbered:?}");
    // A name at the limit that already ends in " (n)" may come back
    // unchanged: the caller then finds it taken and tries n + 1.
    if let Some(relative) = safe_relative(name) {
        assert_stays_inside(name, &relative);
    }
});
