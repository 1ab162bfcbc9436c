//! The one set of search rules, used by the index, by flood answers and by
//! `get`'s choice of a hit. Nothing else in peernet decides whether a name
//! matches a query.
//!
//! A name is split into words at every character that is neither a letter,
//! a digit nor a combining mark; words are compared after [`fold`]ing (lower
//! case, accents off). A file matches a query when every word of the query
//! is the start of some word of its name, or when the query is a hex prefix
//! of its hash ([`MIN_HASH_PREFIX`] to 64 digits). A query without words
//! (empty, or only punctuation) matches nothing by name.
//!
//! The index keeps each name's folded words ([`terms`]) in its full-text
//! table, uses that table only to narrow the candidates, and decides with
//! [`name_matches`], so the index and flood search give the same answers.

use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};

use crate::{index::FileEntry, limits::MIN_HASH_PREFIX};

/// Combining marks dropped by [`fold`]: the diacritics of Latin, Greek and
/// Cyrillic letters (Combining Diacritical Marks and their Extended and
/// Supplement blocks, the marks for symbols, the half marks). Other
/// scripts' combining marks (Devanagari vowel signs and virama, Japanese
/// voicing marks, for instance) are part of their words and are kept.
/// Dropping a mark can merge letters a language keeps apart (`й` with `и`,
/// `ё` with `е`); search then finds a little more, never less.
fn is_accent(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}' | '\u{20d0}'..='\u{20ff}' | '\u{fe20}'..='\u{fe2f}')
}

/// Letters whose lower case still differs from what a user types for them:
/// German `ß` is searched as `ss` (so `Straße` and `STRASSE` meet; `ẞ`
/// lowers to `ß` first), and Greek final `ς` as `σ` (Rust lowers a word-final
/// `Σ` to `ς`, which a query for the word's start would not contain).
fn push_folded(out: &mut String, c: char) {
    match c {
        'ß' => out.push_str("ss"),
        'ς' => out.push('σ'),
        c => out.push(c),
    }
}

/// Lower case without accents: `Ça Va` → `ca va`, `Ångström` → `angstrom`,
/// `Straße` → `strasse`.
///
/// The text is decomposed (NFKD), lowered, stripped of the accents listed in
/// [`is_accent`] only, and recomposed (NFC). Compatibility forms fold too
/// (`ﬁ` → `fi`, full-width and circled letters to plain ones, half-width
/// katakana to full-width). `İ` decomposes to `I` and a dot above, so it
/// folds to `i`; the Turkish dotless `ı` stays itself (no locale rules).
pub fn fold(s: &str) -> String {
    // ASCII is its own decomposition and composition and holds no accent
    // of `is_accent`, so lowering is all the rules do to it: the common
    // case (an index loading a million names folds each one).
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    fold_unicode(s)
}

/// [`fold`] by the general rules.
fn fold_unicode(s: &str) -> String {
    let mut bare = String::with_capacity(s.len());
    // Lowering after decomposing catches upper case that decomposition
    // produces (`㎒` → `MHz`).
    for c in s.nfkd().flat_map(char::to_lowercase).filter(|c| !is_accent(*c)) {
        push_folded(&mut bare, c);
    }
    bare.nfc().collect()
}

/// Whether `c` belongs to a word: letters and digits, and combining marks,
/// which in many scripts (Devanagari's vowel signs and virama) sit inside a
/// word rather than end it.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c)
}

/// The folded words of `s`, in order: `Holiday-Photos_2024.tar.gz` →
/// `holiday photos 2024 tar gz`.
pub fn words(s: &str) -> Vec<String> {
    fold(s).split(|c: char| !is_word_char(c)).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// A name's folded words, one space apart. Every character of the result
/// other than those spaces is a word character, so splitting it at the
/// spaces gives back [`words`] of the name.
pub fn terms(name: &str) -> String {
    words(name).join(" ")
}

/// The query as a hash prefix in lower case, if it is one: after trimming,
/// [`MIN_HASH_PREFIX`] to 64 ASCII hex digits.
pub fn hash_prefix(query: &str) -> Option<String> {
    let q = query.trim();
    (q.len() >= MIN_HASH_PREFIX && q.len() <= 64 && q.bytes().all(|b| b.is_ascii_hexdigit())).then(|| q.to_ascii_lowercase())
}

/// Whether every word of `query` starts a word of `name`. A query without
/// words matches nothing.
pub fn name_matches(query: &str, name: &str) -> bool {
    let query = words(query);
    !query.is_empty() && words_match(&query, &words(name))
}

/// [`name_matches`] on words already split, for callers that test one query
/// against many names.
pub fn words_match(query: &[String], name: &[String]) -> bool {
    !query.is_empty() && query.iter().all(|q| name.iter().any(|n| n.starts_with(q.as_str())))
}

/// Whether `entry` answers `query`: by hash prefix or by name.
pub fn matches(query: &str, entry: &FileEntry) -> bool {
    Matcher::new(query).matches(entry)
}

/// A query taken apart once, to test against many entries: a peer that
/// answers a flood query with its shares folds the query once, not once
/// for every file it shares.
#[derive(Debug, Clone)]
pub struct Matcher {
    words: Vec<String>,
    hash: Option<String>,
}

impl Matcher {
    pub fn new(query: &str) -> Self {
        Self { words: words(query), hash: hash_prefix(query) }
    }

    /// [`matches`] for this query.
    pub fn matches(&self, entry: &FileEntry) -> bool {
        self.hash.as_ref().is_some_and(|p| entry.hash.to_hex().starts_with(p.as_str()))
            || (!self.words.is_empty() && words_match(&self.words, &words(&entry.name)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(name: &str) -> FileEntry {
        FileEntry { name: name.into(), size: 1, hash: crate::Hash::new(name), kind: Default::default() }
    }

    #[test]
    fn accents_and_case_fold() {
        assert_eq!(fold("Café"), "cafe");
        assert_eq!(fold("Cafe\u{301}"), "cafe", "a decomposed accent folds like a composed one");
        assert_eq!(fold("ÅNGSTRÖM naïve"), "angstrom naive");
        assert!(name_matches("cafe", "Café.txt"));
        assert!(name_matches("CAFÉ", "cafe.txt"));
        assert!(name_matches("angstrom", "Ångström.pdf"));
        assert!(name_matches("naive", "NAÏVE-art.png"));
        assert!(name_matches("Ça", "ca va.txt"));
        assert!(!name_matches("cafes", "Café.txt"));
    }

    #[test]
    fn german_sharp_s_is_ss() {
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("STRAẞE"), "strasse");
        assert!(name_matches("strasse", "Straße.txt"));
        assert!(name_matches("STRASSE", "straße.txt"));
        assert!(name_matches("straße", "STRASSE.txt"));
        assert!(name_matches("stras", "Straße.txt"));
    }

    #[test]
    fn dotted_capital_i_and_compatibility_forms() {
        assert_eq!(fold("İstanbul"), "istanbul");
        assert!(name_matches("istanbul", "İSTANBUL.jpg"));
        assert_eq!(fold("ﬁle"), "file");
        assert_eq!(fold("ＡＢＣ"), "abc");
        assert_eq!(fold("㎒"), "mhz");
    }

    #[test]
    fn greek_and_cyrillic_case() {
        assert!(name_matches("ΑΘΗΝΑ", "αθήνα.jpg"), "Greek, with its tonos");
        assert!(name_matches("αθηνασ", "ΑΘΗΝΑΣ.jpg"), "a word-final capital sigma");
        assert!(name_matches("οδυσσευς", "Οδυσσεύς.epub"), "final sigma in the query");
        assert!(name_matches("москва", "Москва-2024.mp4"));
        assert!(name_matches("ЁЛКА", "ёлка.txt"));
        assert!(name_matches("елка", "Ёлка.txt"), "ё folds to е, as Russian readers expect");
        assert!(!name_matches("москва", "Минск.mp4"));
    }

    #[test]
    fn other_scripts_keep_their_marks() {
        // Devanagari vowel signs and the virama are parts of a word, not
        // accents, and do not split it.
        assert_eq!(fold("हिन्दी"), "हिन्दी");
        assert_eq!(words("हिन्दी गाने.mp3"), ["हिन्दी", "गाने", "mp3"]);
        assert!(name_matches("हिन्दी", "हिन्दी गाने.mp3"));
        assert!(name_matches("गाने", "हिन्दी गाने.mp3"));
        assert!(!name_matches("हन", "हिन्दी.mp3"));
        assert!(!name_matches("दी", "हिन्दी.mp3"), "the end of a word is not a word");
        assert!(name_matches("東京", "東京タワー 夜景.jpg"), "a run of CJK characters is one word; its start matches");
        assert!(name_matches("夜景", "東京タワー 夜景.jpg"));
        assert!(!name_matches("タワー", "東京タワー 夜景.jpg"), "not the middle of a run");
        assert!(name_matches("ガイド", "ｶﾞｲﾄﾞ.pdf"), "half-width katakana with voicing marks");
        assert!(name_matches("한국", "한국어 교재.pdf"));
    }

    #[test]
    fn words_split_at_punctuation_and_prefixes_match() {
        assert_eq!(words("Holiday-Photos_2024.tar.gz"), ["holiday", "photos", "2024", "tar", "gz"]);
        assert!(name_matches("photo 2024", "Holiday-Photos_2024.tar.gz"));
        assert!(name_matches("hol", "Holiday-Photos_2024.tar.gz"));
        assert!(name_matches("holiday-photos", "holiday photos.zip"));
        assert!(name_matches("tar.gz", "Holiday-Photos_2024.tar.gz"));
        assert!(!name_matches("holiday notes", "Holiday-Photos_2024.tar.gz"));
        assert!(!name_matches("oliday", "Holiday.txt"), "a word's start, not its middle");
        assert_eq!(terms("Ça va? Oui!"), "ca va oui");
    }

    #[test]
    fn a_query_without_words_matches_nothing() {
        assert!(!name_matches("", "a.txt"));
        assert!(!name_matches("   ", "a.txt"));
        assert!(!name_matches("--", "a.txt"));
        assert!(!matches("", &entry("a.txt")));
        assert!(!words_match(&[], &words("a.txt")));
    }

    #[test]
    fn hash_prefixes() {
        let e = entry("x");
        let hex = e.hash.to_hex();
        assert!(matches(&hex[..6], &e));
        assert!(matches(&hex, &e));
        assert!(matches(&hex[..12].to_uppercase(), &e));
        assert!(matches(&format!("  {}\n", &hex[..8]), &e));
        assert!(!matches(&hex[..5], &e), "too short to be a hash prefix");
        assert!(!matches(&hex[1..8], &e), "the start of the hash, not its middle");
        assert_eq!(hash_prefix("abcde"), None, "too short");
        assert_eq!(hash_prefix("abcdefg"), None, "not hex");
        assert_eq!(hash_prefix("abc def"), None);
        assert_eq!(hash_prefix(&"a".repeat(64)), Some("a".repeat(64)));
        assert_eq!(hash_prefix(&"a".repeat(65)), None);
        assert_eq!(hash_prefix(" ABCDEF "), Some("abcdef".into()));
        assert_eq!(hash_prefix("ａｂｃｄｅｆ"), None, "full-width letters are not hex digits");
    }

    proptest! {
        #[test]
        fn never_panics_and_a_name_finds_itself(name in "\\PC{0,40}", query in "\\PC{0,40}") {
            let _ = matches(&query, &entry(&name));
            let _ = fold(&query);
            if !words(&name).is_empty() {
                prop_assert!(name_matches(&name, &name));
                prop_assert!(name_matches(&terms(&name), &name), "the stored terms find their name");
            }
        }

        #[test]
        fn ascii_folds_by_the_general_rules(s in "[\\x00-\\x7f]{0,40}") {
            prop_assert_eq!(fold(&s), fold_unicode(&s));
        }

        #[test]
        fn folding_is_stable(s in "\\PC{0,40}") {
            let once = fold(&s);
            prop_assert_eq!(fold(&once), once.clone());
            prop_assert_eq!(words(&terms(&s)), words(&s));
        }
    }
}
