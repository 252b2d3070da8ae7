//! The plugin's media, one component: which backend a call's media runs on, and that
//! backend's lifecycle. A call is placed once, on the integrated SFU or on an rtcd
//! host, and stays there; [`Media::for_call`] gives the session flows a
//! [`CallMedia`] that hides which one it is. Inbound media events from both backends
//! come out of one [`MediaEvents`] stream, for the session layer to act on (this
//! component never removes a session or publishes an event itself).
//!
//! - `backend`: what every backend offers (`CallMedia`) and reports (`MediaEvent`).
//! - `integrated`: the integrated SFU, started when a call first needs it, replaced
//!   when its thread died.
//! - `remote`: a call whose integrated SFU is on another node of the cluster, reached
//!   through cluster messages.
//! - `rtcd`: a call's rtcd host, the fleet's credentials and its start.
//! - `rtcd_pool`, `rtcd_client`: the rtcd fleet behind `RTCDServiceURL` and one
//!   authenticated websocket client per host.

mod backend;
mod integrated;
mod remote;
mod rtcd;
pub mod rtcd_client;
pub mod rtcd_pool;

use std::collections::HashMap;

use parking_lot::RwLock;
use tokio::sync::mpsc;

pub use super::client_message::{ClientIce, ClientSdp};
use super::config::Config;
use super::host_api::HostApi;
use super::metrics::Metrics;
use super::model::CallProps;
pub use backend::{CallMedia, JoinOptions, MediaError, MediaEvent, MediaSession, StreamKind};
use calls_rtc::shell::Note;
use calls_wire::rtcd::Envelope;
pub use remote::Relay;
use rtcd_pool::PoolError;

/// Inbound media events of both backends, as one stream.
pub struct MediaEvents {
    notes: mpsc::UnboundedReceiver<Note>,
    rtcd: mpsc::UnboundedReceiver<(String, Envelope)>,
}

impl MediaEvents {
    /// The next event; `None` once both backends are gone for good.
    pub async fn recv(&mut self) -> Option<MediaEvent> {
        loop {
            tokio::select! {
                Some(n) = self.notes.recv() => return Some(integrated::event(n)),
                Some((host, e)) = self.rtcd.recv() => {
                    if let Some(ev) = rtcd::event(&host, e) {
                        return Some(ev);
                    }
                }
                else => return None,
            }
        }
    }
}

/// The media state of this plugin process and its lifecycle.
pub struct Media {
    integrated: integrated::Integrated,
    fleet: rtcd::Fleet,
    /// Calls whose media runs on rtcd: call id → host.
    call_hosts: RwLock<HashMap<String, String>>,
    /// Calls whose media runs on another node's integrated SFU: call id → node id.
    call_nodes: RwLock<HashMap<String, String>>,
    /// This node's cluster messages.
    pub relay: Relay,
}

impl Media {
    /// `node_id`: this node's id in its cluster, empty on a single host.
    pub fn new(host: HostApi, diagnostic_id: String, node_id: String) -> (Media, MediaEvents) {
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let (rtcd_tx, rtcd) = mpsc::unbounded_channel();
        let media = Media {
            integrated: integrated::Integrated::new(notes_tx),
            fleet: rtcd::Fleet::new(host.clone(), diagnostic_id, rtcd_tx),
            call_hosts: Default::default(),
            call_nodes: Default::default(),
            relay: Relay { host, node_id },
        };
        (media, MediaEvents { notes, rtcd })
    }

    /// The media of a call: its rtcd host if it has one, the node it runs on if that is
    /// another, else this node's integrated SFU.
    pub fn for_call(&self, call_id: &str) -> Result<Box<dyn CallMedia>, MediaError> {
        if let Some(host) = self.call_host(call_id) {
            let pool = self.fleet.pool().ok_or(MediaError::RtcdGone)?;
            return Ok(Box::new(rtcd::RtcdHost { pool, host }));
        }
        if let Some(node_id) = self.call_nodes.read().get(call_id).cloned() {
            return Ok(Box::new(remote::RemoteNode {
                relay: self.relay.clone(),
                node_id,
            }));
        }
        self.local_sfu()
    }

    /// This node's integrated SFU, for the calls it hosts.
    pub fn local_sfu(&self) -> Result<Box<dyn CallMedia>, MediaError> {
        self.integrated
            .running()
            .map(|rtc| Box::new(integrated::IntegratedSfu { rtc }) as Box<dyn CallMedia>)
            .ok_or(MediaError::NoRtcServer)
    }

    /// Chooses the backend of a new call, once: an rtcd host when `on_rtcd`, else the
    /// integrated SFU (started if it is not running). Returns the rtcd host, or ""
    /// for the integrated SFU.
    pub async fn place_new_call(
        &self,
        call_id: &str,
        on_rtcd: bool,
        cfg: &Config,
        metrics: &Metrics,
    ) -> Result<String, MediaError> {
        if on_rtcd {
            let pool = self.fleet.pool().ok_or(PoolError::NoHost)?;
            let host = pool.host_for_new_call().await?;
            tracing::info!(call_id, host, "call placed on rtcd");
            Ok(host)
        } else {
            self.integrated.ensure(cfg, metrics).await?;
            Ok(String::new())
        }
    }

    /// Records where a call's media runs, from its props: an rtcd host, another
    /// node, or (nothing to record) this node.
    pub fn track_call(&self, call_id: &str, props: &CallProps) {
        if props.rtcd_host.is_empty() {
            if !props.node_id.is_empty() && props.node_id != self.relay.node_id {
                self.call_nodes
                    .write()
                    .insert(call_id.to_string(), props.node_id.clone());
            }
            return;
        }
        self.track_call_host(call_id, &props.rtcd_host);
    }

    /// Whether the call's media, as tracked, is this node's integrated SFU.
    pub fn is_local(&self, call_id: &str) -> bool {
        !self.call_hosts.read().contains_key(call_id)
            && !self.call_nodes.read().contains_key(call_id)
    }

    /// Whether this node runs the call's media (its integrated SFU hosts it).
    pub fn hosts_call(&self, props: &CallProps) -> bool {
        props.rtcd_host.is_empty()
            && (props.node_id.is_empty() || props.node_id == self.relay.node_id)
    }

    /// Records that a call's media runs on rtcd `host` (nothing for "").
    fn track_call_host(&self, call_id: &str, host: &str) {
        if host.is_empty() {
            return;
        }
        let new = self
            .call_hosts
            .write()
            .insert(call_id.to_string(), host.to_string())
            .is_none();
        if new {
            if let Some(p) = self.fleet.pool() {
                p.call_placed(host);
            }
        }
    }

    /// The call ended: its rtcd host has one call less.
    pub fn call_ended(&self, call_id: &str) {
        self.call_nodes.write().remove(call_id);
        if let Some(host) = self.call_hosts.write().remove(call_id) {
            if let Some(p) = self.fleet.pool() {
                p.call_ended(&host);
            }
        }
    }

    /// The rtcd host of a call, if its media runs there.
    pub fn call_host(&self, call_id: &str) -> Option<String> {
        self.call_hosts.read().get(call_id).cloned()
    }

    /// A session leaves: its call's backend lets it go. For a call that is gone, the
    /// integrated SFU forgets the session if it had it (idempotent).
    pub async fn remove_session(&self, call_id: Option<&str>, session_id: &str) {
        let media = match call_id.map(|c| self.for_call(c)) {
            Some(Ok(m)) => m,
            _ => match self.integrated.current() {
                Some(rtc) => Box::new(integrated::IntegratedSfu { rtc }),
                None => return,
            },
        };
        if let Err(e) = media.remove_session(session_id).await {
            tracing::warn!(session_id, error = %e, "media did not take the leave");
        }
    }

    /// A session's signaling now comes to this process (a reconnect here, or a session
    /// recovered at activation): its call's backend is told; a failure is logged.
    pub async fn reconnected(&self, s: &MediaSession) {
        let moved = async { self.for_call(&s.call_id)?.reconnected(s).await };
        if let Err(e) = moved.await {
            tracing::warn!(session_id = s.session_id, error = %e, "media did not take the reconnect");
        }
    }

    /// At activation and after a settings change: new calls go where the settings
    /// say (rtcd connected, or the integrated SFU started); calls in progress stay
    /// where they are.
    pub async fn apply_mode(
        &self,
        on_rtcd: bool,
        cfg: &Config,
        metrics: &Metrics,
    ) -> Result<(), MediaError> {
        if on_rtcd {
            self.fleet.connect(&cfg.RTCDServiceURL).await
        } else {
            self.integrated.ensure(cfg, metrics).await.map(drop)
        }
    }

    /// A call found in the database at activation (tracked with `track_call`): false
    /// when its media is known gone (an rtcd host that no longer has it).
    pub async fn recover_call(&self, call_id: &str, host: &str) -> bool {
        if host.is_empty() {
            return true;
        }
        let Some(pool) = self.fleet.pool() else {
            tracing::warn!(call_id, host, "rtcd call found but rtcd mode is off");
            return false;
        };
        match pool.call_alive(host, call_id).await {
            Some(false) => {
                tracing::info!(call_id, host, "rtcd no longer has this call");
                false
            }
            _ => true,
        }
    }

    /// The version of the rtcd fleet, when connected.
    pub fn rtcd_version(&self) -> Option<String> {
        self.fleet.pool().and_then(|p| p.version())
    }

    /// Deactivation: the rtcd clients close (their calls go on for the next
    /// activation); the integrated SFU ends with the process.
    pub fn close(&self) {
        self.fleet.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calls_wire::rtcd::{rtc_type, RtcMessage};

    fn events() -> (
        mpsc::UnboundedSender<Note>,
        mpsc::UnboundedSender<(String, Envelope)>,
        MediaEvents,
    ) {
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let (rtcd_tx, rtcd) = mpsc::unbounded_channel();
        (notes_tx, rtcd_tx, MediaEvents { notes, rtcd })
    }

    fn rtc(session: &str, t: i64, data: Option<&str>) -> RtcMessage {
        RtcMessage {
            session_id: session.into(),
            msg_type: t,
            data: data.map(|d| d.as_bytes().to_vec()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn both_backends_report_through_one_stream() {
        let (notes, rtcd, mut events) = events();
        notes
            .send(Note::Offer {
                session_id: "a".into(),
                json: "{}".into(),
            })
            .unwrap();
        assert_eq!(
            events.recv().await,
            Some(MediaEvent::Signal {
                session_id: "a".into(),
                json: "{}".into()
            })
        );
        let host = "10.0.0.1".to_string();
        rtcd.send((
            host.clone(),
            Envelope::Vad(rtc("b", rtc_type::VOICE_ON, None)),
        ))
        .unwrap();
        assert_eq!(
            events.recv().await,
            Some(MediaEvent::Voice {
                session_id: "b".into(),
                on: true
            })
        );
        rtcd.send((
            host.clone(),
            Envelope::Close {
                session_id: "b".into(),
            },
        ))
        .unwrap();
        assert_eq!(
            events.recv().await,
            Some(MediaEvent::Closed {
                session_id: "b".into()
            })
        );
        notes
            .send(Note::Closed {
                session_id: "a".into(),
            })
            .unwrap();
        assert_eq!(
            events.recv().await,
            Some(MediaEvent::Closed {
                session_id: "a".into()
            })
        );
    }

    #[tokio::test]
    async fn what_needs_no_action_is_skipped_and_the_stream_ends_with_its_backends() {
        let (notes, rtcd, mut events) = events();
        let host = "10.0.0.1".to_string();
        // An rtc message without text data, and a hello: nothing to act on.
        rtcd.send((host.clone(), Envelope::Rtc(rtc("a", rtc_type::SDP, None))))
            .unwrap();
        rtcd.send((
            host.clone(),
            Envelope::Hello {
                client_id: "c".into(),
                conn_id: "c".into(),
            },
        ))
        .unwrap();
        rtcd.send((host, Envelope::Rtc(rtc("a", rtc_type::SDP, Some("answer")))))
            .unwrap();
        assert_eq!(
            events.recv().await,
            Some(MediaEvent::Signal {
                session_id: "a".into(),
                json: "answer".into()
            })
        );
        drop((notes, rtcd));
        assert_eq!(events.recv().await, None);
    }
}
