//! Activation and deactivation (reference calls-plugin.md §8.3), including recovery
//! of the sessions an earlier process of this plugin left in the database.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use parking_lot::RwLock;
use serde_json::json;

use super::app::{App, Inner, LicenseInfo};
use super::call_lock::CallLocks;
use super::config::{env_overrides, process_env, Config};
use super::host_api::{Broadcast, HostApi};
use super::leave;
use super::media::{Media, MediaError};
use super::metrics::Metrics;
use super::mutex::Mutexes;
use super::session_task;
use super::sessions::{conn_key, node_key, LocalSession, Sessions};
use super::store::Store;
use calls_db::Db;
use calls_wire::proto;

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the plugin is disabled by MM_CALLS_DISABLE")]
    Disabled,
    #[error(transparent)]
    Host(#[from] super::host_api::HostError),
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    #[error(transparent)]
    Db(#[from] calls_db::DbError),
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    #[error(transparent)]
    Media(#[from] MediaError),
}

pub const PLUGIN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// After a config change, and at activation: new calls go where the settings say;
/// calls in progress stay where they are.
pub async fn apply_media_mode(app: &App) -> Result<(), ActivateError> {
    Ok(app
        .media
        .apply_mode(app.rtcd_mode(), &app.config(), &app.metrics)
        .await?)
}

pub fn license_info(l: &proto::License) -> LicenseInfo {
    LicenseInfo {
        is_licensed: l.is_licensed,
        sku: l.sku_short_name.clone(),
        is_cloud: l.is_cloud,
    }
}

pub async fn activate(host_addr: &str, bundle_path: &str) -> Result<App, ActivateError> {
    if std::env::var("MM_CALLS_DISABLE").is_ok_and(|v| v == "true") {
        return Err(ActivateError::Disabled);
    }
    let host = HostApi::connect(host_addr).await?;
    let server = host.server_info().await?;
    let license = host.license().await?;
    let config = Config::load(&host.plugin_config().await?, &process_env)?;
    let dbs = host.database_settings().await?;
    let metrics = Metrics::new();
    let max_conns = (dbs.max_open_conns / 10).max(10) as u32;
    let db = Db::connect(&dbs.url, max_conns).await?;
    let store = Store::new(db, metrics.clone());
    let applied = store.migrate().await?;
    tracing::info!(applied, driver = store.db().driver(), "database ready");
    let bot = host.ensure_bot("calls", "Calls", "Calls Bot").await?;
    // The session the recorder logs in with (never expires, revoked at deactivation).
    let (bot_session_id, bot_token) = host.create_session(&bot.id, 0).await?;
    let (media, media_events) = Media::new(
        host.clone(),
        server.diagnostic_id.clone(),
        server.cluster_id.clone(),
    );
    let (cluster_events, cluster_inbox) = super::cluster_events::queue();
    let app = App(Arc::new(Inner {
        call_locks: CallLocks::new(Mutexes::new(host.clone(), metrics.clone())),
        host,
        store,
        metrics,
        config: RwLock::new(Arc::new(config)),
        env_overrides: RwLock::new(env_overrides(&process_env)),
        license: RwLock::new(license_info(&license)),
        server,
        bot_id: bot.id,
        bot_session_id,
        bot_token,
        job_service: Default::default(),
        job_service_refresh: Default::default(),
        sessions: Sessions::default(),
        api_limits: Default::default(),
        ws_budgets: Default::default(),
        repeats: Default::default(),
        version: PLUGIN_VERSION,
        bundle_path: bundle_path.to_string(),
        group_calls_env: std::env::var("MM_CALLS_GROUP_CALLS_ALLOWED").is_ok_and(|v| v == "true"),
        stopped: Default::default(),
        media,
        peers: Default::default(),
        cluster_events,
    }));
    tokio::spawn(super::media_events::run(app.clone(), media_events));
    super::cluster_events::spawn(app.clone(), cluster_inbox);
    // As upstream, activation fails when the rtcd fleet cannot be reached; the
    // integrated SFU binds its port only when calls may use it.
    apply_media_mode(&app).await?;
    recover_sessions(&app).await?;
    tokio::spawn(check_auth_sessions(app.clone()));
    let app2 = app.clone();
    tokio::spawn(async move { super::recording::refresh_job_service(&app2).await });
    tokio::spawn(super::node_failure::run(app.clone()));
    if !app.node_id().is_empty() {
        tracing::info!(node_id = app.node_id(), "running in a cluster");
    }
    Ok(app)
}

/// Login-session checks in flight at once.
const AUTH_CHECKS_IN_FLIGHT: usize = 16;

/// Every 10 s, sessions whose login session is gone (logout, expiry) leave their call.
async fn check_auth_sessions(app: App) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        if app.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let sessions = app.sessions.all();
        // Each login session once, however many calls it is in. Recovered sessions
        // have no known login session: nothing to check.
        let ids: HashSet<String> = sessions
            .iter()
            .filter(|s| !s.auth_session_id.is_empty())
            .map(|s| s.auth_session_id.clone())
            .collect();
        // Several RPCs in flight share the connection's reads and writes and the
        // task's wake-ups, instead of one round trip each.
        let host = &app.host;
        let verdicts: HashMap<String, Option<proto::SessionResponse>> = stream::iter(ids)
            .map(|id| async move {
                let r = host.session(&id).await.ok();
                (id, r)
            })
            .buffer_unordered(AUTH_CHECKS_IN_FLIGHT)
            .collect()
            .await;
        for s in &sessions {
            // The host being unreachable is not the user's fault.
            let Some(Some(r)) = verdicts.get(&s.auth_session_id) else {
                continue;
            };
            if !(r.valid && r.user_id == s.user_id) {
                tracing::info!(
                    session_id = s.original_conn_id,
                    "login session gone: leaving call"
                );
                s.signal(super::sessions::Signal::Leave);
            }
        }
    }
}

/// Re-attaches the sessions of ongoing calls found in the database. Sessions whose
/// websocket is still open continue as if nothing happened; the others get the usual
/// reconnect grace and are then removed.
/// What a client whose media died with a previous plugin process is told.
pub const MEDIA_LOST: &str = "the call's media server restarted: please join the call again";

async fn recover_sessions(app: &App) -> Result<(), ActivateError> {
    let sessions = app.store.get_sessions_of_active_calls().await?;
    if sessions.is_empty() {
        return Ok(());
    }
    let conns: HashMap<String, (String, bool)> = app
        .host
        .web_socket_connections()
        .await?
        .into_iter()
        .map(|c| (c.connection_id, (c.user_id, c.active)))
        .collect();
    // Per call: its channel, whether its media survived, and whether its media died
    // with the previous process (this node's integrated SFU).
    let clustered = !app.node_id().is_empty();
    let mut channels: HashMap<String, (String, bool, bool)> = HashMap::new();
    let (mut live, mut gone, mut media_lost) = (0, 0, 0);
    for s in sessions {
        let (channel_id, call_alive, lost) = match channels.get(&s.call_id) {
            Some(c) => c.clone(),
            None => match app.store.get_call(&s.call_id).await? {
                Some(c) => {
                    let lost = app.media.hosts_call(&c.props);
                    app.media.track_call(&c.id, &c.props);
                    let alive = app.media.recover_call(&c.id, &c.props.rtcd_host).await;
                    channels.insert(s.call_id.clone(), (c.channel_id.clone(), alive, lost));
                    (c.channel_id, alive, lost)
                }
                None => continue,
            },
        };
        let conn_id = match app.host.kv_get(&conn_key(&s.id)).await? {
            Some(v) => String::from_utf8(v).unwrap_or_else(|_| s.id.clone()),
            None => s.id.clone(),
        };
        let ws_here = conns
            .get(&conn_id)
            .is_some_and(|(uid, active)| *uid == s.user_id && *active);
        if clustered && !lost && !ws_here {
            // Another node's session, unless its websocket was here (this node
            // restarted): then it gets the reconnect grace here, as on a single host;
            // a reconnect on any node ends that wait.
            let recorded = app.host.kv_get(&node_key(&s.id)).await?;
            if recorded.as_deref() != Some(app.node_id().as_bytes()) {
                continue;
            }
        }
        if lost {
            // The peer connection ended with the process that held it, and no client
            // can resume it: a new SFU has none of its ICE, DTLS or SRTP state, and the
            // Calls client neither restarts ICE nor rejoins on its own. So the session
            // ends now, as a failed connection does: `error` to its connection (the
            // webapp leaves the call and offers to join again) and `user_left` to the
            // channel; the last one ends the call.
            media_lost += 1;
            app.publish(
                "error",
                json!({"data": MEDIA_LOST, "connID": conn_id}),
                Broadcast::connection(&s.user_id, &conn_id),
            )
            .await;
            if let Err(e) = leave::remove_session(app, &channel_id, &s.id).await {
                tracing::error!(session_id = s.id, error = %e, "failed to end a session whose media was lost");
            }
            continue;
        }
        let open = call_alive && ws_here;
        if open {
            live += 1;
        } else {
            gone += 1;
        }
        let (local, inbox) =
            LocalSession::new(&s.user_id, &channel_id, &s.call_id, &conn_id, &s.id, "");
        app.sessions.insert(local.clone());
        session_task::spawn(app.clone(), local.clone(), inbox, !open);
        if open {
            // rtcd kept the media going: its signaling now comes to this process.
            app.media.reconnected(&local.media()).await;
        }
    }
    app.metrics
        .websocket_connections
        .set(app.sessions.len() as i64);
    tracing::info!(
        live,
        gone,
        media_lost,
        "recovered call sessions from the database"
    );
    Ok(())
}

/// Marks the sessions whose media runs here as left (it dies with the process),
/// wherever their websocket is; leaves rtcd calls running for the next activation and
/// calls on other nodes to their node (their sessions here reconnect elsewhere);
/// closes the database.
pub async fn deactivate(app: &App) {
    app.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in app.peers.all() {
        if let Err(e) = leave::remove_session(app, &r.media.channel_id, &r.media.session_id).await {
            tracing::error!(session_id = r.media.session_id, error = %e, "failed to mark session left");
        }
    }
    for s in app.sessions.all() {
        if !app.media.is_local(&s.call_id) {
            continue;
        }
        s.signal(super::sessions::Signal::Closed);
        app.sessions.remove_if_same(&s);
        if let Err(e) = leave::remove_session(app, &s.channel_id, &s.original_conn_id).await {
            tracing::error!(session_id = s.original_conn_id, error = %e, "failed to mark session left");
        }
    }
    app.media.close();
    if let Err(e) = app.host.revoke_session(&app.bot_session_id).await {
        tracing::warn!(error = %e, "bot session not revoked");
    }
    app.store.db().close().await;
    tracing::info!("plugin deactivated");
}
