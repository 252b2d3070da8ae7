//! Client actions on an existing session (reference calls-plugin.md §2.8), run in
//! order by the session's task. State changes happen under the call lock; events
//! after the write.

use serde_json::{json, Value};

use super::app::{refused, App, AppError, Result};
use super::client_message::{CandidatePair, Emoji, Queued};
use super::media::StreamKind;
use super::model::CallState;
use super::sessions::LocalSession;
use calls_wire::ids::now_ms;

/// Runs one queued action of a session.
pub async fn handle_queued(app: &App, s: &LocalSession, q: Queued) {
    let name = q.name();
    app.metrics.ws_event("in", name);
    let res = match q {
        Queued::Mute(muted) => set_muted(app, s, muted).await,
        Queued::Hand(raised) => set_hand(app, s, raised).await,
        Queued::React(emoji) => react(app, s, emoji).await,
        Queued::ScreenOn { stream_id } => screen_on(app, s, stream_id).await,
        Queued::ScreenOff => screen_off(app, s).await,
        Queued::Video { on, stream_id } => set_video(app, s, on, stream_id).await,
        Queued::CandidatePairMetric(p) => {
            count_candidate_pair(app, &p);
            Ok(())
        }
        Queued::Sdp(sdp) => offer_or_answer(app, s, sdp).await,
        Queued::Ice(Some(candidate)) => {
            async {
                Ok(app
                    .media
                    .for_call(&s.call_id)?
                    .candidate(&s.media(), candidate)
                    .await?)
            }
            .await
        }
        Queued::Ice(None) => Ok(()),
    };
    if let Err(e) = res {
        // Clients can make their messages fail at will: once per window, with a count.
        if let Some(left_out) = app.repeats.admit("client message failed") {
            tracing::warn!(session_id = s.original_conn_id, msg_type = name, error = %e, left_out, "client message failed");
        }
    }
}

/// A client's offer (answered at once by the integrated SFU) or its answer to ours.
async fn offer_or_answer(
    app: &App,
    s: &LocalSession,
    sdp: super::client_message::ClientSdp,
) -> Result<()> {
    let media = app.media.for_call(&s.call_id)?;
    if let Some(answer) = media.sdp(&s.media(), sdp).await? {
        app.publish_signal(&s.original_conn_id, answer).await;
    }
    Ok(())
}

/// A change the call's media has to know about.
enum MediaChange {
    Mute(bool),
    Stream(StreamKind, Option<String>),
}

/// Tells the call's media about a change; the state change goes on if it cannot.
async fn tell_media(app: &App, s: &LocalSession, change: MediaChange) {
    let res = async {
        let media = app.media.for_call(&s.call_id)?;
        match change {
            MediaChange::Mute(muted) => media.set_muted(&s.media(), muted).await,
            MediaChange::Stream(kind, id) => media.set_stream(&s.media(), kind, id).await,
        }
    };
    if let Err(e) = res.await {
        tracing::warn!(session_id = s.original_conn_id, error = %e, "change not applied to media");
    }
}

/// Loads the call under lock and applies `f` to the session; returns the new state.
async fn with_session<F>(app: &App, s: &LocalSession, f: F) -> Result<CallState>
where
    F: FnOnce(&mut CallState) -> Result<bool>,
{
    let guard = app.call_locks.lock(&s.channel_id).await?;
    let mut state = app
        .load_state(&s.channel_id)
        .await?
        .ok_or(AppError::NoCallOngoing)?;
    if !state.sessions.contains_key(&s.original_conn_id) {
        return Err(refused("user state is missing from call state"));
    }
    let call_changed = f(&mut state)?;
    if let Some(sess) = state.sessions.get(&s.original_conn_id) {
        app.store.update_session(sess).await?;
    }
    if call_changed {
        app.store.update_call(&state.call).await?;
    }
    drop(guard);
    Ok(state)
}

async fn set_muted(app: &App, s: &LocalSession, muted: bool) -> Result<()> {
    let id = s.original_conn_id.clone();
    // The media side first, as upstream: forwarding stops even if the state write fails.
    tell_media(app, s, MediaChange::Mute(muted)).await;
    let state = with_session(app, s, |st| {
        if let Some(x) = st.sessions.get_mut(&id) {
            x.unmuted = !muted;
        }
        Ok(false)
    })
    .await?;
    let event = if muted { "user_muted" } else { "user_unmuted" };
    app.publish_to_participants(
        event,
        json!({"userID": s.user_id, "session_id": id}),
        &state,
    )
    .await;
    Ok(())
}

async fn set_hand(app: &App, s: &LocalSession, raised: bool) -> Result<()> {
    let id = s.original_conn_id.clone();
    let at = if raised { now_ms() } else { 0 };
    let state = with_session(app, s, |st| {
        if let Some(x) = st.sessions.get_mut(&id) {
            x.raised_hand = at;
        }
        Ok(false)
    })
    .await?;
    let event = if raised {
        "user_raise_hand"
    } else {
        "user_unraise_hand"
    };
    app.publish_to_participants(
        event,
        json!({"userID": s.user_id, "session_id": id, "raised_hand": at}),
        &state,
    )
    .await;
    Ok(())
}

async fn react(app: &App, s: &LocalSession, emoji: Emoji) -> Result<()> {
    let state = app
        .load_state(&s.channel_id)
        .await?
        .ok_or(AppError::NoCallOngoing)?;
    let mut e = json!({"name": emoji.name, "unified": emoji.unified});
    if let Some(skin) = emoji.skin {
        e["skin"] = Value::String(skin);
    }
    if let Some(literal) = emoji.literal {
        e["literal"] = Value::String(literal);
    }
    app.publish_to_participants(
        "user_reacted",
        json!({"user_id": s.user_id, "session_id": s.original_conn_id, "emoji": e, "timestamp": now_ms()}),
        &state,
    )
    .await;
    Ok(())
}

async fn screen_on(app: &App, s: &LocalSession, stream_id: Option<String>) -> Result<()> {
    if !app.config().AllowScreenSharing {
        return Err(refused("screen sharing is not allowed"));
    }
    let id = s.original_conn_id.clone();
    let state = with_session(app, s, |st| {
        let p = &mut st.call.props;
        if !p.screen_sharing_session_id.is_empty() {
            return Err(refused(
                "cannot start screen sharing, someone else is sharing already",
            ));
        }
        p.screen_sharing_session_id = id.clone();
        p.screen_start_at = now_ms() / 1000;
        st.call.stats.has_used_screen_share = true;
        Ok(true)
    })
    .await?;
    tell_media(app, s, MediaChange::Stream(StreamKind::Screen, stream_id)).await;
    app.publish_to_participants(
        "user_screen_on",
        json!({"userID": s.user_id, "session_id": s.original_conn_id}),
        &state,
    )
    .await;
    Ok(())
}

async fn screen_off(app: &App, s: &LocalSession) -> Result<()> {
    if !app.config().AllowScreenSharing {
        return Err(refused("screen sharing is not allowed"));
    }
    let id = s.original_conn_id.clone();
    let state = with_session(app, s, |st| {
        let p = &mut st.call.props;
        if p.screen_sharing_session_id != id {
            return Err(refused(
                "cannot stop screen sharing, session is not the one sharing",
            ));
        }
        p.screen_sharing_session_id.clear();
        // Upstream assigns rather than adds here (reference "non-obvious behaviours" 8).
        st.call.stats.screen_duration = (now_ms() / 1000 - p.screen_start_at).max(0);
        p.screen_start_at = 0;
        Ok(true)
    })
    .await?;
    tell_media(app, s, MediaChange::Stream(StreamKind::Screen, None)).await;
    app.publish_to_participants(
        "user_screen_off",
        json!({"userID": s.user_id, "session_id": s.original_conn_id}),
        &state,
    )
    .await;
    Ok(())
}

async fn set_video(app: &App, s: &LocalSession, on: bool, stream_id: Option<String>) -> Result<()> {
    let id = s.original_conn_id.clone();
    if on && stream_id.is_some() {
        tell_media(app, s, MediaChange::Stream(StreamKind::Video, stream_id)).await;
    }
    let state = with_session(app, s, |st| {
        let now_s = now_ms() / 1000;
        if let Some(x) = st.sessions.get_mut(&id) {
            x.video = on;
        }
        if on {
            st.call.props.video_start_at.insert(id.clone(), now_s);
            st.call.stats.has_used_video = true;
        } else if let Some(start) = st.call.props.video_start_at.remove(&id) {
            st.call.stats.video_duration += (now_s - start).max(0);
        }
        Ok(true)
    })
    .await?;
    let event = if on {
        "user_video_on"
    } else {
        "user_video_off"
    };
    app.publish_to_participants(
        event,
        json!({"userID": s.user_id, "session_id": id}),
        &state,
    )
    .await;
    Ok(())
}

fn count_candidate_pair(app: &App, p: &CandidatePair) {
    app.metrics
        .client_ice_candidate_pairs
        .with_label_values(&[
            &p.state,
            &p.local.kind,
            &p.local.protocol,
            &p.remote.kind,
            &p.remote.protocol,
        ])
        .inc();
}
