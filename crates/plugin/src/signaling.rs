//! Entry point for client websocket messages (`custom_com.mattermost.calls_*`), as the
//! host hands them to `WebSocketMessageHasBeenPosted` (reference calls-plugin.md §2.2).

use super::app::App;
use super::client_message::{ActionKind, ClientAction};
use super::host_api::Broadcast;
use super::join::{handle_join, handle_reconnect, send_call_state};
use super::sessions::Signal;
use calls_wire::proto;

pub use super::client_message::ACTION_PREFIX;

/// Drops what is over the connection's budget, logged once per window.
fn within_budget(app: &App, conn_id: &str, kind: ActionKind) -> bool {
    let allowed = app.ws_budgets.allow(conn_id, kind.is_control());
    if !allowed {
        if let Some(left_out) = app.repeats.admit("ws action over budget") {
            tracing::warn!(
                conn_id,
                msg_type = kind.name(),
                left_out,
                "websocket action dropped: over the connection's budget"
            );
        }
    }
    allowed
}

pub async fn on_message(app: &App, m: proto::WebSocketMessage) {
    let Some(name) = m.action.strip_prefix(ACTION_PREFIX) else {
        return;
    };
    let Some(kind) = ActionKind::from_name(name) else {
        if let Some(left_out) = app.repeats.admit("invalid client message type") {
            tracing::warn!(
                conn_id = m.connection_id,
                msg_type = name,
                left_out,
                "invalid client message type"
            );
        }
        return;
    };
    if !within_budget(app, &m.connection_id, kind) {
        return;
    }
    let action = match ClientAction::parse(kind, &m.data_msgpack) {
        Ok(a) => a,
        Err(e) => {
            // Clients can send bad data at will: once per window, with a count.
            if let Some(left_out) = app.repeats.admit("invalid websocket message data") {
                tracing::warn!(action = m.action, conn_id = m.connection_id, error = %e, left_out, "invalid websocket message data");
            }
            return;
        }
    };
    match action {
        ClientAction::Join(d) => {
            app.metrics.ws_event("in", "join");
            tokio::spawn(handle_join(
                app.clone(),
                m.connection_id,
                m.user_id,
                m.session_id,
                d,
            ));
        }
        ClientAction::Reconnect(d) => {
            app.metrics.ws_event("in", "reconnect");
            tokio::spawn(handle_reconnect(
                app.clone(),
                m.connection_id,
                m.user_id,
                m.session_id,
                d,
            ));
        }
        ClientAction::Leave => {
            app.metrics.ws_event("in", "leave");
            if let Some(s) = app.sessions.get(&m.connection_id) {
                s.signal(Signal::Leave);
            }
        }
        ClientAction::CallState { channel_id } => {
            app.metrics.ws_event("in", "call_state");
            tokio::spawn(call_state(
                app.clone(),
                m.user_id,
                m.connection_id,
                channel_id,
            ));
        }
        ClientAction::Ping => {}
        ClientAction::Caption => {
            tracing::debug!(user_id = m.user_id, "caption message ignored");
        }
        ClientAction::Queued(q) => match app.sessions.get(&m.connection_id) {
            Some(s) => {
                if !s.enqueue(q) {
                    if let Some(left_out) = app.repeats.admit("session queue full") {
                        tracing::warn!(
                            session_id = s.original_conn_id,
                            msg_type = kind.name(),
                            left_out,
                            "message dropped: rate limit or queue full"
                        );
                    }
                }
            }
            None => tracing::debug!(
                conn_id = m.connection_id,
                msg_type = kind.name(),
                "no session for connection"
            ),
        },
    }
}

/// `call_state`: the call of a channel the user may read, to this connection.
async fn call_state(app: App, user_id: String, conn_id: String, channel_id: String) {
    match app.can_read_channel(&user_id, &channel_id).await {
        Ok(true) => {}
        Ok(false) => {
            if let Some(left_out) = app.repeats.admit("call_state forbidden") {
                tracing::warn!(user_id, channel_id, left_out, "call_state: forbidden");
            }
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "call_state: permission check failed");
            return;
        }
    }
    // A read of what the database holds, without the call lock: a reader must not
    // make writers wait, and any change after this read comes to the client as an
    // event anyway.
    match app.load_state(&channel_id).await {
        Ok(Some(state)) => {
            send_call_state(
                &app,
                &state,
                &user_id,
                Broadcast::connection(&user_id, &conn_id),
            )
            .await
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "call_state: load failed"),
    }
}

/// `OnWebSocketDisconnect`: the session gets the reconnect grace. A disconnect that
/// races ahead of the join's registration is re-checked once the grace has passed.
pub fn on_disconnect(app: &App, conn_id: &str) {
    app.ws_budgets.forget(conn_id);
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
