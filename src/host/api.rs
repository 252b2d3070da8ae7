//! The Mattermost-compatible `/api/v4` subset, the plugin proxy and static pages.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Multipart, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::auth::{hash_password, verify_password};
use super::grpc::{direct_channel, post_json};
use super::plugins::{self, install_bundle, read_manifest};
use super::store::{Channel, StoreError, Team, User};
use super::{Host, CALLS_PLUGIN_ID};
use crate::ids::{new_id, now_ms};
use crate::proto;

/// Mattermost's `AppError` JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    id: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, id: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            id,
            message: message.into(),
        }
    }
    fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        )
    }
    fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "api.context.permissions.app_error",
            "You do not have the appropriate permissions.",
        )
    }
    fn bad(id: &'static str, msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, id, msg)
    }
    fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "app.not_found",
            format!("{what} not found"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(what) => {
                ApiError::bad("store.conflict", format!("{what} already exists"))
            }
            StoreError::NotFound => ApiError::not_found("resource"),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "app.internal_error",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "id": self.id, "message": self.message, "detailed_error": "",
            "request_id": new_id(), "status_code": self.status.as_u16(),
        });
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

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

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
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

async fn current_user(host: &Host, h: &HeaderMap, method: &Method) -> ApiResult<User> {
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

async fn require_admin(host: &Host, h: &HeaderMap, m: &Method) -> ApiResult<User> {
    let u = current_user(host, h, m).await?;
    if !u.is_system_admin() {
        return Err(ApiError::forbidden());
    }
    Ok(u)
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id, "username": u.username, "email": u.email, "first_name": u.first_name,
        "last_name": u.last_name, "nickname": u.nickname, "roles": u.roles, "is_bot": u.is_bot,
        "create_at": u.create_at, "update_at": u.update_at, "delete_at": u.delete_at, "locale": "en",
    })
}

pub fn router(host: Host) -> Router {
    Router::new()
        .route(
            "/api/v4/system/ping",
            get(|| async { Json(json!({"status": "OK"})) }),
        )
        .route("/api/v4/users", post(create_user))
        .route("/api/v4/users/login", post(login))
        .route("/api/v4/users/logout", post(logout))
        .route("/api/v4/users/me", get(me))
        .route("/api/v4/users/me/teams", get(my_teams))
        .route("/api/v4/users/{user_id}", get(get_user))
        .route("/api/v4/users/{user_id}/channels", get(user_channels))
        .route("/api/v4/teams", post(create_team))
        .route("/api/v4/teams/{team_id}", get(get_team))
        .route("/api/v4/teams/{team_id}/members", post(add_team_member))
        .route("/api/v4/channels", post(create_channel))
        .route("/api/v4/channels/direct", post(create_direct))
        .route("/api/v4/channels/group", post(create_group))
        .route(
            "/api/v4/channels/{channel_id}",
            get(get_channel).delete(archive_channel),
        )
        .route(
            "/api/v4/channels/{channel_id}/members",
            post(add_channel_member),
        )
        .route(
            "/api/v4/channels/{channel_id}/members/{user_id}",
            axum::routing::delete(remove_channel_member),
        )
        .route("/api/v4/channels/{channel_id}/posts", get(channel_posts))
        .route(
            "/api/v4/plugins",
            post(upload_plugin)
                .layer(DefaultBodyLimit::max(MAX_BUNDLE_UPLOAD))
                .get(list_plugins),
        )
        .route("/api/v4/plugins/{plugin_id}/enable", post(enable_plugin))
        .route("/api/v4/plugins/{plugin_id}/disable", post(disable_plugin))
        .route("/api/v4/config", get(get_config).put(put_config))
        .route("/api/v4/websocket", get(super::websocket::upgrade))
        .route("/plugins/com.mattermost.calls", any(plugin_proxy))
        .route("/plugins/com.mattermost.calls/{*rest}", any(plugin_proxy))
        .route(
            "/static/plugins/com.mattermost.calls/{*file}",
            get(plugin_static),
        )
        .route("/", get(index))
        // JSON bodies of the API; a bundle upload has its own limit, the plugin
        // routes theirs (the proxy streams).
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(host)
}

// ------------------------------------------------------------------ users

#[derive(Deserialize)]
struct NewUser {
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

async fn create_user(
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
struct Login {
    login_id: String,
    password: String,
}

impl From<super::logins::LoginRefused> for ApiError {
    fn from(r: super::logins::LoginRefused) -> ApiError {
        use super::logins::LoginRefused;
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

async fn login(
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
    host.logins.attempt(&u.id)?;
    let (password, hash) = (l.password, u.password_hash.clone());
    let ok = host
        .logins
        .hash(move || verify_password(&password, &hash))
        .await?;
    if !ok {
        return Err(bad());
    }
    host.logins.succeeded(&u.id);
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

async fn logout(State(host): State<Host>, h: HeaderMap) -> ApiResult {
    if let Some((sid, _)) = session_from_headers(&host, &h, false).await? {
        host.store.delete_session(&sid).await?;
        // As Mattermost: a revoked login keeps no websocket.
        let closed = host.hub.end_session(&sid);
        tracing::debug!(closed, "logout: websockets of the session closed");
    }
    Ok(Json(json!({"status": "OK"})).into_response())
}

async fn me(State(host): State<Host>, h: HeaderMap) -> ApiResult {
    let u = current_user(&host, &h, &Method::GET).await?;
    Ok(Json(user_json(&u)).into_response())
}

async fn get_user(State(host): State<Host>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    current_user(&host, &h, &Method::GET).await?;
    let u = host
        .store
        .user(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user_json(&u)).into_response())
}

async fn my_teams(State(host): State<Host>, h: HeaderMap) -> ApiResult {
    let u = current_user(&host, &h, &Method::GET).await?;
    Ok(Json(host.store.teams_for_user(&u.id).await?).into_response())
}

async fn user_channels(
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

// ------------------------------------------------------------------ teams and channels

#[derive(Deserialize)]
struct NewTeam {
    name: String,
    display_name: String,
    #[serde(default = "open_type")]
    #[serde(rename = "type")]
    team_type: String,
}
fn open_type() -> String {
    "O".into()
}

async fn create_team(State(host): State<Host>, h: HeaderMap, body: Bytes) -> ApiResult {
    let u = current_user(&host, &h, &Method::POST).await?;
    let n: NewTeam = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("api.context.invalid_body_param.app_error", e.to_string()))?;
    let t = Team {
        id: new_id(),
        name: n.name,
        display_name: n.display_name,
        team_type: n.team_type,
        create_at: now_ms(),
        delete_at: 0,
    };
    if !valid_username(&t.name) {
        return Err(ApiError::bad(
            "model.team.is_valid.name.app_error",
            "Invalid team name",
        ));
    }
    host.store.create_team(&t).await?;
    host.store.add_team_member(&t.id, &u.id, true).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

async fn get_team(State(host): State<Host>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let u = current_user(&host, &h, &Method::GET).await?;
    if host.store.team_member(&id, &u.id).await?.is_none() && !u.is_system_admin() {
        return Err(ApiError::forbidden());
    }
    let t = host
        .store
        .team(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("team"))?;
    Ok(Json(t).into_response())
}

#[derive(Deserialize)]
struct MemberBody {
    user_id: String,
}

async fn add_team_member(
    State(host): State<Host>,
    h: HeaderMap,
    Path(team_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let u = current_user(&host, &h, &Method::POST).await?;
    let m: MemberBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("api.context.invalid_body_param.app_error", e.to_string()))?;
    let team = host
        .store
        .team(&team_id)
        .await?
        .ok_or_else(|| ApiError::not_found("team"))?;
    let is_team_admin = host.store.team_member(&team_id, &u.id).await? == Some(true);
    let self_join_open = m.user_id == u.id && team.team_type == "O";
    if !(u.is_system_admin() || is_team_admin || self_join_open) {
        return Err(ApiError::forbidden());
    }
    host.store
        .user(&m.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    host.store
        .add_team_member(&team_id, &m.user_id, false)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"team_id": team_id, "user_id": m.user_id})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct NewChannel {
    team_id: String,
    name: String,
    display_name: String,
    #[serde(rename = "type")]
    channel_type: String,
}

async fn create_channel(State(host): State<Host>, h: HeaderMap, body: Bytes) -> ApiResult {
    let u = current_user(&host, &h, &Method::POST).await?;
    let n: NewChannel = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("api.context.invalid_body_param.app_error", e.to_string()))?;
    if n.channel_type != "O" && n.channel_type != "P" {
        return Err(ApiError::bad(
            "model.channel.is_valid.type.app_error",
            "Invalid type",
        ));
    }
    if host.store.team_member(&n.team_id, &u.id).await?.is_none() && !u.is_system_admin() {
        return Err(ApiError::forbidden());
    }
    let c = Channel {
        id: new_id(),
        team_id: n.team_id,
        channel_type: n.channel_type,
        name: n.name,
        display_name: n.display_name,
        creator_id: u.id.clone(),
        create_at: now_ms(),
        delete_at: 0,
    };
    host.store.create_channel(&c).await?;
    host.store.add_channel_member(&c.id, &u.id, true).await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

async fn create_direct(State(host): State<Host>, h: HeaderMap, body: Bytes) -> ApiResult {
    let u = current_user(&host, &h, &Method::POST).await?;
    let ids: Vec<String> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("api.context.invalid_body_param.app_error", e.to_string()))?;
    let [a, b] = ids.as_slice() else {
        return Err(ApiError::bad(
            "api.context.invalid_body_param.app_error",
            "exactly two user ids",
        ));
    };
    if *a != u.id && *b != u.id && !u.is_system_admin() {
        return Err(ApiError::forbidden());
    }
    for id in [a, b] {
        host.store
            .user(id)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
    }
    let c = direct_channel(&host, a, b).await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

async fn create_group(State(host): State<Host>, h: HeaderMap, body: Bytes) -> ApiResult {
    let u = current_user(&host, &h, &Method::POST).await?;
    let mut ids: Vec<String> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("api.context.invalid_body_param.app_error", e.to_string()))?;
    if !ids.contains(&u.id) {
        ids.push(u.id.clone());
    }
    ids.sort();
    ids.dedup();
    if !(3..=8).contains(&ids.len()) {
        return Err(ApiError::bad(
            "api.channel.create_group.bad_size.app_error",
            "Group message channels must contain at least 3 and no more than 8 users.",
        ));
    }
    for id in &ids {
        host.store
            .user(id)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
    }
    let name = format!(
        "{:x}",
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
            ids.join(",")
        ))
    )[..40]
        .to_string();
    if let Some(c) = host.store.channel_by_name("", &name).await? {
        return Ok((StatusCode::CREATED, Json(c)).into_response());
    }
    let c = Channel {
        id: new_id(),
        team_id: String::new(),
        channel_type: "G".into(),
        name,
        display_name: String::new(),
        creator_id: u.id.clone(),
        create_at: now_ms(),
        delete_at: 0,
    };
    host.store.create_channel(&c).await?;
    for id in &ids {
        host.store.add_channel_member(&c.id, id, false).await?;
    }
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

async fn get_channel(State(host): State<Host>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let u = current_user(&host, &h, &Method::GET).await?;
    if !super::auth::has_channel_permission(&host.store, &u.id, &id, "read_channel").await? {
        return Err(ApiError::forbidden());
    }
    let c = host
        .store
        .channel(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("channel"))?;
    Ok(Json(c).into_response())
}

async fn archive_channel(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let u = current_user(&host, &h, &Method::DELETE).await?;
    let is_chan_admin = host.store.channel_member(&id, &u.id).await? == Some(true);
    if !u.is_system_admin() && !is_chan_admin {
        return Err(ApiError::forbidden());
    }
    host.store
        .channel(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("channel"))?;
    host.store.archive_channel(&id).await?;
    Ok(Json(json!({"status": "OK"})).into_response())
}

async fn add_channel_member(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let u = current_user(&host, &h, &Method::POST).await?;
    let m: MemberBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("api.context.invalid_body_param.app_error", e.to_string()))?;
    let c = host
        .store
        .channel(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("channel"))?;
    if c.channel_type == "D" || c.channel_type == "G" {
        return Err(ApiError::bad(
            "api.channel.add_user_to_channel.type.app_error",
            "Can not add user to this channel type",
        ));
    }
    let is_member = host.store.channel_member(&id, &u.id).await?.is_some();
    let self_join_public = m.user_id == u.id
        && c.channel_type == "O"
        && host.store.team_member(&c.team_id, &u.id).await?.is_some();
    if !(u.is_system_admin() || is_member || self_join_public) {
        return Err(ApiError::forbidden());
    }
    if host
        .store
        .team_member(&c.team_id, &m.user_id)
        .await?
        .is_none()
    {
        return Err(ApiError::bad(
            "api.channel.add_members.user_denied",
            "User is not a member of the team",
        ));
    }
    host.store
        .add_channel_member(&id, &m.user_id, false)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"channel_id": id, "user_id": m.user_id})),
    )
        .into_response())
}

async fn remove_channel_member(
    State(host): State<Host>,
    h: HeaderMap,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult {
    let u = current_user(&host, &h, &Method::DELETE).await?;
    let is_chan_admin = host.store.channel_member(&id, &u.id).await? == Some(true);
    if !(u.is_system_admin() || is_chan_admin || user_id == u.id) {
        return Err(ApiError::forbidden());
    }
    host.store.remove_channel_member(&id, &user_id).await?;
    Ok(Json(json!({"status": "OK"})).into_response())
}

async fn channel_posts(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let u = current_user(&host, &h, &Method::GET).await?;
    if !super::auth::has_channel_permission(&host.store, &u.id, &id, "read_channel").await? {
        return Err(ApiError::forbidden());
    }
    let posts = host.store.posts_for_channel(&id).await?;
    let order: Vec<&str> = posts.iter().map(|p| p.id.as_str()).collect();
    let map: serde_json::Map<String, Value> =
        posts.iter().map(|p| (p.id.clone(), post_json(p))).collect();
    Ok(Json(json!({"order": order, "posts": map})).into_response())
}

// ------------------------------------------------------------------ plugins and config

async fn upload_plugin(State(host): State<Host>, h: HeaderMap, mut mp: Multipart) -> ApiResult {
    if let Err(refused) = require_admin(&host, &h, &Method::POST).await {
        // Clients such as curl and reqwest send the whole body before they read the answer; if
        // we closed with the bundle unread, the kernel would reset the connection and they would
        // see a broken pipe instead of the 403. The body is bounded by the route's limit.
        while let Ok(Some(mut field)) = mp.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
        return Err(refused);
    }
    let mut bundle = None;
    while let Ok(Some(field)) = mp.next_field().await {
        if field.name() == Some("plugin") {
            bundle =
                Some(field.bytes().await.map_err(|e| {
                    ApiError::bad("api.plugin.upload.file.app_error", e.to_string())
                })?);
        }
    }
    let bundle = bundle.ok_or_else(|| {
        ApiError::bad(
            "api.plugin.upload.array.app_error",
            "Missing multipart field \"plugin\"",
        )
    })?;
    let dir = host.plugins_dir();
    let limits = host.bundle_limits;
    let manifest = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        install_bundle(&dir, &bundle, limits)
    })
    .await
    .map_err(|e| ApiError::bad("app.plugin.extract.app_error", e.to_string()))?
    .map_err(|e| ApiError::bad("app.plugin.install.app_error", e.to_string()))?;
    tracing::info!(
        plugin_id = manifest.id,
        version = manifest.version,
        "plugin installed"
    );
    // A reinstall of an enabled plugin restarts it on the new bundle.
    if host.plugin_enabled_in_config(&manifest.id) {
        stop_plugin(&host, &manifest.id).await;
        start_plugin(&host, &manifest.id).await?;
    }
    Ok((StatusCode::CREATED, Json(manifest)).into_response())
}

async fn list_plugins(State(host): State<Host>, h: HeaderMap) -> ApiResult {
    require_admin(&host, &h, &Method::GET).await?;
    let mut active = Vec::new();
    let mut inactive = Vec::new();
    if let Ok(rd) = std::fs::read_dir(host.plugins_dir()) {
        for e in rd.flatten() {
            if let Ok(m) = read_manifest(&e.path()) {
                let state = host.plugin_state.read().get(&m.id).cloned();
                let running = state.as_ref().is_some_and(|s| s.lock().activated);
                if running {
                    active.push(m);
                } else {
                    inactive.push(m);
                }
            }
        }
    }
    Ok(Json(json!({"active": active, "inactive": inactive})).into_response())
}

pub async fn start_plugin(host: &Host, id: &str) -> ApiResult<()> {
    let dir = host.plugins_dir().join(id);
    let manifest = read_manifest(&dir).map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "app.plugin.not_installed.app_error",
            e.to_string(),
        )
    })?;
    let exe = dir.join(manifest.executable().unwrap_or_default());
    let mut sup = host.plugins.lock().await;
    if sup.contains_key(id) {
        return Ok(());
    }
    let s = plugins::supervise(plugins::StartSpec {
        id: id.to_string(),
        dir,
        executable: exe,
        host_addr: host.grpc_addr.read().clone(),
    });
    host.plugin_state
        .write()
        .insert(id.to_string(), s.state.clone());
    sup.insert(id.to_string(), s);
    Ok(())
}

pub async fn stop_plugin(host: &Host, id: &str) {
    let s = host.plugins.lock().await.remove(id);
    if let Some(s) = s {
        s.stop().await;
    }
}

fn set_plugin_state(host: &Host, id: &str, enable: bool) -> ApiResult<()> {
    let mut cfg = host.config.read().clone();
    cfg["PluginSettings"]["PluginStates"][id] = json!({"Enable": enable});
    host.save_config(cfg).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "app.save_config.error",
            e.to_string(),
        )
    })
}

async fn enable_plugin(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    require_admin(&host, &h, &Method::POST).await?;
    read_manifest(&host.plugins_dir().join(&id)).map_err(|_| ApiError::not_found("plugin"))?;
    set_plugin_state(&host, &id, true)?;
    start_plugin(&host, &id).await?;
    // Report activation failures to the caller, as Mattermost does.
    for _ in 0..300 {
        let status = host.plugin_state.read().get(&id).map(|st| {
            let s = st.lock();
            let failed = !s.last_error.is_empty()
                && s.client.is_none()
                && s.pid.is_none()
                && s.restarts == 0;
            (s.activated, failed.then(|| s.last_error.clone()))
        });
        match status {
            Some((true, _)) => return Ok(Json(json!({"status": "OK"})).into_response()),
            Some((false, Some(msg))) => {
                stop_plugin(&host, &id).await;
                set_plugin_state(&host, &id, false)?;
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "app.plugin.activate.app_error",
                    msg,
                ));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "app.plugin.activate.app_error",
        "plugin did not activate in time",
    ))
}

async fn disable_plugin(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    require_admin(&host, &h, &Method::POST).await?;
    set_plugin_state(&host, &id, false)?;
    stop_plugin(&host, &id).await;
    Ok(Json(json!({"status": "OK"})).into_response())
}

async fn get_config(State(host): State<Host>, h: HeaderMap) -> ApiResult {
    require_admin(&host, &h, &Method::GET).await?;
    let cfg = host.config.read().clone();
    Ok(Json(super::secrets::sanitize(&host.plugins_dir(), cfg)).into_response())
}

async fn put_config(State(host): State<Host>, h: HeaderMap, body: Bytes) -> ApiResult {
    require_admin(&host, &h, &Method::PUT).await?;
    let new: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("api.config.update_config.invalid_body", e.to_string()))?;
    // Masked secrets sent back mean "unchanged".
    let new = super::secrets::desanitize(&host.config.read(), new);
    if !new.is_object() {
        return Err(ApiError::bad(
            "api.config.update_config.invalid_body",
            "config must be an object",
        ));
    }
    let old_settings = host.plugin_settings(CALLS_PLUGIN_ID);
    let new_settings = new
        .pointer(&format!("/PluginSettings/Plugins/{CALLS_PLUGIN_ID}"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    // Plugin states are managed through enable/disable.
    let mut merged = new.clone();
    merged["PluginSettings"]["PluginStates"] =
        host.config.read()["PluginSettings"]["PluginStates"].clone();
    if new_settings != old_settings {
        if let Some(mut p) = host.plugin_client(CALLS_PLUGIN_ID) {
            let r = p
                .on_configuration_change(proto::ConfigurationChangeRequest {
                    config_json: serde_json::to_vec(&new_settings).unwrap_or_default(),
                })
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "app.save_config.error",
                        e.to_string(),
                    )
                })?
                .into_inner();
            if !r.error.is_empty() {
                return Err(ApiError::bad("app.save_config.error", r.error));
            }
        }
    }
    host.save_config(merged.clone()).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "app.save_config.error",
            e.to_string(),
        )
    })?;
    Ok(Json(super::secrets::sanitize(&host.plugins_dir(), merged)).into_response())
}

// ------------------------------------------------------------------ plugin proxy

/// The largest plugin bundle upload.
const MAX_BUNDLE_UPLOAD: usize = 64 << 20;

/// The most of a request body the host passes to a plugin (its routes have their own,
/// smaller limits; Mattermost's `MaxFileSize` default is 100 MB).
const MAX_PLUGIN_BODY: usize = 64 << 20;

/// A chunk of the client's body (or why it stopped) as the plugin receives it.
fn body_part(chunk: Result<Bytes, axum::BoxError>) -> proto::HttpRequestPart {
    use proto::http_request_part::Part;
    proto::HttpRequestPart {
        part: Some(match chunk {
            Ok(b) => Part::Body(b.to_vec()),
            Err(e) => Part::BodyError(e.to_string()),
        }),
    }
}

async fn plugin_proxy(
    State(host): State<Host>,
    method: Method,
    uri: Uri,
    h: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let safe = method == Method::GET || method == Method::HEAD;
    let (session_id, user_id) = match session_from_headers(&host, &h, safe).await {
        Ok(Some(s)) => s,
        Ok(None) => Default::default(),
        Err(e) => return e.into_response(),
    };
    let Some(mut client) = host.plugin_client(CALLS_PLUGIN_ID) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "app.plugin.not_found",
            "Unable to find the plugin.",
        )
        .into_response();
    };
    let path = uri
        .path()
        .strip_prefix("/plugins/com.mattermost.calls")
        .unwrap_or("/");
    let path = if path.is_empty() { "/" } else { path };
    let rel = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let headers = h
        .iter()
        .filter(|(k, _)| {
            // Credentials stay with the host; the plugin learns the user from user_id.
            let k = k.as_str();
            k != "authorization"
                && k != "cookie"
                && !k.eq_ignore_ascii_case(crate::plugin::api::USER_HEADER)
        })
        .map(|(k, v)| proto::Header {
            name: k.as_str().to_string(),
            value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
        })
        .collect();
    let head = proto::HttpRequest {
        method: method.as_str().to_string(),
        uri: rel,
        headers,
        body: Vec::new(),
        user_id,
        session_id,
    };
    // The body goes to the plugin as it comes, never held here: the plugin reads as
    // much as the route allows (nothing for a request it refuses) and answers; the
    // rest of the client's body is then not read at all.
    use futures_util::StreamExt;
    use proto::http_request_part::Part;
    let body = http_body_util::BodyExt::into_data_stream(http_body_util::Limited::new(
        body,
        MAX_PLUGIN_BODY,
    ))
    .map(body_part);
    let parts = futures_util::stream::once(async move {
        proto::HttpRequestPart {
            part: Some(Part::Head(head)),
        }
    })
    .chain(body);
    match client.serve_http(parts).await {
        Ok(r) => plugin_response(r.into_inner()),
        Err(e) => {
            tracing::error!(error = %e, "plugin ServeHTTP failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "app.plugin.unavailable",
                "The plugin is not available.",
            )
            .into_response()
        }
    }
}

async fn plugin_static(State(host): State<Host>, Path(file): Path<String>) -> Response {
    if file.split('/').any(|s| s == ".." || s.is_empty()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = host
        .plugins_dir()
        .join(CALLS_PLUGIN_ID)
        .join("webapp/dist")
        .join(&file);
    match tokio::fs::read(&path).await {
        Ok(b) => ([(header::CONTENT_TYPE, "application/javascript")], b).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../../webapp-stub/index.html"),
    )
        .into_response()
}

/// Starts the plugins enabled in the config (at host start).
pub async fn start_enabled_plugins(host: &Host) {
    let ids: Vec<String> = host
        .config
        .read()
        .pointer("/PluginSettings/PluginStates")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.get("Enable").and_then(Value::as_bool).unwrap_or(false))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    for id in ids {
        if let Err(e) = start_plugin(host, &id).await {
            tracing::error!(plugin_id = id, error = ?e, "cannot start plugin");
        }
    }
}

/// The metrics server: each plugin's metrics through its `ServeMetrics` hook.
pub fn metrics_router(host: Host) -> Router {
    Router::new()
        .route("/plugins/{plugin_id}/metrics", get(plugin_metrics))
        .with_state(host)
}

async fn plugin_metrics(State(host): State<Host>, Path(id): Path<String>) -> Response {
    let Some(mut client) = host.plugin_client(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match client
        .serve_metrics(proto::HttpRequest {
            method: "GET".into(),
            uri: "/metrics".into(),
            ..Default::default()
        })
        .await
    {
        Ok(r) => plugin_response(r.into_inner()),
        Err(e) => {
            tracing::error!(error = %e, "plugin ServeMetrics failed");
            StatusCode::BAD_GATEWAY.into_response()
        }
    }
}

/// A plugin's `HttpResponse` as an HTTP response.
fn plugin_response(r: proto::HttpResponse) -> Response {
    let mut resp = Response::new(axum::body::Body::from(r.body));
    *resp.status_mut() =
        StatusCode::from_u16(r.status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for hd in r.headers {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(hd.name.as_bytes()),
            HeaderValue::from_str(&hd.value),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}
