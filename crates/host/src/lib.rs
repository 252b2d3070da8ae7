//! `calls-host`: a Mattermost-style server standing in for Mattermost (which cannot
//! run here): users, teams, channels, posts, `/api/v4` subset, `/api/v4/websocket`,
//! plugin bundles and their settings, and the `Host` gRPC API plugins call.
//!
//! Layout: [`api`] (the HTTP API by resource, and the websocket), [`hub`] (websocket
//! event routing), [`grpc`] (the `Host` service), [`plugins`] (bundles and the plugin
//! supervisor), [`store`] (the host's tables), [`auth`], [`logins`] and [`secrets`]
//! (passwords and permissions, the login guard, secret settings). This file holds
//! `Host`, the state every handler shares.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config_store;
pub mod demo;
pub mod files;
pub mod grpc;
pub mod hub;
pub mod logins;
pub mod plugins;
pub mod secrets;
pub mod store;
pub mod sync;
pub mod uploads;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{json, Value};

use calls_wire::proto;
use hub::Hub;
use plugins::Supervised;
use store::HostStore;

pub const CALLS_PLUGIN_ID: &str = "com.mattermost.calls";
pub const SERVER_VERSION: &str = "11.0.0";

pub struct HostCtx {
    pub store: HostStore,
    pub database_url: String,
    pub data_dir: PathBuf,
    pub config: RwLock<Value>,
    /// Where `config` is kept: the data dir's file, or the database for a cluster.
    pub config_store: config_store::ConfigStore,
    /// This node's cluster, in cluster mode.
    pub cluster: Option<Arc<cluster::Cluster>>,
    pub license: proto::License,
    pub hub: Hub,
    pub plugins: tokio::sync::Mutex<HashMap<String, Supervised>>,
    pub plugin_state: RwLock<HashMap<String, Arc<parking_lot::Mutex<plugins::Running>>>>,
    pub grpc_addr: RwLock<String>,
    pub site_url: String,
    pub diagnostic_id: String,
    /// What an uploaded plugin bundle may unpack to.
    pub bundle_limits: plugins::BundleLimits,
    /// Warnings clients can trigger at will, written once per window.
    pub repeats: calls_service::log_limit::Repeats,
    /// Login rate limits, lockouts and the password hashing they guard.
    pub logins: logins::Logins,
    /// Uploaded files (recordings among them).
    pub files: Box<dyn files::FileBackend>,
    /// Upload sessions receiving data now (one request at a time per session).
    pub uploading: parking_lot::Mutex<std::collections::HashSet<String>>,
}

pub type Host = Arc<HostCtx>;

/// Sets a data file's or directory's mode (0600 / 0700: secrets and user data are the
/// host's alone); a path that does not exist (yet) is left alone.
pub fn make_private(path: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Writes a file readable by the host's user only, whatever the umask.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // A file that existed keeps its mode on open: set it.
    make_private(path, 0o600)?;
    f.write_all(bytes)
}

pub fn default_config(site_url: &str) -> Value {
    json!({
        "ServiceSettings": {"SiteURL": site_url},
        "TeamSettings": {"EnableOpenServer": false},
        "PrivacySettings": {"ShowFullName": true},
        "LocalizationSettings": {"DefaultClientLocale": "en"},
        "PluginSettings": {"Enable": true, "Plugins": {}, "PluginStates": {}},
    })
}

/// Plugin `id`'s settings in a configuration (`{}` when it has none).
pub fn plugin_settings(cfg: &Value, id: &str) -> Value {
    cfg.pointer(&format!(
        "/PluginSettings/Plugins/{}",
        id.replace('/', "~1")
    ))
    .cloned()
    .unwrap_or_else(|| json!({}))
}

/// Whether a configuration enables plugin `id`.
pub fn plugin_enabled(cfg: &Value, id: &str) -> bool {
    cfg.pointer(&format!(
        "/PluginSettings/PluginStates/{}/Enable",
        id.replace('/', "~1")
    ))
    .and_then(Value::as_bool)
    .unwrap_or(false)
}

pub fn license_for(sku: &str) -> proto::License {
    match sku {
        "" | "none" | "starter" => proto::License {
            is_licensed: false,
            sku_short_name: String::new(),
            is_cloud: false,
        },
        other => proto::License {
            is_licensed: true,
            sku_short_name: other.to_string(),
            is_cloud: false,
        },
    }
}

impl HostCtx {
    pub fn config_path(&self) -> PathBuf {
        self.data_dir.join("config.json")
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.data_dir.join("plugins")
    }

    pub fn plugin_settings(&self, id: &str) -> Value {
        plugin_settings(&self.config.read(), id)
    }

    /// Stores and applies a new configuration; in a cluster, the other nodes are
    /// told to load it.
    pub async fn save_config(&self, cfg: Value) -> Result<(), config_store::ConfigStoreError> {
        self.update_config(|c| *c = cfg).await
    }

    /// Changes the stored configuration with `f` (in a cluster, applied to the one
    /// in the database, which may hold another node's latest change), applies it
    /// here and tells the other nodes.
    pub async fn update_config(
        &self,
        f: impl FnOnce(&mut Value),
    ) -> Result<(), config_store::ConfigStoreError> {
        let here = self.config.read().clone();
        let stored = self
            .config_store
            .update(|cur| {
                let mut c = cur.unwrap_or(here);
                f(&mut c);
                Some(c)
            })
            .await?;
        if let Some(c) = stored {
            *self.config.write() = c;
        }
        if let Some(c) = &self.cluster {
            c.send("", cluster::Message::ConfigChanged).await;
        }
        Ok(())
    }

    /// This node's id in its cluster; empty on a single node (as Mattermost's
    /// `ClusterId` without a cluster).
    pub fn node_id(&self) -> &str {
        self.cluster.as_ref().map_or("", |c| c.node_id.as_str())
    }

    pub fn plugin_enabled_in_config(&self, id: &str) -> bool {
        plugin_enabled(&self.config.read(), id)
    }

    pub fn plugin_client(
        &self,
        id: &str,
    ) -> Option<proto::plugin_client::PluginClient<tonic::transport::Channel>> {
        self.plugin_state
            .read()
            .get(id)
            .and_then(|s| s.lock().client.clone())
    }

    pub fn show_full_name(&self) -> bool {
        self.config
            .read()
            .pointer("/PrivacySettings/ShowFullName")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }
}
