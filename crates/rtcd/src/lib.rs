//! An rtcd-compatible media service (reference rtcd.md): the HTTP API and plugin
//! websocket of upstream rtcd in front of the same SFU core as the integrated mode.
//!
//! Layout: [`config`] (TOML and `RTCD_*` env), [`auth`] (client keys, admin key,
//! tokens), [`api`] (the HTTP routes and the plugin websocket), [`session`] (sessions
//! per client group and call), [`system`] (`cpu_load`), [`logging`]. This file starts
//! the service ([`run`]) and holds its metrics. The envelopes are `calls_wire::rtcd`.

pub mod api;
pub use calls_service::client_auth as auth;
pub mod config;
pub use calls_service::logger as logging;
pub mod session;
pub mod system;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use calls_rtc::addrs::{first_ip, AddrSettings};
use calls_rtc::metrics::RtcMetrics;
use calls_rtc::shell::{RtcAddrs, RtcServer};
use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum RtcdError {
    #[error("invalid listen address {0:?}")]
    Listen(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("cannot start the RTC server: {0}")]
    Rtc(std::io::Error),
    #[error("cannot open the store: {0}")]
    Store(#[from] auth::AuthError),
    #[error("cannot resolve ice_host_override {0:?}")]
    HostOverride(String),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// The `rtcd_*` Prometheus registry.
pub struct RtcdMetrics {
    pub registry: Registry,
    pub ws_connections: IntGaugeVec,
    pub ws_messages: IntCounterVec,
    pub rtc: RtcMetrics,
}

impl RtcdMetrics {
    pub fn new() -> prometheus::Result<RtcdMetrics> {
        let registry = Registry::new();
        let ws_connections = IntGaugeVec::new(
            Opts::new(
                "ws_connections_total",
                "Total number of active WebSocket connections.",
            )
            .namespace("rtcd"),
            &["clientID"],
        )?;
        let ws_messages = IntCounterVec::new(
            Opts::new(
                "ws_messages_total",
                "Total number of received/sent WebSocket messages.",
            )
            .namespace("rtcd"),
            &["clientID", "type", "direction"],
        )?;
        registry.register(Box::new(ws_connections.clone()))?;
        registry.register(Box::new(ws_messages.clone()))?;
        let rtc = RtcMetrics::register(&registry, "rtcd")?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::new(std::process::id() as i32, "rtcd"),
        ))?;
        Ok(RtcdMetrics {
            registry,
            ws_connections,
            ws_messages,
            rtc,
        })
    }

    pub fn render(&self) -> (String, Vec<u8>) {
        use prometheus::Encoder;
        let enc = prometheus::TextEncoder::new();
        let mut buf = Vec::new();
        let _ = enc.encode(&self.registry.gather(), &mut buf);
        (enc.format_type().to_string(), buf)
    }
}

pub struct Rtcd {
    pub config: Config,
    pub auth: auth::Auth,
    pub sessions: Arc<session::Sessions>,
    pub cpu_load: system::CpuLoad,
    pub metrics: RtcdMetrics,
}

/// `:8045` means every interface, as in Go.
pub fn listen_addr(s: &str) -> Result<SocketAddr, RtcdError> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse().map_err(|_| RtcdError::Listen(s.to_string()))
}

/// Where media is bound and what it advertises (reference §3.7: host override, as IP,
/// hostname or `external/internal` pairs; host-port override, single or per IP).
async fn rtc_addrs(cfg: &Config) -> Result<RtcAddrs, RtcdError> {
    let r = &cfg.rtc;
    if r.ice_address_udp
        .split(',')
        .filter(|a| !a.trim().is_empty())
        .count()
        > 1
    {
        tracing::warn!("several rtc.ice_address_udp entries: media is served on the first one");
    }
    let port_overrides = cfg.port_override_map()?;
    let urls: Vec<Vec<String>> = r.ice_servers.iter().map(|e| e.urls()).collect();
    let settings = AddrSettings {
        udp_ip: first_ip(&r.ice_address_udp),
        udp_port: r.ice_port_udp as u16,
        tcp: Some((first_ip(&r.ice_address_tcp), r.ice_port_tcp as u16)),
        host_override: &r.ice_host_override,
        port_overrides: &port_overrides,
        ice_server_urls: urls.iter().map(Vec::as_slice).collect(),
    };
    calls_rtc::addrs::resolve(&settings)
        .await
        .map_err(|_| RtcdError::HostOverride(r.ice_host_override.trim().to_string()))
}

/// Runs rtcd until SIGINT/SIGTERM; then waits for the sessions to end (a second
/// signal stops at once), as upstream drains.
pub async fn run(config: Config) -> Result<(), RtcdError> {
    let listen = listen_addr(&config.api.http.listen_address)?;
    let auth = auth::Auth::open(
        std::path::Path::new(&config.store.data_source),
        config
            .api
            .security
            .enable_admin
            .then(|| config.api.security.admin_secret_key.clone()),
        Duration::from_secs(config.api.security.session_cache.expiration_minutes as u64 * 60),
    )?;
    let metrics = RtcdMetrics::new().map_err(|e| RtcdError::Rtc(std::io::Error::other(e)))?;
    let (notes_tx, mut notes_rx) = tokio::sync::mpsc::unbounded_channel();
    let rtc = RtcServer::start(
        rtc_addrs(&config).await?,
        Box::new(metrics.rtc.clone()),
        notes_tx,
    )
    .await
    .map_err(RtcdError::Rtc)?;
    // rtcd has one media server for its lifetime: if its thread dies (see the panic
    // policy), the sessions it held are reported closed to their plugins, and then
    // the process exits for its supervisor (systemd: Restart=) to start a fresh one;
    // a half-alive rtcd would take joins it can never serve.
    let watched = rtc.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !watched.is_alive() {
                tracing::error!("the rtc thread is gone: exiting for a restart");
                // Time for the close messages to reach the plugins.
                tokio::time::sleep(Duration::from_secs(1)).await;
                std::process::exit(70);
            }
        }
    });
    let sessions = Arc::new(session::Sessions::new(rtc, metrics.ws_messages.clone()));
    let cpu_load = system::CpuLoad::default();
    cpu_load.spawn_sampler();
    let rtcd = Arc::new(Rtcd {
        config,
        auth,
        sessions: sessions.clone(),
        cpu_load,
        metrics,
    });
    tokio::spawn(async move {
        while let Some(n) = notes_rx.recv().await {
            sessions.on_note(n);
        }
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| RtcdError::Bind(listen.to_string(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| RtcdError::Bind(listen.to_string(), e))?;
    tracing::info!(%local, version = api::COMPAT_VERSION, "rtcd listening");
    if rtcd.config.metrics.enable_prom {
        let addr = SocketAddr::new(listen.ip(), rtcd.config.metrics.prom_port as u16);
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RtcdError::Bind(addr.to_string(), e))?;
        tracing::info!(%addr, "metrics listening");
        let app = api::metrics_router(rtcd.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(calls_service::nodelay::listener(l), app).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }
    println!("rtcd listening on http://{local}");
    let app = api::router(rtcd.clone());
    let drain = rtcd.clone();
    axum::serve(
        calls_service::nodelay::listener(listener),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!(
            sessions = drain.sessions.session_count(),
            "shutting down: waiting for sessions to end"
        );
        tokio::select! {
            _ = async {
                while drain.sessions.session_count() > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            } => {}
            _ = shutdown_signal() => tracing::warn!("second signal: stopping now"),
        }
    })
    .await
    .map_err(|e| RtcdError::Bind(listen.to_string(), e))?;
    tracing::info!("rtcd stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
