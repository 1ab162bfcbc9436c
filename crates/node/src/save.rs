//! Choosing where a download lands: a sanitized name inside the downloads
//! directory, never an existing file.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use peernet_proto::names::{numbered_alternative, sanitize_file_name};

/// How many numbered alternatives to try before giving up.
const MAX_ALTERNATIVES: u32 = 1000;

/// Creates an empty file for `advertised` inside `dir` and returns its path.
///
/// The name is sanitized (one path component, no control characters). If the
/// name is taken, `name (1).ext`, `name (2).ext`, ... are tried; creation is
/// exclusive (`O_EXCL`), so an existing file is never truncated, even one
/// created a moment ago by someone else. The caller writes into the returned
/// path and removes it on failure.
pub fn reserve(dir: &Path, advertised: &str, fallback: &str) -> io::Result<PathBuf> {
    first_free(dir, advertised, fallback, |path| fs::OpenOptions::new().write(true).create_new(true).open(path).map(drop))
}

/// Creates a new, empty directory for `advertised` inside `dir`, with the
/// same naming rules as [`reserve`]; an existing directory is never reused.
pub fn reserve_dir(dir: &Path, advertised: &str, fallback: &str) -> io::Result<PathBuf> {
    first_free(dir, advertised, fallback, |path| fs::create_dir(path))
}

/// Tries the sanitized name and its numbered alternatives with `create`,
/// which must fail with `AlreadyExists` when the name is taken.
fn first_free(dir: &Path, advertised: &str, fallback: &str, create: impl Fn(&Path) -> io::Result<()>) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let dir = fs::canonicalize(dir)?;
    let name = sanitize_file_name(advertised, fallback);
    for n in 0..=MAX_ALTERNATIVES {
        let candidate = if n == 0 { name.clone() } else { numbered_alternative(&name, n) };
        let path = dir.join(&candidate);
        // Belt and braces: the sanitizer already guarantees one component.
        if path.parent() != Some(dir.as_path()) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "unsafe file name"));
        }
        match create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("'{name}' and {MAX_ALTERNATIVES} numbered alternatives already exist in {}", dir.display()),
    ))
}

/// A relative path from a collection, made safe: `None` if any component is
/// empty after trimming separators, `.`, `..`, or contains control
/// characters, and for absolute paths. Such entries are skipped, not
/// reinterpreted, so a crafted name can never land somewhere unexpected.
pub fn safe_relative(name: &str) -> Option<PathBuf> {
    if name.starts_with(['/', '\\']) || name.contains(':') {
        return None;
    }
    let mut path = PathBuf::new();
    for part in name.split(['/', '\\']) {
        if peernet_proto::names::validate_file_name(part).is_err() {
            return None;
        }
        path.push(part);
    }
    (!path.as_os_str().is_empty()).then_some(path)
}

/// Creates `root/relative` exclusively, with its parent directories, and
/// checks that the parent really is inside `root` (no symlink followed out).
pub fn create_inside(root: &Path, relative: &Path) -> io::Result<PathBuf> {
    let target = root.join(relative);
    let parent = target.parent().unwrap_or(root);
    fs::create_dir_all(parent)?;
    let real_root = fs::canonicalize(root)?;
    if !fs::canonicalize(parent)?.starts_with(&real_root) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "path leaves the target directory"));
    }
    fs::OpenOptions::new().write(true).create_new(true).open(&target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_paths_are_checked_component_by_component() {
        assert_eq!(safe_relative("a/b/c.txt"), Some(PathBuf::from("a/b/c.txt")));
        assert_eq!(safe_relative("été/naïve ☃.txt"), Some(PathBuf::from("été/naïve ☃.txt")));
        for bad in ["../x", "a/../../x", "/abs/x", "\\abs\\x", "a//b", "a/./b", "", "a/", "c:\\x", "nul\0x", ".."] {
            assert_eq!(safe_relative(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn files_are_created_inside_only_and_never_twice() {
        let root = tempfile::tempdir().unwrap();
        let target = reserve_dir(root.path(), "folder", "f").unwrap();
        let p = create_inside(&target, Path::new("a/b.txt")).unwrap();
        assert!(p.starts_with(&target));
        assert!(create_inside(&target, Path::new("a/b.txt")).is_err(), "no overwrite");
        // A symlink planted inside pointing out is refused.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.path(), target.join("link")).unwrap();
            assert!(create_inside(&target, Path::new("link/evil.txt")).is_err());
            assert!(!root.path().join("evil.txt").exists());
        }
        assert_eq!(reserve_dir(root.path(), "folder", "f").unwrap().file_name().unwrap(), "folder (1)");
    }

    #[test]
    fn hostile_names_stay_inside_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("downloads");
        for name in ["../../etc/x", "/abs/x", "nul\0name", "..", "a/../../b", "\\..\\y"] {
            let path = reserve(&dir, name, "fallback").unwrap();
            assert_eq!(path.parent().unwrap(), fs::canonicalize(&dir).unwrap(), "{name:?}");
        }
        // Nothing was created outside.
        let outside: Vec<_> = fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(outside, vec![std::ffi::OsString::from("downloads")]);
    }

    #[test]
    fn existing_files_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("song.ogg"), b"precious").unwrap();
        let p = reserve(dir.path(), "song.ogg", "f").unwrap();
        assert_eq!(p.file_name().unwrap(), "song (1).ogg");
        let p2 = reserve(dir.path(), "song.ogg", "f").unwrap();
        assert_eq!(p2.file_name().unwrap(), "song (2).ogg");
        assert_eq!(fs::read(dir.path().join("song.ogg")).unwrap(), b"precious");
    }
}
