//! The SFU core, sans-IO (str0m): one `Rtc` per participant, media forwarded to the
//! other participants of the same call and nobody else. Time is a parameter: the core
//! is driven by `now`, so tests run in simulated time without sockets. The I/O shell
//! (UDP/TCP on the RTC port) feeds datagrams in and sends `Output::Transmit` out.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output as RtcOutput, Rtc};

pub mod shell;
#[doc(hidden)]
pub mod sim;

#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("unknown session {0}")]
    UnknownSession(String),
    #[error("session {0} already exists")]
    DuplicateSession(String),
    #[error("invalid sdp: {0}")]
    Sdp(String),
    #[error("invalid ice candidate: {0}")]
    Candidate(String),
    #[error("an offer is already in flight for this session")]
    Glare,
    #[error("no offer is pending for this session")]
    NoPendingOffer,
    #[error("rtc: {0}")]
    Rtc(#[from] str0m::RtcError),
}

/// What the SFU asks its shell to do.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram (UDP) or frame (TCP) from `source` to `destination`.
    Transmit {
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    /// A server-initiated offer for the client, as a browser `RTCSessionDescription`
    /// JSON string (`{"type":"offer","sdp":...}`).
    Offer { session_id: String, json: String },
    /// The peer connection of this session failed or closed.
    Closed { session_id: String },
}

/// Kinds of forwarded tracks, as the client's track-id prefixes name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackType {
    Voice,
    Screen,
    ScreenAudio,
    Video,
}

impl TrackType {
    pub fn prefix(self) -> &'static str {
        match self {
            TrackType::Voice => "voice",
            TrackType::Screen => "screen",
            TrackType::ScreenAudio => "screen-audio",
            TrackType::Video => "video",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Local candidates offered to every participant (the shared RTC port(s)).
    pub host_candidates: Vec<(SocketAddr, Protocol)>,
}

struct Inbound {
    kind: MediaKind,
    track: TrackType,
}

/// A forwarded track waiting for a server offer.
struct QueuedTrack {
    source: String,
    source_mid: Mid,
    kind: MediaKind,
    track: TrackType,
}

struct Peer {
    call_id: String,
    rtc: Rtc,
    inbound: BTreeMap<Mid, Inbound>,
    /// (source session, source mid) → our mid that carries it to this peer.
    outbound: HashMap<(String, Mid), Mid>,
    /// Our mid → (source session, source mid), to route keyframe requests back.
    outbound_source: HashMap<Mid, (String, Mid)>,
    queued: Vec<QueuedTrack>,
    pending: Option<SdpPendingOffer>,
    muted: bool,
    screen_stream_id: Option<String>,
    timeout: Option<Instant>,
}

pub struct Sfu {
    config: SfuConfig,
    peers: HashMap<String, Peer>,
    calls: HashMap<String, Vec<String>>,
    /// Remote address → session, learned from accepted datagrams (saves scanning).
    routes: HashMap<SocketAddr, String>,
    /// Sessions with output to drain: they got input, forwarded media or an offer.
    dirty: std::collections::HashSet<String>,
}

/// What one peer's `poll_output` produced that needs the other peers.
// Boxing `MediaData` would cost an allocation per forwarded packet; these values only
// live in one short Vec per poll.
#[allow(clippy::large_enum_variant)]
enum Cross {
    Media(String, str0m::media::MediaData),
    Keyframe(String, Mid, KeyframeRequestKind),
    Added(String, Mid, MediaKind),
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Sfu {
        Sfu {
            config,
            peers: HashMap::new(),
            calls: HashMap::new(),
            routes: HashMap::new(),
            dirty: Default::default(),
        }
    }

    pub fn session_count(&self) -> usize {
        self.peers.len()
    }

    /// Adds a participant to a call. Its own media starts flowing after its offer.
    pub fn add_session(
        &mut self,
        now: Instant,
        call_id: &str,
        session_id: &str,
    ) -> Result<(), SfuError> {
        if self.peers.contains_key(session_id) {
            return Err(SfuError::DuplicateSession(session_id.to_string()));
        }
        let mut rtc = Rtc::builder()
            // The SFU only answers connectivity checks: clients do the ICE work.
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now);
        for (addr, proto) in &self.config.host_candidates {
            let c = match proto {
                Protocol::Udp => Candidate::host(*addr, "udp"),
                _ => Candidate::builder()
                    .tcp()
                    .host(*addr)
                    .tcptype(str0m::net::TcpType::Passive)
                    .build(),
            };
            match c {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::warn!(%addr, error = %e, "unusable host candidate"),
            }
        }
        let mut peer = Peer {
            call_id: call_id.to_string(),
            rtc,
            inbound: BTreeMap::new(),
            outbound: HashMap::new(),
            outbound_source: HashMap::new(),
            queued: Vec::new(),
            pending: None,
            muted: true,
            screen_stream_id: None,
            timeout: None,
        };
        // Everything already published in the call goes to the newcomer.
        let members = self.calls.entry(call_id.to_string()).or_default();
        for other in members.iter() {
            if let Some(p) = self.peers.get(other) {
                for (mid, inb) in &p.inbound {
                    peer.queued.push(QueuedTrack {
                        source: other.clone(),
                        source_mid: *mid,
                        kind: inb.kind,
                        track: inb.track,
                    });
                }
            }
        }
        members.push(session_id.to_string());
        self.peers.insert(session_id.to_string(), peer);
        self.dirty.insert(session_id.to_string());
        Ok(())
    }

    pub fn remove_session(&mut self, session_id: &str) {
        let Some(mut peer) = self.peers.remove(session_id) else {
            return;
        };
        peer.rtc.disconnect();
        self.routes.retain(|_, sid| sid != session_id);
        self.dirty.remove(session_id);
        if let Some(members) = self.calls.get_mut(&peer.call_id) {
            members.retain(|s| s != session_id);
            if members.is_empty() {
                self.calls.remove(&peer.call_id);
            }
        }
        // Forwarded tracks of the leaver are dropped from the others' routing.
        for p in self.peers.values_mut() {
            p.outbound.retain(|(src, _), _| src != session_id);
            p.outbound_source.retain(|_, (src, _)| src != session_id);
            p.queued.retain(|q| q.source != session_id);
        }
    }

    /// The session, marked for draining: every command may produce output.
    fn peer(&mut self, session_id: &str) -> Result<&mut Peer, SfuError> {
        let peer = self
            .peers
            .get_mut(session_id)
            .ok_or_else(|| SfuError::UnknownSession(session_id.to_string()))?;
        self.dirty.insert(session_id.to_string());
        Ok(peer)
    }

    /// A client offer (SDP text); returns our answer's SDP text.
    pub fn handle_offer(&mut self, session_id: &str, sdp: &str) -> Result<String, SfuError> {
        let peer = self.peer(session_id)?;
        if peer.pending.is_some() {
            // We are impolite (as rtcd): the client rolls back and answers ours.
            return Err(SfuError::Glare);
        }
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::Sdp(e.to_string()))?;
        let answer = peer.rtc.sdp_api().accept_offer(offer)?;
        Ok(answer.to_sdp_string())
    }

    /// The client's answer to our last offer.
    pub fn handle_answer(&mut self, session_id: &str, sdp: &str) -> Result<(), SfuError> {
        let peer = self.peer(session_id)?;
        let pending = peer.pending.take().ok_or(SfuError::NoPendingOffer)?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::Sdp(e.to_string()))?;
        peer.rtc.sdp_api().accept_answer(pending, answer)?;
        Ok(())
    }

    /// A trickled client candidate (`candidate:...` line).
    pub fn handle_candidate(&mut self, session_id: &str, candidate: &str) -> Result<(), SfuError> {
        let peer = self.peer(session_id)?;
        let line = candidate.trim().trim_start_matches("a=");
        let c = Candidate::from_sdp_string(line).map_err(|e| SfuError::Candidate(e.to_string()))?;
        peer.rtc.add_remote_candidate(c);
        Ok(())
    }

    pub fn set_muted(&mut self, session_id: &str, muted: bool) -> Result<(), SfuError> {
        self.peer(session_id)?.muted = muted;
        Ok(())
    }

    /// Announces the stream id of the session's screen share (from `screen_on`).
    pub fn set_screen_stream(
        &mut self,
        session_id: &str,
        stream_id: Option<String>,
    ) -> Result<(), SfuError> {
        self.peer(session_id)?.screen_stream_id = stream_id;
        Ok(())
    }

    /// A datagram (or TCP frame) arrived; false when no session claims it.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> bool {
        let Ok(contents) = contents.try_into() else {
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        let known = self
            .routes
            .get(&source)
            .filter(|sid| self.peers.get(*sid).is_some_and(|p| p.rtc.accepts(&input)))
            .cloned();
        // Unknown source (first STUN check, or a new path): ask every peer once.
        let sid = known.or_else(|| {
            self.peers
                .iter()
                .find(|(_, p)| p.rtc.accepts(&input))
                .map(|(sid, _)| sid.clone())
        });
        let Some(sid) = sid else {
            return false;
        };
        let Some(peer) = self.peers.get_mut(&sid) else {
            return false;
        };
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::warn!(session_id = sid, error = %e, "rtc input failed");
        }
        self.routes.insert(source, sid.clone());
        self.dirty.insert(sid);
        true
    }

    /// Drives every session up to `now`; returns when to call again at the latest.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Output>) -> Instant {
        for (sid, peer) in self.peers.iter_mut() {
            if peer.timeout.is_none_or(|t| t <= now) {
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    tracing::warn!(session_id = sid, error = %e, "rtc timeout failed");
                }
                peer.timeout = None;
                self.dirty.insert(sid.clone());
            }
        }
        let mut closed = Vec::new();
        // Forwarding makes subscribers dirty, which may produce more events: repeat
        // until quiet (bounded, the rest waits for the next poll).
        for _ in 0..4 {
            if self.dirty.is_empty() {
                break;
            }
            let mut cross = Vec::new();
            for sid in std::mem::take(&mut self.dirty) {
                if let Some(peer) = self.peers.get_mut(&sid) {
                    drain(&sid, peer, out, &mut cross, &mut closed);
                }
            }
            self.route(cross);
            self.send_offers(out);
        }
        for sid in closed {
            out.push(Output::Closed {
                session_id: sid.clone(),
            });
            self.remove_session(&sid);
        }
        let mut next = now + std::time::Duration::from_millis(100);
        for peer in self.peers.values() {
            if let Some(t) = peer.timeout {
                next = next.min(t);
            }
        }
        next.max(now)
    }

    fn route(&mut self, cross: Vec<Cross>) {
        for c in cross {
            match c {
                Cross::Added(src, mid, kind) => {
                    let Some(peer) = self.peers.get_mut(&src) else {
                        continue;
                    };
                    let track = match kind {
                        MediaKind::Audio => TrackType::Voice,
                        MediaKind::Video => TrackType::Screen,
                    };
                    peer.inbound.insert(mid, Inbound { kind, track });
                    let call = peer.call_id.clone();
                    for other in self.calls.get(&call).into_iter().flatten() {
                        if *other == src {
                            continue;
                        }
                        if let Some(p) = self.peers.get_mut(other) {
                            p.queued.push(QueuedTrack {
                                source: src.clone(),
                                source_mid: mid,
                                kind,
                                track,
                            });
                        }
                    }
                }
                Cross::Media(src, data) => {
                    let Some(sender) = self.peers.get(&src) else {
                        continue;
                    };
                    let is_voice = sender
                        .inbound
                        .get(&data.mid)
                        .is_some_and(|i| i.track == TrackType::Voice);
                    if is_voice && sender.muted {
                        continue;
                    }
                    let call = sender.call_id.clone();
                    for other in self.calls.get(&call).into_iter().flatten() {
                        if *other == src {
                            continue;
                        }
                        let Some(p) = self.peers.get_mut(other) else {
                            continue;
                        };
                        let Some(&local) = p.outbound.get(&(src.clone(), data.mid)) else {
                            continue;
                        };
                        let Some(w) = p.rtc.writer(local) else {
                            continue;
                        };
                        let Some(pt) = w.match_params(data.params) else {
                            continue;
                        };
                        if let Err(e) = w.write(pt, data.network_time, data.time, data.data.clone())
                        {
                            tracing::debug!(session_id = other, error = %e, "forward write failed");
                        }
                    }
                }
                Cross::Keyframe(dst, local, kind) => {
                    let Some(p) = self.peers.get(&dst) else {
                        continue;
                    };
                    let Some((src, src_mid)) = p.outbound_source.get(&local).cloned() else {
                        continue;
                    };
                    if let Some(s) = self.peers.get_mut(&src) {
                        if let Some(mut w) = s.rtc.writer(src_mid) {
                            let _ = w.request_keyframe(None, kind);
                        }
                        self.dirty.insert(src.clone());
                    }
                }
            }
        }
    }

    /// One server offer at a time per session, for the tracks queued for it.
    fn send_offers(&mut self, out: &mut Vec<Output>) {
        for (sid, peer) in self.peers.iter_mut() {
            if peer.pending.is_some() || peer.queued.is_empty() || !peer.rtc.is_connected() {
                continue;
            }
            let mut api = peer.rtc.sdp_api();
            let mut added = Vec::new();
            for q in peer.queued.drain(..) {
                let track_id = format!("{}_{}_{}", q.track.prefix(), q.source, random_suffix());
                let mid = api.add_media(
                    q.kind,
                    Direction::SendOnly,
                    Some(q.source.clone()),
                    Some(track_id),
                    None,
                );
                added.push((mid, q.source, q.source_mid));
            }
            let Some((offer, pending)) = api.apply() else {
                continue;
            };
            for (mid, src, src_mid) in added {
                peer.outbound.insert((src.clone(), src_mid), mid);
                peer.outbound_source.insert(mid, (src, src_mid));
            }
            peer.pending = Some(pending);
            self.dirty.insert(sid.clone());
            let json =
                serde_json::json!({"type": "offer", "sdp": offer.to_sdp_string()}).to_string();
            out.push(Output::Offer {
                session_id: sid.clone(),
                json,
            });
        }
    }
}

fn drain(
    sid: &str,
    peer: &mut Peer,
    out: &mut Vec<Output>,
    cross: &mut Vec<Cross>,
    closed: &mut Vec<String>,
) {
    loop {
        match peer.rtc.poll_output() {
            Ok(RtcOutput::Timeout(t)) => {
                peer.timeout = Some(t);
                return;
            }
            Ok(RtcOutput::Transmit(t)) => out.push(Output::Transmit {
                proto: t.proto,
                source: t.source,
                destination: t.destination,
                contents: t.contents.to_vec(),
            }),
            Ok(RtcOutput::Event(e)) => match e {
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    closed.push(sid.to_string());
                }
                Event::MediaAdded(m)
                    if matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) =>
                {
                    cross.push(Cross::Added(sid.to_string(), m.mid, m.kind));
                }
                Event::MediaData(d) => cross.push(Cross::Media(sid.to_string(), d)),
                Event::KeyframeRequest(r) => {
                    cross.push(Cross::Keyframe(sid.to_string(), r.mid, r.kind))
                }
                _ => {}
            },
            Err(e) => {
                tracing::warn!(session_id = sid, error = %e, "rtc failed");
                closed.push(sid.to_string());
                return;
            }
        }
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut r = rand::rng();
    (0..8)
        .map(|_| ALPHA[r.random_range(0..ALPHA.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests;
