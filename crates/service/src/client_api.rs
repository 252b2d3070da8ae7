//! The client API of rtcd and of the job service (reference rtcd.md §1.3; upstream's
//! calls-offloader has the same): `/register`, `/unregister`, `/login` and Basic or
//! Bearer authentication, answering in upstream's `{"code": "<status>", ...}` shape.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};

use super::client_auth::{Auth, AuthError, Identity};

/// The `api.security` switches these routes follow.
#[derive(Debug, Clone, Copy)]
pub struct Security {
    pub allow_self_registration: bool,
    pub enable_admin: bool,
}

pub fn coded(status: StatusCode, mut body: Value) -> Response {
    body["code"] = Value::String(status.as_u16().to_string());
    (status, Json(body)).into_response()
}

pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    coded(status, json!({"error": msg.into()}))
}

/// The credentials of an `Authorization` header: a bearer token, or Basic id and key.
pub enum Credentials {
    Bearer(String),
    Basic(String, String),
}

pub fn credentials(headers: &HeaderMap) -> Result<Credentials, AuthError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Failed)?;
    if let Some(token) = h.strip_prefix("Bearer ") {
        return Ok(Credentials::Bearer(token.to_string()));
    }
    let b64 = h.strip_prefix("Basic ").ok_or(AuthError::Failed)?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| AuthError::Failed)?;
    let raw = String::from_utf8(raw).map_err(|_| AuthError::Failed)?;
    let (id, key) = raw.split_once(':').ok_or(AuthError::Failed)?;
    Ok(Credentials::Basic(id.to_string(), key.to_string()))
}

/// Basic or Bearer, as upstream's authHandler.
pub async fn authenticate(
    auth: &Auth,
    headers: &HeaderMap,
    from: SocketAddr,
) -> Result<Identity, AuthError> {
    match credentials(headers)? {
        Credentials::Bearer(t) => auth.bearer(&t),
        Credentials::Basic(id, key) => auth.basic(&id, &key, from.ip()).await,
    }
}

/// The JSON body's string fields (every value must be a string).
fn string_fields(body: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("failed to decode body: {e}"))?;
    let Value::Object(m) = v else {
        return Err("failed to decode body: not an object".into());
    };
    if m.values().any(|v| !v.is_string()) {
        return Err("failed to decode body: values must be strings".into());
    }
    Ok(m)
}

fn s<'a>(m: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or_default()
}

pub async fn register(
    auth: &Auth,
    sec: Security,
    headers: &HeaderMap,
    from: SocketAddr,
    body: &[u8],
) -> Response {
    if !sec.allow_self_registration {
        if let Err(e) = authenticate(auth, headers, from).await {
            return error(StatusCode::UNAUTHORIZED, e.to_string());
        }
    }
    let m = match string_fields(body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let id = s(&m, "clientID");
    match auth.register(id, s(&m, "authKey")).await {
        Ok(()) => {
            tracing::info!(client_id = id, "client registered");
            coded(StatusCode::CREATED, json!({"clientID": id}))
        }
        Err(e) => {
            tracing::warn!(client_id = id, error = %e, "registration refused");
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

pub async fn unregister(
    auth: &Auth,
    sec: Security,
    headers: &HeaderMap,
    from: SocketAddr,
    body: &[u8],
) -> Response {
    if !sec.enable_admin && !sec.allow_self_registration {
        return error(StatusCode::FORBIDDEN, "unregister not enabled");
    }
    let who = match authenticate(auth, headers, from).await {
        Ok(w) => w,
        Err(e) => return error(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    let m = match string_fields(body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let id = s(&m, "clientID");
    if id.is_empty() {
        return error(StatusCode::BAD_REQUEST, "client id should not be empty");
    }
    if let Identity::Client(me) = &who {
        if me != id {
            return error(StatusCode::FORBIDDEN, "client id not valid");
        }
    }
    match auth.unregister(id) {
        Ok(()) => coded(StatusCode::OK, json!({})),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("unregister failed: {e}")),
    }
}

pub async fn login(auth: &Auth, from: SocketAddr, body: &[u8]) -> Response {
    let m = match string_fields(body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match auth
        .login(s(&m, "clientID"), s(&m, "authKey"), from.ip())
        .await
    {
        Ok(token) => coded(StatusCode::OK, json!({"bearerToken": token})),
        // A bad key is a 400 upstream, not a 401.
        Err(e) => error(StatusCode::BAD_REQUEST, format!("login failed: {e}")),
    }
}
