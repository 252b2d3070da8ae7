//! Joining and reconnecting (reference calls-plugin.md §2.5, §2.6): a session comes
//! into a call, or its websocket comes back on another connection. Every state
//! change happens under the call lock on state freshly loaded from the database;
//! events go out after the write.

use serde_json::{json, Value};
use sqlx::types::Json;

use super::app::{refused, App, AppError, Result};
use super::calls::{at_capacity, may_start, reelect_host, StartContext, StartDenied};
use super::client_message::{JoinData, ReconnectData};
use super::cluster_message::{ClusterMessage, ClusterMessageType};
use super::config::Config;
use super::host_api::Broadcast;
use super::media::JoinOptions;
use super::model::{Call, CallProps, CallState, CallStats, Session};
use super::node_failure;
use super::recording;
use super::session_task;
use super::sessions::{conn_key, LocalSession, Signal};
use calls_wire::ids::{new_id, now_ms};
use calls_wire::proto;

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
    let joiner = may_join(app, user_id, auth_session, data).await?;
    end_if_orphaned(app, &data.channel_id).await?;
    let cfg = app.config();
    let state = add_to_call(app, &joiner, conn_id, user_id, data, &cfg).await?;
    start_session(app, &state, conn_id, user_id, auth_session, data, &cfg).await;
    announce_join(app, &state, conn_id, user_id, joiner.is_bot).await;
    Ok(())
}

/// In a cluster, a call whose node is gone is ended before anyone joins it: the join
/// starts a new call here instead of waiting for the check that would end it.
async fn end_if_orphaned(app: &App, channel_id: &str) -> Result<()> {
    if app.node_id().is_empty() {
        return Ok(());
    }
    let Some(call) = app.store.get_active_call_by_channel(channel_id).await? else {
        return Ok(());
    };
    let node = &call.props.node_id;
    if node.is_empty() || node == app.node_id() || !call.props.rtcd_host.is_empty() {
        return Ok(());
    }
    if let Some(live) = node_failure::live_nodes(app).await {
        if node_failure::orphaned(&call, &live) {
            node_failure::end_orphaned(app, &call).await?;
        }
    }
    Ok(())
}

/// Who joins, once the checks that need no lock passed.
struct Joiner {
    channel: proto::Channel,
    is_bot: bool,
    is_admin: bool,
    /// The channel's own calls setting, if an admin set one.
    explicitly_enabled: Option<bool>,
}

/// The checks of a join that need no lock: the channel id, the login, the bot's job,
/// the permission to post, the channel and the thread.
async fn may_join(app: &App, user_id: &str, auth_session: &str, data: &JoinData) -> Result<Joiner> {
    let channel_id = data.channel_id.as_str();
    if !calls_wire::ids::is_valid_id(channel_id) {
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
    Ok(Joiner {
        channel,
        is_bot,
        is_admin,
        explicitly_enabled,
    })
}

/// Under the call lock: the call (created, with its media placed, if there is none),
/// the session in it, the host; for a new call its post and `call_start`.
async fn add_to_call(
    app: &App,
    joiner: &Joiner,
    conn_id: &str,
    user_id: &str,
    data: &JoinData,
    cfg: &Config,
) -> Result<CallState> {
    let channel_id = data.channel_id.as_str();
    let &Joiner {
        ref channel,
        is_bot,
        is_admin,
        explicitly_enabled,
    } = joiner;
    let guard = app.call_locks.lock(channel_id).await?;
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
    if new_call && is_bot {
        // The recorder joins a call, it never starts one.
        return Err(refused("no job in progress"));
    }
    if new_call {
        // The media backend is chosen once per call; the call stays on it.
        state.call.props.rtcd_host = app.place_new_call(&state.call.id).await?;
        if !state.call.props.rtcd_host.is_empty() {
            // As upstream: a call on rtcd belongs to no node.
            state.call.props.node_id.clear();
        }
    }
    app.media.track_call(&state.call.id, &state.call.props);
    // The recorder is nobody's participant: it does not take a place (upstream counts
    // it), and it comes in only for the recording waiting for it.
    let people = state
        .sessions
        .values()
        .filter(|s| s.user_id != app.bot_id)
        .count();
    if is_bot {
        recording::bot_joins(app, &mut state, &data.job_id, conn_id).await?;
    } else if at_capacity(cfg.MaxCallParticipants, people) {
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
    let host_changed = reelect_host(&mut state, &app.bot_id);
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
    Ok(state)
}

/// This node's side of the new session: its entry, its task, its media.
async fn start_session(
    app: &App,
    state: &CallState,
    conn_id: &str,
    user_id: &str,
    auth_session: &str,
    data: &JoinData,
    cfg: &Config,
) {
    let channel_id = data.channel_id.as_str();
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
    session_task::spawn(app.clone(), local.clone(), inbox, false);
    app.record_ws_node(conn_id).await;
    let opts = JoinOptions {
        dc_signaling: data.dc_signaling && cfg.EnableDCSignaling,
        av1: data.av1_support && cfg.EnableAV1,
    };
    let added = async {
        app.media
            .for_call(&local.call_id)?
            .add_session(&local.media(), opts)
            .await
    };
    if let Err(e) = added.await {
        tracing::error!(session_id = conn_id, error = %e, "media session not started");
    }
}

/// `join` to the connection, `user_joined` to the channel, the call's state to the user.
async fn announce_join(app: &App, state: &CallState, conn_id: &str, user_id: &str, is_bot: bool) {
    let channel_id = state.call.channel_id.as_str();
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
    } else if let Some(job) = state.jobs.get(recording::RECORDING) {
        recording::publish_job_state(app, state, job).await;
    }
    send_call_state(app, state, user_id, Broadcast::user(user_id)).await;
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
    // Only this user's entry of this session: a connection id is no secret (events
    // carry session ids), so `prevConnID` alone must not let anyone take a session.
    let own = |s: &std::sync::Arc<LocalSession>| {
        s.user_id == user_id && s.original_conn_id == d.original_conn_id
    };
    let old = app
        .sessions
        .get(conn_id)
        .filter(own)
        .or_else(|| app.sessions.get(&d.prev_conn_id).filter(own));
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
    let key = conn_key(&d.original_conn_id);
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
    session_task::spawn(app.clone(), local.clone(), inbox, false);
    app.record_ws_node(&d.original_conn_id).await;
    app.media.track_call(&state.call.id, &state.call.props);
    if !app.node_id().is_empty() {
        // The session's old node lets it go; its call's node sends its signaling here.
        app.peers.remove(&d.original_conn_id);
        let m = ClusterMessage {
            conn_id: d.prev_conn_id.clone(),
            new_conn_id: conn_id.to_string(),
            user_id: user_id.to_string(),
            call_id: state.call.id.clone(),
            ..Default::default()
        };
        if let Err(e) = app
            .media
            .relay
            .send(ClusterMessageType::Reconnect, m, "")
            .await
        {
            tracing::warn!(session_id = d.original_conn_id, error = %e, "reconnect not told to the cluster");
        }
    }
    app.media.reconnected(&local.media()).await;
    Ok(())
}
