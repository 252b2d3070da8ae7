//! Entry point for client websocket messages (`custom_com.mattermost.calls_*`), as the
//! host hands them to `WebSocketMessageHasBeenPosted` (reference calls-plugin.md §2.2).

use serde::Deserialize;

use super::app::{App, TokenBucket};
use super::host_api::Broadcast;
use super::join::{handle_join, handle_reconnect, send_call_state, JoinData, ReconnectData};
use super::sessions::{QueuedMessage, Signal};
use crate::proto;

pub const ACTION_PREFIX: &str = "custom_com.mattermost.calls_";

/// Types processed through a session's queue (`actions::parse_queued`).
pub const QUEUED_TYPES: &[&str] = &[
    "sdp",
    "ice",
    "mute",
    "unmute",
    "screen_on",
    "screen_off",
    "video_on",
    "video_off",
    "raise_hand",
    "unraise_hand",
    "react",
    "metric",
];

/// What one websocket connection may send: every action draws on `any` (10/s, burst
/// 100, as a session's queue), and the ones that make the plugin load a call, take
/// its lock or ask the host for permissions (join, reconnect, leave, call_state) also
/// draw on `control` (2/s, burst 20: a client sends a few per call). Beyond that,
/// actions are dropped before any work: a flood of `call_state` once held the call
/// lock long enough to delay others' joins by seconds and fail a host's end-call.
pub struct WsBudget {
    any: TokenBucket,
    control: TokenBucket,
}

const ANY_RATE: f64 = 10.0;
const ANY_BURST: f64 = 100.0;
const CONTROL_RATE: f64 = 2.0;
const CONTROL_BURST: f64 = 20.0;

impl Default for WsBudget {
    fn default() -> Self {
        WsBudget {
            any: TokenBucket::new(ANY_BURST),
            control: TokenBucket::new(CONTROL_BURST),
        }
    }
}

impl WsBudget {
    fn allow(&mut self, control: bool) -> bool {
        self.any.allow(ANY_RATE, ANY_BURST)
            && (!control || self.control.allow(CONTROL_RATE, CONTROL_BURST))
    }
}

fn within_budget(app: &App, conn_id: &str, msg_type: &str) -> bool {
    let control = matches!(msg_type, "join" | "reconnect" | "leave" | "call_state");
    let allowed = app
        .ws_budgets
        .lock()
        .entry(conn_id.to_string())
        .or_default()
        .allow(control);
    if !allowed {
        if let Some(left_out) = app.repeats.admit("ws action over budget") {
            tracing::warn!(
                conn_id,
                msg_type,
                left_out,
                "websocket action dropped: over the connection's budget"
            );
        }
    }
    allowed
}

#[derive(Debug, Default, Deserialize)]
struct CallStateData {
    #[serde(rename = "channelID", default)]
    channel_id: String,
}

fn decode<T: for<'de> Deserialize<'de> + Default>(
    app: &App,
    m: &proto::WebSocketMessage,
) -> Option<T> {
    if m.data_msgpack.is_empty() {
        return Some(T::default());
    }
    match rmp_serde::from_slice(&m.data_msgpack) {
        Ok(v) => Some(v),
        Err(e) => {
            if let Some(left_out) = app.repeats.admit("invalid websocket message data") {
                tracing::warn!(action = m.action, conn_id = m.connection_id, error = %e, left_out, "invalid websocket message data");
            }
            None
        }
    }
}

pub async fn on_message(app: &App, m: proto::WebSocketMessage) {
    let Some(msg_type) = m.action.strip_prefix(ACTION_PREFIX) else {
        return;
    };
    if !within_budget(app, &m.connection_id, msg_type) {
        return;
    }
    match msg_type {
        "join" => {
            app.metrics.ws_event("in", "join");
            if let Some(d) = decode::<JoinData>(app, &m) {
                tokio::spawn(handle_join(
                    app.clone(),
                    m.connection_id,
                    m.user_id,
                    m.session_id,
                    d,
                ));
            }
        }
        "reconnect" => {
            app.metrics.ws_event("in", "reconnect");
            if let Some(d) = decode::<ReconnectData>(app, &m) {
                tokio::spawn(handle_reconnect(
                    app.clone(),
                    m.connection_id,
                    m.user_id,
                    m.session_id,
                    d,
                ));
            }
        }
        "leave" => {
            app.metrics.ws_event("in", "leave");
            if let Some(s) = app.sessions.get(&m.connection_id) {
                s.signal(Signal::Leave);
            }
        }
        "call_state" => {
            app.metrics.ws_event("in", "call_state");
            let Some(d) = decode::<CallStateData>(app, &m) else {
                return;
            };
            let app = app.clone();
            tokio::spawn(async move {
                match app.can_read_channel(&m.user_id, &d.channel_id).await {
                    Ok(true) => {}
                    Ok(false) => {
                        if let Some(left_out) = app.repeats.admit("call_state forbidden") {
                            tracing::warn!(
                                user_id = m.user_id,
                                channel_id = d.channel_id,
                                left_out,
                                "call_state: forbidden"
                            );
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "call_state: permission check failed");
                        return;
                    }
                }
                // A read of what the database holds, without the call lock: a reader
                // must not make writers wait, and any change after this read comes to
                // the client as an event anyway.
                match app.load_state(&d.channel_id).await {
                    Ok(Some(state)) => {
                        send_call_state(
                            &app,
                            &state,
                            &m.user_id,
                            Broadcast::connection(&m.user_id, &m.connection_id),
                        )
                        .await
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "call_state: load failed"),
                }
            });
        }
        // Keepalive from clients; core answers plain `ping` itself.
        "ping" => {}
        // Bot-only live captions: there is no transcriber job on this server.
        "caption" => {
            tracing::debug!(user_id = m.user_id, "caption message ignored");
        }
        t if QUEUED_TYPES.contains(&t) => match app.sessions.get(&m.connection_id) {
            Some(s) => {
                if !s.enqueue(QueuedMessage {
                    msg_type: t.to_string(),
                    data: m.data_msgpack,
                }) {
                    if let Some(left_out) = app.repeats.admit("session queue full") {
                        tracing::warn!(
                            session_id = s.original_conn_id,
                            msg_type = t,
                            left_out,
                            "message dropped: rate limit or queue full"
                        );
                    }
                }
            }
            None => tracing::debug!(
                conn_id = m.connection_id,
                msg_type = t,
                "no session for connection"
            ),
        },
        other => {
            if let Some(left_out) = app.repeats.admit("invalid client message type") {
                tracing::warn!(
                    conn_id = m.connection_id,
                    msg_type = other,
                    left_out,
                    "invalid client message type"
                );
            }
        }
    }
}

/// `OnWebSocketDisconnect`: the session gets the reconnect grace. A disconnect that
/// races ahead of the join's registration is re-checked once the grace has passed.
pub fn on_disconnect(app: &App, conn_id: &str) {
    app.ws_budgets.lock().remove(conn_id);
    if let Some(s) = app.sessions.get(conn_id) {
        s.signal(Signal::WsClosed);
        return;
    }
    let app = app.clone();
    let conn_id = conn_id.to_string();
    tokio::spawn(async move {
        tokio::time::sleep(super::sessions::RECONNECT_GRACE).await;
        if let Some(s) = app.sessions.get(&conn_id) {
            s.signal(Signal::WsClosed);
        }
    });
}
