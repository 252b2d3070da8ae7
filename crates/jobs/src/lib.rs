//! `calls-jobs`: a job service for Mattermost Calls recordings that speaks
//! calls-offloader's API (so the plugin's `JobServiceURL` can name it or upstream's
//! service alike) and runs each job as a local process of `calls-recorder` instead of
//! a container.
//!
//! Layout: [`config`] (TOML and `CALLS_JOBS_*`), [`api`] (the HTTP routes),
//! [`jobs`] (processes, their limits, records and logs), [`runner`] (which runner a
//! job names, and the program that runs it). Clients and their keys are
//! `calls_service::client_auth`, shared with rtcd.

pub mod api;
pub mod config;
pub mod jobs;
pub mod runner;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use calls_service::client_auth::Auth;
use config::Config;

pub struct JobService {
    pub config: Config,
    pub auth: Auth,
    pub jobs: Arc<jobs::Jobs>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid listen address {0:?}")]
    Address(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("cannot open the store: {0}")]
    Store(String),
}

/// `:4545` listens on every address, as Go's.
fn listen_addr(s: &str) -> Result<SocketAddr, RunError> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse().map_err(|_| RunError::Address(s.to_string()))
}

pub async fn run(config: Config) -> Result<(), RunError> {
    let data = Path::new(&config.store.data_source);
    let sec = &config.api.security;
    let admin = sec.enable_admin.then(|| sec.admin_secret_key.clone());
    let ttl = Duration::from_secs(sec.session_cache.expiration_minutes.max(1) as u64 * 60);
    let auth = Auth::open(data, admin, ttl).map_err(|e| RunError::Store(e.to_string()))?;
    let dev = ["DEV_MODE", "TEST_MODE"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| v == "true"));
    let jobs = jobs::Jobs::open(data, config.jobs.clone(), dev)
        .map_err(|e| RunError::Store(e.to_string()))?;
    tokio::spawn(jobs.clone().expire_failed());
    let addr = listen_addr(&config.api.http.listen_address)?;
    let svc = Arc::new(JobService {
        config,
        auth,
        jobs: jobs.clone(),
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| RunError::Listen(addr.to_string(), e))?;
    tracing::info!(%addr, recorder = %svc.config.jobs.recorder().display(), "calls-jobs listening");
    let app = api::router(svc).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
            }
        })
        .await
        .map_err(|e| RunError::Listen(addr.to_string(), e))?;
    jobs.shutdown().await;
    Ok(())
}
