//! What the handle tells the loop (`Command`) and the loop tells the plugin or rtcd
//! (`Note`).

use std::sync::Arc;

use tokio::sync::oneshot;

use calls_sfu::SfuError;

/// A command for the loop, from the handle.
pub enum Command {
    AddSession {
        /// Metrics group: the rtcd client id, `sfu::DEFAULT_GROUP` in the plugin.
        group: String,
        call_id: String,
        session_id: String,
        /// The client announced `dcSignaling`: server SDP goes over the data channel.
        dc_signaling: bool,
        /// The client announced `av1Support` and AV1 is enabled.
        av1: bool,
    },
    RemoveSession {
        session_id: String,
    },
    Offer {
        session_id: String,
        sdp: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Answer {
        session_id: String,
        sdp: String,
    },
    Candidate {
        session_id: String,
        candidate: String,
    },
    Mute {
        session_id: String,
        muted: bool,
    },
    ScreenStream {
        session_id: String,
        stream_id: Option<String>,
    },
    VideoStream {
        session_id: String,
        stream_id: Option<String>,
    },
    /// Makes the loop panic outside any session (tests of the thread's supervision).
    #[cfg(test)]
    Crash,
}

/// The sessions the loop holds, as its supervisor sees them: if the thread dies,
/// each of them is reported closed.
pub(super) type Live = Arc<parking_lot::Mutex<std::collections::HashSet<String>>>;

/// What the shell tells the signaling side.
#[derive(Debug)]
pub enum Note {
    /// A server offer to deliver to the client as a `signal`.
    Offer { session_id: String, json: String },
    /// Voice activity of the session started (`on`) or stopped.
    Voice { session_id: String, on: bool },
    /// The session's peer connection is gone.
    Closed { session_id: String },
}
