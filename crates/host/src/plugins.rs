//! Plugin bundles: install (unpack + validate `plugin.json`), and a supervisor per
//! enabled plugin that starts its executable, does the handshake, activates it and
//! restarts it with backoff when it dies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use calls_wire::handshake;
use calls_wire::proto::plugin_client::PluginClient;
use calls_wire::proto::{ActivateRequest, Empty};

pub const PLATFORM: &str = "linux-amd64";

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("invalid bundle: {0}")]
    Bundle(String),
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("plugin {0} is not installed")]
    NotInstalled(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Manifest {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub min_server_version: String,
    #[serde(default)]
    pub server: Option<ServerManifest>,
    #[serde(default)]
    pub webapp: Option<WebappManifest>,
    #[serde(default)]
    pub settings_schema: Option<Value>,
    #[serde(default)]
    pub props: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ServerManifest {
    #[serde(default)]
    pub executables: HashMap<String, String>,
    #[serde(default)]
    pub executable: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct WebappManifest {
    #[serde(default)]
    pub bundle_path: String,
}

const SETTING_TYPES: &[&str] = &[
    "bool",
    "dropdown",
    "generated",
    "radio",
    "text",
    "longtext",
    "number",
    "username",
    "custom",
];

impl Manifest {
    pub fn executable(&self) -> Option<&str> {
        let s = self.server.as_ref()?;
        s.executables
            .get(PLATFORM)
            .map(String::as_str)
            .or((!s.executable.is_empty()).then_some(s.executable.as_str()))
    }

    pub fn validate(&self) -> Result<(), PluginError> {
        let id_ok = (3..=190).contains(&self.id.len())
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !id_ok {
            return Err(PluginError::Manifest(format!(
                "invalid plugin id {:?}",
                self.id
            )));
        }
        if self.executable().is_none() {
            return Err(PluginError::Manifest(format!(
                "no server executable for {PLATFORM}"
            )));
        }
        if let Some(schema) = &self.settings_schema {
            for (field, v) in [
                ("settings", schema.get("settings")),
                ("sections", schema.get("sections")),
            ] {
                if v.is_some_and(|v| !v.is_array() && !v.is_null()) {
                    return Err(PluginError::Manifest(format!(
                        "settings_schema.{field} must be a list"
                    )));
                }
            }
            for s in schema_settings(schema) {
                let key = s.get("key").and_then(Value::as_str).unwrap_or("");
                let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
                if key.is_empty() && ty != "custom" {
                    return Err(PluginError::Manifest("a setting has no key".into()));
                }
                if !SETTING_TYPES.contains(&ty) {
                    return Err(PluginError::Manifest(format!(
                        "setting {key:?} has invalid type {ty:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The defaults declared in the settings schema, for keys not set yet.
    pub fn default_settings(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        for s in self.settings_schema.iter().flat_map(schema_settings) {
            if let (Some(k), Some(d)) = (s.get("key").and_then(Value::as_str), s.get("default")) {
                if !d.is_null() {
                    out.insert(k.to_string(), d.clone());
                }
            }
        }
        out
    }
}

/// Every setting of a settings schema: the top-level ones, then each section's (as
/// Mattermost's System Console lays them out).
pub fn schema_settings(schema: &Value) -> Vec<&Value> {
    let top = schema.get("settings").and_then(Value::as_array);
    let sections = schema
        .get("sections")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("settings").and_then(Value::as_array));
    top.into_iter().chain(sections).flatten().collect()
}

/// What a bundle may unpack to. A bundle is small when compressed and may be huge
/// unpacked (a 1 MB upload of zeros unpacked to 1 GiB): both caps are checked against
/// each entry's header before it is written.
#[derive(Debug, Clone, Copy)]
pub struct BundleLimits {
    pub max_bytes: u64,
    pub max_entries: usize,
}

impl Default for BundleLimits {
    /// Upstream's Calls bundle carries four platforms' executables (~250 MB unpacked).
    fn default() -> Self {
        BundleLimits {
            max_bytes: 1 << 30,
            max_entries: 10_000,
        }
    }
}

/// Unpacks a `.tar.gz` bundle into `plugins_dir/<id>` after validating it. A refused
/// bundle leaves nothing on disk.
pub fn install_bundle(
    plugins_dir: &Path,
    bundle: &[u8],
    limits: BundleLimits,
) -> Result<Manifest, PluginError> {
    let staging = plugins_dir.join(format!(".staging-{}", calls_wire::ids::new_id()));
    std::fs::create_dir_all(&staging)?;
    let result = unpack_and_validate(&staging, bundle, limits).and_then(|m| {
        let dest = plugins_dir.join(&m.id);
        if dest.exists() {
            std::fs::remove_dir_all(&dest)?;
        }
        std::fs::rename(&staging, &dest)?;
        Ok(m)
    });
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// A path inside the bundle: relative, with no `..`, no root, no prefix.
fn inside(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

fn unpack_and_validate(
    dir: &Path,
    bundle: &[u8],
    limits: BundleLimits,
) -> Result<Manifest, PluginError> {
    use tar::EntryType;
    let gz = flate2::read::GzDecoder::new(bundle);
    let mut ar = tar::Archive::new(gz);
    let entries = ar
        .entries()
        .map_err(|e| PluginError::Bundle(e.to_string()))?;
    let (mut bytes, mut count) = (0u64, 0usize);
    for entry in entries {
        let mut entry = entry.map_err(|e| PluginError::Bundle(e.to_string()))?;
        let name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&name);
        let sparse = entry.header().entry_type() == EntryType::GNUSparse;
        match entry.header().entry_type() {
            // Sparse files (GNU tar, `tar` of a file with holes) unpack as files too.
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory => {}
            // Archive metadata, not a file.
            EntryType::XGlobalHeader => continue,
            // A link (or device, fifo) could make the host serve or run a file from
            // outside the bundle.
            other => {
                return Err(PluginError::Bundle(format!(
                    "entry {name:?} is a {other:?}: only regular files and directories are allowed"
                )))
            }
        }
        count += 1;
        // What the entry unpacks to: a sparse file's real size, not its stored data.
        // (`Entry::size` honours a PAX `size`, which the header's own field need not.)
        let size = if sparse {
            entry.header().as_gnu().and_then(|g| g.real_size().ok())
        } else {
            Some(entry.size())
        };
        bytes = bytes.saturating_add(size.unwrap_or(u64::MAX));
        if count > limits.max_entries {
            return Err(PluginError::Bundle(format!(
                "more than {} entries",
                limits.max_entries
            )));
        }
        if bytes > limits.max_bytes {
            return Err(PluginError::Bundle(format!(
                "unpacks to more than {} MiB",
                limits.max_bytes >> 20
            )));
        }
        // `unpack_in` refuses paths that escape the directory.
        let ok = entry
            .unpack_in(dir)
            .map_err(|e| PluginError::Bundle(e.to_string()))?;
        if !ok {
            return Err(PluginError::Bundle(
                "entry escapes the bundle directory".into(),
            ));
        }
    }
    // Bundles have one top-level directory (upstream: `com.mattermost.calls/`) or none.
    let root = find_manifest_root(dir)
        .ok_or_else(|| PluginError::Bundle("plugin.json not found".into()))?;
    let raw = std::fs::read(root.join("plugin.json"))?;
    let m: Manifest =
        serde_json::from_slice(&raw).map_err(|e| PluginError::Manifest(e.to_string()))?;
    m.validate()?;
    let exe = m.executable().unwrap_or_default();
    // A regular file of the bundle itself: not an absolute path (`/bin/sh`), not a
    // way out, not a link (none are unpacked, and the check does not follow one).
    let is_file = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file());
    if !inside(exe) || !is_file(&root.join(exe)) {
        return Err(PluginError::Manifest(format!(
            "executable {exe:?} is not in the bundle"
        )));
    }
    if let Some(w) = &m.webapp {
        if !w.bundle_path.is_empty() && !inside(&w.bundle_path) {
            return Err(PluginError::Manifest(format!(
                "webapp bundle {:?} is not in the bundle",
                w.bundle_path
            )));
        }
    }
    if root != dir {
        // Flatten: move the single top-level directory's content up.
        for e in std::fs::read_dir(&root)? {
            let e = e?;
            std::fs::rename(e.path(), dir.join(e.file_name()))?;
        }
        std::fs::remove_dir_all(&root)?;
    }
    Ok(m)
}

fn find_manifest_root(dir: &Path) -> Option<PathBuf> {
    if dir.join("plugin.json").is_file() {
        return Some(dir.to_path_buf());
    }
    let subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match subdirs.as_slice() {
        [only] if only.join("plugin.json").is_file() => Some(only.clone()),
        _ => None,
    }
}

pub fn read_manifest(plugin_dir: &Path) -> Result<Manifest, PluginError> {
    let raw = std::fs::read(plugin_dir.join("plugin.json"))
        .map_err(|_| PluginError::NotInstalled(plugin_dir.display().to_string()))?;
    serde_json::from_slice(&raw).map_err(|e| PluginError::Manifest(e.to_string()))
}

/// The state of a supervised plugin, for the host's API and hooks.
#[derive(Default)]
pub struct Running {
    pub client: Option<PluginClient<Channel>>,
    pub pid: Option<u32>,
    pub activated: bool,
    pub last_error: String,
    pub restarts: u32,
}

pub struct Supervised {
    pub state: Arc<Mutex<Running>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    /// Deactivates and stops the plugin, waiting for the process to exit.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub struct StartSpec {
    pub id: String,
    pub dir: PathBuf,
    pub executable: PathBuf,
    pub host_addr: String,
}

/// Starts supervising a plugin: (re)start with backoff 1 s → 30 s until stopped or
/// until activation itself fails (then the plugin stays down, as in Mattermost).
pub fn supervise(spec: StartSpec) -> Supervised {
    let state = Arc::new(Mutex::new(Running::default()));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let st = state.clone();
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            if *stop_rx.borrow() {
                break;
            }
            let started = Instant::now();
            match start_once(&spec).await {
                Ok((mut child, client)) => {
                    st.lock().pid = child.id();
                    let resp = client
                        .clone()
                        .on_activate(ActivateRequest {
                            host_address: spec.host_addr.clone(),
                            bundle_path: spec.dir.to_string_lossy().into_owned(),
                        })
                        .await;
                    let activation_error = match resp {
                        Ok(r) => r.into_inner().error,
                        Err(e) => format!("OnActivate failed: {e}"),
                    };
                    if !activation_error.is_empty() {
                        tracing::error!(
                            plugin_id = spec.id,
                            error = activation_error,
                            "plugin activation failed; not restarting"
                        );
                        let _ = child.kill().await;
                        let mut s = st.lock();
                        s.last_error = activation_error;
                        s.client = None;
                        s.pid = None;
                        break;
                    }
                    {
                        let mut s = st.lock();
                        s.client = Some(client.clone());
                        s.activated = true;
                        s.last_error.clear();
                    }
                    tracing::info!(plugin_id = spec.id, pid = child.id(), "plugin activated");
                    tokio::select! {
                        status = child.wait() => {
                            let mut s = st.lock();
                            s.client = None;
                            s.activated = false;
                            s.pid = None;
                            s.restarts += 1;
                            s.last_error = format!("plugin process exited: {status:?}");
                            tracing::warn!(plugin_id = spec.id, ?status, "plugin process exited; restarting");
                        }
                        _ = stop_rx.changed() => {
                            let _ = tokio::time::timeout(Duration::from_secs(30), client.clone().on_deactivate(Empty {})).await;
                            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                                let _ = child.kill().await;
                            }
                            let mut s = st.lock();
                            s.client = None;
                            s.activated = false;
                            s.pid = None;
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(plugin_id = spec.id, error = %e, "failed to start plugin");
                    st.lock().last_error = e.to_string();
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_secs(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop_rx.changed() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
    Supervised {
        state,
        stop: stop_tx,
        task,
    }
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("spawn: {0}")]
    Spawn(std::io::Error),
    #[error("no handshake from plugin")]
    NoHandshake,
    #[error(transparent)]
    Handshake(#[from] handshake::HandshakeError),
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
}

async fn start_once(spec: &StartSpec) -> Result<(Child, PluginClient<Channel>), StartError> {
    let mut child = Command::new(&spec.executable)
        .current_dir(&spec.dir)
        .env(handshake::MAGIC_COOKIE_KEY, handshake::MAGIC_COOKIE_VALUE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(StartError::Spawn)?;
    if let Some(err) = child.stderr.take() {
        let id = spec.id.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{id}] {line}");
            }
        });
    }
    let stdout = child.stdout.take().ok_or(StartError::NoHandshake)?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| StartError::NoHandshake)?
        .map_err(|_| StartError::NoHandshake)?
        .ok_or(StartError::NoHandshake)?;
    let path = handshake::parse(&line)?;
    // Keep draining stdout so that a chatty plugin never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let channel = Endpoint::from_static("http://plugin.local")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await?;
    Ok((
        child,
        PluginClient::new(channel).max_decoding_message_size(64 << 20),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_in_sections_are_validated_and_give_their_defaults() {
        let m: Manifest = serde_json::from_value(json!({
            "id": "com.example.p",
            "server": {"executable": "server/p"},
            "settings_schema": {
                "settings": [{"key": "Top", "type": "bool", "default": true}],
                "sections": [{"key": "S", "title": "S", "settings": [
                    {"key": "InSection", "type": "number", "default": 5},
                    {"key": "NoDefault", "type": "text"}
                ]}]
            }
        }))
        .unwrap();
        m.validate().unwrap();
        let d = m.default_settings();
        assert_eq!(d.get("Top"), Some(&json!(true)));
        assert_eq!(d.get("InSection"), Some(&json!(5)));
        assert!(!d.contains_key("NoDefault"));
        let bad: Manifest = serde_json::from_value(json!({
            "id": "com.example.p",
            "server": {"executable": "server/p"},
            "settings_schema": {"sections": [{"key": "S", "settings": [{"key": "K", "type": "weird"}]}]}
        }))
        .unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("invalid type"));
        let bad: Manifest = serde_json::from_value(json!({
            "id": "com.example.p",
            "server": {"executable": "server/p"},
            "settings_schema": {"sections": {"not": "a list"}}
        }))
        .unwrap();
        assert!(bad.validate().is_err());
    }
}
