//! Merging search answers (index hits and flood answers) into one list.
