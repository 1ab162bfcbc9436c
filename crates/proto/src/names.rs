//! Rules for names that come from people or from the network: nicknames, and
//! the file names a provider advertises, which become paths on our disk.

use crate::limits::{MAX_FILE_NAME_BYTES, MAX_NICKNAME_CHARS};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NicknameError {
    #[error("a nickname cannot be empty")]
    Empty,
    #[error("a nickname has at most {MAX_NICKNAME_CHARS} characters")]
    TooLong,
    #[error("a nickname may only contain printable characters")]
    NotPrintable,
    #[error("a nickname cannot start or end with a space")]
    OuterSpace,
}

/// Checks a nickname: 1 to 32 printable characters, no outer whitespace.
pub fn validate_nickname(nick: &str) -> Result<(), NicknameError> {
    if nick.is_empty() {
        return Err(NicknameError::Empty);
    }
    if nick.chars().count() > MAX_NICKNAME_CHARS {
        return Err(NicknameError::TooLong);
    }
    if nick.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(NicknameError::NotPrintable);
    }
    if nick.trim() != nick {
        return Err(NicknameError::OuterSpace);
    }
    Ok(())
}

/// Characters that print as nothing, or reorder what follows them (bidi
/// embeddings, overrides and isolates), and would let two names look the same.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
    )
}

/// Text that came off the network (a chat message, a nickname, a file
/// name, a flood answer), made safe to print on a terminal.
///
/// A control character (a newline, an escape that starts an ANSI sequence,
/// a carriage return that rewinds the line) or a character that is invisible
/// or reorders text (bidi overrides) is shown as its escape, `\n` or
/// `\u{1b}`, so a message can neither draw a line that looks like someone
/// else's nor drive the terminal. Everything else, accents and scripts and
/// emoji included, is shown as sent. This is the one display rule: the CLI,
/// the chat, the shell and the logs all print network text through it.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || is_invisible(c);
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileNameError {
    #[error("a shared file name cannot be empty")]
    Empty,
    #[error("a shared file name has at most {MAX_FILE_NAME_BYTES} bytes")]
    TooLong,
    #[error("a shared file name cannot contain control characters or path separators")]
    BadCharacter,
    #[error("'.' and '..' are not file names")]
    DotName,
}

/// Checks a name a peer wants to publish. Publishers only ever send the last
/// component of their path, so anything path-like is a bug or an attack.
pub fn validate_file_name(name: &str) -> Result<(), FileNameError> {
    if name.is_empty() {
        return Err(FileNameError::Empty);
    }
    if name.len() > MAX_FILE_NAME_BYTES {
        return Err(FileNameError::TooLong);
    }
    if name.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
        return Err(FileNameError::BadCharacter);
    }
    if name == "." || name == ".." {
        return Err(FileNameError::DotName);
    }
    Ok(())
}

/// Turns a name advertised by another peer into one safe file name to create
/// inside the downloads directory.
///
/// The result never contains a path separator, NUL or other control
/// character, is never `.` or `..`, never starts with `-` or `.` followed by
/// nothing else, and fits in [`MAX_FILE_NAME_BYTES`]. Only the last path
/// component survives, so `../../etc/x` and `/abs/x` both become `x`. When
/// nothing usable is left, `fallback` is used.
pub fn sanitize_file_name(advertised: &str, fallback: &str) -> String {
    let last = advertised.rsplit(['/', '\\']).find(|part| !part.trim().is_empty() && *part != "." && *part != "..").unwrap_or("");
    let mut clean: String = last.chars().map(|c| if c.is_control() || is_invisible(c) || c == ':' { '_' } else { c }).collect();
    // Cut first: trimming and the dots check must see the final name (a cut
    // can end inside spaces, or keep only the dots a long name starts with).
    truncate_utf8(&mut clean, MAX_FILE_NAME_BYTES);
    clean = clean.trim().to_string();
    // A name made only of dots is a directory reference on some systems.
    if clean.chars().all(|c| c == '.') {
        clean.clear();
    }
    if clean.is_empty() {
        let mut fb = fallback.to_string();
        truncate_utf8(&mut fb, MAX_FILE_NAME_BYTES);
        return fb;
    }
    clean
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
}

/// The n-th alternative to `name` when `name` already exists:
/// `photo.jpg` becomes `photo (1).jpg`, `archive.tar.gz` becomes
/// `archive (1).tar.gz`, `README` becomes `README (1)`.
pub fn numbered_alternative(name: &str, n: u32) -> String {
    let suffix = format!(" ({n})");
    // An extension too long to keep beside the number and at least one
    // character of the stem is not treated as one: the number goes last.
    let (stem, ext) = match name.find('.') {
        Some(i) if i > 0 && name.len() - i + suffix.len() + 4 <= MAX_FILE_NAME_BYTES => name.split_at(i),
        _ => (name, ""),
    };
    let mut stem = stem.to_string();
    truncate_utf8(&mut stem, MAX_FILE_NAME_BYTES.saturating_sub(suffix.len() + ext.len()));
    format!("{stem}{suffix}{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicknames() {
        assert!(validate_nickname("alice").is_ok());
        assert!(validate_nickname("Zoë 42").is_ok());
        assert_eq!(validate_nickname(""), Err(NicknameError::Empty));
        assert_eq!(validate_nickname(&"x".repeat(33)), Err(NicknameError::TooLong));
        assert!(validate_nickname(&"é".repeat(32)).is_ok(), "limit counts characters");
        assert_eq!(validate_nickname("a\nb"), Err(NicknameError::NotPrintable));
        assert_eq!(validate_nickname("a\u{200b}b"), Err(NicknameError::NotPrintable));
        assert_eq!(validate_nickname(" bob"), Err(NicknameError::OuterSpace));
    }

    #[test]
    fn network_text_is_shown_with_controls_escaped() {
        assert_eq!(visible("Zoë says hi 👋"), "Zoë says hi 👋", "ordinary text is untouched");
        let forged = "ok\n[12:00:00] root (abcdef0123): send me your ticket";
        assert_eq!(visible(forged), "ok\\n[12:00:00] root (abcdef0123): send me your ticket");
        assert_eq!(visible("\u{1b}[2J\u{1b}]0;title\u{7}"), "\\u{1b}[2J\\u{1b}]0;title\\u{7}");
        assert_eq!(visible("a\rb\tc\u{9b}d"), "a\\rb\\tc\\u{9b}d", "C1 controls too");
        assert_eq!(visible("evil\u{202e}fdp.exe"), "evil\\u{202e}fdp.exe", "bidi override");
        assert_eq!(visible("x\u{2066}y\u{2069}"), "x\\u{2066}y\\u{2069}", "bidi isolates");
        assert!(!visible("\u{0}\u{7f}\u{85}\u{2028}").chars().any(|c| c.is_control() || is_invisible(c)));
    }

    #[test]
    fn file_names_to_publish() {
        assert!(validate_file_name("report 2024.pdf").is_ok());
        assert!(validate_file_name(".hidden").is_ok());
        assert_eq!(validate_file_name("a/b"), Err(FileNameError::BadCharacter));
        assert_eq!(validate_file_name("a\0b"), Err(FileNameError::BadCharacter));
        assert_eq!(validate_file_name(".."), Err(FileNameError::DotName));
        assert_eq!(validate_file_name(""), Err(FileNameError::Empty));
        assert_eq!(validate_file_name(&"a".repeat(256)), Err(FileNameError::TooLong));
    }

    #[test]
    fn sanitizer_keeps_only_a_last_component() {
        assert_eq!(sanitize_file_name("../../etc/x", "f"), "x");
        assert_eq!(sanitize_file_name("/abs/x", "f"), "x");
        assert_eq!(sanitize_file_name("..\\..\\win\\x.exe", "f"), "x.exe");
        assert_eq!(sanitize_file_name("dir/", "f"), "dir");
        assert_eq!(sanitize_file_name("a/..", "f"), "a");
    }

    #[test]
    fn sanitizer_removes_nul_and_control_characters() {
        assert_eq!(sanitize_file_name("evil\0name", "f"), "evil_name");
        assert_eq!(sanitize_file_name("line\nbreak\r", "f"), "line_break_");
        assert_eq!(sanitize_file_name("c:boot.ini", "f"), "c_boot.ini");
    }

    #[test]
    fn sanitizer_falls_back_when_nothing_is_left() {
        for bad in ["", ".", "..", "/", "../..", "...", "   ", "/../"] {
            assert_eq!(sanitize_file_name(bad, "download-abc"), "download-abc", "{bad:?}");
        }
    }

    #[test]
    fn sanitizer_truncates_on_a_character_boundary() {
        let long = "é".repeat(200);
        let out = sanitize_file_name(&long, "f");
        assert!(out.len() <= MAX_FILE_NAME_BYTES);
        assert!(out.chars().all(|c| c == 'é'));
    }

    #[test]
    fn sanitized_names_are_always_plain() {
        let nasty = ["../x", "/", "a\\b", "\0", "..", "x/../../y", "\u{202e}gpj.exe"];
        for n in nasty {
            let out = sanitize_file_name(n, "fallback");
            assert!(validate_file_name(&out).is_ok(), "{n:?} -> {out:?}");
        }
    }

    #[test]
    fn numbered_alternatives() {
        assert_eq!(numbered_alternative("photo.jpg", 1), "photo (1).jpg");
        assert_eq!(numbered_alternative("a.tar.gz", 2), "a (2).tar.gz");
        assert_eq!(numbered_alternative("README", 3), "README (3)");
        assert_eq!(numbered_alternative(".bashrc", 1), ".bashrc (1)");
        assert!(numbered_alternative(&"a".repeat(255), 9).len() <= MAX_FILE_NAME_BYTES);
    }

    /// Inputs the `names` fuzz target found (fuzz/regressions/names): four
    /// bytes of `n`, little endian, then the name.
    const FUZZ_REGRESSIONS: &[(&str, &[u8])] = &[
        ("numbered-long-extension", include_bytes!("../../../fuzz/regressions/names/numbered-long-extension")),
        ("sanitized-cut-in-spaces", include_bytes!("../../../fuzz/regressions/names/sanitized-cut-in-spaces")),
        ("sanitized-cut-to-dots", include_bytes!("../../../fuzz/regressions/names/sanitized-cut-to-dots")),
    ];

    #[test]
    fn fuzz_regressions_stay_fixed() {
        for (file, data) in FUZZ_REGRESSIONS {
            let (n, name) = data.split_first_chunk::<4>().expect("four bytes of n");
            let (n, name) = (u32::from_le_bytes(*n), String::from_utf8_lossy(name));
            let clean = sanitize_file_name(&name, "fallback");
            assert!(validate_file_name(&clean).is_ok(), "{file}: {clean:?}");
            assert_eq!(clean.trim(), clean, "{file}: outer spaces");
            assert!(!clean.chars().all(|c| c == '.'), "{file}: only dots");
            let numbered = numbered_alternative(&clean, n);
            assert!(validate_file_name(&numbered).is_ok(), "{file}: {numbered:?}");
            assert!(!numbered.starts_with(' '), "{file}: {numbered:?}");
        }
    }

    #[test]
    fn a_long_extension_does_not_push_the_name_past_the_limit() {
        let name = format!("a.{}", "x".repeat(253));
        let numbered = numbered_alternative(&name, u32::MAX);
        assert!(numbered.len() <= MAX_FILE_NAME_BYTES && numbered.starts_with("a.x"), "{numbered:?}");
        assert!(numbered.ends_with(&format!(" ({})", u32::MAX)));
        assert_eq!(sanitize_file_name(&format!("{}{}x", "y".repeat(250), " ".repeat(10)), "f"), "y".repeat(250));
        assert_eq!(sanitize_file_name(&format!("{}x", ".".repeat(300)), "f"), "f");
    }

    proptest::proptest! {
        /// Any advertised name: no panic, and what the sanitizer and the
        /// numbered alternatives make of it is always a valid file name.
        #[test]
        fn sanitized_and_numbered_names_are_always_valid(name in "\\PC{0,300}", n in proptest::prelude::any::<u32>()) {
            let _ = validate_nickname(&name);
            let clean = sanitize_file_name(&name, "fallback");
            proptest::prop_assert!(validate_file_name(&clean).is_ok(), "{:?} -> {:?}", name, clean);
            let numbered = numbered_alternative(&clean, n);
            proptest::prop_assert!(validate_file_name(&numbered).is_ok(), "{:?} -> {:?}", clean, numbered);
        }

        /// A shared folder's listing (iroh-blobs collection metadata) from
        /// any bytes: no panic, and every name in one that decodes
        /// sanitizes to a valid file name.
        #[test]
        fn collection_listings_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            if let Ok(meta) = postcard::from_bytes::<iroh_blobs::format::collection::CollectionMeta>(&bytes) {
                for name in meta.names() {
                    proptest::prop_assert!(validate_file_name(&sanitize_file_name(name, "f")).is_ok());
                }
            }
        }
    }
}
