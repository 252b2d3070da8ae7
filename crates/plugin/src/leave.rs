//! Sessions leaving and calls ending (reference calls-plugin.md §2.6, §3.5): a
//! session's removal with its side effects (screen and video off, host re-election,
//! the natural end of the call with its last session), a host ending the call for
//! everyone, and the forced cleanup of what is left. Every change happens under the
//! call lock; events go out after the write.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::types::Json;

use super::app::{App, Result};
use super::calls::reelect_host;
use super::cluster_events::tell_left;
use super::host_api::Broadcast;
use super::model::{Call, CallProps};
use super::recording;
use super::sessions::{conn_key, node_key, Signal};
use calls_wire::ids::now_ms;

/// The session ended elsewhere (its media closed, a host removed it): this node's
/// entry goes at once, and the session leaves its call.
pub fn end_session(app: &App, channel_id: &str, session_id: &str) {
    if let Some(local) = app.sessions.get_by_session_id(session_id) {
        local.signal(Signal::Closed);
        app.sessions.remove_if_same(&local);
    }
    let app = app.clone();
    let channel_id = channel_id.to_string();
    let session_id = session_id.to_string();
    tokio::spawn(async move {
        if let Err(e) = remove_session(&app, &channel_id, &session_id).await {
            tracing::error!(session_id, error = %e, "failed to remove session");
        }
    });
}

/// Removes a session from its call (idempotent): side effects of leaving, host
/// re-election, natural end when it was the last one.
pub async fn remove_session(app: &App, channel_id: &str, session_id: &str) -> Result<()> {
    let t = std::time::Instant::now();
    let guard = app.call_locks.lock(channel_id).await?;
    let Some(mut state) = app.load_state(channel_id).await? else {
        app.media.remove_session(None, session_id).await;
        return Ok(());
    };
    app.media
        .remove_session(Some(&state.call.id), session_id)
        .await;
    // Removed here while its websocket is on another node (a host removed it, say):
    // that node lets it go.
    if let Some(r) = app.peers.remove(session_id) {
        tell_left(app, &r).await;
    }
    let Some(sess) = state.sessions.remove(session_id) else {
        tracing::debug!(session_id, "session not found in call state");
        return Ok(());
    };
    app.store.delete_session(session_id).await?;
    // A failed delete leaves a stale mapping that only recovery reads, for a gone session.
    let _ = app.host.kv_delete(&conn_key(session_id)).await;
    if !app.node_id().is_empty() {
        let _ = app.host.kv_delete(&node_key(session_id)).await;
    }
    let now_s = now_ms() / 1000;
    let props = &mut state.call.props;
    let mut screen_off = false;
    if props.screen_sharing_session_id == session_id {
        props.screen_sharing_session_id.clear();
        state.call.stats.screen_duration += (now_s - props.screen_start_at).max(0);
        props.screen_start_at = 0;
        screen_off = true;
    }
    let mut video_off = false;
    if sess.video {
        if let Some(start) = props.video_start_at.remove(session_id) {
            state.call.stats.video_duration += (now_s - start).max(0);
        }
        video_off = true;
    }
    let recording_ended = recording::session_left(app, &mut state, session_id).await?;
    let host_changed = reelect_host(&mut state, &app.bot_id);
    let ended = state.sessions.is_empty();
    let participants: Vec<String> = state.call.props.participants.keys().cloned().collect();
    if ended {
        state.call.end_at = now_ms();
        state.call.participants = Json(json!(participants));
        app.media.call_ended(&state.call.id);
        let p = &mut state.call.props;
        p.rtcd_host.clear();
        p.dismissed_notification.clear();
        p.node_id.clear();
        p.hosts.clear();
        p.participants.clear();
    }
    app.store.update_call(&state.call).await?;
    drop(guard);

    if let Some(job) = &recording_ended {
        recording::publish_job_state(app, &state, job).await;
    }
    recording::only_bot_left(app, &state).await;
    if screen_off {
        app.publish_to_participants("user_screen_off", json!({}), &state)
            .await;
    }
    if video_off {
        app.publish_to_participants(
            "user_video_off",
            json!({"userID": sess.user_id, "session_id": session_id}),
            &state,
        )
        .await;
    }
    if sess.user_id != app.bot_id {
        app.publish(
            "user_left",
            json!({"user_id": sess.user_id, "session_id": session_id}),
            Broadcast::channel(channel_id),
        )
        .await;
    }
    if host_changed && !ended {
        app.publish_host_changed(&state).await;
    }
    if ended {
        if let Err(e) = update_call_post_ended(app, &state.call, &participants).await {
            tracing::error!(error = %e, "failed to update call post");
        }
    }
    app.metrics
        .app_handlers_time
        .with_label_values(&["removeUserSession"])
        .observe(t.elapsed().as_secs_f64());
    Ok(())
}

/// Ends a call for everyone (host or system admin): `call_end` now, forced cleanup
/// after 5 s for whoever did not leave.
pub async fn end_call(app: &App, channel_id: &str, requester: &str) -> Result<()> {
    let guard = app.call_locks.lock(channel_id).await?;
    let state = app.state_for_host_action(channel_id, requester).await?;
    drop(guard);
    app.publish("call_end", json!({}), Broadcast::channel(channel_id))
        .await;
    // The recorder gets no copy of channel events here: it is told to stop and upload.
    if let Some(job) = state.jobs.get(recording::RECORDING) {
        recording::send_job_stop(app, &job.id).await;
    }
    let app = app.clone();
    let channel_id = channel_id.to_string();
    let call_id = state.call.id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Err(e) = force_cleanup(&app, &channel_id, &call_id, false).await {
            tracing::error!(channel_id, error = %e, "forced call cleanup failed");
        }
    });
    Ok(())
}

/// Closes every remaining session of a call and ends it (host end, a gone node);
/// false when there was nothing left to do (the call ended and empty already).
/// `announce`: `call_end` goes to the channel first (the host's end announced it
/// already).
pub async fn force_cleanup(
    app: &App,
    channel_id: &str,
    call_id: &str,
    announce: bool,
) -> Result<bool> {
    let guard = app.call_locks.lock(channel_id).await?;
    let Some(mut call) = app.store.get_call(call_id).await? else {
        return Ok(false);
    };
    let sessions = app.store.get_sessions(call_id).await?;
    if call.end_at != 0 && sessions.is_empty() {
        return Ok(false);
    }
    let jobs = app.store.get_active_jobs(call_id).await?;
    for s in sessions.keys() {
        app.media.remove_session(Some(call_id), s).await;
        let _ = app.host.kv_delete(&conn_key(s)).await;
        if !app.node_id().is_empty() {
            let _ = app.host.kv_delete(&node_key(s)).await;
        }
    }
    for r in app.peers.of_call(call_id) {
        app.peers.remove(&r.media.session_id);
        tell_left(app, &r).await;
    }
    app.media.call_ended(call_id);
    for s in app.sessions.all() {
        if s.call_id == call_id {
            s.signal(Signal::Closed);
            app.sessions.remove_if_same(&s);
        }
    }
    let participants: Vec<String> = call.props.participants.keys().cloned().collect();
    if call.end_at == 0 {
        call.end_at = now_ms();
    }
    call.participants = Json(json!(participants));
    call.props.0 = CallProps::default();
    app.store.delete_sessions_of_call(call_id).await?;
    app.store.end_active_jobs(call_id, now_ms()).await?;
    app.store.update_call(&call).await?;
    drop(guard);
    if announce {
        app.publish("call_end", json!({}), Broadcast::channel(channel_id))
            .await;
    }
    // Recordings end with the call (upstream tells the channel, recordings only).
    let end = now_ms();
    for mut job in jobs
        .into_values()
        .filter(|j| j.job_type == recording::RECORDING)
    {
        job.end_at = end;
        let data = recording::job_state_event(channel_id, &job);
        app.publish("call_job_state", data, Broadcast::channel(channel_id))
            .await;
    }
    // The post first (as upstream's cleanup does), then the departures.
    if let Err(e) = update_call_post_ended(app, &call, &participants).await {
        tracing::error!(error = %e, "failed to update call post");
    }
    for s in sessions.values().filter(|s| s.user_id != app.bot_id) {
        app.publish(
            "user_left",
            json!({"user_id": s.user_id, "session_id": s.id}),
            Broadcast::channel(channel_id),
        )
        .await;
    }
    Ok(true)
}

async fn update_call_post_ended(app: &App, call: &Call, participants: &[String]) -> Result<()> {
    if call.post_id.is_empty() {
        return Ok(());
    }
    let Some(mut post) = app.host.post(&call.post_id).await? else {
        return Ok(());
    };
    let mut props: serde_json::Map<String, Value> =
        serde_json::from_slice(&post.props_json).unwrap_or_default();
    let msg = "Call ended";
    props.insert(
        "attachments".into(),
        json!([{"fallback": msg, "title": msg, "text": msg}]),
    );
    props.insert("end_at".into(), json!(now_ms()));
    props.insert("participants".into(), json!(participants));
    post.message = msg.into();
    post.props_json = serde_json::to_vec(&props).unwrap_or_default();
    app.host.update_post(post).await?;
    Ok(())
}
