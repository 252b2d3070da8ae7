//! Entry point for client websocket messages (`custom_com.mattermost.calls_*`), as the
//! host hands them to `WebSocketMessageHasBeenPosted` (reference calls-plugin.md §2.2).

use serde::Deserialize;

use super::app::App;
use super::host_api::Broadcast;
use super::join::{handle_join, handle_reconnect, send_call_state, JoinData, ReconnectData};
use super::sessions::{QueuedMessage, Signal};
use crate::proto;

pub const ACTION_PREFIX: &str = "custom_com.mattermost.calls_";

/// Types processed through a session's queue.
const QUEUED_TYPES: &[&str] = &[
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

#[derive(Debug, Default, Deserialize)]
struct CallStateData {
    #[serde(rename = "channelID", default)]
    channel_id: String,
}

fn decode<T: for<'de> Deserialize<'de> + Default>(m: &proto::WebSocketMessage) -> Option<T> {
    if m.data_msgpack.is_empty() {
        return Some(T::default());
    }
    match rmp_serde::from_slice(&m.data_msgpack) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(action = m.action, conn_id = m.connection_id, error = %e, "invalid websocket message data");
            None
        }
    }
}

pub async fn on_message(app: &App, m: proto::WebSocketMessage) {
    let Some(msg_type) = m.action.strip_prefix(ACTION_PREFIX) else {
        return;
    };
    match msg_type {
        "join" => {
            app.metrics.ws_event("in", "join");
            if let Some(d) = decode::<JoinData>(&m) {
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
            if let Some(d) = decode::<ReconnectData>(&m) {
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
            let Some(d) = decode::<CallStateData>(&m) else {
                return;
            };
            let app = app.clone();
            tokio::spawn(async move {
                match app.can_read_channel(&m.user_id, &d.channel_id).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(
                            user_id = m.user_id,
                            channel_id = d.channel_id,
                            "call_state: forbidden"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "call_state: permission check failed");
                        return;
                    }
                }
                let _guard = match app.lock_call(&d.channel_id).await {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!(error = %e, "call_state: lock failed");
                        return;
                    }
                };
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
                    tracing::warn!(
                        session_id = s.original_conn_id,
                        msg_type = t,
                        "message dropped: rate limit or queue full"
                    );
                }
            }
            None => tracing::debug!(
                conn_id = m.connection_id,
                msg_type = t,
                "no session for connection"
            ),
        },
        other => {
            tracing::warn!(
                conn_id = m.connection_id,
                msg_type = other,
                "invalid client message type"
            );
        }
    }
}

/// `OnWebSocketDisconnect`: the session gets the reconnect grace. A disconnect that
/// races ahead of the join's registration is re-checked once the grace has passed.
pub fn on_disconnect(app: &App, conn_id: &str) {
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
