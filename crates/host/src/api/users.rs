//! `/api/v4/users`: accounts, login and logout.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::credentials::{current_user, require_admin, session_from_headers};
use super::error::{ApiError, ApiResult};
use crate::auth::{hash_password, verify_password};
use crate::store::{StoreError, User};
use crate::Host;
use calls_wire::ids::{new_id, now_ms};

#[derive(Deserialize)]
pub(super) struct NewUser {
    username: String,
    email: String,
    password: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    nickname: String,
}

pub fn valid_username(u: &str) -> bool {
    (3..=22).contains(&u.len())
        && u.starts_with(|c: char| c.is_ascii_lowercase())
        && u.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

/// Creates a user; the first one becomes system admin, as in Mattermost.
pub async fn insert_user(host: &Host, n: NewUserFields) -> ApiResult<User> {
    if !valid_username(&n.username) {
        return Err(ApiError::bad(
            "model.user.is_valid.username.app_error",
            "Invalid username",
        ));
    }
    if !n.email.contains('@') {
        return Err(ApiError::bad(
            "model.user.is_valid.email.app_error",
            "Invalid email",
        ));
    }
    if n.password.len() < 5 {
        return Err(ApiError::bad(
            "model.user.is_valid.pwd.app_error",
            "Password must be at least 5 characters",
        ));
    }
    let first = host.store.count_users().await? == 0;
    let now = now_ms();
    let password = n.password;
    let password_hash = host.logins.hash(move || hash_password(&password)).await?;
    let u = User {
        id: new_id(),
        username: n.username,
        email: n.email,
        password_hash,
        first_name: n.first_name,
        last_name: n.last_name,
        nickname: n.nickname,
        roles: if first {
            "system_user system_admin".into()
        } else {
            "system_user".into()
        },
        is_bot: false,
        create_at: now,
        update_at: now,
        delete_at: 0,
    };
    host.store.create_user(&u).await.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::bad(
            "app.user.save.existing.app_error",
            "An account with that username or email already exists.",
        ),
        other => other.into(),
    })?;
    Ok(u)
}

pub struct NewUserFields {
    pub username: String,
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    pub nickname: String,
}

pub(super) async fn create_user(
    State(host): State<Host>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    h: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let n: NewUser = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("api.context.invalid_body_param.app_error", e.to_string()))?;
    if host.store.count_users().await? > 0 {
        let open = host
            .config
            .read()
            .pointer("/TeamSettings/EnableOpenServer")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !open {
            require_admin(&host, &h, &Method::POST).await?;
        } else if require_admin(&host, &h, &Method::POST).await.is_err() {
            // Anyone may sign up: each signup hashes a password, so it has the budget
            // of a login.
            host.logins.admit(peer.ip())?;
        }
    }
    let u = insert_user(
        &host,
        NewUserFields {
            username: n.username.to_lowercase(),
            email: n.email,
            password: n.password,
            first_name: n.first_name,
            last_name: n.last_name,
            nickname: n.nickname,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user_json(&u))).into_response())
}

#[derive(Deserialize)]
pub(super) struct Login {
    login_id: String,
    password: String,
}

impl From<crate::logins::LoginError> for ApiError {
    fn from(e: crate::logins::LoginError) -> Self {
        match e {
            crate::logins::LoginError::Refused(r) => r.into(),
            crate::logins::LoginError::Store(s) => s.into(),
        }
    }
}

impl From<crate::logins::LoginRefused> for ApiError {
    fn from(r: crate::logins::LoginRefused) -> ApiError {
        use crate::logins::LoginRefused;
        match r {
            LoginRefused::RateLimited => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "api.context.rate_limit.app_error",
                "limit exceeded",
            ),
            LoginRefused::LockedOut => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "api.user.check_user_login_attempts.too_many.app_error",
                "Your account is locked because of too many failed password attempts.",
            ),
            LoginRefused::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api.user.login.busy",
                r.to_string(),
            ),
        }
    }
}

pub(super) async fn login(
    State(host): State<Host>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    body: Bytes,
) -> ApiResult {
    host.logins.admit(peer.ip())?;
    let l: Login = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("api.context.invalid_body_param.app_error", e.to_string()))?;
    let bad = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "api.user.login.invalid_credentials_email_username",
            "Enter a valid email or username and/or password.",
        )
    };
    let u = host
        .store
        .user_by_login(&l.login_id.to_lowercase())
        .await?
        .ok_or_else(bad)?;
    if u.delete_at > 0 || u.is_bot {
        return Err(bad());
    }
    host.logins.attempt(&host.store, &u.id).await?;
    let (password, hash) = (l.password, u.password_hash.clone());
    let ok = host
        .logins
        .hash(move || verify_password(&password, &hash))
        .await?;
    if !ok {
        return Err(bad());
    }
    host.logins.succeeded(&host.store, &u.id).await?;
    let (_, token) = host
        .store
        .create_session(&u.id, 30 * 24 * 3600 * 1000)
        .await?;
    let csrf = new_id();
    let mut resp = Json(user_json(&u)).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&token) {
        h.insert("Token", v);
    }
    for c in [
        format!("MMAUTHTOKEN={token}; Path=/; HttpOnly; SameSite=Lax"),
        format!("MMUSERID={}; Path=/; SameSite=Lax", u.id),
        format!("MMCSRF={csrf}; Path=/; SameSite=Lax"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

pub(super) async fn logout(State(host): State<Host>, h: HeaderMap) -> ApiResult {
    if let Some((sid, _)) = session_from_headers(&host, &h, false).await? {
        host.store.delete_session(&sid).await?;
        // As Mattermost: a revoked login keeps no websocket.
        let closed = host.hub.end_session(&sid);
        tracing::debug!(closed, "logout: websockets of the session closed");
        if let Some(c) = &host.cluster {
            c.send(
                "",
                crate::cluster::Message::LoginRevoked { session_id: sid },
            )
            .await;
        }
    }
    Ok(Json(json!({"status": "OK"})).into_response())
}

pub(super) async fn me(State(host): State<Host>, h: HeaderMap) -> ApiResult {
    let u = current_user(&host, &h, &Method::GET).await?;
    Ok(Json(user_json(&u)).into_response())
}

pub(super) async fn get_user(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    current_user(&host, &h, &Method::GET).await?;
    let u = host
        .store
        .user(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user_json(&u)).into_response())
}

pub(super) async fn my_teams(State(host): State<Host>, h: HeaderMap) -> ApiResult {
    let u = current_user(&host, &h, &Method::GET).await?;
    Ok(Json(host.store.teams_for_user(&u.id).await?).into_response())
}

pub(super) async fn user_channels(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let u = current_user(&host, &h, &Method::GET).await?;
    let id = if id == "me" { u.id.clone() } else { id };
    if id != u.id && !u.is_system_admin() {
        return Err(ApiError::forbidden());
    }
    Ok(Json(host.store.channels_for_user(&id, 1000, 0).await?).into_response())
}

pub(crate) fn user_json(u: &User) -> Value {
    json!({
        "id": u.id, "username": u.username, "email": u.email, "first_name": u.first_name,
        "last_name": u.last_name, "nickname": u.nickname, "roles": u.roles, "is_bot": u.is_bot,
        "create_at": u.create_at, "update_at": u.update_at, "delete_at": u.delete_at, "locale": "en",
    })
}
