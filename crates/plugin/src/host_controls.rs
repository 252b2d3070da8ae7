//! Host controls (reference calls-plugin.md §1.3): what a call's host (or a system
//! admin) does to others' sessions. Most are requests to the target's client; a
//! removal takes the session out of the call after the client had time to go.

use std::time::Duration;

use serde_json::json;

use super::app::{App, AppError, Result};
use super::host_api::Broadcast;
use super::leave::end_session;
use super::model::CallState;

pub async fn host_make(app: &App, channel_id: &str, requester: &str, new_host: &str) -> Result<()> {
    if !app.bot_id.is_empty() && new_host == app.bot_id {
        return Err(AppError::NotAllowed("cannot assign the bot to be host"));
    }
    let guard = app.call_locks.lock(channel_id).await?;
    let mut state = app.state_for_host_action(channel_id, requester).await?;
    if state.call.host_id() == new_host {
        if state.call.props.host_locked_user_id.is_empty() {
            state.call.props.host_locked_user_id = new_host.to_string();
            app.store.update_call(&state.call).await?;
        }
        return Ok(());
    }
    if !state.sessions.values().any(|s| s.user_id == new_host) {
        return Err(AppError::NotInCall);
    }
    state.call.props.hosts = vec![new_host.to_string()];
    state.call.props.host_locked_user_id = new_host.to_string();
    app.store.update_call(&state.call).await?;
    drop(guard);
    app.publish_host_changed(&state).await;
    Ok(())
}

fn target<'a>(state: &'a CallState, session_id: &str) -> Result<&'a super::model::Session> {
    state.sessions.get(session_id).ok_or(AppError::NotInCall)
}

pub async fn host_mute(
    app: &App,
    channel_id: &str,
    requester: &str,
    session_id: &str,
) -> Result<()> {
    let state = app.state_for_host_action(channel_id, requester).await?;
    let s = target(&state, session_id)?;
    if !s.unmuted {
        return Ok(());
    }
    app.publish(
        "host_mute",
        json!({"channel_id": channel_id, "session_id": session_id}),
        Broadcast::user(&s.user_id),
    )
    .await;
    Ok(())
}

pub async fn host_mute_others(app: &App, channel_id: &str, requester: &str) -> Result<()> {
    let state = app.state_for_host_action(channel_id, requester).await?;
    for s in state
        .sessions
        .values()
        .filter(|s| s.unmuted && s.user_id != requester)
    {
        app.publish(
            "host_mute",
            json!({"channel_id": channel_id, "session_id": s.id}),
            Broadcast::user(&s.user_id),
        )
        .await;
    }
    Ok(())
}

pub async fn host_screen_off(
    app: &App,
    channel_id: &str,
    requester: &str,
    session_id: &str,
) -> Result<()> {
    let state = app.state_for_host_action(channel_id, requester).await?;
    if state.call.props.screen_sharing_session_id != session_id {
        return Ok(());
    }
    let s = target(&state, session_id)?;
    app.publish(
        "host_screen_off",
        json!({"channel_id": channel_id, "session_id": session_id}),
        Broadcast::user(&s.user_id),
    )
    .await;
    Ok(())
}

pub async fn host_lower_hand(
    app: &App,
    channel_id: &str,
    requester: &str,
    session_id: &str,
) -> Result<()> {
    let state = app.state_for_host_action(channel_id, requester).await?;
    let s = target(&state, session_id)?;
    if s.raised_hand == 0 {
        return Ok(());
    }
    app.publish(
        "host_lower_hand",
        json!({"call_id": state.call.id, "channel_id": channel_id, "session_id": session_id, "host_id": requester}),
        Broadcast::user(&s.user_id),
    )
    .await;
    Ok(())
}

pub async fn host_remove(
    app: &App,
    channel_id: &str,
    requester: &str,
    session_id: &str,
) -> Result<()> {
    let state = app.state_for_host_action(channel_id, requester).await?;
    let s = target(&state, session_id)?;
    app.publish_to_participants(
        "host_removed",
        json!({"call_id": state.call.id, "channel_id": channel_id, "session_id": session_id, "user_id": s.user_id}),
        &state,
    )
    .await;
    let app = app.clone();
    let channel_id = channel_id.to_string();
    let session_id = session_id.to_string();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        end_session(&app, &channel_id, &session_id);
    });
    Ok(())
}
