//! The plugin's shared state: configuration, store, host API, call locks, local
//! websocket sessions, and the helpers every handler uses to load call state and
//! publish events.

use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{json, Value};

use super::call_lock::CallLocks;
use super::config::Config;
use super::host_api::{Broadcast, HostApi, HostError};
use super::media::{Media, MediaError};
use super::metrics::Metrics;
use super::model::CallState;
use super::mutex::LockError;
use super::peers::RemotePeers;
use super::rate_limit::{ApiLimits, WsBudgets};
use super::sessions::Sessions;
use super::store::{Store, StoreError};
use calls_wire::proto;

/// Errors of call operations. The `Display` text of the user-facing variants is the
/// exact upstream message clients see (in `error` events and shape-A bodies).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("forbidden")]
    Forbidden,
    #[error("no call ongoing")]
    NoCallOngoing,
    #[error("no permissions")]
    NoPermissions,
    #[error("requested session or user is not in the call")]
    NotInCall,
    #[error("{0}: not allowed")]
    NotAllowed(&'static str),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Media(#[from] MediaError),
}

pub type Result<T> = std::result::Result<T, AppError>;

pub fn refused(msg: impl Into<String>) -> AppError {
    AppError::Refused(msg.into())
}

#[derive(Debug, Clone, Default)]
pub struct LicenseInfo {
    pub is_licensed: bool,
    pub sku: String,
    pub is_cloud: bool,
}

impl LicenseInfo {
    pub fn sku_short_name(&self) -> &str {
        if self.is_licensed && !self.sku.is_empty() {
            &self.sku
        } else {
            "starter"
        }
    }
    pub fn professional(&self) -> bool {
        super::calls::sku_at_least_professional(self.is_licensed, &self.sku)
    }
    pub fn enterprise(&self) -> bool {
        super::calls::sku_enterprise(self.is_licensed, &self.sku)
    }
}

pub struct Inner {
    pub host: HostApi,
    pub store: Store,
    pub metrics: Metrics,
    pub config: RwLock<Arc<Config>>,
    pub env_overrides: RwLock<Vec<(String, String)>>,
    pub license: RwLock<LicenseInfo>,
    pub server: proto::ServerInfo,
    pub bot_id: String,
    /// The bot's login session (id, token): the recorder acts as the bot with it.
    pub bot_session_id: String,
    pub bot_token: String,
    /// The job service that runs recorders, once reached (recordings enabled).
    pub job_service: RwLock<Option<Arc<super::job_service::JobService>>>,
    /// One attempt at a time to reach the job service, and when the last one failed
    /// (URL, time): requests do not each retry a service that is down.
    pub job_service_refresh: tokio::sync::Mutex<Option<(String, std::time::Instant)>>,
    pub call_locks: CallLocks,
    pub sessions: Sessions,
    /// The REST API's per-user limit.
    pub api_limits: ApiLimits,
    /// Websocket action budgets, per connection.
    pub ws_budgets: WsBudgets,
    /// Warnings clients can trigger at will, written once per window.
    pub repeats: calls_service::log_limit::Repeats,
    pub version: &'static str,
    pub bundle_path: String,
    /// When set, group calls are allowed regardless of license (env `MM_CALLS_GROUP_CALLS_ALLOWED`).
    pub group_calls_env: bool,
    /// Set at deactivation; background loops stop on it.
    pub stopped: std::sync::atomic::AtomicBool,
    /// Where calls' media runs: the integrated SFU or rtcd.
    pub media: Media,
    /// Sessions whose media runs here and whose websocket is on another node.
    pub peers: RemotePeers,
    /// Cluster events from the hook, for their handler.
    pub cluster_events: tokio::sync::mpsc::Sender<proto::PluginClusterEvent>,
}

#[derive(Clone)]
pub struct App(pub Arc<Inner>);

impl std::ops::Deref for App {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl App {
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    /// New calls go to rtcd: a service URL is set and the license allows it
    /// (Enterprise, as upstream).
    pub fn rtcd_mode(&self) -> bool {
        !self.config().RTCDServiceURL.is_empty() && self.license().enterprise()
    }

    pub fn license(&self) -> LicenseInfo {
        self.license.read().clone()
    }

    pub fn group_calls_allowed(&self) -> bool {
        self.group_calls_env || self.license().professional()
    }

    /// The websocket's login session is still the user's: a connection whose login was
    /// revoked (logout) acts no more, even if its socket outlived the revocation.
    pub async fn require_login(&self, user_id: &str, auth_session: &str) -> Result<()> {
        let s = self.host.session(auth_session).await?;
        if s.valid && s.user_id == user_id {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    pub async fn is_admin(&self, user_id: &str) -> Result<bool> {
        Ok(self.host.has_permission(user_id, "manage_system").await?)
    }

    pub async fn can_read_channel(&self, user_id: &str, channel_id: &str) -> Result<bool> {
        if user_id == self.bot_id {
            return Ok(true);
        }
        Ok(self
            .host
            .has_channel_permission(user_id, channel_id, "read_channel")
            .await?)
    }

    /// The active call of a channel with its sessions and jobs, from the database.
    pub async fn load_state(&self, channel_id: &str) -> Result<Option<CallState>> {
        let t = std::time::Instant::now();
        let Some(call) = self.store.get_active_call_by_channel(channel_id).await? else {
            return Ok(None);
        };
        let sessions = self.store.get_sessions(&call.id).await?;
        let jobs = self.store.get_active_jobs(&call.id).await?;
        self.metrics
            .app_handlers_time
            .with_label_values(&["getCallState"])
            .observe(t.elapsed().as_secs_f64());
        Ok(Some(CallState {
            call,
            sessions,
            jobs,
        }))
    }

    /// The active call, when `requester` is its host or a system admin (host controls).
    pub async fn state_for_host_action(
        &self,
        channel_id: &str,
        requester: &str,
    ) -> Result<CallState> {
        let state = self
            .load_state(channel_id)
            .await?
            .ok_or(AppError::NoCallOngoing)?;
        if state.call.host_id() != requester && !self.is_admin(requester).await? {
            return Err(AppError::NoPermissions);
        }
        Ok(state)
    }

    /// Publishes an event; channel-scoped payloads get `channelID` injected and the bot
    /// omitted, as upstream does.
    pub async fn publish(&self, event: &str, mut data: Value, mut b: Broadcast) {
        if !b.channel_id.is_empty() {
            if let Value::Object(m) = &mut data {
                m.insert("channelID".into(), Value::String(b.channel_id.clone()));
            }
            if !self.bot_id.is_empty() && b.user_id.is_empty() {
                b.omit_users.push(self.bot_id.clone());
            }
        }
        self.metrics.ws_event("out", event);
        if let Err(e) = self.host.publish(event, &data, &b).await {
            tracing::error!(event, error = %e, "failed to publish websocket event");
        }
    }

    /// Channel + participants (CH+P): one publish per distinct participant user.
    pub async fn publish_to_participants(&self, event: &str, data: Value, state: &CallState) {
        let mut users: Vec<&str> = state
            .sessions
            .values()
            .map(|s| s.user_id.as_str())
            .filter(|u| *u != self.bot_id)
            .collect();
        users.sort_unstable();
        users.dedup();
        for u in users {
            let b = Broadcast {
                user_id: u.to_string(),
                channel_id: state.call.channel_id.clone(),
                reliable: true,
                ..Default::default()
            };
            self.publish(event, data.clone(), b).await;
        }
    }

    /// Places a new call's media where the settings say (rtcd mode or not); the rtcd
    /// host, or "" for the integrated SFU.
    pub async fn place_new_call(&self, call_id: &str) -> Result<String> {
        Ok(self
            .media
            .place_new_call(call_id, self.rtcd_mode(), &self.config(), &self.metrics)
            .await?)
    }

    /// `signal` to a session's current connection (on this node or another),
    /// carrying the session id.
    pub async fn publish_signal(&self, session_id: &str, json: String) {
        let Some((user_id, conn_id, _)) = self.recipient(session_id) else {
            tracing::debug!(session_id, "signal for a session this node does not know");
            return;
        };
        self.publish(
            "signal",
            json!({"data": json, "connID": session_id}),
            Broadcast::connection(&user_id, &conn_id),
        )
        .await;
    }

    /// Where a session's events go and who it is: (user, current connection,
    /// channel), from its local entry, or its route when its websocket is on another
    /// node.
    pub fn recipient(&self, session_id: &str) -> Option<(String, String, String)> {
        if let Some(l) = self.sessions.get_by_session_id(session_id) {
            return Some((l.user_id.clone(), l.conn_id.clone(), l.channel_id.clone()));
        }
        self.peers
            .get(session_id)
            .map(|r| (r.media.user_id, r.conn_id, r.media.channel_id))
    }

    /// In a cluster, records that this node holds the session's websocket now.
    pub async fn record_ws_node(&self, session_id: &str) {
        if self.node_id().is_empty() {
            return;
        }
        let req = proto::KvSetRequest {
            key: super::sessions::node_key(session_id),
            value: self.node_id().as_bytes().to_vec(),
            ..Default::default()
        };
        if let Err(e) = self.host.kv_set(req).await {
            tracing::warn!(session_id, error = %e, "session's node not recorded");
        }
    }

    /// This node's id in its cluster; empty on a single host.
    pub fn node_id(&self) -> &str {
        &self.server.cluster_id
    }

    pub async fn publish_host_changed(&self, state: &CallState) {
        let data = json!({"hostID": state.call.host_id(), "call_id": state.call.id});
        self.publish_to_participants("call_host_changed", data, state)
            .await;
    }
}
