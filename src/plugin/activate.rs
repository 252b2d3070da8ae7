//! Activation and deactivation (reference calls-plugin.md §8.3), including recovery
//! of the sessions an earlier process of this plugin left in the database.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use parking_lot::RwLock;
use serde_json::json;

use super::app::{App, Inner, LicenseInfo};
use super::config::{env_overrides, process_env, Config};
use super::host_api::{Broadcast, HostApi};
use super::join::{remove_session, spawn_session_task};
use super::metrics::Metrics;
use super::mutex::Mutexes;
use super::sessions::{LocalSession, Sessions};
use super::store::Store;
use crate::db::Db;
use crate::proto;

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the plugin is disabled by MM_CALLS_DISABLE")]
    Disabled,
    #[error(transparent)]
    Host(#[from] super::host_api::HostError),
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    #[error("cannot start the RTC server on {addr}: {source}")]
    Rtc {
        addr: String,
        source: std::io::Error,
    },
    #[error("rtcd: {0}")]
    Rtcd(#[from] super::rtcd_pool::PoolError),
}

/// The integrated SFU on `UDPServerAddress:UDPServerPort`, advertising the ICE host
/// override (resolved if a hostname) or the host's address.
async fn start_rtc_server(
    cfg: &Config,
    metrics: &Metrics,
    notes: tokio::sync::mpsc::UnboundedSender<crate::sfu::shell::Note>,
) -> Result<crate::sfu::shell::RtcServer, ActivateError> {
    let ip: std::net::IpAddr = if cfg.UDPServerAddress.is_empty() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        cfg.UDPServerAddress
            .parse()
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into())
    };
    let bind = std::net::SocketAddr::new(ip, cfg.UDPServerPort as u16);
    let advertised = if !cfg.ICEHostOverride.is_empty() {
        match cfg.ICEHostOverride.parse() {
            Ok(ip) => ip,
            Err(_) => tokio::net::lookup_host((cfg.ICEHostOverride.as_str(), 0))
                .await
                .ok()
                .and_then(|mut a| a.find(|a| a.is_ipv4()))
                .map(|a| a.ip())
                .unwrap_or_else(crate::sfu::shell::default_host_ip),
        }
    } else if !ip.is_unspecified() {
        ip
    } else {
        crate::sfu::shell::default_host_ip()
    };
    let port = cfg.ICEHostPortOverride.filter(|p| *p > 0).map(|p| p as u16);
    let tcp_ip: std::net::IpAddr = cfg
        .TCPServerAddress
        .parse()
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let addrs = crate::sfu::shell::RtcAddrs {
        udp: bind,
        tcp: Some(std::net::SocketAddr::new(tcp_ip, cfg.TCPServerPort as u16)),
        advertised_ip: advertised,
        advertised_udp_port: port,
        // With an override the admin said where clients reach us: no STUN at all.
        stun_server: if cfg.ICEHostOverride.is_empty() {
            crate::sfu::stun_discovery::stun_server(
                cfg.ICEServersConfigs.iter().map(|s| s.urls.as_slice()),
            )
        } else {
            None
        },
    };
    crate::sfu::shell::RtcServer::start(addrs, Box::new(metrics.rtc.clone()), notes)
        .await
        .map_err(|source| ActivateError::Rtc {
            addr: bind.to_string(),
            source,
        })
}

pub const PLUGIN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Starts the integrated SFU if it is not running (a call needs it).
pub async fn ensure_rtc(app: &App) -> Result<crate::sfu::shell::RtcServer, ActivateError> {
    let _one = app.rtc_start.lock().await;
    let replacing = match app.rtc() {
        Some(rtc) if rtc.is_alive() => return Ok(rtc),
        Some(_) => {
            // Its thread died (and closed its sessions): a new server for this call.
            tracing::warn!("the integrated SFU is gone: starting a new one");
            true
        }
        None => false,
    };
    let mut tries = 0;
    let rtc = loop {
        match start_rtc_server(&app.config(), &app.metrics, app.rtc_notes.clone()).await {
            Ok(r) => break r,
            // The dead server's ICE-TCP listener lets go of the port a moment after
            // its loop is gone.
            Err(_) if replacing && tries < 20 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    };
    *app.rtc.write() = Some(rtc.clone());
    Ok(rtc)
}

/// KV key of the rtcd client config (as upstream: JSON with `AuthKey`).
const RTCD_CONFIG_KEY: &str = "rtcd_config";

/// The rtcd client id and key, in upstream's order: env, URL user info, the server's
/// diagnostic id; the key from KV, else a new one, stored.
async fn rtcd_credentials(
    app: &App,
    url: &super::rtcd_pool::ServiceUrl,
) -> Result<(String, String), super::rtcd_pool::PoolError> {
    use super::rtcd_pool::PoolError;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut id = env("MM_CLOUD_INSTALLATION_ID").or_else(|| env("MM_CALLS_RTCD_CLIENT_ID"));
    let mut key = env("MM_CALLS_RTCD_AUTH_KEY");
    if id.is_none() && key.is_none() {
        if let Some((u, k)) = &url.user {
            id = Some(u.clone()).filter(|u| !u.is_empty());
            key = Some(k.clone()).filter(|k| !k.is_empty());
        }
    }
    let id = id
        .or_else(|| Some(app.server.diagnostic_id.clone()).filter(|d| !d.is_empty()))
        .ok_or_else(|| PoolError::Credentials("no client id".into()))?;
    if let Some(key) = key {
        return Ok((id, key));
    }
    let stored = app
        .host
        .kv_get(RTCD_CONFIG_KEY)
        .await
        .map_err(|e| PoolError::Credentials(e.to_string()))?
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
        .and_then(|v| v["AuthKey"].as_str().map(str::to_string))
        .filter(|k| !k.is_empty());
    if let Some(key) = stored {
        return Ok((id, key));
    }
    let key = crate::rtcd::auth::random_token();
    let cfg = serde_json::json!({"ClientID": id, "AuthKey": key, "URL": app.config().RTCDServiceURL, "ReconnectInterval": 0});
    app.host
        .kv_set(proto::KvSetRequest {
            key: RTCD_CONFIG_KEY.into(),
            value: cfg.to_string().into_bytes(),
            ..Default::default()
        })
        .await
        .map_err(|e| PoolError::Credentials(e.to_string()))?;
    Ok((id, key))
}

/// Connects to the rtcd fleet of `RTCDServiceURL`.
pub async fn start_rtcd(app: &App) -> Result<(), ActivateError> {
    let url = app.config().RTCDServiceURL.clone();
    let parsed = super::rtcd_pool::parse_url(&url)?;
    let (id, key) = rtcd_credentials(app, &parsed).await?;
    let pool = super::rtcd_pool::RtcdPool::start(&url, id, key, app.rtcd_events.clone()).await?;
    tracing::info!(url, hosts = ?pool.hosts(), "rtcd mode: connected");
    if let Some(old) = app.rtcd.write().replace(pool) {
        old.close();
    }
    Ok(())
}

/// After a config change: the mode for new calls follows the settings; calls in
/// progress stay where they are.
pub async fn apply_media_mode(app: &App) {
    if app.rtcd_mode() {
        let url = app.config().RTCDServiceURL.clone();
        let same = app
            .rtcd()
            .is_some_and(|p| super::rtcd_pool::parse_url(&url).is_ok_and(|u| u == p.url));
        if !same {
            if let Err(e) = start_rtcd(app).await {
                tracing::error!(error = %e, "rtcd mode: cannot connect; new calls will fail until it can");
            }
        }
    } else if let Err(e) = ensure_rtc(app).await {
        tracing::error!(error = %e, "integrated mode: cannot start the RTC server");
    }
}

/// A call found in the database at activation: false when its media is known gone
/// (an rtcd host that no longer has it).
async fn recover_call_media(app: &App, call_id: &str, host: &str) -> bool {
    if host.is_empty() {
        return true;
    }
    app.track_call_host(call_id, host);
    let Some(pool) = app.rtcd() else {
        tracing::warn!(call_id, host, "rtcd call found but rtcd mode is off");
        return false;
    };
    match pool.call_alive(host, call_id).await {
        Some(false) => {
            tracing::info!(call_id, host, "rtcd no longer has this call");
            false
        }
        _ => true,
    }
}

/// KV key remembering a session's current connection when it differs from the
/// session id, so that a restarted plugin can tell live sessions from gone ones.
pub fn conn_key(session_id: &str) -> String {
    format!("session_conn_{session_id}")
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
    let (notes_tx, notes_rx) = tokio::sync::mpsc::unbounded_channel();
    let (rtcd_tx, rtcd_rx) = tokio::sync::mpsc::unbounded_channel();
    let app = App(Arc::new(Inner {
        mutexes: Mutexes::new(host.clone(), metrics.clone()),
        host,
        store,
        metrics,
        config: RwLock::new(Arc::new(config)),
        env_overrides: RwLock::new(env_overrides(&process_env)),
        license: RwLock::new(license_info(&license)),
        server,
        bot_id: bot.id,
        sessions: Sessions::default(),
        rate: Default::default(),
        ws_budgets: Default::default(),
        repeats: Default::default(),
        version: PLUGIN_VERSION,
        bundle_path: bundle_path.to_string(),
        group_calls_env: std::env::var("MM_CALLS_GROUP_CALLS_ALLOWED").is_ok_and(|v| v == "true"),
        stopped: Default::default(),
        rtc: RwLock::new(None),
        rtc_notes: notes_tx,
        rtc_start: Default::default(),
        rtcd: RwLock::new(None),
        rtcd_events: rtcd_tx,
        call_hosts: Default::default(),
    }));
    tokio::spawn(super::media::handle_notes(app.clone(), notes_rx));
    tokio::spawn(super::media::handle_rtcd(app.clone(), rtcd_rx));
    if app.rtcd_mode() {
        // As upstream, activation fails when the rtcd fleet cannot be reached.
        start_rtcd(&app).await?;
    } else {
        // The integrated SFU binds its port only when calls may use it.
        ensure_rtc(&app).await?;
    }
    recover_sessions(&app).await?;
    tokio::spawn(check_auth_sessions(app.clone()));
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
    // Per call: its channel, whether its media survived, and whether it was on the
    // integrated SFU (whose media died with the previous process).
    let mut channels: HashMap<String, (String, bool, bool)> = HashMap::new();
    let (mut live, mut gone, mut media_lost) = (0, 0, 0);
    for s in sessions {
        let (channel_id, call_alive, integrated) = match channels.get(&s.call_id) {
            Some(c) => c.clone(),
            None => match app.store.get_call(&s.call_id).await? {
                Some(c) => {
                    let integrated = c.props.rtcd_host.is_empty();
                    let alive = recover_call_media(app, &c.id, &c.props.rtcd_host).await;
                    channels.insert(s.call_id.clone(), (c.channel_id.clone(), alive, integrated));
                    (c.channel_id, alive, integrated)
                }
                None => continue,
            },
        };
        let conn_id = match app.host.kv_get(&conn_key(&s.id)).await? {
            Some(v) => String::from_utf8(v).unwrap_or_else(|_| s.id.clone()),
            None => s.id.clone(),
        };
        if integrated {
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
            if let Err(e) = remove_session(app, &channel_id, &s.id).await {
                tracing::error!(session_id = s.id, error = %e, "failed to end a session whose media was lost");
            }
            continue;
        }
        let open = call_alive
            && conns
                .get(&conn_id)
                .is_some_and(|(uid, active)| *uid == s.user_id && *active);
        if open {
            live += 1;
        } else {
            gone += 1;
        }
        let (local, inbox) =
            LocalSession::new(&s.user_id, &channel_id, &s.call_id, &conn_id, &s.id, "");
        app.sessions.insert(local.clone());
        spawn_session_task(app.clone(), local.clone(), inbox, !open);
        if open {
            // rtcd kept the media going: its signaling now comes to this process.
            super::media::reconnected(app, &local).await;
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

/// Marks this process's sessions of integrated calls as left (their media dies with
/// the process), leaves rtcd calls running for the next activation, closes the
/// database.
pub async fn deactivate(app: &App) {
    app.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in app.sessions.all() {
        if app.call_host(&s.call_id).is_some() {
            continue;
        }
        s.signal(super::sessions::Signal::Closed);
        app.sessions.remove_if_same(&s);
        if let Err(e) = remove_session(app, &s.channel_id, &s.original_conn_id).await {
            tracing::error!(session_id = s.original_conn_id, error = %e, "failed to mark session left");
        }
    }
    if let Some(p) = app.rtcd() {
        p.close();
    }
    app.store.db().close().await;
    tracing::info!("plugin deactivated");
}
