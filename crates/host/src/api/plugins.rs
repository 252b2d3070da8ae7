//! `/api/v4/plugins` and `/api/v4/config`: installing, enabling and configuring plugins.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::credentials::require_admin;
use super::error::{ApiError, ApiResult};
use crate::plugins::{self, install_bundle, read_manifest};
use crate::{Host, CALLS_PLUGIN_ID};
use calls_wire::proto;

/// The largest plugin bundle upload.
pub(super) const MAX_BUNDLE_UPLOAD: usize = 64 << 20;

pub(super) async fn upload_plugin(
    State(host): State<Host>,
    h: HeaderMap,
    mut mp: Multipart,
) -> ApiResult {
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
    let bytes = bundle.clone();
    let manifest = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        install_bundle(&dir, &bytes, limits)
    })
    .await
    .map_err(|e| ApiError::bad("app.plugin.extract.app_error", e.to_string()))?
    .map_err(|e| ApiError::bad("app.plugin.install.app_error", e.to_string()))?;
    tracing::info!(
        plugin_id = manifest.id,
        version = manifest.version,
        "plugin installed"
    );
    // Every node of a cluster installs it from the database (as Mattermost's nodes
    // from its shared file store).
    if let Some(c) = &host.cluster {
        c.put_bundle(&manifest.id, &manifest.version, &bundle)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "app.plugin.store_bundle.app_error",
                    e.to_string(),
                )
            })?;
        c.send(
            "",
            crate::cluster::Message::BundleChanged {
                plugin_id: manifest.id.clone(),
            },
        )
        .await;
    }
    // A reinstall of an enabled plugin restarts it on the new bundle.
    if host.plugin_enabled_in_config(&manifest.id) {
        stop_plugin(&host, &manifest.id).await;
        start_plugin(&host, &manifest.id).await?;
    }
    Ok((StatusCode::CREATED, Json(manifest)).into_response())
}

pub(super) async fn list_plugins(State(host): State<Host>, h: HeaderMap) -> ApiResult {
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

/// Mattermost's plugin states (`model.PluginState*`), as `GET /plugins/statuses` gives them.
const NOT_RUNNING: i32 = 0;
const STARTING: i32 = 1;
const RUNNING: i32 = 2;
const FAILED_TO_START: i32 = 3;
const FAILED_TO_STAY_RUNNING: i32 = 4;

/// `GET /api/v4/plugins/statuses` (admins): each installed plugin's process state on
/// this node and the last error it stopped with, as the System Console shows them.
pub(super) async fn plugin_statuses(State(host): State<Host>, h: HeaderMap) -> ApiResult {
    require_admin(&host, &h, &Method::GET).await?;
    let node = host
        .cluster
        .as_ref()
        .map(|c| c.node_id.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(host.plugins_dir()) {
        for e in rd.flatten() {
            let Ok(m) = read_manifest(&e.path()) else {
                continue;
            };
            let enabled = host.plugin_enabled_in_config(&m.id);
            let run = host.plugin_state.read().get(&m.id).map(|s| {
                let s = s.lock();
                (s.activated, s.last_error.clone(), s.restarts)
            });
            let (state, error) = match run {
                _ if !enabled => (NOT_RUNNING, String::new()),
                Some((true, _, _)) => (RUNNING, String::new()),
                Some((false, err, restarts)) if !err.is_empty() => (
                    if restarts > 0 {
                        FAILED_TO_STAY_RUNNING
                    } else {
                        FAILED_TO_START
                    },
                    err,
                ),
                _ => (STARTING, String::new()),
            };
            out.push(json!({
                "plugin_id": m.id,
                "cluster_id": node,
                "plugin_path": e.path().display().to_string(),
                "state": state,
                "error": error,
                "name": m.name,
                "description": m.description,
                "version": m.version,
            }));
        }
    }
    Ok(Json(Value::Array(out)).into_response())
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
    if let Some(c) = &host.cluster {
        c.set_plugin_version(id, Some(&manifest.version));
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
    if let Some(c) = &host.cluster {
        c.set_plugin_version(id, None);
    }
    let s = host.plugins.lock().await.remove(id);
    if let Some(s) = s {
        s.stop().await;
    }
}

pub(super) async fn set_plugin_state(host: &Host, id: &str, enable: bool) -> ApiResult<()> {
    host.update_config(|cfg| {
        cfg["PluginSettings"]["PluginStates"][id] = json!({"Enable": enable});
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "app.save_config.error",
            e.to_string(),
        )
    })
}

pub(super) async fn enable_plugin(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    require_admin(&host, &h, &Method::POST).await?;
    read_manifest(&host.plugins_dir().join(&id)).map_err(|_| ApiError::not_found("plugin"))?;
    set_plugin_state(&host, &id, true).await?;
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
                set_plugin_state(&host, &id, false).await?;
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

pub(super) async fn disable_plugin(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    require_admin(&host, &h, &Method::POST).await?;
    set_plugin_state(&host, &id, false).await?;
    stop_plugin(&host, &id).await;
    Ok(Json(json!({"status": "OK"})).into_response())
}

pub(super) async fn get_config(State(host): State<Host>, h: HeaderMap) -> ApiResult {
    require_admin(&host, &h, &Method::GET).await?;
    let cfg = host.config.read().clone();
    Ok(Json(crate::secrets::sanitize(&host.plugins_dir(), cfg)).into_response())
}

pub(super) async fn put_config(State(host): State<Host>, h: HeaderMap, body: Bytes) -> ApiResult {
    require_admin(&host, &h, &Method::PUT).await?;
    let new: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("api.config.update_config.invalid_body", e.to_string()))?;
    // Masked secrets sent back mean "unchanged".
    let new = crate::secrets::desanitize(&host.config.read(), new);
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
    // Plugin states are managed through enable/disable: the stored ones stay (in a
    // cluster, another node may have just changed them).
    host.update_config(|cur| {
        let states = cur["PluginSettings"]["PluginStates"].take();
        *cur = new;
        cur["PluginSettings"]["PluginStates"] = states;
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "app.save_config.error",
            e.to_string(),
        )
    })?;
    let saved = host.config.read().clone();
    Ok(Json(crate::secrets::sanitize(&host.plugins_dir(), saved)).into_response())
}
