//! The SFU core, sans-IO (str0m): one `Rtc` per participant, media forwarded to the
//! other participants of the same call and nobody else. Time is a parameter: the core
//! is driven by `now`, so tests run in simulated time without sockets. The I/O shell
//! (UDP/TCP on the RTC port) feeds datagrams in and sends `Output::Transmit` out.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Rtc};

pub mod crypto;
pub mod datachannel;
mod egress;
pub mod observe;
mod peer;
mod peers;
pub mod shell;
#[doc(hidden)]
pub mod sim;
mod simulcast;
pub mod stun_discovery;
pub mod tcp;
mod vad;

use datachannel::{DcMessage, SessionDescription};
use egress::DatagramPool;
use observe::{NoObserver, RtcObserver, DIR_IN, DIR_OUT};
use peer::{
    Cross, Fan, FanOut, HeldOffer, Inbound, OutTrack, Peer, PeerReport, PendingOffer, QueuedTrack,
};
use peers::{Peers, Slot};
use simulcast::Layering;

/// A session id inside the core: cloned on every forwarded packet, so shared.
pub(crate) type Sid = Arc<str>;
/// The core's maps are keyed by our own ids and addresses (no hash flooding from
/// clients' choices), hashed on every packet: a fast hasher instead of SipHash.
pub(crate) type FastMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;
type FastSet<K> = HashSet<K, rustc_hash::FxBuildHasher>;

/// The group of sessions started by the plugin itself (rtcd: the client id).
pub const DEFAULT_GROUP: &str = "default";

/// What the join said about a session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Metrics group: the rtcd client id, "default" in the plugin.
    pub group: String,
    /// `dcSignaling`: our SDP goes over the data channel once it is open.
    pub dc_signaling: bool,
    /// `av1Support` (with AV1 enabled): receives the AV1 copy of a screen.
    pub av1: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            group: DEFAULT_GROUP.to_string(),
            dc_signaling: false,
            av1: false,
        }
    }
}

/// Which copy of a screen a receiver gets (as rtcd): the AV1 one when sender and
/// receiver both support AV1 (the sender then sends both), else the VP8 one.
fn receives(codec: Codec, sender_av1: bool, receiver_av1: bool) -> bool {
    match codec {
        Codec::Av1 => sender_av1 && receiver_av1,
        Codec::Vp8 => !(sender_av1 && receiver_av1),
        _ => true,
    }
}

/// The MIME type upstream labels track gauges with.
fn mime(codec: Codec) -> &'static str {
    match codec {
        Codec::Opus => "audio/opus",
        Codec::Vp8 => "video/VP8",
        Codec::Av1 => "video/AV1",
        _ => "unknown",
    }
}
/// How often the sessions that may time out or fall silent are checked: those still
/// connecting, with an offer out, or talking.
const HOUSEKEEPING: Duration = Duration::from_millis(50);
/// How long a websocket offer waits at most for the acknowledgement of the MediaMap
/// before it (released by housekeeping, so up to one `HOUSEKEEPING` later): above a
/// delayed SACK (200 ms in RFC 4960), below what a user notices, far below
/// `offer_timeout`.
const OFFER_HOLD: Duration = Duration::from_millis(400);
/// Statistics timers and housekeeping fire on this grid, so that those of many
/// sessions share one wake-up of the shell instead of one each (500 idle sessions:
/// 500 statistics timers a second). A timer that comes due while its session has
/// traffic is handled with that traffic. While the core is quiet the socket is read
/// on it too, so it is the idle wake-up rate: 25 ms gave 38.6 µs CPU/s per idle
/// participant in `make bench` (d), 50 ms 30.7, at ~25 ms more for a join's ICE and
/// DTLS on an idle SFU.
const TIMER_GRID: Duration = Duration::from_millis(50);
/// With no media received for this long the core is quiet: what still comes in is
/// consent checks, reports and data channel messages, none of which needs an answer
/// within a timer grid step (see `Sfu::quiet_tick`).
const QUIET_AFTER: Duration = Duration::from_secs(1);
/// One forwarded write in this many is timed for the write-time histogram.
const WRITE_SAMPLE: u32 = 64;

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
    #[error("session {0} failed and is closed")]
    Panicked(String),
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
    /// JSON string (`{"type":"offer","sdp":...}`), for the websocket `signal` path.
    Offer { session_id: String, json: String },
    /// The session started or stopped talking (voice activity).
    Voice { session_id: String, on: bool },
    /// The peer connection of this session failed, closed or never came up.
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
    /// The four types, in `index` order.
    pub const PREFIXES: [&'static str; 4] = ["voice", "screen", "screen-audio", "video"];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The write-time histogram's type (camera video is recorded as screen).
    pub fn write_kind(self) -> &'static str {
        match self {
            TrackType::Video => "screen",
            t => t.prefix(),
        }
    }

    pub fn is_audio(self) -> bool {
        matches!(self, TrackType::Voice | TrackType::ScreenAudio)
    }

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
    /// A peer connection not up (ICE + DTLS) by then is closed.
    pub connect_timeout: Duration,
    /// A server offer not answered by then is withdrawn and retried.
    pub offer_timeout: Duration,
}

impl SfuConfig {
    pub fn new(host_candidates: Vec<(SocketAddr, Protocol)>) -> SfuConfig {
        SfuConfig {
            host_candidates,
            connect_timeout: Duration::from_secs(30),
            offer_timeout: Duration::from_secs(10),
        }
    }
}

pub struct Sfu {
    config: SfuConfig,
    peers: Peers,
    /// Bumped whenever a subscription may have changed (a track offered, ended or
    /// withdrawn, a session gone): a publisher's fan-out list built at another epoch
    /// is rebuilt before it is used (`Sfu::fan_out`).
    fan_epoch: u64,
    /// Buffers of sent datagrams, for the next sealed voice packets (`recycle`).
    datagrams: DatagramPool,
    calls: FastMap<String, Vec<Sid>>,
    /// Remote address → session's slot, learned from accepted datagrams (saves
    /// scanning). Slots, not ids: a datagram in hashes no session id. A removed
    /// session's routes go with it, before its slot can be given to another.
    routes: FastMap<SocketAddr, Slot>,
    /// Sessions (by slot) with output to drain: they got input, forwarded media or an
    /// offer. The flag: whether anything but forwarded audio happened to the session
    /// since its last drain (`Peer::drain`: only then must it poll str0m to the end).
    /// A removed session's entry goes with it.
    dirty: FastMap<Slot, bool>,
    /// Sessions with tracks queued or ended, waiting for a server offer (so offers
    /// are not looked for in every session at every poll).
    offer_wanted: FastSet<Sid>,
    /// Where the grid of coalesced timers starts (the first time the core saw).
    epoch: Option<Instant>,
    /// Voice activity changes to report at the next poll.
    voice: Vec<(Sid, bool)>,
    observer: Box<dyn RtcObserver>,
    /// Sessions by their next str0m timeout (at most one live entry per session).
    timers: TimerHeap,
    /// Sessions housekeeping looks at: still connecting, an offer out, or talking.
    /// A connected, quiet session without an offer costs nothing between its timers.
    watched: FastSet<Sid>,
    /// Set while `watched` is not empty.
    next_housekeeping: Option<Instant>,
    next_flush: Option<Instant>,
    writes: u32,
    /// When an RTP packet last came in from a publisher (see `quiet_tick`).
    last_media: Option<Instant>,
    /// Sessions whose str0m work panicked: closed at the next poll (see `guarded`).
    poisoned: Vec<Sid>,
}

/// Parses a client's SDP offer (or answer) as a session would, without a session:
/// the entry point of the SDP fuzz target.
pub fn parse_client_sdp(sdp: &str, offer: bool) -> Result<(), SfuError> {
    let parsed = if offer {
        str0m::change::SdpOffer::from_sdp_string(sdp).map(drop)
    } else {
        str0m::change::SdpAnswer::from_sdp_string(sdp).map(drop)
    };
    parsed.map_err(|e| peer::sdp_error(sdp, e))
}

/// Runs one session's str0m work. A panic inside (str0m's or ours) is caught here and
/// costs that session only: its `Rtc` may be half-updated, so it is never touched
/// again and the session is closed with the usual events, while every other session
/// goes on (str0m's advice for SFUs: one `Rtc` per participant, dropped on panic).
fn guarded<R>(sid: &str, f: impl FnOnce() -> R) -> Option<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(
                session_id = sid,
                panic = what,
                "session panicked: closing it"
            );
            None
        }
    }
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Sfu {
        Sfu::with_observer(config, Box::new(NoObserver))
    }

    pub fn with_observer(config: SfuConfig, observer: Box<dyn RtcObserver>) -> Sfu {
        Sfu {
            config,
            peers: Peers::default(),
            fan_epoch: 0,
            datagrams: DatagramPool::default(),
            calls: FastMap::default(),
            routes: FastMap::default(),
            dirty: FastMap::default(),
            offer_wanted: FastSet::default(),
            epoch: None,
            voice: Vec::new(),
            observer,
            timers: TimerHeap::default(),
            watched: FastSet::default(),
            next_housekeeping: None,
            next_flush: None,
            writes: 0,
            last_media: None,
            poisoned: Vec::new(),
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
        self.add_session_with(now, call_id, session_id, SessionOptions::default())
    }

    /// As `add_session`, with what the join announced.
    pub fn add_session_with(
        &mut self,
        now: Instant,
        call_id: &str,
        session_id: &str,
        opts: SessionOptions,
    ) -> Result<(), SfuError> {
        let group = opts.group.as_str();
        if self.peers.contains_key(session_id) {
            return Err(SfuError::DuplicateSession(session_id.to_string()));
        }
        let (mut rtc, keys) = crypto::capturing_keys(|| {
            Rtc::builder()
                // The SFU only answers connectivity checks: clients do the ICE work.
                .set_ice_lite(true)
                .clear_codecs()
                .enable_opus(true, false)
                .enable_vp8(true)
                // Offered by AV1-capable clients as a second copy of the screen.
                .enable_av1(true)
                // Receiver reports drive the simulcast layer choice.
                .set_stats_interval(Some(Duration::from_secs(1)))
                .set_crypto_provider(crypto::provider())
                .build(now)
        });
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
        let mut peer = Box::new(Peer::new(group, call_id, rtc, now));
        peer.keys = Some(keys);
        peer.dc_signaling = opts.dc_signaling;
        peer.av1 = opts.av1;
        self.observer.session(group, 1);
        // Everything already published in the call goes to the newcomer.
        let members = self.calls.entry(call_id.to_string()).or_default();
        for other in members.iter() {
            if let Some(p) = self.peers.get(other) {
                for (mid, inb) in &p.inbound {
                    let Some((track, codec)) = inb.published() else {
                        continue;
                    };
                    if receives(codec, p.av1, peer.av1) {
                        peer.queued.push(QueuedTrack {
                            source: other.clone(),
                            source_mid: *mid,
                            kind: inb.kind,
                            track,
                            codec,
                        });
                    }
                }
            }
        }
        let sid: Sid = session_id.into();
        self.epoch.get_or_insert(now);
        if !peer.queued.is_empty() {
            self.offer_wanted.insert(sid.clone());
        }
        members.push(sid.clone());
        self.watched.insert(sid.clone());
        let slot = self.peers.insert(sid, peer);
        self.dirty.insert(slot, true);
        Ok(())
    }

    pub fn remove_session(&mut self, session_id: &str) {
        self.drop_session(session_id, true);
    }

    /// Removes a session; `disconnect` tells its str0m (never for one that panicked:
    /// its `Rtc` is not to be touched again).
    fn drop_session(&mut self, session_id: &str, disconnect: bool) {
        let Some((slot, sid, mut peer)) = self.peers.remove_entry(session_id) else {
            return;
        };
        // Its slot may go to the next session: no fan-out list may point at it.
        self.fan_epoch += 1;
        if disconnect {
            peer.rtc.disconnect();
        }
        self.observer.session(&peer.group, -1);
        if peer.connected_at.is_some() {
            self.observer.conn_state("closed");
        }
        for (_, codec) in peer.inbound.values().filter_map(|i| i.published()) {
            self.observer.tracks(&peer.group, "in", mime(codec), -1);
        }
        for o in peer.outbound_source.values() {
            self.observer.tracks(&peer.group, "out", mime(o.codec), -1);
        }
        peer.rtp
            .flush(&peer.group, &*self.observer, TrackType::PREFIXES);
        self.routes.retain(|_, s| *s != slot);
        self.dirty.remove(&slot);
        self.offer_wanted.remove(&sid);
        self.watched.remove(&sid);
        if let Some(members) = self.calls.get_mut(&peer.call_id) {
            members.retain(|s| *s != sid);
            if members.is_empty() {
                self.calls.remove(&peer.call_id);
            }
        }
        // The leaver's tracks end for everybody else (a server offer each).
        let mids: Vec<Mid> = peer.inbound.keys().copied().collect();
        for mid in mids {
            self.unpublish(&sid, mid);
        }
    }

    /// The session, marked for draining: every command may produce output.
    fn peer(&mut self, session_id: &str) -> Result<&mut Peer, SfuError> {
        let (slot, peer) = self
            .peers
            .slot_mut(session_id)
            .ok_or_else(|| SfuError::UnknownSession(session_id.to_string()))?;
        self.dirty.insert(slot, true);
        Ok(peer)
    }

    /// A session whose str0m work panicked: removed at once (nothing may route to it,
    /// drain it or offer to it again), its `Closed` goes out with the next poll.
    fn poison(&mut self, session_id: &str) -> SfuError {
        if let Ok(sid) = self.sid(session_id) {
            self.drop_session(session_id, false);
            self.poisoned.push(sid);
        }
        SfuError::Panicked(session_id.to_string())
    }

    /// Makes the session's next str0m input panic (tests of `guarded`).
    #[cfg(test)]
    pub(crate) fn inject_panic(&mut self, session_id: &str) {
        if let Ok(p) = self.peer(session_id) {
            p.panic_on_input = true;
        }
    }

    /// The core's shared id of a session.
    fn sid(&self, session_id: &str) -> Result<Sid, SfuError> {
        self.peers
            .sid(session_id)
            .cloned()
            .ok_or_else(|| SfuError::UnknownSession(session_id.to_string()))
    }

    /// A client offer (SDP text); returns our answer's SDP text.
    pub fn handle_offer(&mut self, session_id: &str, sdp: &str) -> Result<String, SfuError> {
        let peer = self.peer(session_id)?;
        let Some(r) = guarded(session_id, || peer.accept_offer(sdp)) else {
            return Err(self.poison(session_id));
        };
        let peer = self.peer(session_id)?;
        if r.is_err() {
            peer.reports.push(PeerReport::Error("signaling"));
        }
        r
    }

    /// The client's answer to our last offer.
    pub fn handle_answer(&mut self, session_id: &str, sdp: &str) -> Result<(), SfuError> {
        let peer = self.peer(session_id)?;
        let Some(answered) = guarded(session_id, || peer.accept_answer(sdp)) else {
            return Err(self.poison(session_id));
        };
        let peer = self.peer(session_id)?;
        let added = match answered {
            Ok(a) => a,
            Err(e) => {
                peer.reports.push(PeerReport::Error("signaling"));
                return Err(e);
            }
        };
        self.answered(session_id, &added);
        Ok(())
    }

    /// A trickled client candidate (`candidate:...` line).
    pub fn handle_candidate(&mut self, session_id: &str, candidate: &str) -> Result<(), SfuError> {
        let peer = self.peer(session_id)?;
        let line = candidate.trim().trim_start_matches("a=");
        let c = match Candidate::from_sdp_string(line) {
            Ok(c) => c,
            Err(e) => {
                peer.reports.push(PeerReport::Error("ice"));
                return Err(SfuError::Candidate(e.to_string()));
            }
        };
        peer.rtc.add_remote_candidate(c);
        Ok(())
    }

    pub fn set_muted(&mut self, session_id: &str, muted: bool) -> Result<(), SfuError> {
        let peer = self.peer(session_id)?;
        peer.muted = muted;
        if muted {
            let mut ended = false;
            for inb in peer.inbound.values_mut() {
                ended |= inb.vad.reset().is_some();
            }
            if ended {
                self.voice.push((session_id.into(), false));
            }
        }
        Ok(())
    }

    /// Announces the stream id of the session's screen share (`screen_on`), or its
    /// end (`screen_off`: the screen tracks end for every receiver).
    pub fn set_screen_stream(
        &mut self,
        session_id: &str,
        stream_id: Option<String>,
    ) -> Result<(), SfuError> {
        let sid = self.sid(session_id)?;
        let peer = self.peer(session_id)?;
        peer.screen_stream_id = stream_id.clone();
        if stream_id.is_none() {
            let gone: Vec<Mid> = peer
                .inbound
                .iter()
                .filter(|(_, i)| {
                    matches!(i.track, Some(TrackType::Screen | TrackType::ScreenAudio))
                })
                .map(|(m, _)| *m)
                .collect();
            for mid in gone {
                self.drop_inbound(&sid, mid);
            }
        }
        self.reclassify(&sid);
        Ok(())
    }

    /// Announces the stream id of the session's camera (`video_on`).
    pub fn set_video_stream(
        &mut self,
        session_id: &str,
        stream_id: Option<String>,
    ) -> Result<(), SfuError> {
        let sid = self.sid(session_id)?;
        self.peer(session_id)?.video_stream_id = stream_id;
        self.reclassify(&sid);
        Ok(())
    }

    /// Video that arrived before its stream was announced starts being forwarded.
    fn reclassify(&mut self, session_id: &Sid) {
        let Some(peer) = self.peers.get_mut(session_id) else {
            return;
        };
        let mut newly = Vec::new();
        let pending: Vec<(Mid, MediaKind)> = peer
            .inbound
            .iter()
            .filter(|(_, i)| i.track.is_none())
            .map(|(m, i)| (*m, i.kind))
            .collect();
        for (mid, kind) in pending {
            if let (Some(track), _) = peer.classify(mid, kind) {
                if let Some(i) = peer.inbound.get_mut(&mid) {
                    i.track = Some(track);
                }
                newly.push(mid);
            }
        }
        for mid in newly {
            self.publish(session_id, mid);
        }
    }

    /// Offers a publisher's track (once classified and its codec known) to the other
    /// participants of its call that should receive it.
    fn publish(&mut self, src: &Sid, mid: Mid) {
        let Some(sender) = self.peers.get(src) else {
            return;
        };
        let Some(inb) = sender.inbound.get(&mid) else {
            return;
        };
        let Some((track, codec)) = inb.published() else {
            return;
        };
        let (kind, sender_av1, call) = (inb.kind, sender.av1, sender.call_id.clone());
        self.observer.tracks(&sender.group, "in", mime(codec), 1);
        for other in self.calls.get(&call).into_iter().flatten() {
            if other == src {
                continue;
            }
            if let Some(p) = self.peers.get_mut(other) {
                if receives(codec, sender_av1, p.av1) {
                    p.queued.push(QueuedTrack {
                        source: src.clone(),
                        source_mid: mid,
                        kind,
                        track,
                        codec,
                    });
                    self.offer_wanted.insert(other.clone());
                }
            }
        }
    }

    /// A publisher's track is gone (screen off, m-line stopped).
    fn drop_inbound(&mut self, src: &Sid, mid: Mid) {
        self.unpublish(src, mid);
        if let Some(p) = self.peers.get_mut(src) {
            if let Some((_, codec)) = p.inbound.remove(&mid).and_then(|i| i.published()) {
                self.observer.tracks(&p.group, "in", mime(codec), -1);
            }
        }
    }

    /// Ends a publisher's track for every receiver (made inactive in their next offer).
    fn unpublish(&mut self, src: &Sid, mid: Mid) {
        let key = (src.clone(), mid);
        for (sid, p) in self.peers.iter_mut() {
            p.queued
                .retain(|q| !(q.source == *src && q.source_mid == mid));
            if let Some(local) = p.unsubscribe(&key, &mut self.fan_epoch) {
                if let Some(o) = p.outbound_source.remove(&local) {
                    self.observer.tracks(&p.group, "out", mime(o.codec), -1);
                }
                p.removing.push(local);
                self.offer_wanted.insert(sid.clone());
            }
        }
    }

    /// A subscriber answered the offer that added `mids`: what was forwarded to them
    /// before could not reach it (a simulcast layer chosen then starts again, at the
    /// keyframe asked for now).
    fn answered(&mut self, session_id: &str, mids: &[Mid]) {
        if let Some(p) = self.peers.get_mut(session_id) {
            for m in mids {
                if let Some(o) = p.outbound_source.get_mut(m) {
                    o.layers = None;
                }
            }
        }
        self.request_keyframes(session_id, mids);
    }

    /// New subscribers of video need a keyframe to start decoding.
    fn request_keyframes(&mut self, session_id: &str, mids: &[Mid]) {
        let Some(p) = self.peers.get(session_id) else {
            return;
        };
        let sources: Vec<(Sid, Mid)> = mids
            .iter()
            .filter_map(|m| p.outbound_source.get(m))
            .filter(|o| matches!(o.track, TrackType::Screen | TrackType::Video))
            .map(|o| (o.source.clone(), o.source_mid))
            .collect();
        for (src, src_mid) in sources {
            if let Some((slot, s)) = self.peers.slot_mut(&src) {
                if let Some(mut w) = s.rtc.writer(src_mid) {
                    let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
                }
                self.dirty.insert(slot, true);
            }
        }
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
        let media = peer::is_rtp(contents);
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
            .copied()
            .filter(|&slot| self.peers.at(slot).is_some_and(|p| p.rtc.accepts(&input)));
        // Unknown source (first STUN check, or a new path): ask every peer once.
        let Some(slot) = known.or_else(|| self.peers.find_slot(|p| p.rtc.accepts(&input))) else {
            return false;
        };
        let Some((sid, peer)) = self.peers.entry_at_mut(slot) else {
            return false;
        };
        match guarded(sid, || peer.handle_input(input)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::warn!(session_id = %sid, error = %e, "rtc input failed");
                self.observer.error(&peer.group, "ice");
            }
            None => {
                let sid = sid.clone();
                self.poison(&sid);
                return true;
            }
        }
        if known.is_none() {
            self.routes.insert(source, slot);
        }
        if media {
            self.last_media = Some(now);
        }
        if media && peer.audio_only_publisher() {
            // Audio in alone does not stir the session (see `Peer::drain`).
            peer.audio_in += 1;
            self.dirty.entry(slot).or_insert(false);
        } else {
            self.dirty.insert(slot, true);
        }
        true
    }

    /// The buffer of a datagram that was sent (`Output::Transmit`'s contents): the
    /// core builds its next sealed voice packets in such buffers instead of new ones.
    pub fn recycle(&mut self, datagram: Vec<u8>) {
        self.datagrams.give(datagram);
    }

    /// While no media comes in, the next point of the timer grid: the shell may then
    /// read the socket at grid points only instead of waking for every datagram, so
    /// that the consent checks of hundreds of idle participants (one each every 2.5
    /// to 5 s) share wake-ups with each other and with the grid's timers. None while
    /// media flows (every datagram is handled as it comes) and before the grid
    /// exists.
    pub fn quiet_tick(&self, now: Instant) -> Option<Instant> {
        let epoch = self.epoch?;
        if self.last_media.is_some_and(|t| now < t + QUIET_AFTER) {
            return None;
        }
        Some(on_grid(now + Duration::from_nanos(1), epoch))
    }

    /// Drives the sessions up to `now`: those with input or a due timer, plus a walk
    /// over the watched ones every `HOUSEKEEPING`; returns when to call again at the
    /// latest.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Output>) -> Instant {
        let mut closed = std::mem::take(&mut self.poisoned);
        self.fire_timers(now);
        if self.next_housekeeping.is_some_and(|t| now >= t) {
            self.next_housekeeping = None;
            self.housekeeping(now, &mut closed);
        }
        // Forwarding makes subscribers dirty, which may produce more events: repeat
        // until quiet (bounded, the rest waits for the next poll).
        for _ in 0..4 {
            if self.dirty.is_empty() {
                break;
            }
            let mut cross = Vec::new();
            let mut panicked = Vec::new();
            let mut again = Vec::new();
            for (slot, stirred) in std::mem::take(&mut self.dirty) {
                let Some((sid, peer)) = self.peers.entry_at_mut(slot) else {
                    continue;
                };
                let Some(open) = guarded(sid, || peer.drain(sid, now, stirred, out, &mut cross))
                else {
                    panicked.push(sid.clone());
                    continue;
                };
                if release_offer(sid, peer, now, out) {
                    again.push(slot);
                }
                peer.report(now, &*self.observer);
                schedule(&mut self.timers, peer, sid, self.epoch);
                if !open {
                    closed.push(sid.clone());
                }
            }
            // Gone before anything is routed to them.
            for sid in panicked {
                self.drop_session(&sid, false);
                closed.push(sid);
            }
            for slot in again {
                self.dirty.insert(slot, true);
            }
            self.route(now, cross, out);
            self.send_offers(now, out);
        }
        for (session_id, on) in self.voice.drain(..) {
            out.push(Output::Voice {
                session_id: session_id.to_string(),
                on,
            });
        }
        if self.next_flush.is_none_or(|t| now >= t) {
            self.next_flush = Some(now + Duration::from_secs(1));
            for p in self.peers.values_mut() {
                p.rtp.flush(&p.group, &*self.observer, TrackType::PREFIXES);
            }
        }
        closed.sort();
        closed.dedup();
        for sid in closed {
            out.push(Output::Closed {
                session_id: sid.to_string(),
            });
            self.remove_session(&sid);
        }
        if self.watched.is_empty() {
            self.next_housekeeping = None;
        } else if self.next_housekeeping.is_none() {
            let epoch = *self.epoch.get_or_insert(now);
            self.next_housekeeping = Some(on_grid(now + HOUSEKEEPING, epoch));
        }
        // Statistics are flushed once a second, with whatever poll comes then; an
        // otherwise idle core wakes up for them no more often than that.
        let mut next = self
            .next_housekeeping
            .unwrap_or(now + Duration::from_secs(1));
        if let Some(t) = self.timers.first() {
            next = next.min(t);
        }
        if !self.dirty.is_empty() {
            next = now;
        }
        next.max(now)
    }

    /// Hands the clock to the sessions whose str0m timeout is due (timer heap, so the
    /// cost follows the due timers, not the number of sessions).
    fn fire_timers(&mut self, now: Instant) {
        while let Some((t, sid)) = self.timers.pop_due(now) {
            let Some((slot, peer)) = self.peers.slot_mut(&sid) else {
                continue;
            };
            if peer.scheduled != Some(t) {
                continue;
            }
            peer.scheduled = None;
            match peer.timeout {
                Some(due) if due <= now => {
                    peer.handle_timeout(&sid, now);
                    peer.timeout = None;
                    self.dirty.insert(slot, true);
                }
                Some(_) => schedule(&mut self.timers, peer, &sid, self.epoch),
                None => {}
            }
        }
    }

    /// What is checked on the watched sessions, but not on every packet: connect and
    /// offer timeouts, silence after speech. A session leaves the watch once connected,
    /// without an offer out and quiet (a connection lost later ends with str0m's
    /// `Disconnected` event, an offer or speech puts it back).
    fn housekeeping(&mut self, now: Instant, closed: &mut Vec<Sid>) {
        let peers = &mut self.peers;
        self.watched.retain(|sid| {
            let Some((slot, peer)) = peers.slot_mut(sid) else {
                return false;
            };
            let connected = peer.rtc.is_connected();
            if !connected && now >= peer.created + self.config.connect_timeout {
                tracing::warn!(
                    session_id = %sid,
                    "peer connection not established in time (ICE/DTLS), closing it"
                );
                self.observer.conn_state("failed");
                closed.push(sid.clone());
            }
            if peer
                .pending
                .as_ref()
                .is_some_and(|p| now >= p.since + self.config.offer_timeout)
            {
                tracing::warn!(session_id = %sid, "server offer not answered, retrying");
                withdraw_offer(peer, &mut self.fan_epoch);
                self.offer_wanted.insert(sid.clone());
                self.dirty.insert(slot, true);
            }
            // A held offer whose wait is over is released by the drain.
            if peer
                .pending
                .as_ref()
                .is_some_and(|p| p.held.is_some() && now >= p.since + OFFER_HOLD)
            {
                self.dirty.insert(slot, true);
            }
            let mut talking = false;
            for inb in peer.inbound.values_mut() {
                if let Some(on) = inb.vad.tick(now) {
                    self.voice.push((sid.clone(), on));
                }
                talking |= inb.vad.speaking();
            }
            !connected || peer.pending.is_some() || talking
        });
    }

    fn route(&mut self, now: Instant, cross: Vec<Cross>, out: &mut Vec<Output>) {
        for c in cross {
            match c {
                Cross::Added(src, mid, kind) => {
                    let Some(peer) = self.peers.get_mut(&src) else {
                        continue;
                    };
                    let (track, stream_id) = peer.classify(mid, kind);
                    let rids: std::sync::Arc<[str0m::media::Rid]> =
                        match peer.rtc.media(mid).map(|m| m.rids_rx()) {
                            Some(str0m::media::Rids::Specific(v)) => v.clone().into(),
                            _ => Vec::new().into(),
                        };
                    if track.is_none() {
                        tracing::debug!(session_id = %src, %mid, stream_id, "video of an unannounced stream held back");
                    }
                    peer.inbound.insert(
                        mid,
                        Inbound {
                            kind,
                            track,
                            vad: Default::default(),
                            rids,
                            // Audio is Opus, the only audio codec; video waits for its
                            // first frame to tell VP8 from AV1.
                            codec: (kind == MediaKind::Audio).then_some(Codec::Opus),
                            fans: Default::default(),
                        },
                    );
                    self.publish(&src, mid);
                }
                Cross::Stopped(src, mid) => self.drop_inbound(&src, mid),
                Cross::Answered(sid, mids) => self.answered(&sid, &mids),
                Cross::Loss(sid, mid, loss) => {
                    let layers = self
                        .peers
                        .get_mut(&sid)
                        .and_then(|p| p.outbound_source.get_mut(&mid))
                        .and_then(|o| o.layers.as_mut());
                    if let Some(l) = layers {
                        l.on_loss(now, loss);
                    }
                }
                Cross::Media(src, data) => self.forward(now, &src, data, out),
                Cross::Keyframe(dst, local, kind) => {
                    let Some(p) = self.peers.get(&dst) else {
                        continue;
                    };
                    let Some(o) = p.outbound_source.get(&local) else {
                        continue;
                    };
                    // A layered source is asked for the layer this subscriber gets.
                    let rid = o.layers.as_ref().and_then(|l| l.current());
                    let (src, src_mid) = (o.source.clone(), o.source_mid);
                    if let Some((slot, s)) = self.peers.slot_mut(&src) {
                        if let Some(mut w) = s.rtc.writer(src_mid) {
                            let _ = w.request_keyframe(rid, kind);
                        }
                        self.dirty.insert(slot, true);
                    }
                }
            }
        }
    }

    /// The subscribers of a publisher's track: the call's other members that have a
    /// mid carrying it. Built when the publisher's list is older than the last change
    /// of any subscription (`fan_epoch`), so a packet's fan-out hashes no ids.
    fn fan_out(&self, src: &Sid, mid: Mid) -> Vec<Fan> {
        let Some(sender) = self.peers.get(src) else {
            return Vec::new();
        };
        let key = (src.clone(), mid);
        let members = self.calls.get(&sender.call_id).into_iter().flatten();
        members
            .filter(|other| *other != src)
            .filter_map(|other| {
                let slot = self.peers.slot(other)?;
                let local = self.peers.at(slot)?.subscribed(&key)?;
                Some(Fan {
                    slot,
                    local,
                    sid: other.clone(),
                })
            })
            .collect()
    }

    /// One publisher's frame to every subscriber of it in the same call.
    fn forward(
        &mut self,
        now: Instant,
        src: &Sid,
        data: str0m::media::MediaData,
        out: &mut Vec<Output>,
    ) {
        let Some(src_slot) = self.peers.slot(src) else {
            return;
        };
        let Some(sender) = self.peers.at_mut(src_slot) else {
            return;
        };
        let muted = sender.muted;
        let Some(inb) = sender.inbound.get_mut(&data.mid) else {
            return;
        };
        let Some(track) = inb.track else {
            return;
        };
        if inb.codec.is_none() {
            // The first frame of a video track tells its codec: offer it now.
            inb.codec = Some(data.params.spec().codec);
            self.publish(src, data.mid);
            return;
        }
        sender.rtp.add(DIR_IN, track.index(), data.data.len());
        if track == TrackType::Voice {
            if muted {
                return;
            }
            if let Some(on) = inb.vad.frame(now, data.ext_vals.audio_level) {
                self.voice.push((src.clone(), on));
                if on {
                    // Silence ends speech without a frame to tell: housekeeping does.
                    self.watched.insert(src.clone());
                }
            }
        }
        let rids = data.rid.map(|_| inb.rids.clone());
        let fresh = inb.fans.built_at == Some(self.fan_epoch);
        // Taken for the loop (which borrows the subscribers) and put back after it.
        let fans = std::mem::take(&mut inb.fans.list);
        let fans = if fresh {
            fans
        } else {
            self.fan_out(src, data.mid)
        };
        let keyframe = data.is_keyframe();
        let mut keyframe_requests: Vec<str0m::media::Rid> = Vec::new();
        for fan in &fans {
            let (local, other) = (fan.local, &fan.sid);
            let Some(p) = self.peers.at_mut(fan.slot) else {
                continue;
            };
            // Simulcast: only the subscriber's layer goes through, rebased.
            let mut time = data.time;
            if let (Some(rid), Some(rids)) = (data.rid, &rids) {
                let Some(o) = p.outbound_source.get_mut(&local) else {
                    continue;
                };
                let layers = o.layers.get_or_insert_with(|| Layering::new(rids));
                let d = layers.on_frame(now, rid, keyframe, data.time);
                if let Some(r) = d.request_keyframe {
                    if !keyframe_requests.contains(&r) {
                        keyframe_requests.push(r);
                    }
                }
                match d.forward {
                    Some(t) => time = t,
                    None => continue,
                }
            }
            self.writes = self.writes.wrapping_add(1);
            let t0 = self
                .writes
                .is_multiple_of(WRITE_SAMPLE)
                .then(|| self.observer.clock())
                .flatten();
            let audio = track.is_audio();
            // Voice (and whatever a mid once sealed carries) is sealed here, with no
            // str0m work for this subscriber at all. Screen audio on a mid of its own
            // stays with str0m, whose sender reports keep it in sync with the screen.
            let sealed = if audio {
                p.seal_audio(
                    local,
                    src,
                    &data,
                    track == TrackType::Voice,
                    &mut self.datagrams,
                )
            } else {
                peer::Sealed::Str0m
            };
            let written = match sealed {
                peer::Sealed::Datagram(d) => {
                    out.push(d);
                    true
                }
                peer::Sealed::Nothing => false,
                peer::Sealed::Str0m => {
                    let Some(w) = p.rtc.writer(local) else {
                        continue;
                    };
                    let Some(pt) = w.match_params(data.params) else {
                        continue;
                    };
                    let w = match data.ext_vals.audio_level {
                        Some(level) => {
                            w.audio_level(level, data.ext_vals.voice_activity.unwrap_or(false))
                        }
                        None => w,
                    };
                    if let Err(e) = w.write(pt, data.network_time, time, data.data.clone()) {
                        tracing::debug!(session_id = %other, error = %e, "forward write failed");
                        p.reports.push(PeerReport::Error("rtp"));
                    }
                    p.written = true;
                    // One RTP packet per audio frame; a video frame may make several,
                    // so it stirs the session like any other input.
                    p.audio_writes += u32::from(audio);
                    *self.dirty.entry(fan.slot).or_default() |= !audio;
                    true
                }
            };
            if let (Some(t0), Some(t1)) = (t0, self.observer.clock()) {
                let secs = t1.saturating_duration_since(t0).as_secs_f64();
                self.observer
                    .track_write_time(&p.group, track.write_kind(), secs);
            }
            if written {
                p.rtp.add(DIR_OUT, track.index(), data.data.len());
            }
        }
        if let Some(inb) = self
            .peers
            .at_mut(src_slot)
            .and_then(|s| s.inbound.get_mut(&data.mid))
        {
            inb.fans = FanOut {
                built_at: Some(self.fan_epoch),
                list: fans,
            };
        }
        if !keyframe_requests.is_empty() {
            if let Some(s) = self.peers.at_mut(src_slot) {
                for rid in keyframe_requests {
                    if let Some(mut w) = s.rtc.writer(data.mid) {
                        let _ = w.request_keyframe(Some(rid), KeyframeRequestKind::Pli);
                    }
                }
                self.dirty.insert(src_slot, true);
            }
        }
    }

    /// One server offer at a time per session, for the tracks queued for it or ended,
    /// after the data channel is up (as rtcd) and never while the client holds the
    /// signaling lock. MediaMap goes first so the client can classify the tracks.
    fn send_offers(&mut self, now: Instant, out: &mut Vec<Output>) {
        // Taken whole: a session still blocked (offer in flight, not connected, no
        // data channel, client lock) is put back.
        for sid in std::mem::take(&mut self.offer_wanted) {
            let Some((slot, peer)) = self.peers.slot_mut(&sid) else {
                continue;
            };
            if peer.queued.is_empty() && peer.removing.is_empty() {
                continue;
            }
            if peer.pending.is_some()
                || !peer.rtc.is_connected()
                || peer.dc.is_none()
                || peer.client_locked(now)
            {
                self.offer_wanted.insert(sid);
                continue;
            }
            let queued = std::mem::take(&mut peer.queued);
            let removed = std::mem::take(&mut peer.removing);
            let mut api = peer.rtc.sdp_api();
            let mut added = Vec::new();
            for q in queued {
                let track_id = format!("{}_{}_{}", q.track.prefix(), q.source, random_suffix());
                let mid = api.add_media(
                    q.kind,
                    Direction::SendOnly,
                    Some(q.source.to_string()),
                    Some(track_id),
                    None,
                );
                added.push((mid, q));
            }
            for mid in &removed {
                api.set_direction(*mid, Direction::Inactive);
            }
            let Some((offer, pending)) = api.apply() else {
                continue;
            };
            for (mid, q) in &added {
                self.observer.tracks(&peer.group, "out", mime(q.codec), 1);
                peer.subscribe((q.source.clone(), q.source_mid), *mid, &mut self.fan_epoch);
                peer.outbound_source.insert(
                    *mid,
                    OutTrack {
                        source: q.source.clone(),
                        source_mid: q.source_mid,
                        track: q.track,
                        codec: q.codec,
                        layers: None,
                    },
                );
            }
            let map = peer
                .outbound_source
                .iter()
                .map(|(mid, o)| {
                    (
                        mid.to_string(),
                        o.track.prefix().to_string(),
                        o.source.to_string(),
                    )
                })
                .collect();
            let map = DcMessage::MediaMap(map);
            peer.dc_send(&map);
            let needs_map = added.iter().any(|(_, q)| q.track != TrackType::Voice);
            peer.pending = Some(PendingOffer {
                offer: pending,
                since: now,
                added,
                removed,
                held: None,
            });
            // Unanswered, it is withdrawn after `offer_timeout`: housekeeping watches.
            self.watched.insert(sid.clone());
            self.dirty.insert(slot, true);
            let json = SessionDescription::offer(offer.to_sdp_string()).to_json();
            // Over the data channel, the offer follows the MediaMap in order. Over the
            // websocket it could overtake it, and the Calls client looks a track's
            // info up once, when the track arrives: a video track without it is not
            // shown (an audio track without it plays as voice). An offer that adds
            // anything but voice waits for the MediaMap's acknowledgement, which
            // costs up to a delayed SACK (~200 ms); voice goes at once.
            if !(peer.dc_signaling && peer.dc_send_sdp(&json)) {
                match peer.pending.as_mut() {
                    Some(p) if needs_map => {
                        p.held = Some(HeldOffer {
                            json,
                            repeat: Some(map),
                        })
                    }
                    _ => out.push(Output::Offer {
                        session_id: sid.to_string(),
                        json,
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
impl Sfu {
    /// How many of a session's send-only audio mids the core seals itself.
    pub(crate) fn sealed_audio_mids(&self, session_id: &str) -> usize {
        self.peers.get(session_id).map_or(0, |p| {
            p.audio_paths
                .iter()
                .filter(|a| matches!(a, peer::AudioPath::Sealed(_)))
                .count()
        })
    }

    /// Whether every fan-out list built at the current epoch names live subscriptions
    /// only: its slot holds that session, which has a mid carrying the track.
    pub(crate) fn fan_out_is_current(&self) -> bool {
        self.peers.iter().all(|(src, p)| {
            p.inbound
                .iter()
                .filter(|(_, inb)| inb.fans.built_at == Some(self.fan_epoch))
                .all(|(mid, inb)| {
                    inb.fans.list.iter().all(|f| {
                        self.peers.at(f.slot).is_some_and(|sub| {
                            self.peers.slot(&*f.sid) == Some(f.slot)
                                && sub.subscribed(&(src.clone(), *mid)) == Some(f.local)
                        })
                    })
                })
        })
    }

    /// Whether a session's server offer is held for its MediaMap's acknowledgement.
    pub(crate) fn offer_held(&self, session_id: &str) -> bool {
        self.peers
            .get(session_id)
            .and_then(|p| p.pending.as_ref())
            .is_some_and(|p| p.held.is_some())
    }

    /// How many sessions housekeeping looks at.
    pub(crate) fn watched_count(&self) -> usize {
        self.watched.len()
    }

    /// The layers a subscriber wants from its simulcast subscriptions.
    pub(crate) fn wanted_layers(&self, subscriber: &str) -> Vec<String> {
        self.peers
            .get(subscriber)
            .map(|p| {
                p.outbound_source
                    .values()
                    .filter_map(|o| o.layers.as_ref())
                    .map(|l| l.want().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Sessions by time, earliest first. Each entry carries a unique number after its
/// time, so that entries due at the same time never compare session ids.
#[derive(Default)]
struct TimerHeap {
    heap: BinaryHeap<Reverse<(Instant, u64, Sid)>>,
    pushed: u64,
}

impl TimerHeap {
    fn push(&mut self, at: Instant, sid: Sid) {
        self.pushed += 1;
        self.heap.push(Reverse((at, self.pushed, sid)));
    }

    fn first(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The earliest entry, if it is due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<(Instant, Sid)> {
        if self.first()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((t, _, sid))| (t, sid))
    }
}

/// Puts the peer's str0m timeout in the timer heap, lazy ones on the timer grid. One
/// entry per peer at a time: a later timeout is found when the earlier entry fires.
fn schedule(timers: &mut TimerHeap, peer: &mut Peer, sid: &Sid, epoch: Option<Instant>) {
    if let Some(t) = peer.timeout {
        let at = match epoch {
            Some(e) if peer.lazy => on_grid(t, e),
            _ => t,
        };
        if peer.scheduled.is_none_or(|s| at < s) {
            peer.scheduled = Some(at);
            timers.push(at, sid.clone());
        }
    }
}

/// The first point of the timer grid at or after `t`.
fn on_grid(t: Instant, epoch: Instant) -> Instant {
    let Some(since) = t.checked_duration_since(epoch) else {
        return t;
    };
    let grid = TIMER_GRID.as_nanos();
    let steps = since.as_nanos().div_ceil(grid);
    u64::try_from(steps * grid)
        .map(|n| epoch + Duration::from_nanos(n))
        .unwrap_or(t)
}

/// Sends a held websocket offer once the client's SCTP stack has acknowledged the
/// data channel's MediaMap, or after `OFFER_HOLD` whatever happened to it (a client
/// that does not acknowledge still gets its offer; housekeeping wakes the session).
/// Called after the session's drain has sent the MediaMap: it writes the MediaMap once
/// more, which goes in a packet of its own, because an SCTP receiver acknowledges
/// every second packet at once but a single one only after its delayed-ack timer
/// (~200 ms in browsers); the client takes the same map twice. True when the session
/// needs another drain (to send that copy).
fn release_offer(sid: &Sid, peer: &mut Peer, now: Instant, out: &mut Vec<Output>) -> bool {
    let Some(since) = peer
        .pending
        .as_ref()
        .filter(|p| p.held.is_some())
        .map(|p| p.since)
    else {
        return false;
    };
    let delivered = peer.dc_delivered();
    if !delivered && now < since + OFFER_HOLD {
        let repeat = peer
            .pending
            .as_mut()
            .and_then(|p| p.held.as_mut())
            .and_then(|h| h.repeat.take());
        return repeat.is_some_and(|map| peer.dc_send(&map));
    }
    if !delivered {
        tracing::debug!(session_id = %sid, "MediaMap not acknowledged in time, sending the offer");
    }
    if let Some(held) = peer.pending.as_mut().and_then(|p| p.held.take()) {
        out.push(Output::Offer {
            session_id: sid.to_string(),
            json: held.json,
        });
    }
    false
}

/// Drops an unanswered offer and queues its changes again for the next one.
fn withdraw_offer(peer: &mut Peer, fan_epoch: &mut u64) {
    let Some(p) = peer.pending.take() else {
        return;
    };
    for (mid, q) in p.added {
        peer.unsubscribe(&(q.source.clone(), q.source_mid), fan_epoch);
        peer.outbound_source.remove(&mid);
        peer.queued.push(q);
    }
    peer.removing.extend(p.removed);
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
