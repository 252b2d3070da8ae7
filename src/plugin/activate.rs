//! Activation and deactivation (reference calls-plugin.md §8.3), including recovery
//! of the sessions an earlier process of this plugin left in the database.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::app::{App, Inner, LicenseInfo};
use super::config::{env_overrides, process_env, Config};
use super::host_api::HostApi;
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
    let rtc = if config.RTCDServiceURL.is_empty() {
        Some(start_rtc_server(&config, &metrics, notes_tx).await?)
    } else {
        None
    };
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
        version: PLUGIN_VERSION,
        bundle_path: bundle_path.to_string(),
        group_calls_env: std::env::var("MM_CALLS_GROUP_CALLS_ALLOWED").is_ok_and(|v| v == "true"),
        stopped: Default::default(),
        rtc,
    }));
    tokio::spawn(super::media::handle_notes(app.clone(), notes_rx));
    recover_sessions(&app).await?;
    tokio::spawn(check_auth_sessions(app.clone()));
    Ok(app)
}

/// Every 10 s, sessions whose login session is gone (logout, expiry) leave their call.
async fn check_auth_sessions(app: App) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        if app.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut verdicts: HashMap<String, bool> = HashMap::new();
        for s in app.sessions.all() {
            // Recovered sessions have no known login session: nothing to check.
            if s.auth_session_id.is_empty() {
                continue;
            }
            let valid = match verdicts.get(&s.auth_session_id) {
                Some(v) => *v,
                None => match app.host.session(&s.auth_session_id).await {
                    Ok(r) => {
                        let v = r.valid && r.user_id == s.user_id;
                        verdicts.insert(s.auth_session_id.clone(), v);
                        v
                    }
                    // The host being unreachable is not the user's fault.
                    Err(_) => true,
                },
            };
            if !valid {
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
    let mut channels: HashMap<String, String> = HashMap::new();
    let (mut live, mut gone) = (0, 0);
    for s in sessions {
        let channel_id = match channels.get(&s.call_id) {
            Some(c) => c.clone(),
            None => match app.store.get_call(&s.call_id).await? {
                Some(c) => {
                    channels.insert(s.call_id.clone(), c.channel_id.clone());
                    c.channel_id
                }
                None => continue,
            },
        };
        let conn_id = match app.host.kv_get(&conn_key(&s.id)).await? {
            Some(v) => String::from_utf8(v).unwrap_or_else(|_| s.id.clone()),
            None => s.id.clone(),
        };
        let open = conns
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
        spawn_session_task(app.clone(), local, inbox, !open);
    }
    app.metrics
        .websocket_connections
        .set(app.sessions.len() as i64);
    tracing::info!(live, gone, "recovered call sessions from the database");
    Ok(())
}

/// Marks this process's sessions as left and closes the database.
pub async fn deactivate(app: &App) {
    app.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in app.sessions.all() {
        s.signal(super::sessions::Signal::Closed);
        app.sessions.remove_if_same(&s);
        if let Err(e) = remove_session(app, &s.channel_id, &s.original_conn_id).await {
            tracing::error!(session_id = s.original_conn_id, error = %e, "failed to mark session left");
        }
    }
    app.store.db().close().await;
    tracing::info!("plugin deactivated");
}
