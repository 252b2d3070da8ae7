//! What a media backend offers the session flows and what it reports back: the one
//! interface the integrated SFU and an rtcd host both implement.

use super::rtcd_pool::PoolError;
use crate::client_message::{ClientIce, ClientSdp};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("no rtc server")]
    NoRtcServer,
    #[error("the call's rtcd host is not connected")]
    RtcdGone,
    #[error("cluster message to the call's node not sent: {0}")]
    Cluster(String),
    #[error("cannot start the RTC server on {addr}: {source}")]
    Start {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Rtcd(#[from] PoolError),
    #[error("{0}")]
    Sfu(#[from] calls_sfu::SfuError),
}

/// A stream a session publishes besides its voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Screen,
    Video,
}

/// What a joining session asks of the media side.
#[derive(Debug, Clone, Copy, Default)]
pub struct JoinOptions {
    pub dc_signaling: bool,
    pub av1: bool,
}

/// Whom a media operation is for: a session of a call, wherever its websocket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSession {
    /// The connection id of its join.
    pub session_id: String,
    pub call_id: String,
    pub user_id: String,
    pub channel_id: String,
}

/// One call's media, whichever backend it runs on. Sessions are named by their
/// session id (the connection id of their join).
#[async_trait::async_trait]
pub trait CallMedia: Send + Sync {
    async fn add_session(&self, s: &MediaSession, opts: JoinOptions) -> Result<(), MediaError>;
    /// The session's websocket moved to this node: signaling for it comes here now.
    async fn reconnected(&self, s: &MediaSession) -> Result<(), MediaError>;
    async fn remove_session(&self, session_id: &str) -> Result<(), MediaError>;
    /// A client's description. For an offer, the answer when the backend gives it at
    /// once (the integrated SFU); rtcd answers later, as a [`MediaEvent::Signal`].
    async fn sdp(&self, s: &MediaSession, sdp: ClientSdp) -> Result<Option<String>, MediaError>;
    async fn candidate(&self, s: &MediaSession, ice: ClientIce) -> Result<(), MediaError>;
    async fn set_muted(&self, s: &MediaSession, muted: bool) -> Result<(), MediaError>;
    /// A screen or video stream starts (`Some` stream id) or stops (`None`).
    async fn set_stream(
        &self,
        s: &MediaSession,
        kind: StreamKind,
        stream_id: Option<String>,
    ) -> Result<(), MediaError>;
}

/// What the media side reports about sessions, from either backend.
#[derive(Debug, PartialEq)]
pub enum MediaEvent {
    /// An answer or a server offer, to deliver as a `signal` event.
    Signal {
        session_id: String,
        json: String,
    },
    Voice {
        session_id: String,
        on: bool,
    },
    /// The media side ended the session (its peer connection failed or closed).
    Closed {
        session_id: String,
    },
}
