//! One set of search rules, end to end: the index and flood search give the
//! same answers to the same query, and those answers are the ones in the
//! table below (accents, case, non-Latin scripts, punctuation, hash
//! prefixes). A root (the index), a sharing peer and a searching peer run as
//! real processes; the sharer shares one file per name, the searcher asks
//! each query with `--index-only` and with `--flood-only`.
//!
//! The rules themselves are unit-tested in `peernet_proto::search` and the
//! index's use of them in `peernet_index::store`; this test checks that both
//! real search paths apply them to real shares.

mod common;

use std::collections::BTreeSet;

use common::*;
use peernet_proto::{index::FileEntry, search, Hash};

/// A query of the table: words, or a prefix of one shared file's hash.
#[derive(Debug, Clone, Copy)]
enum Query {
    Words(&'static str),
    /// The first `digits` hex digits of the hash of the file named `of`,
    /// upper-cased if `upper`.
    HashOf {
        of: &'static str,
        digits: usize,
        upper: bool,
    },
}

use Query::*;

/// (shared file name, query, whether the query finds that file). A query
/// finds exactly the names it has `true` rows for; every other shared name
/// must stay out of its answers.
const TABLE: &[(&str, Query, bool)] = &[
    // Accents and case.
    ("Café.txt", Words("cafe"), true),
    ("cafeteria menu.pdf", Words("cafe"), true),
    ("Café.txt", Words("CAFÉ"), true),
    ("cafeteria menu.pdf", Words("CAFÉ"), true),
    ("cafeteria menu.pdf", Words("café menu"), true),
    ("Café.txt", Words("café menu"), false),
    ("Café.txt", Words("cafes"), false),
    ("Ångström units.pdf", Words("angstrom"), true),
    ("Ångström units.pdf", Words("ÅNGSTRÖM UNITS"), true),
    ("NAÏVE-art.png", Words("naive"), true),
    ("NAÏVE-art.png", Words("Naïve Art"), true),
    ("Straße.txt", Words("strasse"), true),
    ("Straße.txt", Words("STRASSE"), true),
    ("Straße.txt", Words("straße"), true),
    // Non-Latin scripts.
    ("αθήνα.jpg", Words("ΑΘΗΝΑ"), true),
    ("αθήνα.jpg", Words("αθη"), true),
    ("Москва-2024.mp4", Words("москва"), true),
    ("Москва-2024.mp4", Words("МОСКВА 2024"), true),
    ("東京タワー 夜景.jpg", Words("東京"), true),
    ("東京タワー 夜景.jpg", Words("夜景"), true),
    ("東京タワー 夜景.jpg", Words("タワー"), false),
    ("हिन्दी गाने.mp3", Words("हिन्दी"), true),
    ("हिन्दी गाने.mp3", Words("गाने"), true),
    ("हिन्दी गाने.mp3", Words("दी"), false),
    // Punctuation splits words; a query matches word starts only.
    ("Holiday-Photos_2024.tar.gz", Words("holiday-photos"), true),
    ("Holiday-Photos_2024.tar.gz", Words("photos_2024"), true),
    ("Holiday-Photos_2024.tar.gz", Words("tar.gz"), true),
    ("Holiday-Photos_2024.tar.gz", Words("2024"), true),
    ("Москва-2024.mp4", Words("2024"), true),
    ("Holiday-Photos_2024.tar.gz", Words("oliday"), false),
    ("Holiday-Photos_2024.tar.gz", Words("(!)"), false),
    // Hash prefixes: six digits or more, any case.
    ("Straße.txt", HashOf { of: "Straße.txt", digits: 8, upper: false }, true),
    ("東京タワー 夜景.jpg", HashOf { of: "東京タワー 夜景.jpg", digits: 12, upper: true }, true),
    ("हिन्दी गाने.mp3", HashOf { of: "हिन्दी गाने.mp3", digits: 64, upper: false }, true),
    ("Café.txt", HashOf { of: "Café.txt", digits: 5, upper: false }, false),
];

/// Hashes of the hits in a `search --json` answer.
fn hashes(hits: &serde_json::Value) -> BTreeSet<String> {
    hits.as_array().unwrap().iter().map(|h| h["hash"].as_str().unwrap().to_string()).collect()
}

#[test]
fn index_and_flood_search_follow_the_same_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let index = Daemon::index(&root.join("index"));
    let sharer = Daemon::peer("sharer", &root.join("sharer"), &index.ticket, &[]);
    let searcher = Daemon::peer("searcher", &root.join("searcher"), &index.ticket, &[]);

    // One file per name, each with its own bytes (so its own hash).
    let names: BTreeSet<&str> = TABLE.iter().map(|(name, _, _)| *name).collect();
    let files = root.join("files");
    std::fs::create_dir_all(&files).unwrap();
    for (seed, name) in names.iter().enumerate() {
        let path = files.join(name);
        random_file(&path, 1000 + seed, seed as u64 + 1);
        sharer.ok(&["share", path.to_str().unwrap()]);
    }
    let shared: Vec<FileEntry> = sharer
        .json(&["ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| FileEntry {
            name: s["name"].as_str().unwrap().to_string(),
            size: 0,
            hash: s["hash"].as_str().unwrap().parse::<Hash>().unwrap(),
            kind: Default::default(),
        })
        .collect();
    assert_eq!(shared.iter().map(|f| f.name.as_str()).collect::<BTreeSet<_>>(), names, "every name shared as given");
    let hash_of = |name: &str| shared.iter().find(|f| f.name == name).unwrap().hash.to_hex();
    let text = |q: Query| match q {
        Words(w) => w.to_string(),
        HashOf { of, digits, upper } => {
            let p = hash_of(of)[..digits].to_string();
            if upper {
                p.to_uppercase()
            } else {
                p
            }
        }
    };

    // What each query must find: the hashes of its `true` rows, nothing else.
    let mut expected: Vec<(String, BTreeSet<String>)> = Vec::new();
    for (name, query, found) in TABLE {
        let q = text(*query);
        let at = match expected.iter().position(|(t, _)| *t == q) {
            Some(at) => at,
            None => {
                expected.push((q.clone(), BTreeSet::new()));
                expected.len() - 1
            }
        };
        if *found {
            expected[at].1.insert(hash_of(name));
        }
    }
    // The table is complete: no shared file matches a query beyond its
    // `true` rows (else a `false` row or a missing row would be wrong).
    for (q, want) in &expected {
        let by_rule: BTreeSet<String> = shared.iter().filter(|f| search::matches(q, f)).map(|f| f.hash.to_hex()).collect();
        assert_eq!(&by_rule, want, "the table disagrees with proto::search for {q:?}");
    }

    // The index has every file, and the overlay carries a flood query from
    // the searcher to the sharer and its answer back.
    wait_until(PATIENCE, "the index to list the sharer's files", || {
        searcher
            .json(&["online"])
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer"]["nickname"] == "sharer" && p["files"].as_array().unwrap().len() == names.len())
    });
    let probe = hash_of("Café.txt");
    wait_until(PATIENCE, "a flood search to reach the sharer", || {
        hashes(&searcher.json(&["search", "--flood-only", "--wait", "2s", &probe])).contains(&probe)
    });

    // The queries run at once: each flood search waits out its answer window.
    std::thread::scope(|scope| {
        for (q, want) in &expected {
            let searcher = &searcher;
            scope.spawn(move || {
                let index_hits = hashes(&searcher.json(&["search", "--index-only", q]));
                assert_eq!(&index_hits, want, "index search for {q:?}");
                // Answers that are late on a busy machine get another chance;
                // a wrong answer (an extra hit, or a hit still missing after
                // the tries) fails.
                let mut tries = 0;
                let flood_hits = loop {
                    tries += 1;
                    let hits = hashes(&searcher.json(&["search", "--flood-only", "--wait", "3s", q]));
                    if &hits == want || !hits.is_subset(want) || tries == 3 {
                        break hits;
                    }
                };
                assert_eq!(flood_hits, index_hits, "flood and index search disagree for {q:?}");
            });
        }
    });
    drop(searcher);
    drop(sharer);
    drop(index);
}
