//! Client actions on an existing session (reference calls-plugin.md §2.8) and host
//! controls (§1.3). State changes happen under the call lock; events after the write.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::app::{refused, App, AppError, Result};
use super::host_api::Broadcast;
use super::join::remove_session;
use super::model::CallState;
use super::sessions::{LocalSession, QueuedMessage, Signal};
use crate::ids::now_ms;

/// `data` of string-payload actions (`react`, `screen_on`, `video_on`): a JSON string.
#[derive(Debug, Default, Deserialize)]
struct StringData {
    #[serde(default)]
    data: String,
}

#[derive(Debug, Deserialize)]
pub struct Emoji {
    name: String,
    #[serde(default)]
    skin: Option<String>,
    unified: String,
    #[serde(default)]
    literal: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MetricData {
    #[serde(default)]
    metric_name: String,
    #[serde(default)]
    data: String,
}

#[derive(Debug, Deserialize)]
pub struct CandidatePair {
    state: String,
    local: CandidateInfo,
    remote: CandidateInfo,
}

#[derive(Debug, Deserialize)]
struct CandidateInfo {
    #[serde(rename = "type")]
    kind: String,
    protocol: String,
}

fn decode<T: for<'de> Deserialize<'de> + Default>(data: &[u8]) -> Result<T> {
    if data.is_empty() {
        return Ok(T::default());
    }
    rmp_serde::from_slice(data).map_err(|e| refused(format!("invalid message data: {e}")))
}

/// A queued client message, parsed. Parsing is pure (no state, no I/O): bad data is
/// refused before anything is loaded or locked, and `parse_queued` is fuzzed on its
/// own (`fuzz/fuzz_targets/calls_message.rs`).
#[derive(Debug)]
pub enum Queued {
    Mute(bool),
    Hand(bool),
    React(Emoji),
    ScreenOn {
        stream_id: Option<String>,
    },
    ScreenOff,
    Video {
        on: bool,
        stream_id: Option<String>,
    },
    CandidatePairMetric(CandidatePair),
    Sdp(super::media::ClientSdp),
    /// A trickled candidate; `None` for the end of candidates.
    Ice(Option<super::media::ClientIce>),
}

pub fn parse_queued(msg_type: &str, data: &[u8]) -> Result<Queued> {
    Ok(match msg_type {
        "mute" | "unmute" => Queued::Mute(msg_type == "mute"),
        "raise_hand" | "unraise_hand" => Queued::Hand(msg_type == "raise_hand"),
        "react" => {
            let d: StringData = decode(data)?;
            Queued::React(
                serde_json::from_str(&d.data)
                    .map_err(|e| refused(format!("invalid emoji: {e}")))?,
            )
        }
        "screen_on" => {
            let d: StringData = decode(data)?;
            let v: Value = serde_json::from_str(&d.data)
                .map_err(|e| refused(format!("invalid screen_on data: {e}")))?;
            Queued::ScreenOn {
                stream_id: v
                    .get("screenStreamID")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }
        }
        "screen_off" => Queued::ScreenOff,
        "video_on" => {
            // `{"videoStreamID": ...}` as a JSON string; older clients send nothing.
            let d: StringData = decode(data).unwrap_or_default();
            Queued::Video {
                on: true,
                stream_id: serde_json::from_str::<Value>(&d.data)
                    .ok()
                    .and_then(|v| v.get("videoStreamID")?.as_str().map(str::to_string)),
            }
        }
        "video_off" => Queued::Video {
            on: false,
            stream_id: None,
        },
        "metric" => Queued::CandidatePairMetric(parse_metric(data)?),
        "sdp" => Queued::Sdp(super::media::parse_sdp(data)?),
        "ice" => Queued::Ice(super::media::parse_ice(data)?),
        other => return Err(refused(format!("invalid client message type {other:?}"))),
    })
}

/// Processes one queued client message of a session, in order.
pub async fn handle_queued(app: &App, s: &LocalSession, m: QueuedMessage) {
    app.metrics.ws_event("in", &m.msg_type);
    let res = match parse_queued(&m.msg_type, &m.data) {
        Err(e) => Err(e),
        Ok(Queued::Mute(muted)) => set_muted(app, s, muted).await,
        Ok(Queued::Hand(raised)) => set_hand(app, s, raised).await,
        Ok(Queued::React(emoji)) => react(app, s, emoji).await,
        Ok(Queued::ScreenOn { stream_id }) => screen_on(app, s, stream_id).await,
        Ok(Queued::ScreenOff) => screen_off(app, s).await,
        Ok(Queued::Video { on, stream_id }) => set_video(app, s, on, stream_id).await,
        Ok(Queued::CandidatePairMetric(p)) => {
            count_candidate_pair(app, &p);
            Ok(())
        }
        Ok(Queued::Sdp(sdp)) => super::media::sdp(app, s, sdp).await,
        Ok(Queued::Ice(Some(candidate))) => super::media::ice(app, s, candidate).await,
        Ok(Queued::Ice(None)) => Ok(()),
    };
    if let Err(e) = res {
        // Clients can make their messages fail at will: once per window, with a count.
        if let Some(left_out) = app.repeats.admit("client message failed") {
            tracing::warn!(session_id = s.original_conn_id, msg_type = m.msg_type, error = %e, left_out, "client message failed");
        }
    }
}

/// Loads the call under lock and applies `f` to the session; returns the new state.
async fn with_session<F>(app: &App, s: &LocalSession, f: F) -> Result<CallState>
where
    F: FnOnce(&mut CallState) -> Result<bool>,
{
    let guard = app.lock_call(&s.channel_id).await?;
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
    super::media::set_muted(app, s, muted).await;
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
    super::media::set_stream(app, s, false, stream_id).await;
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
    super::media::set_stream(app, s, false, None).await;
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
        super::media::set_stream(app, s, true, stream_id).await;
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

/// A client metric: only the candidate pair one is taken (its label values checked,
/// so that clients cannot grow the metric's label set).
fn parse_metric(data: &[u8]) -> Result<CandidatePair> {
    let d: MetricData =
        rmp_serde::from_slice(data).map_err(|e| refused(format!("invalid metric: {e}")))?;
    match d.metric_name.as_str() {
        "client_ice_candidate_pair" => {
            let p: CandidatePair = serde_json::from_str(&d.data)
                .map_err(|e| refused(format!("invalid metric data: {e}")))?;
            let states = ["succeeded", "waiting", "in-progress", "froze", "failed"];
            let types = ["host", "srflx", "prflx", "relay"];
            let protos = ["udp", "tcp"];
            if !states.contains(&p.state.as_str())
                || !types.contains(&p.local.kind.as_str())
                || !types.contains(&p.remote.kind.as_str())
                || !protos.contains(&p.local.protocol.as_str())
                || !protos.contains(&p.remote.protocol.as_str())
            {
                return Err(refused("invalid candidate pair metric"));
            }
            Ok(p)
        }
        // Live-captions metrics are bot-only; the bot has no live captions job here.
        other => Err(refused(format!("invalid metric name {other:?}"))),
    }
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

// ------------------------------------------------------------------ host controls

pub async fn host_make(app: &App, channel_id: &str, requester: &str, new_host: &str) -> Result<()> {
    if !app.bot_id.is_empty() && new_host == app.bot_id {
        return Err(AppError::NotAllowed("cannot assign the bot to be host"));
    }
    let guard = app.lock_call(channel_id).await?;
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
        if let Some(local) = app.sessions.get_by_session_id(&session_id) {
            local.signal(Signal::Closed);
            app.sessions.remove_if_same(&local);
        }
        if let Err(e) = remove_session(&app, &channel_id, &session_id).await {
            tracing::error!(session_id, error = %e, "failed to remove session");
        }
    });
    Ok(())
}
