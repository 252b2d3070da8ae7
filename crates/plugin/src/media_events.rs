//! What the media side reports about this node's sessions, acted on: answers and
//! server offers go to the session's connection as `signal`, voice activity to the
//! call's participants, and a session whose media ended leaves its call (as
//! upstream), wherever its websocket is. It sits above session removal so that the media component never has
//! to know about it.

use serde_json::json;

use super::app::App;
use super::leave::end_session;
use super::media::{MediaEvent, MediaEvents};

/// Handles the media events until both backends are gone (the plugin stops).
pub async fn run(app: App, mut events: MediaEvents) {
    while let Some(e) = events.recv().await {
        match e {
            MediaEvent::Signal { session_id, json } => app.publish_signal(&session_id, json).await,
            MediaEvent::Voice { session_id, on } => voice(&app, &session_id, on).await,
            MediaEvent::Closed { session_id } => {
                if let Some(local) = app.sessions.get_by_session_id(&session_id) {
                    end_session(&app, &local.channel_id, &session_id);
                } else if let Some(route) = app.peers.get(&session_id) {
                    // Its websocket is on another node: the removal here tells that
                    // node (as upstream's close callback, the call's state is changed
                    // where its media was).
                    end_session(&app, &route.media.channel_id, &session_id);
                } else {
                    // A session this node does not hold (rtcd closed it on this node's
                    // connection, while its websocket's node is gone): still in the
                    // call's state, it leaves.
                    remove_unknown(&app, &session_id).await;
                }
            }
        }
    }
}

async fn remove_unknown(app: &App, session_id: &str) {
    let channel = async {
        let Some(s) = app.store.get_session(session_id).await? else {
            return Ok(None);
        };
        Ok::<_, crate::store::StoreError>(
            app.store.get_call(&s.call_id).await?.map(|c| c.channel_id),
        )
    };
    match channel.await {
        Ok(Some(channel_id)) => end_session(app, &channel_id, session_id),
        Ok(None) => {}
        Err(e) => tracing::warn!(session_id, error = %e, "closed session not looked up"),
    }
}

/// `user_voice_on` / `user_voice_off` to the channel's participants (not reliable
/// upstream: a lost one is corrected by the next).
async fn voice(app: &App, session_id: &str, on: bool) {
    let Some((user_id, _, channel_id)) = app.recipient(session_id) else {
        return;
    };
    let state = match app.load_state(&channel_id).await {
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
        json!({"userID": user_id, "session_id": session_id}),
        &state,
    )
    .await;
}
