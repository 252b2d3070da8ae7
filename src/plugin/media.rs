//! Media signaling between the websocket side and the integrated SFU: client `sdp` /
//! `ice` in, server answers / offers out as `signal` events (reference
//! client-protocol.md §4), peer-connection closure → session removal.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::app::{refused, App, Result};
use super::host_api::Broadcast;
use super::join::remove_session;
use super::rtcd_pool::RtcdPool;
use super::sessions::{LocalSession, Signal};
use crate::rtcd::protocol::{rtc_type, Envelope, Join, RtcMessage};
use crate::sfu::datachannel::{inflate_sdp, SessionDescription};
use crate::sfu::shell::{Command, Note, RtcServer};

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

/// zlib-inflates a session description, at most `SDP_MAX` bytes.
fn inflate(bytes: &[u8]) -> Result<Vec<u8>> {
    inflate_sdp(bytes).map_err(|e| refused(e.to_string()))
}

/// Where a call's media runs.
enum Route {
    Integrated(RtcServer),
    Rtcd(Arc<RtcdPool>, String),
}

/// The call's media backend: its rtcd host if it has one, else the integrated SFU.
fn route(app: &App, call_id: &str) -> Result<Route> {
    if let Some(host) = app.call_host(call_id) {
        let pool = app
            .rtcd()
            .ok_or_else(|| refused("the call's rtcd host is not connected"))?;
        return Ok(Route::Rtcd(pool, host));
    }
    app.rtc()
        .filter(|r| r.is_alive())
        .map(Route::Integrated)
        .ok_or_else(|| refused("no rtc server"))
}

/// An `rtc` message for a session of an rtcd call.
async fn to_rtcd(
    pool: &RtcdPool,
    host: &str,
    s: &LocalSession,
    t: i64,
    data: Option<Vec<u8>>,
) -> Result<()> {
    let m = RtcMessage {
        session_id: s.original_conn_id.clone(),
        user_id: s.user_id.clone(),
        msg_type: t,
        data,
        ..Default::default()
    };
    pool.send(host, &Envelope::Rtc(m))
        .await
        .map_err(|e| refused(e.to_string()))
}

/// A new session of a call joins its media backend.
pub async fn add_session(app: &App, s: &LocalSession, dc_signaling: bool, av1: bool) -> Result<()> {
    match route(app, &s.call_id)? {
        Route::Integrated(rtc) => rtc.send(Command::AddSession {
            group: crate::sfu::DEFAULT_GROUP.to_string(),
            call_id: s.call_id.clone(),
            session_id: s.original_conn_id.clone(),
            dc_signaling,
            av1,
        }),
        Route::Rtcd(pool, host) => {
            let join = Join {
                call_id: s.call_id.clone(),
                user_id: s.user_id.clone(),
                session_id: s.original_conn_id.clone(),
                channel_id: s.channel_id.clone(),
                av1_support: av1,
                dc_signaling,
            };
            pool.send(&host, &Envelope::Join(join))
                .await
                .map_err(|e| refused(e.to_string()))?;
        }
    }
    Ok(())
}

/// The session's websocket moved to this node's connection: rtcd signals it here now.
pub async fn reconnected(app: &App, s: &LocalSession) {
    if let Ok(Route::Rtcd(pool, host)) = route(app, &s.call_id) {
        let e = Envelope::Reconnect {
            session_id: s.original_conn_id.clone(),
        };
        if let Err(e) = pool.send(&host, &e).await {
            tracing::warn!(session_id = s.original_conn_id, error = %e, "rtcd reconnect failed");
        }
    }
}

/// A session left its call.
pub async fn leave_media(app: &App, call_id: Option<&str>, session_id: &str) {
    match call_id.and_then(|c| route(app, c).ok()) {
        Some(Route::Rtcd(pool, host)) => {
            let e = Envelope::Leave {
                session_id: session_id.to_string(),
            };
            if let Err(e) = pool.send(&host, &e).await {
                tracing::warn!(session_id, error = %e, "rtcd leave failed");
            }
        }
        // Unknown call: the integrated SFU forgets it if it had it (idempotent).
        _ => {
            if let Some(rtc) = app.rtc() {
                rtc.send(Command::RemoveSession {
                    session_id: session_id.to_string(),
                });
            }
        }
    }
}

/// A client's `sdp` message: the description, and its inflated JSON (what rtcd takes).
#[derive(Debug)]
pub struct ClientSdp {
    pub desc: SessionDescription,
    pub raw: Vec<u8>,
}

/// Parses an `sdp` message: msgpack `{data: bytes}`, the bytes zlib JSON of at most
/// `SDP_MAX` inflated, an offer or an answer.
pub fn parse_sdp(data: &[u8]) -> Result<ClientSdp> {
    let d: SdpData =
        rmp_serde::from_slice(data).map_err(|e| refused(format!("invalid sdp message: {e}")))?;
    let raw = inflate(&d.data)?;
    let desc = SessionDescription::from_json(&raw)
        .map_err(|e| refused(format!("invalid session description: {e}")))?;
    if desc.kind != "offer" && desc.kind != "answer" {
        return Err(refused(format!("invalid sdp type {:?}", desc.kind)));
    }
    Ok(ClientSdp { desc, raw })
}

pub async fn sdp(app: &App, s: &LocalSession, ClientSdp { desc, raw }: ClientSdp) -> Result<()> {
    let rtc = match route(app, &s.call_id)? {
        Route::Integrated(rtc) => rtc,
        // rtcd takes the description as plain JSON, answered later as an `rtc` message.
        Route::Rtcd(pool, host) => return to_rtcd(&pool, &host, s, rtc_type::SDP, Some(raw)).await,
    };
    if desc.kind == "offer" {
        let answer = rtc
            .offer(&s.original_conn_id, desc.sdp)
            .await
            .map_err(|e| refused(e.to_string()))?;
        let json = SessionDescription::answer(answer).to_json();
        send_signal(app, &s.original_conn_id, json).await;
    } else {
        rtc.send(Command::Answer {
            session_id: s.original_conn_id.clone(),
            sdp: desc.sdp,
        });
    }
    Ok(())
}

/// A client's trickled candidate: its `candidate:` line and the JSON it came in (what
/// rtcd takes).
#[derive(Debug)]
pub struct ClientIce {
    pub candidate: String,
    pub json: String,
}

/// Parses an `ice` message: msgpack `{data: "<candidate JSON>"}`; `None` for the end
/// of candidates (an empty candidate).
pub fn parse_ice(data: &[u8]) -> Result<Option<ClientIce>> {
    let d: IceData =
        rmp_serde::from_slice(data).map_err(|e| refused(format!("invalid ice message: {e}")))?;
    let v: Value = serde_json::from_str(&d.data)
        .map_err(|e| refused(format!("invalid ice candidate: {e}")))?;
    let candidate = v
        .get("candidate")
        .and_then(Value::as_str)
        .ok_or_else(|| refused("ice candidate without candidate"))?;
    if candidate.is_empty() {
        return Ok(None);
    }
    Ok(Some(ClientIce {
        candidate: candidate.to_string(),
        json: d.data,
    }))
}

pub async fn ice(app: &App, s: &LocalSession, ice: ClientIce) -> Result<()> {
    match route(app, &s.call_id)? {
        Route::Integrated(rtc) => rtc.send(Command::Candidate {
            session_id: s.original_conn_id.clone(),
            candidate: ice.candidate,
        }),
        Route::Rtcd(pool, host) => {
            to_rtcd(&pool, &host, s, rtc_type::ICE, Some(ice.json.into_bytes())).await?
        }
    }
    Ok(())
}

pub async fn set_muted(app: &App, s: &LocalSession, muted: bool) {
    let r = match route(app, &s.call_id) {
        Ok(Route::Integrated(rtc)) => {
            rtc.send(Command::Mute {
                session_id: s.original_conn_id.clone(),
                muted,
            });
            Ok(())
        }
        Ok(Route::Rtcd(pool, host)) => {
            let t = if muted {
                rtc_type::MUTE
            } else {
                rtc_type::UNMUTE
            };
            to_rtcd(&pool, &host, s, t, None).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        tracing::warn!(session_id = s.original_conn_id, error = %e, "mute not applied to media");
    }
}

/// `screen_on` / `screen_off` (stream id None) or `video_on` / `video_off` (`video`).
pub async fn set_stream(app: &App, s: &LocalSession, video: bool, stream_id: Option<String>) {
    let r = match route(app, &s.call_id) {
        Ok(Route::Integrated(rtc)) => {
            let session_id = s.original_conn_id.clone();
            rtc.send(if video {
                Command::VideoStream {
                    session_id,
                    stream_id,
                }
            } else {
                Command::ScreenStream {
                    session_id,
                    stream_id,
                }
            });
            Ok(())
        }
        Ok(Route::Rtcd(pool, host)) => {
            let (t, data) = match (video, &stream_id) {
                (false, Some(id)) => (rtc_type::SCREEN_ON, Some(json!({"screenStreamID": id}))),
                (false, None) => (rtc_type::SCREEN_OFF, None),
                (true, Some(id)) => (rtc_type::VIDEO_ON, Some(json!({"videoStreamID": id}))),
                (true, None) => (rtc_type::VIDEO_OFF, None),
            };
            to_rtcd(&pool, &host, s, t, data.map(|d| d.to_string().into_bytes())).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        tracing::warn!(session_id = s.original_conn_id, error = %e, "stream change not applied to media");
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

/// Handles what the rtcd hosts send until the plugin stops: answers and offers as
/// `signal`, voice activity, and sessions rtcd closed.
pub async fn handle_rtcd(
    app: App,
    mut events: tokio::sync::mpsc::UnboundedReceiver<(String, Envelope)>,
) {
    while let Some((host, e)) = events.recv().await {
        match e {
            Envelope::Rtc(m) => {
                let Some(data) = m.data.and_then(|d| String::from_utf8(d).ok()) else {
                    tracing::warn!(
                        host,
                        session_id = m.session_id,
                        "rtc message without text data"
                    );
                    continue;
                };
                send_signal(&app, &m.session_id, data).await;
            }
            Envelope::Vad(m) => voice(&app, &m.session_id, m.msg_type == rtc_type::VOICE_ON).await,
            Envelope::Close { session_id } => closed(&app, session_id),
            Envelope::Hello { conn_id, .. } => tracing::debug!(host, conn_id, "rtcd hello"),
            other => tracing::warn!(
                host,
                kind = other.type_name(),
                "unexpected message from rtcd"
            ),
        }
    }
}

/// The media side ended a session: it leaves its call (as upstream).
fn closed(app: &App, session_id: String) {
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

/// Handles what the SFU reports until the plugin stops.
pub async fn handle_notes(app: App, mut notes: tokio::sync::mpsc::UnboundedReceiver<Note>) {
    while let Some(n) = notes.recv().await {
        match n {
            Note::Offer { session_id, json } => send_signal(&app, &session_id, json).await,
            Note::Voice { session_id, on } => voice(&app, &session_id, on).await,
            Note::Closed { session_id } => closed(&app, session_id),
        }
    }
}
