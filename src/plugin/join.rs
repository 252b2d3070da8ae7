//! Joining, leaving, reconnecting and ending calls (reference calls-plugin.md §2.5,
//! §2.6, §3.5). Every state change happens under the call lock on state freshly
//! loaded from the database; events go out after the write.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::types::Json;

use super::app::{refused, App, AppError, Result};
use super::calls::{at_capacity, elect_host, may_start, StartContext, StartDenied};
use super::host_api::Broadcast;
use super::model::{Call, CallProps, CallState, CallStats, Session};
use super::sessions::{run_session, Ending, LocalSession, Signal, RECONNECT_GRACE};
use crate::ids::{new_id, now_ms};
use crate::proto;

#[derive(Debug, Default, Deserialize)]
pub struct JoinData {
    #[serde(rename = "channelID", default)]
    pub channel_id: String,
    #[serde(default)]
    pub title: String,
    #[serde(rename = "threadID", default)]
    pub thread_id: String,
    #[serde(rename = "jobID", default)]
    pub job_id: String,
    #[serde(rename = "av1Support", default)]
    pub av1_support: bool,
    #[serde(rename = "dcSignaling", default)]
    pub dc_signaling: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct ReconnectData {
    #[serde(rename = "channelID", default)]
    pub channel_id: String,
    #[serde(rename = "originalConnID", default)]
    pub original_conn_id: String,
    #[serde(rename = "prevConnID", default)]
    pub prev_conn_id: String,
}

const TEST_MODE_NOTICE: &str =
    "Currently calls are not enabled for non-admin users. You can change the setting through the system console";
const UNLICENSED_NOTICE: &str = "Calls on unlicensed servers are only available in DMs.";

/// Handles a `join`; any failure becomes an `error` event to the connection.
pub async fn handle_join(
    app: App,
    conn_id: String,
    user_id: String,
    auth_session: String,
    data: JoinData,
) {
    let t = std::time::Instant::now();
    let res = join(&app, &conn_id, &user_id, &auth_session, &data).await;
    app.metrics
        .app_handlers_time
        .with_label_values(&["addUserSession"])
        .observe(t.elapsed().as_secs_f64());
    if let Err(e) = res {
        tracing::warn!(user_id, conn_id, channel_id = data.channel_id, error = %e, "join failed");
        app.publish(
            "error",
            json!({"data": e.to_string(), "connID": conn_id}),
            Broadcast::connection(&user_id, &conn_id),
        )
        .await;
    }
}

async fn join(
    app: &App,
    conn_id: &str,
    user_id: &str,
    auth_session: &str,
    data: &JoinData,
) -> Result<()> {
    let channel_id = data.channel_id.as_str();
    if !crate::ids::is_valid_id(channel_id) {
        return Err(refused("invalid channelID"));
    }
    app.require_login(user_id, auth_session).await?;
    let is_bot = !app.bot_id.is_empty() && user_id == app.bot_id;
    if is_bot && data.job_id.is_empty() {
        return Err(refused("JobID should not be empty for bot connections"));
    }
    if !is_bot
        && !app
            .host
            .has_channel_permission(user_id, channel_id, "create_post")
            .await?
    {
        return Err(AppError::Forbidden);
    }
    let channel = app
        .host
        .channel(channel_id)
        .await?
        .ok_or(AppError::Forbidden)?;
    if channel.delete_at > 0 {
        return Err(refused("cannot join call in archived channel"));
    }
    if !data.thread_id.is_empty() {
        let post = app
            .host
            .post(&data.thread_id)
            .await?
            .ok_or_else(|| refused("thread not found"))?;
        if post.channel_id != channel_id {
            return Err(AppError::Forbidden);
        }
        if post.delete_at > 0 {
            return Err(refused("cannot attach call to deleted thread"));
        }
        if !post.root_id.is_empty() {
            return Err(refused("thread is not a root post"));
        }
    }
    let explicitly_enabled = app
        .store
        .get_calls_channel(channel_id)
        .await?
        .and_then(|c| c.enabled);
    let is_admin = app.is_admin(user_id).await?;
    let cfg = app.config();

    let guard = app.lock_call(channel_id).await?;
    let existing = app.load_state(channel_id).await?;
    let new_call = existing.is_none();
    let mut state = match existing {
        Some(s) => s,
        None => {
            let ctx = StartContext {
                channel_type: &channel.r#type,
                group_calls_allowed: app.group_calls_allowed(),
                explicitly_enabled,
                default_enabled: cfg.DefaultEnabled,
                is_system_admin: is_admin,
            };
            if let Err(denied) = may_start(ctx) {
                if denied == StartDenied::Unlicensed {
                    let _ = app
                        .host
                        .send_ephemeral(user_id, channel_id, UNLICENSED_NOTICE)
                        .await;
                }
                return Err(refused(denied.to_string()));
            }
            let now = now_ms();
            CallState {
                call: Call {
                    id: new_id(),
                    channel_id: channel_id.to_string(),
                    start_at: now,
                    end_at: 0,
                    create_at: now,
                    delete_at: 0,
                    title: String::new(),
                    post_id: String::new(),
                    thread_id: String::new(),
                    owner_id: user_id.to_string(),
                    participants: Json(Value::Null),
                    stats: Json(CallStats::default()),
                    props: Json(CallProps {
                        node_id: app.server.cluster_id.clone(),
                        ..Default::default()
                    }),
                },
                sessions: Default::default(),
                jobs: Default::default(),
            }
        }
    };
    if state.sessions.contains_key(conn_id) {
        return Err(refused("session is already connected"));
    }
    if new_call {
        // The media backend is chosen once per call; the call stays on it.
        if app.rtcd_mode() {
            let pool = app.rtcd().ok_or_else(|| refused("no host available"))?;
            let host = pool
                .host_for_new_call()
                .await
                .map_err(|e| refused(e.to_string()))?;
            tracing::info!(call_id = state.call.id, host, "call placed on rtcd");
            state.call.props.rtcd_host = host;
        } else {
            super::activate::ensure_rtc(app)
                .await
                .map_err(|e| refused(e.to_string()))?;
        }
    }
    app.track_call_host(&state.call.id, &state.call.props.rtcd_host);
    if at_capacity(cfg.MaxCallParticipants, state.sessions.len()) {
        return Err(refused("user cannot join because of limits"));
    }
    let session = Session {
        id: conn_id.to_string(),
        call_id: state.call.id.clone(),
        user_id: user_id.to_string(),
        join_at: now_ms(),
        unmuted: false,
        raised_hand: 0,
        video: false,
    };
    state.sessions.insert(session.id.clone(), session.clone());
    let host_changed = reelect_host(app, &mut state);
    if !is_bot {
        state
            .call
            .props
            .participants
            .insert(user_id.to_string(), json!({}));
    }
    if new_call {
        app.store.create_call(&state.call).await?;
    } else {
        app.store.update_call(&state.call).await?;
    }
    app.store.create_session(&session).await?;

    if host_changed {
        app.publish_host_changed(&state).await;
    }
    if new_call {
        if !cfg.DefaultEnabled && is_admin {
            let _ = app
                .host
                .send_ephemeral(user_id, channel_id, TEST_MODE_NOTICE)
                .await;
        }
        match create_call_post(app, &state.call, user_id, &data.title, &data.thread_id).await {
            Ok((post_id, thread_id)) => {
                state.call.post_id = post_id;
                state.call.thread_id = thread_id;
                app.store.update_call(&state.call).await?;
            }
            Err(e) => tracing::error!(error = %e, "failed to create call post"),
        }
        app.publish(
            "call_start",
            json!({
                "id": state.call.id,
                "start_at": state.call.start_at,
                "thread_id": state.call.thread_id,
                "post_id": state.call.post_id,
                "owner_id": state.call.owner_id,
                "host_id": state.call.host_id(),
            }),
            Broadcast::channel(channel_id),
        )
        .await;
    }
    drop(guard);

    let (local, inbox) = LocalSession::new(
        user_id,
        channel_id,
        &state.call.id,
        conn_id,
        conn_id,
        auth_session,
    );
    app.sessions.insert(local.clone());
    app.metrics
        .websocket_connections
        .set(app.sessions.len() as i64);
    spawn_session_task(app.clone(), local.clone(), inbox, false);
    let dc = data.dc_signaling && cfg.EnableDCSignaling;
    let av1 = data.av1_support && cfg.EnableAV1;
    if let Err(e) = super::media::add_session(app, &local, dc, av1).await {
        tracing::error!(session_id = conn_id, error = %e, "media session not started");
    }

    app.publish(
        "join",
        json!({"connID": conn_id}),
        Broadcast::connection(user_id, conn_id),
    )
    .await;
    if !is_bot {
        app.publish(
            "user_joined",
            json!({"user_id": user_id, "session_id": conn_id}),
            Broadcast::channel(channel_id),
        )
        .await;
    }
    send_call_state(app, &state, user_id, Broadcast::user(user_id)).await;
    Ok(())
}

/// Recomputes the host; true (and `props.hosts` updated) when it changed.
pub fn reelect_host(app: &App, state: &mut CallState) -> bool {
    let new_host = elect_host(&state.call.props, &state.sessions, &app.bot_id);
    if new_host == state.call.host_id() {
        return false;
    }
    state.call.props.hosts = if new_host.is_empty() {
        vec![]
    } else {
        vec![new_host]
    };
    true
}

pub async fn send_call_state(app: &App, state: &CallState, user_id: &str, to: Broadcast) {
    let view = state.client_view(user_id, &app.bot_id);
    let call = serde_json::to_string(&view).unwrap_or_default();
    app.publish(
        "call_state",
        json!({"channel_id": state.call.channel_id, "call": call}),
        to,
    )
    .await;
}

async fn create_call_post(
    app: &App,
    call: &Call,
    user_id: &str,
    title: &str,
    thread_id: &str,
) -> Result<(String, String)> {
    let user = app.host.user(user_id).await?;
    let msg =
        if app.server.show_full_name && !user.first_name.is_empty() && !user.last_name.is_empty() {
            format!("{} {} started a call", user.first_name, user.last_name)
        } else {
            format!("{} started a call", user.username)
        };
    let props = json!({
        "attachments": [{"fallback": msg, "title": msg, "text": msg}],
        "start_at": call.start_at,
        "title": title,
    });
    let post = app
        .host
        .create_post(proto::Post {
            channel_id: call.channel_id.clone(),
            user_id: user_id.to_string(),
            root_id: thread_id.to_string(),
            message: msg,
            r#type: "custom_calls".into(),
            props_json: serde_json::to_vec(&props).unwrap_or_default(),
            ..Default::default()
        })
        .await?;
    let thread = if thread_id.is_empty() {
        post.id.clone()
    } else {
        thread_id.to_string()
    };
    Ok((post.id, thread))
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

/// Starts the task that runs a session's queue and, when it ends, its removal.
pub fn spawn_session_task(
    app: App,
    local: Arc<LocalSession>,
    inbox: super::sessions::SessionInbox,
    start_closed: bool,
) {
    tokio::spawn(async move {
        let handler_app = app.clone();
        let handler_session = local.clone();
        let ending = run_session(inbox, start_closed, RECONNECT_GRACE, move |m| {
            let app = handler_app.clone();
            let s = handler_session.clone();
            async move { super::actions::handle_queued(&app, &s, m).await }
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

/// Removes a session from its call (idempotent): side effects of leaving, host
/// re-election, natural end when it was the last one.
pub async fn remove_session(app: &App, channel_id: &str, session_id: &str) -> Result<()> {
    let t = std::time::Instant::now();
    let guard = app.lock_call(channel_id).await?;
    let Some(mut state) = app.load_state(channel_id).await? else {
        super::media::leave_media(app, None, session_id).await;
        return Ok(());
    };
    super::media::leave_media(app, Some(&state.call.id), session_id).await;
    let Some(sess) = state.sessions.remove(session_id) else {
        tracing::debug!(session_id, "session not found in call state");
        return Ok(());
    };
    app.store.delete_session(session_id).await?;
    // A failed delete leaves a stale mapping that only recovery reads, for a gone session.
    let _ = app
        .host
        .kv_delete(&super::activate::conn_key(session_id))
        .await;
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
    let host_changed = reelect_host(app, &mut state);
    let ended = state.sessions.is_empty();
    let participants: Vec<String> = state.call.props.participants.keys().cloned().collect();
    if ended {
        state.call.end_at = now_ms();
        state.call.participants = Json(json!(participants));
        app.untrack_call_host(&state.call.id);
        let p = &mut state.call.props;
        p.rtcd_host.clear();
        p.dismissed_notification.clear();
        p.node_id.clear();
        p.hosts.clear();
        p.participants.clear();
    }
    app.store.update_call(&state.call).await?;
    drop(guard);

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

/// Handles a `reconnect` on a new connection; errors are only logged (as upstream).
pub async fn handle_reconnect(
    app: App,
    conn_id: String,
    user_id: String,
    auth_session: String,
    data: ReconnectData,
) {
    if let Err(e) = reconnect(&app, &conn_id, &user_id, &auth_session, &data).await {
        tracing::warn!(user_id, conn_id, error = %e, "reconnect failed");
    }
}

async fn reconnect(
    app: &App,
    conn_id: &str,
    user_id: &str,
    auth_session: &str,
    d: &ReconnectData,
) -> Result<()> {
    if d.channel_id.is_empty() || d.original_conn_id.is_empty() || d.prev_conn_id.is_empty() {
        return Err(refused("invalid reconnect message"));
    }
    app.require_login(user_id, auth_session).await?;
    let is_bot = !app.bot_id.is_empty() && user_id == app.bot_id;
    if !is_bot
        && !app
            .host
            .has_channel_permission(user_id, &d.channel_id, "create_post")
            .await?
    {
        return Err(AppError::Forbidden);
    }
    let state = app
        .load_state(&d.channel_id)
        .await?
        .ok_or(AppError::NoCallOngoing)?;
    if state
        .sessions
        .get(&d.original_conn_id)
        .is_none_or(|s| s.user_id != user_id)
    {
        return Err(refused("session not found in call state"));
    }
    let old = app
        .sessions
        .get(conn_id)
        .filter(|s| s.original_conn_id == d.original_conn_id)
        .or_else(|| app.sessions.get(&d.prev_conn_id));
    if let Some(old) = &old {
        if !old.mark_reconnected() {
            return Err(refused("session already reconnected"));
        }
        old.signal(Signal::Reconnected);
        app.sessions.remove_if_same(old);
    } else {
        tracing::warn!(
            session_id = d.original_conn_id,
            "reconnecting session not found locally"
        );
    }
    if d.original_conn_id != conn_id {
        app.sessions.remove_key(&d.original_conn_id);
    }
    // Remembered so that a restarted plugin can find this session's live connection.
    let key = super::activate::conn_key(&d.original_conn_id);
    let remembered = if d.original_conn_id == conn_id {
        app.host.kv_delete(&key).await
    } else {
        app.host
            .kv_set(proto::KvSetRequest {
                key,
                value: conn_id.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .map(drop)
    };
    if let Err(e) = remembered {
        tracing::warn!(session_id = d.original_conn_id, error = %e, "failed to remember session connection");
    }
    let (local, inbox) = LocalSession::new(
        user_id,
        &d.channel_id,
        &state.call.id,
        conn_id,
        &d.original_conn_id,
        auth_session,
    );
    app.sessions.insert(local.clone());
    spawn_session_task(app.clone(), local.clone(), inbox, false);
    app.track_call_host(&state.call.id, &state.call.props.rtcd_host);
    super::media::reconnected(app, &local).await;
    Ok(())
}

/// Ends a call for everyone (host or system admin): `call_end` now, forced cleanup
/// after 5 s for whoever did not leave.
pub async fn end_call(app: &App, channel_id: &str, requester: &str) -> Result<()> {
    let guard = app.lock_call(channel_id).await?;
    let state = app.state_for_host_action(channel_id, requester).await?;
    drop(guard);
    app.publish("call_end", json!({}), Broadcast::channel(channel_id))
        .await;
    let app = app.clone();
    let channel_id = channel_id.to_string();
    let call_id = state.call.id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Err(e) = force_cleanup(&app, &channel_id, &call_id).await {
            tracing::error!(channel_id, error = %e, "forced call cleanup failed");
        }
    });
    Ok(())
}

/// Closes every remaining session of a call and ends it (host end, deactivation).
pub async fn force_cleanup(app: &App, channel_id: &str, call_id: &str) -> Result<()> {
    let guard = app.lock_call(channel_id).await?;
    let Some(mut call) = app.store.get_call(call_id).await? else {
        return Ok(());
    };
    let sessions = app.store.get_sessions(call_id).await?;
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
    Ok(())
}
