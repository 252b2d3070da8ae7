//! `/plugins/com.mattermost.calls/*` routes (reference calls-plugin.md §1), served by an
//! axum Router that the `ServeHTTP` hook calls in-process: there is no listener where
//! a client could set `Mattermost-User-Id` itself.

use std::collections::BTreeMap;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::types::Json;

use super::app::{App, AppError};
use super::host_api::Broadcast;
use super::host_controls;
use super::leave::end_call;
use super::model::CallsChannel;
use super::recording;
use calls_wire::ids::{is_valid_id, now_ms};

pub use super::responses::USER_HEADER;
use super::responses::{
    app_error, internal, json_body, json_ok, plain, shape_a, success, user_id, Limited,
    INTERNAL_MSG, MAX_BODY, MAX_LOGS_BODY,
};

// ------------------------------------------------------------------ router

pub fn router(app: App) -> Router {
    let open = Router::new()
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .route("/standalone/{*path}", get(standalone));
    let bot = super::bot_api::router(app.clone())
        .route_layer(middleware::from_fn_with_state(app.clone(), require_user));
    let authed = Router::new()
        .route("/config", get(get_config))
        .route("/env", get(get_env))
        .route("/channels", get(get_channels))
        .route("/stats", get(get_stats))
        .route("/turn-credentials", get(turn_credentials))
        .route("/cloud-notify-admins", post(cloud_notify_admins))
        .route("/logs/upload", post(logs_upload))
        .route("/debug/{*rest}", get(debug))
        .route("/{channel_id}", get(get_channel).post(post_channel))
        .route("/calls/{channel_id}/active", get(call_active))
        .route(
            "/calls/{channel_id}/dismiss-notification",
            post(dismiss_notification),
        )
        .route("/calls/{channel_id}/recording/{action}", post(recording))
        .route("/calls/{channel_id}/end", post(host_end))
        .route("/calls/{channel_id}/host/end", post(host_end))
        .route("/calls/{channel_id}/host/make", post(host_make))
        .route("/calls/{channel_id}/host/mute", post(host_mute))
        .route(
            "/calls/{channel_id}/host/mute-others",
            post(host_mute_others),
        )
        .route("/calls/{channel_id}/host/screen-off", post(host_screen_off))
        .route("/calls/{channel_id}/host/lower-hand", post(host_lower_hand))
        .route("/calls/{channel_id}/host/remove", post(host_remove))
        .route_layer(middleware::from_fn(ids_in_path))
        .route_layer(middleware::from_fn_with_state(app.clone(), rate_limit))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_user));
    open.merge(bot)
        .merge(authed)
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "404 page not found") })
        // Bodies stream in through ServeHTTP; handlers read them through `Limited`
        // with upstream's limits (1 MiB, logs 2 MiB) and upstream's error shapes.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(app)
}

async fn require_user(h: HeaderMap, req: Request, next: Next) -> Response {
    if user_id(&h).is_empty() {
        return plain(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    next.run(req).await
}

/// Upstream routes only match ids of the form `[a-z0-9]{26}`; anything else is 404.
async fn ids_in_path(params: axum::extract::RawPathParams, req: Request, next: Next) -> Response {
    if params
        .iter()
        .any(|(k, v)| k == "channel_id" && !is_valid_id(v))
    {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    }
    next.run(req).await
}

async fn rate_limit(State(app): State<App>, h: HeaderMap, req: Request, next: Next) -> Response {
    if !app.api_limits.allow(&user_id(&h)) {
        return plain(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"message": "too many requests", "status_code": 429}"#,
        );
    }
    next.run(req).await
}

// ------------------------------------------------------------------ handlers

async fn version(State(app): State<App>) -> Response {
    let mut v = json!({"version": app.version, "build": env!("CARGO_PKG_VERSION")});
    // In rtcd mode clients also see the rtcd version (it gates the DC lock).
    if let Some(rv) = app.media.rtcd_version() {
        v["rtcd_version"] = json!(rv);
        v["rtcd_build"] = json!(rv);
    }
    json_ok(&v)
}

async fn metrics(State(app): State<App>) -> Response {
    let (ct, body) = app.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&ct).unwrap_or(HeaderValue::from_static("text/plain")),
        )],
        body,
    )
        .into_response()
}

async fn standalone(State(app): State<App>, h: HeaderMap, Path(path): Path<String>) -> Response {
    let ua = h
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let exempt = (ua.contains("Mattermost") && ua.contains("Electron"))
        || h.get("X-Calls-Recorder").is_some_and(|v| v == "true")
        || h.get("X-Calls-E2E").is_some_and(|v| v == "true");
    if !exempt {
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let referer_host = h
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.split("://").nth(1))
            .map(|r| r.split('/').next().unwrap_or(""));
        if referer_host != Some(host) || host.is_empty() {
            return plain(StatusCode::FORBIDDEN, "Forbidden");
        }
    }
    if path.split('/').any(|seg| seg == ".." || seg.is_empty()) {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    }
    let file = std::path::Path::new(&app.bundle_path)
        .join("standalone/dist")
        .join(&path);
    match tokio::fs::read(&file).await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => plain(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// Upstream serves Go's pprof here to system admins. This process has no Go runtime to
/// profile, so admins get 404; everyone else the upstream refusal.
async fn debug(State(app): State<App>, h: HeaderMap) -> Response {
    match app.is_admin(&user_id(&h)).await {
        Ok(true) => plain(StatusCode::NOT_FOUND, "404 page not found"),
        Ok(false) => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"message": "Forbidden", "status_code": 403}).to_string(),
        )
            .into_response(),
        Err(e) => internal(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MSG, &e),
    }
}

fn client_config(app: &App) -> serde_json::Map<String, Value> {
    let cfg = app.config();
    let lic = app.license();
    let Value::Object(m) = json!({
        "ICEServers": if cfg.ICEServers.is_empty() { Value::Null } else { json!(cfg.ICEServers) },
        "ICEServersConfigs": cfg.client_ice_servers(),
        "AllowEnableCalls": true,
        "DefaultEnabled": cfg.DefaultEnabled,
        "MaxCallParticipants": cfg.MaxCallParticipants,
        "NeedsTURNCredentials": cfg.needs_turn_credentials(),
        "AllowScreenSharing": cfg.AllowScreenSharing,
        "EnableRecordings": cfg.EnableRecordings,
        "EnableTranscriptions": cfg.EnableTranscriptions,
        "EnableLiveCaptions": cfg.EnableLiveCaptions,
        "MaxRecordingDuration": cfg.MaxRecordingDuration,
        "EnableSimulcast": cfg.EnableSimulcast,
        "EnableRinging": cfg.EnableRinging,
        "sku_short_name": lic.sku_short_name(),
        "HostControlsAllowed": lic.professional(),
        "EnableAV1": cfg.EnableAV1,
        "GroupCallsAllowed": app.group_calls_allowed(),
        "EnableDCSignaling": cfg.EnableDCSignaling,
        "EnableVideo": cfg.EnableVideo,
    }) else {
        return Default::default();
    };
    m
}

async fn get_config(State(app): State<App>, h: HeaderMap) -> Response {
    let uid = user_id(&h);
    let mut out = client_config(&app);
    match app.is_admin(&uid).await {
        Ok(true) => {
            if let Ok(Value::Object(full)) = serde_json::to_value(&*app.config()) {
                for (k, v) in full {
                    // The client view's filtered ICE list is for clients; admins see all.
                    out.insert(k, v);
                }
            }
        }
        Ok(false) => {}
        Err(e) => return internal(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MSG, &e),
    }
    json_ok(&out)
}

async fn get_env(State(app): State<App>, h: HeaderMap) -> Response {
    match app.is_admin(&user_id(&h)).await {
        Ok(true) => {
            let m: BTreeMap<String, String> = app.env_overrides.read().iter().cloned().collect();
            json_ok(&m)
        }
        Ok(false) => plain(StatusCode::FORBIDDEN, "Forbidden"),
        Err(e) => internal(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MSG, &e),
    }
}

async fn call_json(app: &App, channel_id: &str, user_id: &str) -> Result<Option<Value>, AppError> {
    Ok(app
        .load_state(channel_id)
        .await?
        .map(|s| json!(s.client_view(user_id, &app.bot_id))))
}

async fn get_channel(
    State(app): State<App>,
    h: HeaderMap,
    Path(channel_id): Path<String>,
) -> Response {
    let uid = user_id(&h);
    match app.can_read_channel(&uid, &channel_id).await {
        Ok(true) => {}
        Ok(false) => return plain(StatusCode::FORBIDDEN, "Forbidden"),
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
    let row = match app.store.get_calls_channel(&channel_id).await {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let enabled = row
        .as_ref()
        .and_then(|r| r.enabled)
        .unwrap_or(app.config().DefaultEnabled);
    match call_json(&app, &channel_id, &uid).await {
        Ok(Some(call)) => {
            json_ok(&json!({"channel_id": channel_id, "enabled": enabled, "call": call}))
        }
        Ok(None) => {
            let mut v = json!({"channel_id": channel_id, "enabled": enabled});
            if let Some(r) = row.filter(|r| !r.props.0.is_null()) {
                v["props"] = r.props.0;
            }
            json_ok(&v)
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct ChannelBody {
    enabled: bool,
    #[serde(default)]
    props: Option<Value>,
}

/// Enable/disable rules (reference §3.2): system admins always; in test mode nobody
/// else; otherwise channel admins, team admins, or DM/GM members.
async fn may_toggle(app: &App, uid: &str, channel_id: &str) -> Result<bool, AppError> {
    if app.is_admin(uid).await? {
        return Ok(true);
    }
    if !app.config().DefaultEnabled {
        return Ok(false);
    }
    let Some(ch) = app.host.channel(channel_id).await? else {
        return Ok(false);
    };
    if let Some(m) = app.host.channel_member(channel_id, uid).await? {
        if m.roles.split_whitespace().any(|r| r == "channel_admin") {
            return Ok(true);
        }
        if (ch.r#type == "D" || ch.r#type == "G")
            && app
                .host
                .has_channel_permission(uid, channel_id, "create_post")
                .await?
        {
            return Ok(true);
        }
    }
    Ok(!ch.team_id.is_empty()
        && app
            .host
            .has_team_permission(uid, &ch.team_id, "manage_team")
            .await?)
}

async fn post_channel(
    State(app): State<App>,
    h: HeaderMap,
    Path(channel_id): Path<String>,
    body: Limited<MAX_BODY>,
) -> Response {
    let uid = user_id(&h);
    match may_toggle(&app, &uid, &channel_id).await {
        Ok(true) => {}
        Ok(false) => return shape_a(StatusCode::FORBIDDEN, "Forbidden"),
        Err(e) => return app_error(e),
    }
    let b: ChannelBody = match json_body(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let row = CallsChannel {
        channel_id: channel_id.clone(),
        enabled: Some(b.enabled),
        props: Json(b.props.unwrap_or(Value::Null)),
    };
    if let Err(e) = app.store.upsert_calls_channel(&row).await {
        return shape_a(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let event = if b.enabled {
        "channel_enable_voice"
    } else {
        "channel_disable_voice"
    };
    app.publish(event, json!({}), Broadcast::channel(&channel_id))
        .await;
    let mut v = json!({"channel_id": channel_id, "enabled": b.enabled});
    if !row.props.0.is_null() {
        v["props"] = row.props.0;
    }
    json_ok(&v)
}

async fn get_channels(State(app): State<App>, h: HeaderMap) -> Response {
    let uid = user_id(&h);
    let result: Result<Vec<Value>, AppError> = async {
        let mut readable = std::collections::HashSet::new();
        for page in 0.. {
            let chans = app.host.channels_for_user(&uid, page, 200).await?;
            let n = chans.len();
            readable.extend(chans.into_iter().map(|c| c.id));
            if n < 200 {
                break;
            }
        }
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for row in app.store.get_all_calls_channels().await? {
            if !readable.contains(&row.channel_id) {
                continue;
            }
            let mut v =
                json!({"channel_id": row.channel_id, "enabled": row.enabled.unwrap_or(false)});
            if let Some(call) = call_json(&app, &row.channel_id, &uid).await? {
                v["call"] = call;
            }
            seen.insert(row.channel_id.clone());
            out.push(v);
        }
        for call in app.store.get_all_active_calls().await? {
            if !readable.contains(&call.channel_id) || !seen.insert(call.channel_id.clone()) {
                continue;
            }
            if let Some(c) = call_json(&app, &call.channel_id, &uid).await? {
                out.push(json!({"channel_id": call.channel_id, "call": c}));
            }
        }
        Ok(out)
    }
    .await;
    match result {
        Ok(v) => json_ok(&v),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn call_active(
    State(app): State<App>,
    h: HeaderMap,
    Path(channel_id): Path<String>,
) -> Response {
    match app.can_read_channel(&user_id(&h), &channel_id).await {
        Ok(true) => {}
        Ok(false) => return plain(StatusCode::FORBIDDEN, "Forbidden"),
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
    match app.store.is_call_active(&channel_id).await {
        Ok(active) => json_ok(&json!({"active": active})),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn dismiss_notification(
    State(app): State<App>,
    h: HeaderMap,
    Path(channel_id): Path<String>,
) -> Response {
    let uid = user_id(&h);
    let res: Result<String, AppError> = async {
        let _guard = app.call_locks.lock(&channel_id).await?;
        let mut state = app
            .load_state(&channel_id)
            .await?
            .ok_or(AppError::NoCallOngoing)?;
        state
            .call
            .props
            .dismissed_notification
            .insert(uid.clone(), true);
        app.store.update_call(&state.call).await?;
        Ok(state.call.id)
    }
    .await;
    match res {
        Ok(call_id) => {
            app.publish(
                "user_dismissed_notification",
                json!({"userID": uid, "callID": call_id}),
                Broadcast::user(&uid),
            )
            .await;
            success()
        }
        Err(AppError::NoCallOngoing) => shape_a(StatusCode::BAD_REQUEST, "no call ongoing"),
        Err(e) => shape_a(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /calls/{channel_id}/recording/{start|stop}`: the call's host only, in
/// upstream's order of checks (reference calls-plugin.md §1.3).
async fn recording(
    State(app): State<App>,
    h: HeaderMap,
    Path((channel_id, action)): Path<(String, String)>,
) -> Response {
    let uid = user_id(&h);
    match app.can_read_channel(&uid, &channel_id).await {
        Ok(true) => {}
        Ok(false) => return shape_a(StatusCode::FORBIDDEN, "Forbidden"),
        Err(e) => return shape_a(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
    let svc = match recording::current_job_service(&app).await {
        Ok(s) => s,
        Err(e) => return shape_a(e.status, &e.message),
    };
    let res = match action.as_str() {
        "start" => recording::start(&app, &svc, &channel_id, &uid).await,
        "stop" => recording::stop(&app, &channel_id, &uid).await,
        _ => recording::unsupported(&app, &channel_id, &uid).await,
    };
    match res {
        Ok(js) => json_ok(&js),
        Err(e) => shape_a(e.status, &e.message),
    }
}

#[derive(Deserialize)]
struct SessionBody {
    session_id: String,
}

#[derive(Deserialize)]
struct MakeHostBody {
    new_host_id: String,
}

async fn host_end(
    State(app): State<App>,
    h: HeaderMap,
    Path(channel_id): Path<String>,
) -> Response {
    match end_call(&app, &channel_id, &user_id(&h)).await {
        Ok(()) => success(),
        Err(e) => app_error(e),
    }
}

async fn host_make(
    State(app): State<App>,
    h: HeaderMap,
    Path(channel_id): Path<String>,
    body: Limited<MAX_BODY>,
) -> Response {
    let b: MakeHostBody = match json_body(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match host_controls::host_make(&app, &channel_id, &user_id(&h), &b.new_host_id).await {
        Ok(()) => success(),
        Err(e) => app_error(e),
    }
}

macro_rules! session_route {
    ($name:ident, $action:path) => {
        async fn $name(
            State(app): State<App>,
            h: HeaderMap,
            Path(channel_id): Path<String>,
            body: Limited<MAX_BODY>,
        ) -> Response {
            let b: SessionBody = match json_body(body) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            match $action(&app, &channel_id, &user_id(&h), &b.session_id).await {
                Ok(()) => success(),
                Err(e) => app_error(e),
            }
        }
    };
}

session_route!(host_mute, host_controls::host_mute);
session_route!(host_screen_off, host_controls::host_screen_off);
session_route!(host_lower_hand, host_controls::host_lower_hand);
session_route!(host_remove, host_controls::host_remove);

async fn host_mute_others(
    State(app): State<App>,
    h: HeaderMap,
    Path(channel_id): Path<String>,
) -> Response {
    match host_controls::host_mute_others(&app, &channel_id, &user_id(&h)).await {
        Ok(()) => success(),
        Err(e) => app_error(e),
    }
}

/// coturn's REST credentials: username `<expiry>:<user>`, password
/// base64(HMAC-SHA1(secret, username)).
pub fn turn_credentials_for(secret: &str, username: &str, expiry_unix: i64) -> (String, String) {
    let user = format!("{expiry_unix}:{username}");
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(user.as_bytes());
    let cred = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (user, cred)
}

async fn turn_credentials(State(app): State<App>, h: HeaderMap) -> Response {
    let cfg = app.config();
    if cfg.TURNStaticAuthSecret.is_empty() {
        return shape_a(StatusCode::FORBIDDEN, "TURNStaticAuthSecret should be set");
    }
    let servers = cfg.turn_servers_needing_credentials();
    if servers.is_empty() {
        return shape_a(StatusCode::FORBIDDEN, "No TURN server was configured");
    }
    let user = match app.host.user(&user_id(&h)).await {
        Ok(u) => u,
        Err(e) => return shape_a(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let minutes = cfg.TURNCredentialsExpirationMinutes;
    if minutes > 7 * 24 * 60 {
        return shape_a(
            StatusCode::INTERNAL_SERVER_ERROR,
            "expiration time cannot be more than one week in the future",
        );
    }
    let expiry = now_ms() / 1000 + minutes * 60;
    let (username, credential) =
        turn_credentials_for(&cfg.TURNStaticAuthSecret, &user.username, expiry);
    let out: Vec<Value> = servers
        .iter()
        .map(|s| json!({"urls": s.urls, "username": username, "credential": credential}))
        .collect();
    json_ok(&out)
}

async fn cloud_notify_admins(State(app): State<App>) -> Response {
    if !app.license().is_cloud {
        return internal(
            StatusCode::BAD_REQUEST,
            "not a cloud server",
            &"not a cloud server",
        );
    }
    internal(
        StatusCode::INTERNAL_SERVER_ERROR,
        INTERNAL_MSG,
        &"cloud trial requests are not supported",
    )
}

#[derive(Deserialize)]
struct LogsBody {
    logs: String,
    channel_id: String,
    team_id: String,
}

async fn logs_upload(
    State(app): State<App>,
    h: HeaderMap,
    body: Limited<MAX_LOGS_BODY>,
) -> Response {
    let Ok(body) = body.0 else {
        return plain(StatusCode::BAD_REQUEST, "Invalid request body");
    };
    let Ok(b) = serde_json::from_slice::<LogsBody>(&body) else {
        return plain(StatusCode::BAD_REQUEST, "Invalid request body");
    };
    if !is_valid_id(&b.channel_id) || !is_valid_id(&b.team_id) {
        return plain(StatusCode::BAD_REQUEST, "Invalid channel_id or team_id");
    }
    let uid = user_id(&h);
    // The host has no file store: the logs go into the user's DM with the bot as a
    // code block instead of an attachment.
    let res: Result<String, AppError> = async {
        let dm = app.host.direct_channel(&uid, &app.bot_id).await?;
        let ts = chrono::Utc::now().format("%Y-%m-%dT%H-%M-%SZ");
        let post = app
            .host
            .create_post(calls_wire::proto::Post {
                channel_id: dm.id,
                user_id: app.bot_id.clone(),
                message: format!("call_logs_{ts}.txt\n```\n{}\n```", b.logs),
                ..Default::default()
            })
            .await?;
        Ok(post.id)
    }
    .await;
    match res {
        Ok(post_id) => {
            let _ = app
                .host
                .send_ephemeral(
                    &uid,
                    &b.channel_id,
                    &format!(
                        "Call logs uploaded — [view in your @calls DM]({}/_redirect/pl/{post_id})",
                        app.server.site_url
                    ),
                )
                .await;
            json_ok(&json!({}))
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn get_stats(State(app): State<App>, h: HeaderMap) -> Response {
    match app.is_admin(&user_id(&h)).await {
        Ok(true) => {}
        Ok(false) => return plain(StatusCode::FORBIDDEN, "Forbidden"),
        Err(e) => return internal(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MSG, &e),
    }
    match super::stats::calls_stats(&app).await {
        Ok(v) => json_ok(&v),
        Err(e) => internal(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MSG, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_match_coturn_rest_scheme() {
        // Independently computed: printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        let (u, c) = turn_credentials_for("secret", "alice", 1_700_000_000);
        assert_eq!(u, "1700000000:alice");
        assert_eq!(c, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
        let (_, c2) = turn_credentials_for("other", "alice", 1_700_000_000);
        assert_ne!(c, c2);
    }
}
