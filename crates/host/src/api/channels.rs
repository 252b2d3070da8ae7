//! `/api/v4/teams` and `/api/v4/channels`: teams, channels, members and posts.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::credentials::current_user;
use super::error::{ApiError, ApiResult};
use crate::grpc::{direct_channel, post_json};
use crate::store::{Channel, Team};
use crate::Host;
use calls_wire::ids::{new_id, now_ms};

use super::users::valid_username;

#[derive(Deserialize)]
pub(super) struct NewTeam {
    name: String,
    display_name: String,
    #[serde(default = "open_type")]
    #[serde(rename = "type")]
    team_type: String,
}
pub(super) fn open_type() -> String {
    "O".into()
}

pub(super) async fn create_team(State(host): State<Host>, h: HeaderMap, body: Bytes) -> ApiResult {
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

pub(super) async fn get_team(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
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
pub(super) struct MemberBody {
    user_id: String,
}

pub(super) async fn add_team_member(
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
pub(super) struct NewChannel {
    team_id: String,
    name: String,
    display_name: String,
    #[serde(rename = "type")]
    channel_type: String,
}

pub(super) async fn create_channel(
    State(host): State<Host>,
    h: HeaderMap,
    body: Bytes,
) -> ApiResult {
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

pub(super) async fn create_direct(
    State(host): State<Host>,
    h: HeaderMap,
    body: Bytes,
) -> ApiResult {
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

pub(super) async fn create_group(State(host): State<Host>, h: HeaderMap, body: Bytes) -> ApiResult {
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

pub(super) async fn get_channel(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let u = current_user(&host, &h, &Method::GET).await?;
    if !crate::auth::has_channel_permission(&host.store, &u.id, &id, "read_channel").await? {
        return Err(ApiError::forbidden());
    }
    let c = host
        .store
        .channel(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("channel"))?;
    Ok(Json(c).into_response())
}

/// `GET /api/v4/teams/name/{team_name}/channels/name/{channel_name}`, as Mattermost's:
/// a channel by its team's and its own name (what an admin types), for those who may
/// read it.
pub(super) async fn channel_by_names(
    State(host): State<Host>,
    h: HeaderMap,
    Path((team, name)): Path<(String, String)>,
) -> ApiResult {
    let u = current_user(&host, &h, &Method::GET).await?;
    let team = host
        .store
        .team_by_name(&team)
        .await?
        .ok_or_else(|| ApiError::not_found("team"))?;
    let c = host
        .store
        .channel_by_name(&team.id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("channel"))?;
    if !crate::auth::has_channel_permission(&host.store, &u.id, &c.id, "read_channel").await? {
        // As for a channel that does not exist: its name is not confirmed to outsiders.
        return Err(ApiError::not_found("channel"));
    }
    Ok(Json(c).into_response())
}

pub(super) async fn archive_channel(
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

pub(super) async fn add_channel_member(
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

pub(super) async fn remove_channel_member(
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

pub(super) async fn channel_posts(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let u = current_user(&host, &h, &Method::GET).await?;
    if !crate::auth::has_channel_permission(&host.store, &u.id, &id, "read_channel").await? {
        return Err(ApiError::forbidden());
    }
    let posts = host.store.posts_for_channel(&id).await?;
    let order: Vec<&str> = posts.iter().map(|p| p.id.as_str()).collect();
    let map: serde_json::Map<String, Value> =
        posts.iter().map(|p| (p.id.clone(), post_json(p))).collect();
    Ok(Json(json!({"order": order, "posts": map})).into_response())
}
