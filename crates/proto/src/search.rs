//! The one set of search rules (word splitting, case and accent folding, prefixes, hash prefixes).
