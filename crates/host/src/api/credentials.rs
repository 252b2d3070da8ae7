//! Who a request comes from: the session token (header or cookie), CSRF for
//! cookie-authenticated writes, the current user and admin checks.

use axum::http::{header, HeaderMap, Method};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ApiResult};
use crate::store::User;
use crate::Host;

pub fn token_from_headers(h: &HeaderMap) -> Option<String> {
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        for scheme in ["Bearer ", "bearer ", "Token ", "token "] {
            if let Some(t) = v.strip_prefix(scheme) {
                return Some(t.trim().to_string());
            }
        }
    }
    cookie(h, "MMAUTHTOKEN")
}

pub(crate) fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// (session id, user id) of the request's credentials. Cookie-authenticated
/// state-changing requests must prove they come from our page (CSRF), as in Mattermost.
pub async fn session_from_headers(
    host: &Host,
    h: &HeaderMap,
    safe_method: bool,
) -> Result<Option<(String, String)>, ApiError> {
    let from_header = h.get(header::AUTHORIZATION).is_some();
    let Some(token) = token_from_headers(h) else {
        return Ok(None);
    };
    if !from_header && !safe_method {
        let xrw = h
            .get("X-Requested-With")
            .is_some_and(|v| v == "XMLHttpRequest");
        let csrf_ok = match (
            h.get("X-CSRF-Token").and_then(|v| v.to_str().ok()),
            cookie(h, "MMCSRF"),
        ) {
            (Some(a), Some(b)) => bool::from(a.as_bytes().ct_eq(b.as_bytes())),
            _ => false,
        };
        if !xrw && !csrf_ok {
            return Err(ApiError::unauthorized());
        }
    }
    Ok(host
        .store
        .session_by_token(&token)
        .await?
        .map(|(sid, uid, _)| (sid, uid)))
}

pub(crate) async fn current_user(host: &Host, h: &HeaderMap, method: &Method) -> ApiResult<User> {
    let safe = method == Method::GET || method == Method::HEAD;
    let (_, uid) = session_from_headers(host, h, safe)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let user = host
        .store
        .user(&uid)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if user.delete_at > 0 {
        return Err(ApiError::unauthorized());
    }
    Ok(user)
}

pub(crate) async fn require_admin(host: &Host, h: &HeaderMap, m: &Method) -> ApiResult<User> {
    let u = current_user(host, h, m).await?;
    if !u.is_system_admin() {
        return Err(ApiError::forbidden());
    }
    Ok(u)
}
