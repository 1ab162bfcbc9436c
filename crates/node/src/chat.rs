//! Chat: say, rename, who, messages. The room itself (signed events,
//! ordering, members) is [`peernet_proto::chat`], carried by the
//! [`Overlay`]; a rename also asks the index, which keeps names unique.

use peernet_proto::{
    chat::{ChatMessage, Member},
    index::Request,
    names::validate_nickname,
};
use tokio::sync::watch;

use crate::{
    data_dir::{DataDir, DataDirError},
    index_client::{IndexClient, IndexError},
    overlay::{Overlay, OverlayError},
};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Something wrong with what the user typed (empty, too long, a bad name).
    #[error("{0}")]
    Invalid(String),
    #[error("the index is unreachable ({0}); a rename needs the index to check that the name is free, try again shortly")]
    IndexUnreachable(String),
    #[error("{0}")]
    Index(IndexError),
    #[error("the name '{0}' is taken by another online peer; choose another")]
    Taken(String),
    #[error("{0}")]
    Overlay(String),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

impl From<OverlayError> for ChatError {
    fn from(e: OverlayError) -> Self {
        match e {
            OverlayError::TooLong(_) | OverlayError::Empty => Self::Invalid(e.to_string()),
            other => Self::Overlay(other.to_string()),
        }
    }
}

/// The chat handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Chat {
    overlay: Overlay,
    index: IndexClient,
    nickname: watch::Sender<String>,
    data_dir: DataDir,
}

impl Chat {
    pub fn new(overlay: Overlay, index: IndexClient, nickname: watch::Sender<String>, data_dir: DataDir) -> Self {
        Self { overlay, index, nickname, data_dir }
    }

    /// Sends a message to everybody.
    pub async fn say(&self, text: &str) -> Result<ChatMessage, ChatError> {
        Ok(self.overlay.say(text).await?)
    }

    /// Renames this peer: the index checks the name is free, then the room
    /// hears about it, and the name is kept for the next start.
    pub async fn rename(&self, nickname: &str) -> Result<(), ChatError> {
        validate_nickname(nickname).map_err(|e| ChatError::Invalid(e.to_string()))?;
        match self.index.request(Request::Rename { nickname: nickname.to_string() }).await {
            Ok(_) => {}
            // No index keeps names unique: the room as we see it does.
            Err(IndexError::NoIndex) => {
                let me = self.overlay.me();
                let taken = self
                    .overlay
                    .members()
                    .into_iter()
                    .any(|m| m.online && m.id != me && m.nickname.to_lowercase() == nickname.to_lowercase());
                if taken {
                    return Err(ChatError::Taken(nickname.to_string()));
                }
            }
            Err(IndexError::Unreachable(e)) => return Err(ChatError::IndexUnreachable(e)),
            Err(e) => return Err(ChatError::Index(e)),
        }
        self.nickname.send_replace(nickname.to_string());
        let mut state = self.data_dir.load_state()?;
        state.nickname = Some(nickname.to_string());
        self.data_dir.save_state(&state)?;
        self.overlay.announce_rename(nickname).await?;
        Ok(())
    }

    pub fn members(&self) -> Vec<Member> {
        self.overlay.members()
    }

    pub fn messages_after(&self, index: u64) -> Vec<ChatMessage> {
        self.overlay.messages_after(index)
    }

    pub fn nickname(&self) -> String {
        self.nickname.borrow().clone()
    }
}
