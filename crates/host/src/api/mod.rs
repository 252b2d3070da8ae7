//! The Mattermost-compatible `/api/v4` subset, the plugin proxy and static pages,
//! by resource:
//! - [`error`]: Mattermost's `AppError` JSON.
//! - [`credentials`]: who a request comes from (token, CSRF, current user, admin).
//! - [`users`], [`channels`] (teams, channels, posts), [`files`], [`plugins`] (and config),
//!   [`proxy`] (the plugin's routes, static files, metrics, the page).
//! - [`websocket`]: `/api/v4/websocket`, the connections and their events.

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::Host;

pub mod channels;
pub mod credentials;
pub mod error;
pub mod files;
pub mod plugins;
pub mod proxy;
pub mod users;
pub mod websocket;

pub use credentials::{session_from_headers, token_from_headers};
pub use error::ApiError;
pub use plugins::{start_plugin, stop_plugin};
pub use proxy::{metrics_router, start_enabled_plugins};
pub use users::{insert_user, valid_username, NewUserFields};

/// Mattermost's ping; a cluster node also names itself (`NodeId`, and Mattermost's
/// `X-Cluster-Id` header), so that a client behind a load balancer can tell which
/// node answered.
async fn ping(axum::extract::State(host): axum::extract::State<Host>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let node = host.node_id().to_string();
    if node.is_empty() {
        return Json(json!({"status": "OK"})).into_response();
    }
    (
        [("X-Cluster-Id", node.clone())],
        Json(json!({"status": "OK", "NodeId": node})),
    )
        .into_response()
}

pub fn router(host: Host) -> Router {
    Router::new()
        .route("/api/v4/system/ping", get(ping))
        .route("/api/v4/users", post(users::create_user))
        .route("/api/v4/users/login", post(users::login))
        .route("/api/v4/users/logout", post(users::logout))
        .route("/api/v4/users/me", get(users::me))
        .route("/api/v4/users/me/teams", get(users::my_teams))
        .route("/api/v4/users/{user_id}", get(users::get_user))
        .route(
            "/api/v4/users/{user_id}/channels",
            get(users::user_channels),
        )
        .route("/api/v4/teams", post(channels::create_team))
        .route("/api/v4/teams/{team_id}", get(channels::get_team))
        .route(
            "/api/v4/teams/{team_id}/members",
            post(channels::add_team_member),
        )
        .route(
            "/api/v4/teams/name/{team_name}/channels/name/{channel_name}",
            get(channels::channel_by_names),
        )
        .route("/api/v4/channels", post(channels::create_channel))
        .route("/api/v4/channels/direct", post(channels::create_direct))
        .route("/api/v4/channels/group", post(channels::create_group))
        .route(
            "/api/v4/channels/{channel_id}",
            get(channels::get_channel).delete(channels::archive_channel),
        )
        .route(
            "/api/v4/channels/{channel_id}/members",
            post(channels::add_channel_member),
        )
        .route(
            "/api/v4/channels/{channel_id}/members/{user_id}",
            axum::routing::delete(channels::remove_channel_member),
        )
        .route(
            "/api/v4/channels/{channel_id}/posts",
            get(channels::channel_posts),
        )
        .route("/api/v4/files/{file_id}", get(files::get_file))
        .route("/api/v4/files/{file_id}/info", get(files::get_file_info))
        .route(
            "/api/v4/plugins",
            post(plugins::upload_plugin)
                .layer(DefaultBodyLimit::max(plugins::MAX_BUNDLE_UPLOAD))
                .get(plugins::list_plugins),
        )
        .route("/api/v4/plugins/statuses", get(plugins::plugin_statuses))
        .route(
            "/api/v4/plugins/{plugin_id}/enable",
            post(plugins::enable_plugin),
        )
        .route(
            "/api/v4/plugins/{plugin_id}/disable",
            post(plugins::disable_plugin),
        )
        .route(
            "/api/v4/config",
            get(plugins::get_config).put(plugins::put_config),
        )
        .route("/api/v4/websocket", get(websocket::upgrade))
        .route("/plugins/com.mattermost.calls", any(proxy::plugin_proxy))
        .route(
            "/plugins/com.mattermost.calls/{*rest}",
            any(proxy::plugin_proxy),
        )
        .route(
            "/static/plugins/com.mattermost.calls/{*file}",
            get(proxy::plugin_static),
        )
        .route("/", get(proxy::index))
        // JSON bodies of the API; a bundle upload has its own limit, the plugin
        // routes theirs (the proxy streams).
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(host)
}
