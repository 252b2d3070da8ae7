//! What this node does with its cluster's messages: websocket events published on
//! another node reach this node's connections, plugin cluster events reach the
//! plugin's `OnPluginClusterEvent`, and a configuration or bundle changed elsewhere is
//! loaded from the database and applied here (plugins started, stopped, restarted or
//! told of new settings), as Mattermost nodes do with their cluster's messages.
//!
//! Three lanes, so that nothing slow holds up the rest: websocket events and revoked
//! logins are handled as they arrive; plugin events go through a queue of their own
//! to the plugin, in order; state changes (configuration, bundles, the re-read after
//! a lost connection) through another.

use base64::Engine;
use tokio::sync::mpsc;

use crate::api::{start_plugin, stop_plugin};
use crate::cluster::bus::Inbound;
use crate::cluster::Message;
use crate::plugins::{install_bundle, read_manifest};
use crate::{grpc, plugin_enabled, plugin_settings, Host};
use calls_wire::proto;

/// Plugin events waiting for the plugin (upstream's queue size); more are dropped.
const PLUGIN_EVENT_QUEUE: usize = 4096;

enum StateChange {
    Config,
    Bundle(String),
    Resync,
}

/// Handles the cluster's messages until the bus stops.
pub async fn run(host: Host, mut inbound: mpsc::Receiver<Inbound>) {
    let (events, events_rx) = mpsc::channel(PLUGIN_EVENT_QUEUE);
    tokio::spawn(plugin_events(host.clone(), events_rx));
    let (changes, changes_rx) = mpsc::unbounded_channel();
    tokio::spawn(state_changes(host.clone(), changes_rx));
    while let Some(i) = inbound.recv().await {
        let e = match i {
            Inbound::Message(e) => e,
            Inbound::Resync => {
                let _ = changes.send(StateChange::Resync);
                continue;
            }
        };
        if !e.is_for(host.node_id()) {
            continue;
        }
        match e.msg {
            Message::WsEvent {
                event,
                data,
                broadcast,
            } => {
                let b: proto::WebSocketBroadcast = broadcast.into();
                if let Err(err) = grpc::publish_local(&host, &event, &data, &b).await {
                    tracing::warn!(event, error = %err, "cluster websocket event not delivered");
                }
            }
            Message::PluginEvent {
                plugin_id,
                id,
                data,
            } => {
                let Ok(data) = base64::engine::general_purpose::STANDARD.decode(&data) else {
                    if let Some(left_out) = host.repeats.admit("cluster plugin event undecodable") {
                        tracing::warn!(
                            plugin_id,
                            id,
                            left_out,
                            "plugin cluster event dropped: its data is not base64"
                        );
                    }
                    continue;
                };
                if events
                    .try_send((plugin_id, proto::PluginClusterEvent { id, data }))
                    .is_err()
                {
                    if let Some(left_out) = host.repeats.admit("cluster plugin event queue full") {
                        tracing::warn!(left_out, "plugin cluster event dropped: the queue is full");
                    }
                }
            }
            Message::ConfigChanged => {
                let _ = changes.send(StateChange::Config);
            }
            Message::BundleChanged { plugin_id } => {
                let _ = changes.send(StateChange::Bundle(plugin_id));
            }
            Message::LoginRevoked { session_id } => {
                host.hub.end_session(&session_id);
            }
        }
    }
}

async fn plugin_events(host: Host, mut rx: mpsc::Receiver<(String, proto::PluginClusterEvent)>) {
    while let Some((plugin_id, ev)) = rx.recv().await {
        let Some(mut client) = host.plugin_client(&plugin_id) else {
            tracing::debug!(
                plugin_id,
                id = ev.id,
                "plugin cluster event for a plugin not running here"
            );
            continue;
        };
        if let Err(e) = client.on_plugin_cluster_event(ev).await {
            tracing::warn!(plugin_id, error = %e, "plugin did not take a cluster event");
        }
    }
}

async fn state_changes(host: Host, mut rx: mpsc::UnboundedReceiver<StateChange>) {
    while let Some(c) = rx.recv().await {
        match c {
            StateChange::Config => apply_stored_config(&host).await,
            StateChange::Bundle(id) => install_stored_bundle(&host, &id).await,
            StateChange::Resync => {
                tracing::info!("cluster: re-reading the shared configuration and bundles");
                sync_bundles(&host).await;
                apply_stored_config(&host).await;
            }
        }
    }
}

/// Loads the configuration from the database and applies what changed: plugins
/// enabled or disabled start or stop; running plugins whose settings changed are told.
pub async fn apply_stored_config(host: &Host) {
    let new = match host.config_store.load().await {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cluster configuration not loaded");
            return;
        }
    };
    let old = std::mem::replace(&mut *host.config.write(), new.clone());
    if old == new {
        return;
    }
    let mut ids: Vec<String> = Vec::new();
    for cfg in [&old, &new] {
        for section in ["PluginStates", "Plugins"] {
            if let Some(m) = cfg["PluginSettings"][section].as_object() {
                ids.extend(m.keys().cloned());
            }
        }
    }
    ids.sort();
    ids.dedup();
    for id in ids {
        let (was, now) = (plugin_enabled(&old, &id), plugin_enabled(&new, &id));
        if now && !was {
            tracing::info!(plugin_id = id, "enabled on another node: starting");
            if let Err(e) = start_plugin(host, &id).await {
                tracing::error!(plugin_id = id, error = ?e, "plugin not started");
            }
            continue;
        }
        if was && !now {
            tracing::info!(plugin_id = id, "disabled on another node: stopping");
            stop_plugin(host, &id).await;
            continue;
        }
        let settings = plugin_settings(&new, &id);
        if settings == plugin_settings(&old, &id) {
            continue;
        }
        let Some(mut client) = host.plugin_client(&id) else {
            continue;
        };
        match client
            .on_configuration_change(proto::ConfigurationChangeRequest {
                config_json: serde_json::to_vec(&settings).unwrap_or_default(),
            })
            .await
        {
            Ok(r) if r.get_ref().error.is_empty() => {
                tracing::info!(plugin_id = id, "settings saved on another node applied");
            }
            Ok(r) => tracing::error!(
                plugin_id = id,
                error = r.get_ref().error,
                "the plugin refused settings another node saved"
            ),
            Err(e) => {
                tracing::warn!(plugin_id = id, error = %e, "settings not delivered to the plugin")
            }
        }
    }
}

/// Installs every stored bundle this node does not have at the stored version.
pub async fn sync_bundles(host: &Host) {
    let Some(c) = &host.cluster else { return };
    let stored = match c.bundle_versions().await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "stored plugin bundles not listed");
            return;
        }
    };
    for (id, version) in stored {
        let local = read_manifest(&host.plugins_dir().join(&id)).ok();
        if local.is_none_or(|m| m.version != version) {
            install_stored_bundle(host, &id).await;
        }
    }
}

/// Installs plugin `id`'s stored bundle; an enabled plugin restarts on it.
pub async fn install_stored_bundle(host: &Host, id: &str) {
    let Some(c) = &host.cluster else { return };
    let (version, bytes) = match c.bundle(id).await {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(plugin_id = id, error = %e, "stored plugin bundle not read");
            return;
        }
    };
    let dir = host.plugins_dir();
    let limits = host.bundle_limits;
    let installed = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        install_bundle(&dir, &bytes, limits)
    })
    .await;
    match installed {
        Ok(Ok(m)) => {
            tracing::info!(
                plugin_id = m.id,
                version,
                "plugin bundle from the cluster installed"
            );
            if host.plugin_enabled_in_config(&m.id) {
                stop_plugin(host, &m.id).await;
                if let Err(e) = start_plugin(host, &m.id).await {
                    tracing::error!(plugin_id = m.id, error = ?e, "plugin not restarted");
                }
            }
        }
        Ok(Err(e)) => {
            tracing::error!(plugin_id = id, error = %e, "plugin bundle from the cluster not installed")
        }
        Err(e) => tracing::error!(plugin_id = id, error = %e, "plugin bundle install failed"),
    }
}
