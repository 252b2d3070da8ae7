//! Calls on rtcd: the fleet this plugin is a client of (its credentials, its start
//! and replacement when `RTCDServiceURL` changes), a call's host, and what rtcd
//! sends back.

use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::json;

use super::backend::{CallMedia, JoinOptions, MediaError, MediaEvent, MediaSession, StreamKind};
use super::rtcd_client::Inbound;
use super::rtcd_pool::{parse_url, PoolError, RtcdPool, ServiceUrl};
use crate::client_message::{ClientIce, ClientSdp};
use crate::host_api::HostApi;
use calls_wire::proto;
use calls_wire::rtcd::{rtc_type, Envelope, Join, RtcMessage};

/// KV key of the rtcd client config (as upstream: JSON with `AuthKey`).
const RTCD_CONFIG_KEY: &str = "rtcd_config";

pub(super) struct Fleet {
    /// The fleet of `RTCDServiceURL`, once connected; it stays while calls use it.
    pool: RwLock<Option<Arc<RtcdPool>>>,
    host: HostApi,
    diagnostic_id: String,
    /// Where the rtcd clients report.
    events: Inbound,
}

impl Fleet {
    pub(super) fn new(host: HostApi, diagnostic_id: String, events: Inbound) -> Fleet {
        Fleet {
            pool: Default::default(),
            host,
            diagnostic_id,
            events,
        }
    }

    pub(super) fn pool(&self) -> Option<Arc<RtcdPool>> {
        self.pool.read().clone()
    }

    /// Connects to the fleet of `url`, unless already connected to it. A new URL
    /// replaces the old fleet for new calls.
    pub(super) async fn connect(&self, url: &str) -> Result<(), MediaError> {
        let parsed = parse_url(url)?;
        if self.pool().is_some_and(|p| p.url == parsed) {
            return Ok(());
        }
        let (id, key) = self.credentials(url, &parsed).await?;
        let pool = RtcdPool::start(url, id, key, self.events.clone()).await?;
        tracing::info!(url, hosts = ?pool.hosts(), "rtcd mode: connected");
        if let Some(old) = self.pool.write().replace(pool) {
            old.close();
        }
        Ok(())
    }

    pub(super) fn close(&self) {
        if let Some(p) = self.pool() {
            p.close();
        }
    }

    /// The rtcd client id and key, in upstream's order: env, URL user info, the
    /// server's diagnostic id; the key from KV, else a new one, stored.
    async fn credentials(
        &self,
        url: &str,
        parsed: &ServiceUrl,
    ) -> Result<(String, String), PoolError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut id = env("MM_CLOUD_INSTALLATION_ID").or_else(|| env("MM_CALLS_RTCD_CLIENT_ID"));
        let mut key = env("MM_CALLS_RTCD_AUTH_KEY");
        if id.is_none() && key.is_none() {
            if let Some((u, k)) = &parsed.user {
                id = Some(u.clone()).filter(|u| !u.is_empty());
                key = Some(k.clone()).filter(|k| !k.is_empty());
            }
        }
        let id = id
            .or_else(|| Some(self.diagnostic_id.clone()).filter(|d| !d.is_empty()))
            .ok_or_else(|| PoolError::Credentials("no client id".into()))?;
        if let Some(key) = key {
            return Ok((id, key));
        }
        let stored = self
            .host
            .kv_get(RTCD_CONFIG_KEY)
            .await
            .map_err(|e| PoolError::Credentials(e.to_string()))?
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
            .and_then(|v| v["AuthKey"].as_str().map(str::to_string))
            .filter(|k| !k.is_empty());
        if let Some(key) = stored {
            return Ok((id, key));
        }
        let key = calls_wire::ids::random_token();
        let cfg = json!({"ClientID": id, "AuthKey": key, "URL": url, "ReconnectInterval": 0});
        self.host
            .kv_set(proto::KvSetRequest {
                key: RTCD_CONFIG_KEY.into(),
                value: cfg.to_string().into_bytes(),
                ..Default::default()
            })
            .await
            .map_err(|e| PoolError::Credentials(e.to_string()))?;
        Ok((id, key))
    }
}

/// What an rtcd host sent, as a media event (`None` for what needs no action).
pub(super) fn event(host: &str, e: Envelope) -> Option<MediaEvent> {
    match e {
        Envelope::Rtc(m) => match m.data.and_then(|d| String::from_utf8(d).ok()) {
            Some(json) => Some(MediaEvent::Signal {
                session_id: m.session_id,
                json,
            }),
            None => {
                tracing::warn!(
                    host,
                    session_id = m.session_id,
                    "rtc message without text data"
                );
                None
            }
        },
        Envelope::Vad(m) => Some(MediaEvent::Voice {
            session_id: m.session_id,
            on: m.msg_type == rtc_type::VOICE_ON,
        }),
        Envelope::Close { session_id } => Some(MediaEvent::Closed { session_id }),
        Envelope::Hello { conn_id, .. } => {
            tracing::debug!(host, conn_id, "rtcd hello");
            None
        }
        other => {
            tracing::warn!(
                host,
                kind = other.type_name(),
                "unexpected message from rtcd"
            );
            None
        }
    }
}

/// A call on an rtcd host.
pub(super) struct RtcdHost {
    pub(super) pool: Arc<RtcdPool>,
    pub(super) host: String,
}

impl RtcdHost {
    async fn send(&self, e: Envelope) -> Result<(), MediaError> {
        Ok(self.pool.send(&self.host, &e).await?)
    }

    /// An `rtc` message for one of the call's sessions.
    async fn rtc(&self, s: &MediaSession, t: i64, data: Option<Vec<u8>>) -> Result<(), MediaError> {
        self.send(Envelope::Rtc(RtcMessage {
            session_id: s.session_id.clone(),
            user_id: s.user_id.clone(),
            msg_type: t,
            data,
            ..Default::default()
        }))
        .await
    }
}

#[async_trait::async_trait]
impl CallMedia for RtcdHost {
    async fn add_session(&self, s: &MediaSession, opts: JoinOptions) -> Result<(), MediaError> {
        self.send(Envelope::Join(Join {
            call_id: s.call_id.clone(),
            user_id: s.user_id.clone(),
            session_id: s.session_id.clone(),
            channel_id: s.channel_id.clone(),
            av1_support: opts.av1,
            dc_signaling: opts.dc_signaling,
        }))
        .await
    }

    async fn reconnected(&self, s: &MediaSession) -> Result<(), MediaError> {
        self.send(Envelope::Reconnect {
            session_id: s.session_id.clone(),
        })
        .await
    }

    async fn remove_session(&self, session_id: &str) -> Result<(), MediaError> {
        self.send(Envelope::Leave {
            session_id: session_id.to_string(),
        })
        .await
    }

    async fn sdp(&self, s: &MediaSession, sdp: ClientSdp) -> Result<Option<String>, MediaError> {
        // rtcd takes the description as plain JSON, answered later as an `rtc` message.
        self.rtc(s, rtc_type::SDP, Some(sdp.raw)).await?;
        Ok(None)
    }

    async fn candidate(&self, s: &MediaSession, ice: ClientIce) -> Result<(), MediaError> {
        self.rtc(s, rtc_type::ICE, Some(ice.json.into_bytes()))
            .await
    }

    async fn set_muted(&self, s: &MediaSession, muted: bool) -> Result<(), MediaError> {
        let t = if muted {
            rtc_type::MUTE
        } else {
            rtc_type::UNMUTE
        };
        self.rtc(s, t, None).await
    }

    async fn set_stream(
        &self,
        s: &MediaSession,
        kind: StreamKind,
        stream_id: Option<String>,
    ) -> Result<(), MediaError> {
        let (t, data) = match (kind, &stream_id) {
            (StreamKind::Screen, Some(id)) => {
                (rtc_type::SCREEN_ON, Some(json!({"screenStreamID": id})))
            }
            (StreamKind::Screen, None) => (rtc_type::SCREEN_OFF, None),
            (StreamKind::Video, Some(id)) => {
                (rtc_type::VIDEO_ON, Some(json!({"videoStreamID": id})))
            }
            (StreamKind::Video, None) => (rtc_type::VIDEO_OFF, None),
        };
        self.rtc(s, t, data.map(|d| d.to_string().into_bytes()))
            .await
    }
}
