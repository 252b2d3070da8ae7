//! calls-jobs' HTTP API: calls-offloader's routes and answers (`{"code": "<status>",
//! "error": ...}` on failure, a job's JSON or an empty 200 on success), Basic or
//! Bearer authentication, and self-registration on a client's first request when
//! `allow_self_registration` is on (as upstream's auth handler).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::jobs::{JobConfig, JobError};
use super::JobService;
use calls_service::client_api::{self, error, Credentials, Security};
use calls_service::client_auth::{AuthError, Identity};

/// The calls-offloader release whose API this service speaks (the plugin checks it
/// against its `min_offloader_version`).
pub const COMPAT_VERSION: &str = "v0.9.5";
const MAX_BODY: usize = 1 << 20;

pub fn router(s: Arc<JobService>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/register", post(register))
        .route("/unregister", post(unregister))
        .route("/login", post(login))
        .route("/jobs", post(create_job))
        .route("/jobs/init", post(init))
        .route("/jobs/{id}", get(get_job).delete(delete_job))
        .route("/jobs/{id}/logs", get(job_logs))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(s)
}

fn security(s: &JobService) -> Security {
    let sec = &s.config.api.security;
    Security {
        allow_self_registration: sec.allow_self_registration,
        enable_admin: sec.enable_admin,
    }
}

async fn version() -> Json<Value> {
    Json(json!({
        "buildDate": option_env!("CALLS_JOBS_BUILD_DATE").unwrap_or(""),
        "buildVersion": COMPAT_VERSION,
        "buildHash": format!("mattermost-calls-rs-{}", env!("CARGO_PKG_VERSION")),
        "goVersion": "n/a (Rust)",
    }))
}

async fn register(
    State(s): State<Arc<JobService>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    client_api::register(&s.auth, security(&s), &headers, from, &body).await
}

async fn unregister(
    State(s): State<Arc<JobService>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    client_api::unregister(&s.auth, security(&s), &headers, from, &body).await
}

async fn login(
    State(s): State<Arc<JobService>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    client_api::login(&s.auth, from, &body).await
}

/// upstream's auth handler: a bearer token, the admin key, or a client's Basic
/// credentials (registering the client first when self-registration is on).
async fn authorize(
    s: &JobService,
    headers: &HeaderMap,
    from: SocketAddr,
) -> Result<Identity, Response> {
    let fail = |m: &str| {
        error(
            StatusCode::UNAUTHORIZED,
            format!("authentication failed{m}"),
        )
    };
    match client_api::credentials(headers) {
        Err(_) => Err(fail(": invalid auth header")),
        Ok(Credentials::Bearer(t)) => s.auth.bearer(&t).map_err(|_| fail(": token is invalid")),
        Ok(Credentials::Basic(id, key)) => {
            if let Ok(Identity::Admin) = s.auth.basic("", &key, from.ip()).await {
                return Ok(Identity::Admin);
            }
            if id.is_empty() {
                return Err(fail(": unauthorized"));
            }
            if security(s).allow_self_registration && !s.auth.is_registered(&id) {
                match s.auth.register(&id, &key).await {
                    Ok(()) => tracing::info!(client_id = id, "client registered itself"),
                    Err(AuthError::AlreadyRegistered) => {}
                    Err(e) => {
                        tracing::warn!(client_id = id, error = %e, "self-registration refused");
                        return Err(fail(": unauthorized"));
                    }
                }
            }
            s.auth
                .basic(&id, &key, from.ip())
                .await
                .map_err(|_| fail(""))
        }
    }
}

fn job_error(e: JobError, prefix: &str) -> Response {
    match e {
        JobError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        JobError::Service(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
        JobError::NotFound => error(
            StatusCode::NOT_FOUND,
            format!("failed to get job {prefix}: error: not found"),
        ),
        JobError::Running => error(StatusCode::BAD_REQUEST, "job is running"),
        JobError::Store(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to save job: {e}"),
        ),
    }
}

fn job_ok(job: &super::jobs::Job) -> Response {
    (StatusCode::OK, Json(job)).into_response()
}

/// Upstream's `{id}` pattern, `[a-z0-9]{12,26}`; anything else is not a route.
fn valid_job_id(id: &str) -> bool {
    (12..=26).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A `/jobs/{id}...` request: an id of upstream's pattern (else no route) from an
/// authenticated client.
async fn job_route(
    s: &JobService,
    headers: &HeaderMap,
    from: SocketAddr,
    id: &str,
) -> Result<Option<String>, Response> {
    if !valid_job_id(id) {
        return Err((StatusCode::NOT_FOUND, "404 page not found\n").into_response());
    }
    // A client sees its own jobs only (their input holds their tokens); the admin all.
    Ok(match authorize(s, headers, from).await? {
        Identity::Admin => None,
        Identity::Client(c) => Some(c),
    })
}

async fn create_job(
    State(s): State<Arc<JobService>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match authorize(&s, &headers, from).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let cfg: JobConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("failed to decode request body: {e}"),
            )
        }
    };
    match s.jobs.create(cfg, who.client_id()) {
        Ok(job) => {
            tracing::info!(job_id = job.id, client_id = who.client_id(), "job created");
            job_ok(&job)
        }
        Err(e) => {
            tracing::warn!(client_id = who.client_id(), error = %e, "job not created");
            job_error(e, "")
        }
    }
}

async fn init(
    State(s): State<Arc<JobService>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&s, &headers, from).await {
        return r;
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("failed to decode request body: {e}"),
            )
        }
    };
    // Go matches the `Runners` field whatever the case of the key.
    let runners: Vec<String> = v
        .as_object()
        .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case("runners")))
        .and_then(|(_, v)| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match s.jobs.init(&runners) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => job_error(e, ""),
    }
}

async fn get_job(
    State(s): State<Arc<JobService>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let client = match job_route(&s, &headers, from, &id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match s.jobs.get(&id, client.as_deref()) {
        Some(j) => job_ok(&j),
        None => job_error(JobError::NotFound, "failed to get job"),
    }
}

async fn delete_job(
    State(s): State<Arc<JobService>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let client = match job_route(&s, &headers, from, &id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match s.jobs.delete(&id, client.as_deref()) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(JobError::Store(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to delete recording job: {e}"),
        ),
        Err(e) => job_error(e, "failed to get job"),
    }
}

async fn job_logs(
    State(s): State<Arc<JobService>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let client = match job_route(&s, &headers, from, &id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match s.jobs.logs(&id, client.as_deref()) {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            bytes,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::FORBIDDEN,
            format!("failed to get recording job logs: {e}"),
        ),
    }
}
