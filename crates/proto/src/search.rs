//! The one set of search rules, used by the index, by flood answers and by
//! `get`'s choice of a hit.
//!
//! A name is split into words at every character that is not a letter or a
//! digit; words are compared after [`fold`]ing (lower case, accents off). A
//! file matches a query when every word of the query is the start of some
//! word of its name, or when the query is a hex prefix of its hash (at least
//! [`MIN_HASH_PREFIX`] digits). The index keeps each name's folded words
//! ([`terms`]) in its full-text table and decides with [`name_matches`], so
//! both paths give the same answers.

use unicode_normalization::UnicodeNormalization;

use crate::{index::FileEntry, limits::MIN_HASH_PREFIX};

/// Combining marks dropped by [`fold`]: the diacritics of Latin, Greek and
/// Cyrillic letters. Other scripts' combining marks (Devanagari vowel signs,
/// for instance) are part of their words and are kept.
fn is_accent(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}' | '\u{20d0}'..='\u{20ff}' | '\u{fe20}'..='\u{fe2f}')
}

/// Lower case without accents: `Ça Va` → `ca va`, `Ångström` → `angstrom`.
/// Compatibility forms fold too (`ﬁ` → `fi`, full-width letters to plain).
pub fn fold(s: &str) -> String {
    s.nfkd().filter(|c| !is_accent(*c)).collect::<String>().to_lowercase().nfc().collect()
}

/// The folded words of `s`.
pub fn words(s: &str) -> Vec<String> {
    fold(s).split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// What the index stores for a name: its folded words, one space apart.
pub fn terms(name: &str) -> String {
    words(name).join(" ")
}

/// The query as a hash prefix, lower case, if it is one.
pub fn hash_prefix(query: &str) -> Option<String> {
    let q = query.trim();
    (q.len() >= MIN_HASH_PREFIX && q.len() <= 64 && q.bytes().all(|b| b.is_ascii_hexdigit())).then(|| q.to_ascii_lowercase())
}

/// Every word of `query` starts a word of `name`; a query without words
/// matches nothing.
pub fn name_matches(query: &str, name: &str) -> bool {
    let query = words(query);
    let name = words(name);
    !query.is_empty() && query.iter().all(|q| name.iter().any(|n| n.starts_with(q.as_str())))
}

/// Whether `entry` answers `query`: by hash prefix or by name.
pub fn matches(query: &str, entry: &FileEntry) -> bool {
    hash_prefix(query).is_some_and(|p| entry.hash.to_hex().starts_with(&p)) || name_matches(query, &entry.name)
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
        assert_eq!(fold("ÅNGSTRÖM naïve"), "angstrom naive");
        assert!(name_matches("cafe", "Café.txt"));
        assert!(name_matches("CAFÉ", "cafe.txt"));
        assert!(name_matches("ΑΘΗΝΑ", "αθήνα.jpg"), "Greek, with its tonos");
        assert!(name_matches("москва", "Москва-2024.mp4"));
        assert!(name_matches("strasse", "STRASSE.txt"));
    }

    #[test]
    fn other_scripts_keep_their_marks() {
        // Devanagari vowel signs are letters' parts, not accents.
        assert_eq!(fold("हिन्दी"), "हिन्दी");
        assert!(name_matches("हिन्दी", "हिन्दी गाने.mp3"));
        assert!(!name_matches("हन", "हिन्दी.mp3"));
        assert!(name_matches("東京", "東京タワー 夜景.jpg"), "a run of CJK characters is one word; its start matches");
    }

    #[test]
    fn words_split_at_punctuation_and_prefixes_match() {
        assert_eq!(words("Holiday-Photos_2024.tar.gz"), ["holiday", "photos", "2024", "tar", "gz"]);
        assert!(name_matches("photo 2024", "Holiday-Photos_2024.tar.gz"));
        assert!(name_matches("hol", "Holiday-Photos_2024.tar.gz"));
        assert!(!name_matches("holiday notes", "Holiday-Photos_2024.tar.gz"));
        assert!(!name_matches("oliday", "Holiday.txt"), "a word's start, not its middle");
        assert!(!name_matches("", "a.txt"));
        assert!(!name_matches("--", "a.txt"));
        assert_eq!(terms("Ça va? Oui!"), "ca va oui");
    }

    #[test]
    fn hash_prefixes() {
        let e = entry("x");
        let hex = e.hash.to_hex();
        assert!(matches(&hex[..6], &e));
        assert!(matches(&hex[..12].to_uppercase(), &e));
        assert!(!matches(&hex[..5], &e), "too short to be a hash prefix");
        assert_eq!(hash_prefix("abcdefg"), None, "not hex");
        assert_eq!(hash_prefix(&"a".repeat(65)), None);
        assert_eq!(hash_prefix(" ABCDEF "), Some("abcdef".into()));
    }

    proptest! {
        #[test]
        fn never_panics_and_a_name_finds_itself(name in "\\PC{0,40}", query in "\\PC{0,40}") {
            let _ = matches(&query, &entry(&name));
            if !words(&name).is_empty() {
                prop_assert!(name_matches(&name, &name));
            }
        }
    }
}
