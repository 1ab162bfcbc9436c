//! The daemon's data directory and what it keeps there.
//!
//! ```text
//! secret.key      the node's ed25519 secret (mode 0600), created on first start
//! state.json      network membership, nickname and port (mode 0600: it holds the ticket)
//! shares.json     the files this peer shares
//! blobs/          the iroh-blobs store
//! index.db        the index database, when this process hosts the index
//! relay.crt       the certificate of the relay a root runs (made at first start)
//! relay.key       its private key (mode 0600)
//! control.json    address and bearer token of the running daemon's control API (mode 0600)
//! ```
//!
//! Every file is written to a temporary name and renamed into place, so a
//! crash never leaves a half-written file behind.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use iroh::SecretKey;
use peernet_proto::key::NetworkKey;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot use data directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged ({why}); move it away to start fresh")]
    Damaged { path: PathBuf, why: String },
    /// Another user could replace the key, the ticket or control.json.
    #[error(
        "the data directory {path} can be written by other users (mode {mode:03o}), who could replace its key or ticket; run `chmod 700 {path}` and start again"
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "the data directory {path} belongs to another user (uid {owner}), who could replace its key or ticket; use a directory of your own with --data-dir"
    )]
    NotOwned { path: PathBuf, owner: u32 },
}

type Result<T> = std::result::Result<T, DataDirError>;

/// The network this data directory belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    /// This node hosts the index of the network with this key.
    Host { network_key: NetworkKey },
    /// This node joined the network named by this ticket.
    Member { ticket: String },
    /// This node is on the LAN network of this name (no index, no ticket).
    Lan { name: String },
}

/// What a node remembers between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub membership: Option<Membership>,
    pub nickname: Option<String>,
    /// The UDP port last bound, reused so that tickets stay valid.
    pub port: Option<u16>,
}

/// What the DHT node remembers for the next run (`--dht`): its port, so
/// other members' remembered nodes stay right, and the nodes it knew.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DhtMemory {
    pub port: Option<u16>,
    pub nodes: Vec<String>,
}

/// Where the running daemon's control API listens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControlInfo {
    pub addr: std::net::SocketAddr,
    pub token: String,
    pub pid: u32,
    /// Where Prometheus metrics are served (`--metrics`).
    #[serde(default)]
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens `root` for a daemon, creating it and any missing parents
    /// with mode 0700. An existing directory that another user owns or
    /// can write is refused: they could swap the secret key, the ticket or
    /// control.json (and so learn the CLI's token) under us.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let io = |source| DataDirError::Io { path: root.clone(), source };
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&root).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let meta = fs::metadata(&root).map_err(io)?;
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me {
                return Err(DataDirError::NotOwned { path: root, owner: meta.uid() });
            }
            let mode = meta.mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(DataDirError::Writable { path: root, mode });
            }
            // Readable by others is no threat to the files (each secret is
            // 0600) but tells them what is there: tighten it.
            if mode & 0o777 != 0o700 {
                fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(io)?;
            }
        }
        Ok(Self { root })
    }

    /// A directory that need not exist (for clients that only read).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn index_db(&self) -> PathBuf {
        self.root.join("index.db")
    }

    pub fn shares_file(&self) -> PathBuf {
        self.root.join("shares.json")
    }

    pub fn control_file(&self) -> PathBuf {
        self.root.join("control.json")
    }

    /// The node's secret key, created on first use and stable afterwards.
    pub fn secret_key(&self) -> Result<SecretKey> {
        let path = self.root.join("secret.key");
        match fs::read(&path) {
            Ok(bytes) => {
                let arr: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| DataDirError::Damaged { path: path.clone(), why: format!("expected 32 bytes, found {}", bytes.len()) })?;
                Ok(SecretKey::from_bytes(&arr))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretKey::generate();
                write_private(&path, &key.to_bytes())?;
                Ok(key)
            }
            Err(source) => Err(DataDirError::Io { path, source }),
        }
    }

    pub fn load_state(&self) -> Result<State> {
        Ok(read_json(&self.root.join("state.json"))?.unwrap_or_default())
    }

    pub fn save_state(&self, state: &State) -> Result<()> {
        write_json(&self.root.join("state.json"), state, true)
    }

    pub fn load_dht(&self) -> Result<DhtMemory> {
        Ok(read_json(&self.root.join("dht.json"))?.unwrap_or_default())
    }

    pub fn save_dht(&self, memory: &DhtMemory) -> Result<()> {
        write_json(&self.root.join("dht.json"), memory, false)
    }

    pub fn read_control(&self) -> Result<Option<ControlInfo>> {
        read_json(&self.control_file())
    }

    pub fn write_control(&self, info: &ControlInfo) -> Result<()> {
        write_json(&self.control_file(), info, true)
    }

    /// The pid of another daemon running on this directory now, if one is:
    /// control.json names a live process other than this one, and its
    /// control API accepts a connection (a file left by a daemon that was
    /// killed, whose pid another process took since, does not count).
    pub fn running_daemon(&self) -> Option<u32> {
        let info = self.read_control().ok()??;
        let alive = info.pid != std::process::id() && Path::new(&format!("/proc/{}", info.pid)).exists();
        let answers = alive && std::net::TcpStream::connect_timeout(&info.addr, std::time::Duration::from_secs(1)).is_ok();
        answers.then_some(info.pid)
    }

    /// Removes control.json, but only if it still names this process.
    pub fn remove_control(&self, pid: u32) {
        if let Ok(Some(info)) = self.read_control() {
            if info.pid == pid {
                fs::remove_file(self.control_file()).ok();
            }
        }
    }
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| DataDirError::Damaged { path: path.to_owned(), why: e.to_string() })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DataDirError::Io { path: path.to_owned(), source }),
    }
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T, private: bool) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("plain data always serializes");
    write_file(path, &bytes, private)
}

/// Writes a whole file atomically; `private` makes it readable by its owner only.
pub(crate) fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    if private {
        write_private(path, bytes)
    } else {
        write_atomic(path, bytes, 0o644)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes, 0o600)
}

/// Writes to `path.tmp`, syncs, and renames over `path`.
fn write_atomic(path: &Path, bytes: &[u8], _mode: u32) -> Result<()> {
    let io = |source| DataDirError::Io { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(_mode);
    }
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_key_is_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open(dir.path()).unwrap();
        let a = dd.secret_key().unwrap();
        let b = dd.secret_key().unwrap();
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("secret.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn made_private_and_refused_when_others_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let fresh = dir.path().join("made").join("by").join("peernet");
        DataDir::open(&fresh).unwrap();
        for p in [&fresh, &dir.path().join("made"), &dir.path().join("made/by")] {
            assert_eq!(mode(p), 0o700, "{} and every parent it made are its owner's alone", p.display());
        }
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o755)).unwrap();
        DataDir::open(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700, "a readable directory is tightened");
        for open in [0o770, 0o707, 0o777] {
            fs::set_permissions(&fresh, fs::Permissions::from_mode(open)).unwrap();
            let err = DataDir::open(&fresh).unwrap_err();
            assert!(matches!(err, DataDirError::Writable { mode, .. } if mode == open), "{err}");
            assert!(err.to_string().contains(&format!("chmod 700 {}", fresh.display())), "{err}");
            assert_eq!(mode(&fresh), open, "a refused directory is left as it was");
        }
    }

    #[test]
    fn damaged_files_are_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open(dir.path()).unwrap();
        fs::write(dir.path().join("secret.key"), b"short").unwrap();
        assert!(matches!(dd.secret_key(), Err(DataDirError::Damaged { .. })));
        assert_eq!(fs::read(dir.path().join("secret.key")).unwrap(), b"short");
        fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        assert!(matches!(dd.load_state(), Err(DataDirError::Damaged { .. })));
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open(dir.path()).unwrap();
        assert_eq!(dd.load_state().unwrap(), State::default());
        let s = State {
            membership: Some(Membership::Host { network_key: NetworkKey::generate() }),
            nickname: Some("x".into()),
            port: Some(4242),
        };
        dd.save_state(&s).unwrap();
        assert_eq!(dd.load_state().unwrap(), s);
    }
}
