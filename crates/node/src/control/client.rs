//! The client side of the control API, used by the `peernet` subcommands.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use super::{ApiError, GetEvent, GetRequest, AUTH_HEADER};
use crate::data_dir::DataDir;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no peernet daemon is running with data directory {0}; start one with `peernet up` (or pass the right --data-dir)")]
    NoDaemon(PathBuf),
    #[error("{0}")]
    Api(String),
    #[error("lost contact with the daemon: {0}")]
    Transport(String),
}

#[derive(Debug, Clone)]
pub struct ControlClient {
    base: String,
    auth: String,
    http: reqwest::Client,
    data_dir: PathBuf,
}

impl ControlClient {
    /// Reads the daemon's address and token from the data directory.
    pub fn connect(data_dir: &Path) -> Result<Self, ClientError> {
        let info = DataDir::at(data_dir)
            .read_control()
            .map_err(|e| ClientError::Api(e.to_string()))?
            .ok_or_else(|| ClientError::NoDaemon(data_dir.to_owned()))?;
        // The control API is plain HTTP on loopback, but the HTTP client is
        // built with TLS support (shared with iroh) and needs a provider chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A daemon whose page listens on every address is still reached by loopback.
        let mut addr = info.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Ok(Self {
            base: format!("http://{addr}"),
            auth: format!("Bearer {}", info.token),
            http: reqwest::Client::builder().no_proxy().build().map_err(|e| ClientError::Transport(e.to_string()))?,
            data_dir: data_dir.to_owned(),
        })
    }

    /// The daemon's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            // control.json left behind by a daemon that was killed.
            ClientError::NoDaemon(self.data_dir.clone())
        } else {
            ClientError::Transport(e.to_string())
        }
    }

    async fn decode<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, ClientError> {
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Transport(format!("unreadable answer: {e}")))
        } else {
            let err: ApiError =
                serde_json::from_slice(&bytes).unwrap_or_else(|_| ApiError { error: format!("the daemon answered {status}") });
            Err(ClientError::Api(err.error))
        }
    }

    /// Sends with the token and decodes the JSON answer.
    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let resp = req.header(AUTH_HEADER, &self.auth).send().await.map_err(|e| self.transport(e))?;
        self.decode(resp).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query)).await
    }

    pub async fn post<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    /// Starts a download and calls `on_event` for every event until the
    /// daemon reports `saved` or `failed`.
    pub async fn get_file(&self, req: &GetRequest, mut on_event: impl FnMut(&GetEvent)) -> Result<GetEvent, ClientError> {
        let mut resp = self
            .http
            .post(format!("{}/v1/get", self.base))
            .header(AUTH_HEADER, &self.auth)
            .json(req)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        if !resp.status().is_success() {
            return self.decode::<GetEvent>(resp).await;
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(e))? {
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let event: GetEvent = serde_json::from_slice(&line[..line.len() - 1])
                    .map_err(|e| ClientError::Transport(format!("unreadable progress: {e}")))?;
                on_event(&event);
                if matches!(event, GetEvent::Saved { .. } | GetEvent::Failed { .. }) {
                    return Ok(event);
                }
            }
        }
        Err(ClientError::Transport("the daemon ended the download stream early; check `peernet status`".into()))
    }
}
