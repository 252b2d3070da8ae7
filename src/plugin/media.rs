//! Media signaling between the websocket side and the integrated SFU: client `sdp` /
//! `ice` in, server answers / offers out as `signal` events (reference
//! client-protocol.md §4), peer-connection closure → session removal.

use serde::Deserialize;
use serde_json::{json, Value};

use super::app::{refused, App, Result};
use super::host_api::Broadcast;
use super::join::remove_session;
use super::sessions::{LocalSession, Signal};
use crate::sfu::datachannel::inflate_sdp;
use crate::sfu::shell::{Command, Note};

#[derive(Deserialize, Default)]
struct SdpData {
    #[serde(with = "serde_bytes", default)]
    data: Vec<u8>,
}

#[derive(Deserialize, Default)]
struct IceData {
    #[serde(default)]
    data: String,
}

#[derive(Deserialize)]
struct SessionDescription {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

/// zlib-inflates a session description, at most `SDP_MAX` bytes.
fn inflate(bytes: &[u8]) -> Result<Vec<u8>> {
    inflate_sdp(bytes).map_err(|e| refused(e.to_string()))
}

pub async fn sdp(app: &App, s: &LocalSession, data: &[u8]) -> Result<()> {
    let Some(rtc) = &app.rtc else {
        return Err(refused("no rtc server"));
    };
    let d: SdpData =
        rmp_serde::from_slice(data).map_err(|e| refused(format!("invalid sdp message: {e}")))?;
    let desc: SessionDescription = serde_json::from_slice(&inflate(&d.data)?)
        .map_err(|e| refused(format!("invalid session description: {e}")))?;
    match desc.kind.as_str() {
        "offer" => {
            let answer = rtc
                .offer(&s.original_conn_id, desc.sdp)
                .await
                .map_err(|e| refused(e.to_string()))?;
            let json = json!({"type": "answer", "sdp": answer}).to_string();
            send_signal(app, &s.original_conn_id, json).await;
            Ok(())
        }
        "answer" => {
            rtc.send(Command::Answer {
                session_id: s.original_conn_id.clone(),
                sdp: desc.sdp,
            });
            Ok(())
        }
        other => Err(refused(format!("invalid sdp type {other:?}"))),
    }
}

pub fn ice(app: &App, s: &LocalSession, data: &[u8]) -> Result<()> {
    let Some(rtc) = &app.rtc else {
        return Err(refused("no rtc server"));
    };
    let d: IceData =
        rmp_serde::from_slice(data).map_err(|e| refused(format!("invalid ice message: {e}")))?;
    let v: Value = serde_json::from_str(&d.data)
        .map_err(|e| refused(format!("invalid ice candidate: {e}")))?;
    let candidate = v
        .get("candidate")
        .and_then(Value::as_str)
        .ok_or_else(|| refused("ice candidate without candidate"))?;
    if candidate.is_empty() {
        // End of candidates.
        return Ok(());
    }
    rtc.send(Command::Candidate {
        session_id: s.original_conn_id.clone(),
        candidate: candidate.to_string(),
    });
    Ok(())
}

pub fn set_muted(app: &App, session_id: &str, muted: bool) {
    if let Some(rtc) = &app.rtc {
        rtc.send(Command::Mute {
            session_id: session_id.to_string(),
            muted,
        });
    }
}

pub fn set_video_stream(app: &App, session_id: &str, stream_id: Option<String>) {
    if let Some(rtc) = &app.rtc {
        rtc.send(Command::VideoStream {
            session_id: session_id.to_string(),
            stream_id,
        });
    }
}

pub fn set_screen_stream(app: &App, session_id: &str, stream_id: Option<String>) {
    if let Some(rtc) = &app.rtc {
        rtc.send(Command::ScreenStream {
            session_id: session_id.to_string(),
            stream_id,
        });
    }
}

/// `signal` to the session's current connection, carrying the session id.
async fn send_signal(app: &App, session_id: &str, json: String) {
    let Some(local) = app.sessions.get_by_session_id(session_id) else {
        tracing::debug!(session_id, "signal for a session not on this node");
        return;
    };
    app.publish(
        "signal",
        json!({"data": json, "connID": session_id}),
        Broadcast::connection(&local.user_id, &local.conn_id),
    )
    .await;
}

/// `user_voice_on` / `user_voice_off` to the channel's participants (not reliable
/// upstream: a lost one is corrected by the next).
async fn voice(app: &App, session_id: &str, on: bool) {
    let Some(local) = app.sessions.get_by_session_id(session_id) else {
        return;
    };
    let state = match app.load_state(&local.channel_id).await {
        Ok(Some(st)) => st,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(session_id, error = %e, "voice event dropped");
            return;
        }
    };
    let event = if on {
        "user_voice_on"
    } else {
        "user_voice_off"
    };
    app.publish_to_participants(
        event,
        json!({"userID": local.user_id, "session_id": session_id}),
        &state,
    )
    .await;
}

/// Handles what the SFU reports until the plugin stops.
pub async fn handle_notes(app: App, mut notes: tokio::sync::mpsc::UnboundedReceiver<Note>) {
    while let Some(n) = notes.recv().await {
        match n {
            Note::Offer { session_id, json } => send_signal(&app, &session_id, json).await,
            Note::Voice { session_id, on } => voice(&app, &session_id, on).await,
            Note::Closed { session_id } => {
                // RTC closed: the session is over (upstream removes it from the call).
                if let Some(local) = app.sessions.get_by_session_id(&session_id) {
                    local.signal(Signal::Closed);
                    app.sessions.remove_if_same(&local);
                    let app = app.clone();
                    tokio::spawn(async move {
                        if let Err(e) = remove_session(&app, &local.channel_id, &session_id).await {
                            tracing::error!(session_id, error = %e, "failed to remove session after rtc close");
                        }
                    });
                }
            }
        }
    }
}
