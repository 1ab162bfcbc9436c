//! Made-up file names and searches for the index bench: words from a fixed,
//! seeded vocabulary, common ones far more often than rare ones (Zipf), so
//! that searches hit anything from no file to a good part of the index, as
//! searches of real names do.

use rand::{rngs::StdRng, Rng, SeedableRng};

/// Distinct words.
const WORDS: usize = 5000;
/// Syllables the words are made of: pronounceable, and never a hash prefix.
const SYLLABLES: &[&str] = &[
    "ka", "ro", "mi", "sel", "to", "van", "lu", "pen", "dor", "ri", "na", "bel", "tis", "gra", "mo", "fen", "li", "zu", "sha", "ter",
    "qua", "vo", "nim", "ek", "stra", "jo", "wil", "pu", "ham", "ox",
];
const EXTENSIONS: &[&str] = &["mp3", "flac", "mkv", "mp4", "jpg", "pdf", "epub", "zip", "iso", "txt"];

/// The vocabulary and its Zipf weights (word `r` is drawn with weight
/// 1 / (r + 1)).
pub struct Corpus {
    words: Vec<String>,
    /// Cumulative weights, for drawing a word by binary search.
    cumulative: Vec<f64>,
}

impl Corpus {
    /// The same vocabulary on every run.
    pub fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let mut words = Vec::with_capacity(WORDS);
        let mut seen = std::collections::HashSet::new();
        while words.len() < WORDS {
            let n = rng.random_range(2..=4);
            let word: String = (0..n).map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())]).collect();
            // Words that are all hex digits would be searched as hashes.
            if peernet_proto::search::hash_prefix(&word).is_none() && seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let mut total = 0.0;
        let cumulative = (0..WORDS)
            .map(|r| {
                total += 1.0 / (r as f64 + 1.0);
                total
            })
            .collect();
        Self { words, cumulative }
    }

    pub fn word(&self, rng: &mut impl Rng) -> &str {
        let x = rng.random::<f64>() * self.cumulative.last().expect("a vocabulary");
        let r = self.cumulative.partition_point(|&c| c < x).min(WORDS - 1);
        &self.words[r]
    }

    /// A file name of two to four words, maybe a year, and an extension,
    /// such as "Karomi selto vanlu 2019.mp3".
    pub fn name(&self, rng: &mut impl Rng) -> String {
        let n = rng.random_range(2..=4);
        let mut words: Vec<String> = (0..n).map(|_| self.word(rng).to_string()).collect();
        if let Some(first) = words.first_mut() {
            first[..1].make_ascii_uppercase();
        }
        if rng.random_bool(0.3) {
            words.push(rng.random_range(1970..2026).to_string());
        }
        format!("{}.{}", words.join(" "), EXTENSIONS[rng.random_range(0..EXTENSIONS.len())])
    }

    /// What a user might type: one word (half the time), two words, or the
    /// first three letters of a word (as while typing).
    pub fn query(&self, rng: &mut impl Rng) -> String {
        match rng.random_range(0..10) {
            0..5 => self.word(rng).to_string(),
            5..8 => format!("{} {}", self.word(rng), self.word(rng)),
            _ => self.word(rng)[..3].to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_queries_are_seeded_and_varied() {
        let corpus = Corpus::new();
        let mut a = StdRng::seed_from_u64(1);
        let mut b = StdRng::seed_from_u64(1);
        let names: Vec<String> = (0..1000).map(|_| corpus.name(&mut a)).collect();
        assert_eq!(names, (0..1000).map(|_| corpus.name(&mut b)).collect::<Vec<_>>(), "the same seed, the same names");
        let with = |w: &str| names.iter().filter(|n| peernet_proto::search::name_matches(w, n)).count();
        // The commonest word is in many names, a rare one in few or none.
        assert!(with(&corpus.words[0]) > 50, "{}", with(&corpus.words[0]));
        assert!(with(&corpus.words[WORDS - 1]) < 5);
        assert!(names.iter().all(|n| peernet_proto::names::validate_file_name(n).is_ok()));
    }
}
