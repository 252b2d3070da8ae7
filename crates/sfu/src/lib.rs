//! The SFU core, sans-IO (str0m): one `Rtc` per participant, media forwarded to the
//! other participants of the same call and nobody else. Time is a parameter: the core
//! is driven by `now`, so tests run in simulated time without sockets. The I/O shell
//! (UDP/TCP on the RTC port) feeds datagrams in and sends `Output::Transmit` out.
//!
//! Layout: this file holds `Sfu` (the session table, commands, datagrams in, `poll`);
//! its other facets are `impl Sfu` blocks of their own: `forwarding` (who receives
//! what, the per-packet path), `offers` (server renegotiation, the MediaMap hold),
//! `timers` (the timer heap, housekeeping, quiet ticks). One participant is `peer`,
//! the table `peers`; `crypto` and `egress` seal voice without str0m, `datachannel`
//! is the DC protocol, `simulcast` and `vad` per-track logic, `observe` the metrics
//! seam, `sim` (feature `sim`) the simulated network of tests and benches. No clock is
//! read here (`clippy.toml`).

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
mod forwarding;
pub mod observe;
mod offers;
mod peer;
mod peers;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod simulcast;
mod timers;
mod vad;

use datachannel::{DcMessage, SessionDescription};
use egress::DatagramPool;
use observe::{NoObserver, RtcObserver, DIR_IN, DIR_OUT};
use offers::{release_offer, withdraw_offer};
use peer::{
    Cross, Fan, FanOut, HeldOffer, Inbound, OutTrack, Peer, PeerReport, PendingOffer, QueuedTrack,
};
use peers::Peers;
use simulcast::Layering;
use timers::{on_grid, schedule, TimerHeap};

/// A session's place in `Peers`. Valid until the session is removed, after which the
/// slot may be given to another session: holders of slots must drop them by then
/// (the core's fan-out lists are rebuilt after any change, see `Sfu::fan_epoch`).
pub(crate) type Slot = usize;

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
