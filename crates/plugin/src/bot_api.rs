//! `/bot/*` (reference calls-plugin.md §1.3 "Bot routes"): what the recorder calls as
//! the plugin's bot, with the token the plugin gave its job. Only the bot passes, and
//! only under a license that allows recordings; these routes have no rate limit.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use super::app::App;
use super::host_api::HostError;
use super::recording;
use super::responses::{json_ok, plain, shape_a, success, user_id, BodyRead, Limited, MAX_BODY};
use calls_wire::ids::is_valid_id;
use calls_wire::proto;

pub fn router(app: App) -> Router<App> {
    Router::new()
        .route("/bot/channels/{channel_id}", get(channel))
        .route("/bot/users/{user_id}/image", get(user_image))
        .route(
            "/bot/calls/{channel_id}/sessions/{session_id}/profile",
            get(session_profile),
        )
        .route("/bot/calls/{channel_id}/filename", get(filename))
        .route("/bot/uploads", post(create_upload))
        .route(
            "/bot/uploads/{upload_id}",
            get(get_upload).post(upload_data),
        )
        .route("/bot/calls/{channel_id}/recordings", post(recordings))
        .route(
            "/bot/calls/{channel_id}/jobs/{job_id}/status",
            post(job_status),
        )
        .route_layer(middleware::from_fn(ids_in_path))
        .route_layer(middleware::from_fn_with_state(app, only_the_bot))
}

async fn only_the_bot(State(app): State<App>, h: HeaderMap, req: Request, next: Next) -> Response {
    let uid = user_id(&h);
    if app.bot_id.is_empty() || uid != app.bot_id || !app.license().enterprise() {
        return plain(StatusCode::FORBIDDEN, "Forbidden");
    }
    next.run(req).await
}

/// Upstream's routes match ids of the form `[a-z0-9]{26}` only.
async fn ids_in_path(params: axum::extract::RawPathParams, req: Request, next: Next) -> Response {
    if params.iter().any(|(_, v)| !is_valid_id(v)) {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    }
    next.run(req).await
}

/// A field of a Go-decoded body: Go matches JSON keys to field names ignoring case.
fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.get(name).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn str_field(m: &Map<String, Value>, name: &str) -> String {
    field(m, name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A JSON object body, or the 400 upstream answers for one it cannot decode.
fn object_body(body: Limited<MAX_BODY>) -> Result<Map<String, Value>, Box<Response>> {
    let bytes = match body.0 {
        Ok(b) => b,
        Err(BodyRead::TooLarge) => {
            return Err(Box::new(shape_a(
                StatusCode::BAD_REQUEST,
                "failed to decode request body: http: request body too large",
            )))
        }
        Err(BodyRead::Broken(e)) => {
            return Err(Box::new(shape_a(
                StatusCode::BAD_REQUEST,
                &format!("failed to decode request body: {e}"),
            )))
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(shape_a(
            StatusCode::BAD_REQUEST,
            &format!("failed to decode request body: {e}"),
        ))
    })
}

/// A host refusal in the status Mattermost's AppError would carry.
fn host_error(e: &HostError) -> Response {
    let status = match e {
        HostError::NotFound => StatusCode::NOT_FOUND,
        HostError::Rpc(s) => match s.code() {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::OutOfRange => StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        HostError::Transport(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let msg = match e {
        HostError::Rpc(s) => s.message().to_string(),
        other => other.to_string(),
    };
    shape_a(status, &msg)
}

async fn channel(State(app): State<App>, Path(channel_id): Path<String>) -> Response {
    let ch = app.host.channel(&channel_id).await.ok().flatten();
    json_ok(&ch.map(|c| {
        json!({
            "id": c.id, "team_id": c.team_id, "type": c.r#type, "name": c.name,
            "display_name": c.display_name, "delete_at": c.delete_at,
        })
    }))
}

/// This host keeps no profile images: the lookup fails as upstream's does.
async fn user_image(Path(_user_id): Path<String>) -> Response {
    plain(StatusCode::NOT_FOUND, "404 page not found")
}

async fn session_profile(
    State(app): State<App>,
    Path((channel_id, session_id)): Path<(String, String)>,
) -> Response {
    let uid = {
        let _guard = match app.call_locks.lock(&channel_id).await {
            Ok(g) => g,
            Err(e) => return shape_a(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        match app.load_state(&channel_id).await {
            Ok(Some(s)) => match s.sessions.get(&session_id) {
                Some(sess) => sess.user_id.clone(),
                None => return shape_a(StatusCode::NOT_FOUND, "not found"),
            },
            Ok(None) => return shape_a(StatusCode::BAD_REQUEST, "no call ongoing"),
            Err(e) => return shape_a(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    };
    match app.host.user(&uid).await {
        // Sanitized, as upstream: no email, no auth data.
        Ok(u) => json_ok(&json!({
            "id": u.id, "username": u.username, "first_name": u.first_name,
            "last_name": u.last_name, "nickname": u.nickname, "is_bot": u.is_bot,
            "delete_at": u.delete_at,
        })),
        Err(e) => shape_a(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `Call_<name>_<UTC date>`: the channel's name (people's names for DMs and groups),
/// at most 24 characters, every character but `[a-zA-Z0-9._-]` made `_`.
async fn filename(State(app): State<App>, Path(channel_id): Path<String>) -> Response {
    let name = match app.host.channel(&channel_id).await {
        Ok(Some(c)) if c.r#type == "D" || c.r#type == "G" => {
            let mut users = app
                .host
                .users_in_channel(&channel_id)
                .await
                .unwrap_or_default();
            users.sort_by(|a, b| a.username.cmp(&b.username));
            let full = app.server.show_full_name;
            users
                .iter()
                .filter(|u| u.id != app.bot_id)
                .take(8)
                .map(|u| {
                    if full && !(u.first_name.is_empty() && u.last_name.is_empty()) {
                        format!("{} {}", u.first_name, u.last_name)
                            .trim()
                            .to_string()
                    } else {
                        u.username.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("-")
        }
        Ok(Some(c)) => c.display_name,
        _ => channel_id.clone(),
    };
    let ts = chrono::Utc::now().format("%Y-%m-%d_%H-%M-%S");
    json_ok(&json!({"filename": format!("Call_{}_{ts}", file_safe(&name))}))
}

fn file_safe(name: &str) -> String {
    let mut s: String = name.chars().take(24).collect();
    if name.chars().count() > 24 {
        s.push('…');
    }
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn upload_json(u: &proto::UploadSession) -> Value {
    json!({
        "id": u.id, "type": u.r#type, "create_at": u.create_at, "user_id": u.user_id,
        "channel_id": u.channel_id, "filename": u.filename, "file_size": u.file_size,
        "file_offset": u.file_offset, "remote_id": "", "req_file_id": "",
    })
}

fn file_json(f: &proto::FileInfo) -> Value {
    json!({
        "id": f.id, "user_id": f.user_id, "post_id": f.post_id, "channel_id": f.channel_id,
        "create_at": f.create_at, "update_at": f.create_at, "delete_at": 0,
        "name": f.name, "extension": f.extension, "size": f.size, "mime_type": f.mime_type,
    })
}

async fn create_upload(State(app): State<App>, body: Limited<MAX_BODY>) -> Response {
    let m = match object_body(body) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    // The server decides the id, the type and the owner (upstream overwrites them).
    let us = proto::UploadSession {
        r#type: "attachment".into(),
        user_id: app.bot_id.clone(),
        channel_id: str_field(&m, "channel_id"),
        filename: str_field(&m, "filename"),
        file_size: field(&m, "file_size")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
        ..Default::default()
    };
    match app.host.create_upload(us).await {
        Ok(u) => json_ok(&upload_json(&u)),
        Err(e) => host_error(&e),
    }
}

async fn get_upload(State(app): State<App>, Path(upload_id): Path<String>) -> Response {
    match app.host.upload_session(&upload_id).await {
        Ok(Some(u)) => json_ok(&upload_json(&u)),
        Ok(None) => shape_a(StatusCode::NOT_FOUND, "upload session not found"),
        Err(e) => host_error(&e),
    }
}

/// The body goes to the host as it arrives; a short body leaves the upload
/// incomplete (204: the recorder asks where it stands and sends the rest).
async fn upload_data(
    State(app): State<App>,
    Path(upload_id): Path<String>,
    body: Body,
) -> Response {
    let us = match app.host.upload_session(&upload_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return shape_a(StatusCode::NOT_FOUND, "upload session not found"),
        Err(e) => return host_error(&e),
    };
    if us.r#type != "attachment" {
        return shape_a(StatusCode::BAD_REQUEST, "invalid upload type");
    }
    if us.user_id != app.bot_id {
        return shape_a(
            StatusCode::FORBIDDEN,
            "not allowed to upload data for this session",
        );
    }
    use futures_util::StreamExt;
    let chunks = body
        .into_data_stream()
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(|r| std::future::ready(r.ok().map(|b| b.to_vec())));
    match app.host.upload_data(&upload_id, chunks).await {
        Ok(Some(info)) => json_ok(&file_json(&info)),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => host_error(&e),
    }
}

async fn recordings(
    State(app): State<App>,
    Path(channel_id): Path<String>,
    body: Limited<MAX_BODY>,
) -> Response {
    let m = match object_body(body) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let post_id = str_field(&m, "PostID");
    let job_id = str_field(&m, "JobID");
    let files: Vec<String> = field(&m, "FileIDs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if post_id.is_empty() {
        return shape_a(StatusCode::BAD_REQUEST, "PostID should not be empty");
    }
    if files.is_empty() {
        return shape_a(StatusCode::BAD_REQUEST, "invalid FileIDs length");
    }
    if job_id.is_empty() {
        return shape_a(StatusCode::BAD_REQUEST, "JobID should not be empty");
    }
    match recording::post_recording(&app, &channel_id, &job_id, &post_id, &files[0]).await {
        Ok(()) => success(),
        Err(e) => shape_a(e.status, &e.message),
    }
}

async fn job_status(
    State(app): State<App>,
    Path((channel_id, job_id)): Path<(String, String)>,
    body: Limited<MAX_BODY>,
) -> Response {
    let m = match object_body(body) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    // The error text travels under the key `omitempty` (upstream's struct tag).
    let res = recording::job_status(
        &app,
        &channel_id,
        &job_id,
        &str_field(&m, "JobType"),
        &str_field(&m, "Status"),
        &str_field(&m, "omitempty"),
    )
    .await;
    match res {
        Ok(()) => success(),
        Err(e) => shape_a(e.status, &e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_field_names_match_in_any_case() {
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"jobid":"a","PostID":"b","fileIDs":["c"]}"#).unwrap();
        assert_eq!(str_field(&m, "JobID"), "a");
        assert_eq!(str_field(&m, "PostID"), "b");
        assert!(field(&m, "FileIDs").is_some());
        assert_eq!(str_field(&m, "missing"), "");
    }

    #[test]
    fn file_names_are_safe_and_short() {
        assert_eq!(file_safe("Town Square"), "Town_Square");
        assert_eq!(file_safe("a/b:c"), "a_b_c");
        assert_eq!(
            file_safe("abcdefghijklmnopqrstuvwxyz"),
            "abcdefghijklmnopqrstuvwx_"
        );
    }
}
