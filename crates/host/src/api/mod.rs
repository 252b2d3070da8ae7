//! The Mattermost-compatible `/api/v4` subset, the plugin proxy and static pages,
//! by resource:
//! - [`error`]: Mattermost's `AppError` JSON.
//! - [`credentials`]: who a request comes from (token, CSRF, current user, admin).
//! - [`users`], [`channels`] (teams, channels, posts), [`plugins`] (and config),
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
pub mod plugins;
pub mod proxy;
pub mod users;
pub mod websocket;

use channels::*;
pub use credentials::{session_from_headers, token_from_headers};
pub use error::ApiError;
use plugins::*;
pub use plugins::{start_plugin, stop_plugin};
use proxy::*;
pub use proxy::{metrics_router, start_enabled_plugins};
use users::*;
pub use users::{insert_user, valid_username, NewUserFields};

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
        .route("/api/v4/websocket", get(websocket::upgrade))
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
