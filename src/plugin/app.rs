//! The plugin's shared state: configuration, store, host API, call locks, local
//! websocket sessions, and the helpers every handler uses to load call state and
//! publish events.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{json, Value};

use super::config::Config;
use super::host_api::{Broadcast, HostApi, HostError};
use super::metrics::Metrics;
use super::model::CallState;
use super::mutex::{Guard, LockError, Mutexes, CALL_LOCK};
use super::sessions::Sessions;
use super::store::{Store, StoreError};
use crate::proto;

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
    pub mutexes: Mutexes,
    pub sessions: Sessions,
    pub rate: parking_lot::Mutex<HashMap<String, TokenBucket>>,
    /// Websocket action budgets, per connection (`signaling::WsBudget`).
    pub ws_budgets: parking_lot::Mutex<HashMap<String, super::signaling::WsBudget>>,
    /// Warnings clients can trigger at will, written once per window.
    pub repeats: crate::log_limit::Repeats,
    pub version: &'static str,
    pub bundle_path: String,
    /// When set, group calls are allowed regardless of license (env `MM_CALLS_GROUP_CALLS_ALLOWED`).
    pub group_calls_env: bool,
    /// Set at deactivation; background loops stop on it.
    pub stopped: std::sync::atomic::AtomicBool,
    /// The integrated SFU, started when a call first needs it (not in rtcd mode).
    pub rtc: RwLock<Option<crate::sfu::shell::RtcServer>>,
    /// One start of the integrated SFU at a time.
    pub rtc_start: tokio::sync::Mutex<()>,
    /// Where the integrated SFU reports (kept for a later start).
    pub rtc_notes: tokio::sync::mpsc::UnboundedSender<crate::sfu::shell::Note>,
    /// The rtcd fleet of `RTCDServiceURL`, once connected; it stays while calls use it.
    pub rtcd: RwLock<Option<Arc<super::rtcd_pool::RtcdPool>>>,
    /// Where the rtcd clients report.
    pub rtcd_events: super::rtcd_client::Inbound,
    /// Calls whose media runs on rtcd: call id → host.
    pub call_hosts: RwLock<HashMap<String, String>>,
}

#[derive(Clone)]
pub struct App(pub Arc<Inner>);

impl std::ops::Deref for App {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub use crate::rate::TokenBucket;

impl App {
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    pub fn rtc(&self) -> Option<crate::sfu::shell::RtcServer> {
        self.rtc.read().clone()
    }

    pub fn rtcd(&self) -> Option<Arc<super::rtcd_pool::RtcdPool>> {
        self.rtcd.read().clone()
    }

    /// New calls go to rtcd: a service URL is set and the license allows it
    /// (Enterprise, as upstream).
    pub fn rtcd_mode(&self) -> bool {
        !self.config().RTCDServiceURL.is_empty() && self.license().enterprise()
    }

    /// Records that a call's media runs on rtcd `host` (nothing for "").
    pub fn track_call_host(&self, call_id: &str, host: &str) {
        if host.is_empty() {
            return;
        }
        let new = self
            .call_hosts
            .write()
            .insert(call_id.to_string(), host.to_string())
            .is_none();
        if new {
            if let Some(p) = self.rtcd() {
                p.call_placed(host);
            }
        }
    }

    /// The call ended: its rtcd host has one call less.
    pub fn untrack_call_host(&self, call_id: &str) {
        if let Some(host) = self.call_hosts.write().remove(call_id) {
            if let Some(p) = self.rtcd() {
                p.call_ended(&host);
            }
        }
    }

    /// The rtcd host of a call, if its media runs there.
    pub fn call_host(&self, call_id: &str) -> Option<String> {
        self.call_hosts.read().get(call_id).cloned()
    }

    pub fn license(&self) -> LicenseInfo {
        self.license.read().clone()
    }

    pub fn group_calls_allowed(&self) -> bool {
        self.group_calls_env || self.license().professional()
    }

    /// API rate limit: 1 request/s with a burst of 10 per user.
    pub fn allow_api_request(&self, user_id: &str) -> bool {
        let mut map = self.rate.lock();
        map.entry(user_id.to_string())
            .or_insert_with(|| TokenBucket::new(10.0))
            .allow(1.0, 10.0)
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

    pub async fn lock_call(&self, channel_id: &str) -> Result<Guard> {
        Ok(self
            .mutexes
            .lock(&format!("call_{channel_id}"), "mutex_call", CALL_LOCK)
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

    pub async fn publish_host_changed(&self, state: &CallState) {
        let data = json!({"hostID": state.call.host_id(), "call_id": state.call.id});
        self.publish_to_participants("call_host_changed", data, state)
            .await;
    }
}
