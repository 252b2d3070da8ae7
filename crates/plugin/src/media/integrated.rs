//! The integrated SFU: one RTC server in this process, started when a call first
//! needs it (not in rtcd mode), and started again if its thread died.

use calls_rtc::shell::{Command, Note, RtcServer};
use calls_sfu::datachannel::SessionDescription;
use tokio::sync::mpsc::UnboundedSender;

use super::backend::{CallMedia, JoinOptions, MediaError, MediaEvent, MediaSession, StreamKind};
use crate::client_message::{ClientIce, ClientSdp};
use crate::config::Config;
use crate::metrics::Metrics;

pub(super) struct Integrated {
    rtc: parking_lot::RwLock<Option<RtcServer>>,
    /// One start at a time.
    start: tokio::sync::Mutex<()>,
    /// Where every server started here reports.
    notes: UnboundedSender<Note>,
}

impl Integrated {
    pub(super) fn new(notes: UnboundedSender<Note>) -> Integrated {
        Integrated {
            rtc: Default::default(),
            start: Default::default(),
            notes,
        }
    }

    /// The server, alive or not.
    pub(super) fn current(&self) -> Option<RtcServer> {
        self.rtc.read().clone()
    }

    /// The server, if its thread is alive.
    pub(super) fn running(&self) -> Option<RtcServer> {
        self.current().filter(RtcServer::is_alive)
    }

    /// Starts the server if it is not running (a call needs it).
    pub(super) async fn ensure(
        &self,
        cfg: &Config,
        metrics: &Metrics,
    ) -> Result<RtcServer, MediaError> {
        let _one = self.start.lock().await;
        let replacing = match self.current() {
            Some(rtc) if rtc.is_alive() => return Ok(rtc),
            Some(_) => {
                // Its thread died (and closed its sessions): a new server for this call.
                tracing::warn!("the integrated SFU is gone: starting a new one");
                true
            }
            None => false,
        };
        let mut tries = 0;
        let rtc = loop {
            match start(cfg, metrics, self.notes.clone()).await {
                Ok(r) => break r,
                // The dead server's ICE-TCP listener lets go of the port a moment after
                // its loop is gone.
                Err(_) if replacing && tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        *self.rtc.write() = Some(rtc.clone());
        Ok(rtc)
    }
}

/// The server on `UDPServerAddress:UDPServerPort`, advertising the ICE host override
/// (resolved if a hostname) or the host's address.
async fn start(
    cfg: &Config,
    metrics: &Metrics,
    notes: UnboundedSender<Note>,
) -> Result<RtcServer, MediaError> {
    let port_overrides: Vec<(Option<std::net::IpAddr>, u16)> = cfg
        .ICEHostPortOverride
        .filter(|p| *p > 0)
        .map(|p| (None, p as u16))
        .into_iter()
        .collect();
    let mut settings = calls_rtc::addrs::AddrSettings {
        udp_ip: cfg.UDPServerAddress.parse().ok(),
        udp_port: cfg.UDPServerPort as u16,
        tcp: Some((cfg.TCPServerAddress.parse().ok(), cfg.TCPServerPort as u16)),
        host_override: &cfg.ICEHostOverride,
        port_overrides: &port_overrides,
        ice_server_urls: cfg
            .ICEServersConfigs
            .iter()
            .map(|s| s.urls.as_slice())
            .collect(),
    };
    let addrs = match calls_rtc::addrs::resolve(&settings).await {
        Ok(a) => a,
        Err(e) => {
            // A plugin whose override does not resolve still serves calls,
            // advertising its own address.
            tracing::error!(error = %e, "ICEHostOverride ignored");
            settings.host_override = "";
            settings.ice_server_urls.clear();
            calls_rtc::addrs::resolve(&settings)
                .await
                .map_err(|e| MediaError::Start {
                    addr: cfg.UDPServerAddress.clone(),
                    source: std::io::Error::other(e),
                })?
        }
    };
    let bind = addrs.udp;
    RtcServer::start(addrs, Box::new(metrics.rtc.clone()), notes)
        .await
        .map_err(|source| MediaError::Start {
            addr: bind.to_string(),
            source,
        })
}

/// What the server reports, as a media event.
pub(super) fn event(n: Note) -> MediaEvent {
    match n {
        Note::Offer { session_id, json } => MediaEvent::Signal { session_id, json },
        Note::Voice { session_id, on } => MediaEvent::Voice { session_id, on },
        Note::Closed { session_id } => MediaEvent::Closed { session_id },
    }
}

/// A call on the integrated SFU.
pub(super) struct IntegratedSfu {
    pub(super) rtc: RtcServer,
}

#[async_trait::async_trait]
impl CallMedia for IntegratedSfu {
    async fn add_session(&self, s: &MediaSession, opts: JoinOptions) -> Result<(), MediaError> {
        self.rtc.send(Command::AddSession {
            group: calls_sfu::DEFAULT_GROUP.to_string(),
            call_id: s.call_id.clone(),
            session_id: s.session_id.clone(),
            dc_signaling: opts.dc_signaling,
            av1: opts.av1,
        });
        Ok(())
    }

    async fn reconnected(&self, _: &MediaSession) -> Result<(), MediaError> {
        // Its signaling goes wherever the session's connection is now.
        Ok(())
    }

    async fn remove_session(&self, session_id: &str) -> Result<(), MediaError> {
        self.rtc.send(Command::RemoveSession {
            session_id: session_id.to_string(),
        });
        Ok(())
    }

    async fn sdp(&self, s: &MediaSession, sdp: ClientSdp) -> Result<Option<String>, MediaError> {
        let session_id = s.session_id.clone();
        if sdp.desc.kind == "offer" {
            let answer = self.rtc.offer(&session_id, sdp.desc.sdp).await?;
            return Ok(Some(SessionDescription::answer(answer).to_json()));
        }
        self.rtc.send(Command::Answer {
            session_id,
            sdp: sdp.desc.sdp,
        });
        Ok(None)
    }

    async fn candidate(&self, s: &MediaSession, ice: ClientIce) -> Result<(), MediaError> {
        self.rtc.send(Command::Candidate {
            session_id: s.session_id.clone(),
            candidate: ice.candidate,
        });
        Ok(())
    }

    async fn set_muted(&self, s: &MediaSession, muted: bool) -> Result<(), MediaError> {
        self.rtc.send(Command::Mute {
            session_id: s.session_id.clone(),
            muted,
        });
        Ok(())
    }

    async fn set_stream(
        &self,
        s: &MediaSession,
        kind: StreamKind,
        stream_id: Option<String>,
    ) -> Result<(), MediaError> {
        let session_id = s.session_id.clone();
        self.rtc.send(match kind {
            StreamKind::Video => Command::VideoStream {
                session_id,
                stream_id,
            },
            StreamKind::Screen => Command::ScreenStream {
                session_id,
                stream_id,
            },
        });
        Ok(())
    }
}
