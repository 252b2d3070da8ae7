//! The task of one session on this node: it runs the session's queued actions in
//! order until the session ends (leave, its socket gone past the reconnect grace, or
//! moved to another connection), then removes it from its call when it left.

use std::sync::Arc;

use super::actions::handle_queued;
use super::app::App;
use super::leave::remove_session;
use super::sessions::{run_session, Ending, LocalSession, SessionInbox, RECONNECT_GRACE};

/// Starts the task (`start_closed`: the session's socket is already gone, as for a
/// session recovered without a live connection).
pub fn spawn(app: App, local: Arc<LocalSession>, inbox: SessionInbox, start_closed: bool) {
    tokio::spawn(async move {
        let handler_app = app.clone();
        let handler_session = local.clone();
        let ending = run_session(inbox, start_closed, RECONNECT_GRACE, move |q| {
            let app = handler_app.clone();
            let s = handler_session.clone();
            async move { handle_queued(&app, &s, q).await }
        })
        .await;
        app.sessions.remove_if_same(&local);
        app.metrics
            .websocket_connections
            .set(app.sessions.len() as i64);
        if ending == Ending::Remove {
            if let Err(e) = remove_session(&app, &local.channel_id, &local.original_conn_id).await {
                tracing::error!(session_id = local.original_conn_id, error = %e, "failed to remove session");
            }
        }
    });
}
