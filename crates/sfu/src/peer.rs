//! One participant's peer connection inside the SFU: its str0m `Rtc`, what it
//! publishes and receives, and its data channel (ping, SDP, lock, MediaMap). Knows
//! nothing of other peers: what concerns them leaves as a [`Cross`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::net::Protocol;
use str0m::rtp::Extension;
use str0m::{Event, IceConnectionState, Input, Output as RtcOutput, PacerReason, Reason, Rtc};

use super::crypto::KeySlot;
use super::datachannel::{deflate_sdp, inflate_sdp, DcMessage, SessionDescription};
use super::egress::{AudioEgress, DatagramPool, EgressError, Sealer};
use super::observe::{RtcObserver, RtpCounts};
use super::simulcast::Layering;
use super::vad::Vad;
use super::Slot;
use super::{FastMap, Output, SfuError, Sid, TrackType};

/// Timeouts already due handled within one drain (write → packetize → pace → send).
const MAX_DUE_ROUNDS: u32 = 4;

/// How long the pacer's bookkeeping after a sent packet may wait. str0m's pacer (no
/// bandwidth estimation: `NullPacer`) asks for a timeout "now" after every packet it
/// releases, only to refresh its queue snapshot; the next write's packetizing does
/// that anyway. Longer than one 20 ms audio frame, so that with anyone talking the
/// deferred timeout is never reached; other str0m timers hidden behind it (reports,
/// NACK and TWCC feedback) are late by at most this.
const PACER_DEFER: Duration = Duration::from_millis(30);

/// How long a subscriber that only receives audio may go between full drains (polled
/// until str0m names its next timeout). In between, a drain stops as soon as the
/// packets written were sent (see `Peer::drain`); str0m timers that came due meanwhile
/// (reports) run late by at most this.
const FULL_DRAIN_EVERY: Duration = Duration::from_millis(100);

/// Whether a str0m timeout may wait for the core's timer grid: the once-a-second
/// statistics, what idle sessions wake up for. (Putting every bookkeeping timer on the
/// grid was measured: it made forwarding dearer, 16.4 → 18–19 µs per packet in
/// `make bench` (a), as the timers of hundreds of subscribers then fired together.)
fn lazy(reason: Reason) -> bool {
    matches!(reason, Reason::Stats)
}

/// An SRTP RTP packet, not RTCP (RFC 5761: RTCP packet types 192..=223 sit where
/// RTP has the marker bit and payload type 64..=95, which no codec of ours uses).
pub(super) fn is_rtp(datagram: &[u8]) -> bool {
    match datagram {
        [b0, b1, ..] => (128..192).contains(b0) && !(192..224).contains(b1),
        _ => false,
    }
}

/// Not a STUN message (RFC 7983: STUN starts with 0..=3; DTLS, RTP and RTCP above).
/// Those go to whichever address a check came from; the rest on the selected pair.
fn on_selected_pair(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| *b > 3)
}

/// Our SSRC and payload type for `data`'s codec on mid `local`, once negotiated.
fn negotiated(rtc: &mut Rtc, local: Mid, data: &MediaData) -> Option<(u32, u8)> {
    let ssrc = *rtc.direct_api().stream_tx_by_mid(local, None)?.ssrc();
    let pt = *rtc.writer(local)?.match_params(data.params)?;
    Some((ssrc, pt))
}

/// How one of our send-only audio mids leaves, fixed at its first packet for the
/// life of the peer connection (see `egress`: the two must never share an SSRC).
pub(super) enum AudioPath {
    Str0m,
    /// Sealed by the core. The egress stays with the mid if str0m recycles it.
    Sealed(AudioEgress),
}

/// This session's SRTP sealer.
enum Sealing {
    /// Not made yet (the DTLS keys may not be in).
    Pending,
    Ready(Sealer),
    /// The profile is not AEAD: all audio goes through str0m.
    Unavailable,
}

/// Whether a mid's audio can be sealed here.
enum Opening {
    Sealed(AudioEgress),
    Str0m,
    NotYet,
}

/// What forwarding one voice packet to a subscriber came to.
pub(super) enum Sealed {
    /// The datagram to send.
    Datagram(Output),
    /// Nothing to send (an old packet, or sealing failed).
    Nothing,
    /// This mid goes through str0m.
    Str0m,
}

/// How long a client may hold the signaling lock without releasing it.
pub const CLIENT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Inbound {
    pub kind: MediaKind,
    /// None until the stream is announced (`screen_on` / `video_on`); unannounced
    /// video is not forwarded (as upstream).
    pub track: Option<TrackType>,
    pub vad: Vad,
    /// Simulcast layers the publisher announced (empty without simulcast).
    pub rids: std::sync::Arc<[str0m::media::Rid]>,
    /// The codec that flows (video: known from the first frame, which is when the
    /// track is offered to receivers, since the codec decides who gets it).
    pub codec: Option<Codec>,
    /// Who receives this track.
    pub fans: FanOut,
}

/// The subscribers of one published track, as of the core's fan-out epoch `built_at`
/// (None: never built).
#[derive(Default)]
pub(super) struct FanOut {
    pub built_at: Option<u64>,
    pub list: Vec<Fan>,
}

/// One subscriber of a published track: where it is and which of its mids carries it.
#[derive(Clone)]
pub(super) struct Fan {
    pub slot: Slot,
    pub local: Mid,
    pub sid: Sid,
}

impl Inbound {
    /// Offered to receivers (classified, codec known).
    pub fn published(&self) -> Option<(TrackType, Codec)> {
        Some((self.track?, self.codec?))
    }
}

/// What a quick drain still waits for (`Peer::drain`).
#[derive(Clone, Copy)]
struct Quick {
    /// RTP datagrams of written audio frames.
    rtp_out: u32,
    /// Frames of received audio packets.
    frames_in: u32,
    full_drain_at: Instant,
}

impl Quick {
    fn done(&self) -> bool {
        self.rtp_out == 0 && self.frames_in == 0
    }

    /// After a datagram: still quick only if it was one of the RTP packets awaited.
    fn sent(self, rtp: bool) -> Option<Quick> {
        (rtp && self.rtp_out > 0).then(|| Quick {
            rtp_out: self.rtp_out - 1,
            ..self
        })
    }
}

/// A forwarded track waiting for a server offer.
#[derive(Clone)]
pub(super) struct QueuedTrack {
    pub source: Sid,
    pub source_mid: Mid,
    pub kind: MediaKind,
    pub track: TrackType,
    pub codec: Codec,
}

/// What one of our send-only mids carries.
#[derive(Clone)]
pub(super) struct OutTrack {
    pub source: Sid,
    pub source_mid: Mid,
    pub track: TrackType,
    pub codec: Codec,
    /// The subscriber's simulcast layer choice, from its first layered frame on.
    pub layers: Option<Layering>,
}

/// Our offer in flight, with what it changes, to undo if it is never answered.
pub(super) struct PendingOffer {
    pub offer: SdpPendingOffer,
    pub since: Instant,
    pub added: Vec<(Mid, QueuedTrack)>,
    pub removed: Vec<Mid>,
    /// The offer's JSON for the websocket, held until the client has the MediaMap
    /// sent before it (see `release_offer` in the core).
    pub held: Option<HeldOffer>,
}

pub(super) struct HeldOffer {
    pub json: String,
    /// The MediaMap, until it has gone out a second time in a packet of its own.
    pub repeat: Option<DcMessage>,
}

/// What the peer noticed for the metrics, reported by the core at its next poll.
pub(super) enum PeerReport {
    Error(&'static str),
    ClientStat(&'static str, f64),
}

pub(super) struct Peer {
    /// Metrics group (rtcd client id; "default" in the plugin).
    pub group: String,
    pub call_id: String,
    pub rtc: Rtc,
    pub inbound: BTreeMap<Mid, Inbound>,
    /// (source session, source mid) → our mid that carries it to this peer. Changed
    /// only through `subscribe` / `unsubscribe`, which move the core's fan-out epoch.
    outbound: FastMap<(Sid, Mid), Mid>,
    /// Our mid → what it carries, to route keyframe requests back and for MediaMap.
    pub outbound_source: FastMap<Mid, OutTrack>,
    pub queued: Vec<QueuedTrack>,
    /// Our mids whose source is gone: made inactive in the next offer.
    pub removing: Vec<Mid>,
    pub pending: Option<PendingOffer>,
    pub muted: bool,
    pub screen_stream_id: Option<String>,
    pub video_stream_id: Option<String>,
    pub timeout: Option<Instant>,
    /// The timeout is for bookkeeping that may run a little late (statistics): the
    /// core puts it on its timer grid.
    pub lazy: bool,
    /// Media was written since the last drain: str0m packetizes it on a timeout it
    /// sets to now, which the drain handles before its first poll.
    pub written: bool,
    /// Audio frames written since the last drain (one RTP packet each).
    pub audio_writes: u32,
    /// RTP packets received since the last drain while this peer publishes audio only
    /// (each makes at most one `MediaData`, see `Peer::drain`).
    pub audio_in: u32,
    /// When the last full drain ended, and whether its timeout is a deferred pacer one.
    full_drain_at: Option<Instant>,
    pacer_deferred: bool,
    /// The time of this peer's entry in the core's timer heap, if it has one.
    pub scheduled: Option<Instant>,
    pub dc: Option<ChannelId>,
    /// The client announced `dcSignaling`: our SDP goes over the data channel.
    pub dc_signaling: bool,
    /// The client announced `av1Support` (and AV1 is enabled).
    pub av1: bool,
    pub client_lock_until: Option<Instant>,
    pub created: Instant,
    pub connected_at: Option<Instant>,
    pub dc_reported: bool,
    pub reports: Vec<PeerReport>,
    pub rtp: RtpCounts,
    /// Where this session's DTLS keys arrive (absent for an `Rtc` made elsewhere).
    pub keys: Option<Arc<KeySlot>>,
    /// Our SRTP sealer, made from `keys` at the first sealed packet.
    sealing: Sealing,
    /// (protocol, our address, theirs) of the selected candidate pair, as str0m's
    /// last DTLS/SRTP datagram went.
    path: Option<(Protocol, SocketAddr, SocketAddr)>,
    pub audio_paths: AudioPaths,
    /// The next input (datagram, timeout or client offer) panics (tests of the core's
    /// panic guard).
    #[cfg(test)]
    pub panic_on_input: bool,
}

/// A peer's send-only audio mids and how each leaves, in the order first seen. A
/// handful per peer (one per speaker it hears), so a list searched in order, the
/// first two inside the peer: it is read once per subscriber per forwarded packet,
/// on a peer the core has not touched since the last one, and each pointer to
/// follow (a hash table's control bytes, then its entry) is one more cache miss
/// (perf annotate, `make bench` (a): most of `seal_audio`'s own time).
#[derive(Default)]
pub(super) struct AudioPaths(SmallVec<[(Mid, AudioPath); 2]>);

impl AudioPaths {
    pub fn get_mut(&mut self, mid: Mid) -> Option<&mut AudioPath> {
        self.0.iter_mut().find(|(m, _)| *m == mid).map(|(_, p)| p)
    }

    /// `mid`'s path, `path` if it has none yet.
    pub fn or_insert(&mut self, mid: Mid, path: AudioPath) -> &mut AudioPath {
        let i = match self.0.iter().position(|(m, _)| *m == mid) {
            Some(i) => i,
            None => {
                self.0.push((mid, path));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &AudioPath> {
        self.0.iter().map(|(_, p)| p)
    }
}

/// What one peer's output needs from the others.
// Boxing `MediaData` would cost an allocation per forwarded packet; these values only
// live in one short Vec per poll.
#[allow(clippy::large_enum_variant)]
pub(super) enum Cross {
    Media(Sid, str0m::media::MediaData),
    Keyframe(Sid, Mid, KeyframeRequestKind),
    /// A receiving m-line appeared (or came back) on the publisher's side.
    Added(Sid, Mid, MediaKind),
    /// The publisher stopped sending on this m-line.
    Stopped(Sid, Mid),
    /// The client answered our offer: new subscriptions need a keyframe.
    Answered(Sid, Vec<Mid>),
    /// A receiver report's loss fraction for one of our send-only mids.
    Loss(Sid, Mid, f32),
}

impl Peer {
    /// Our mid `local` now carries `source` to this peer.
    pub fn subscribe(&mut self, source: (Sid, Mid), local: Mid, fan_epoch: &mut u64) {
        self.outbound.insert(source, local);
        *fan_epoch += 1;
    }

    /// `source` no longer comes to this peer; the mid that carried it, if any.
    pub fn unsubscribe(&mut self, source: &(Sid, Mid), fan_epoch: &mut u64) -> Option<Mid> {
        let local = self.outbound.remove(source)?;
        *fan_epoch += 1;
        Some(local)
    }

    /// The mid that carries `source` to this peer.
    pub fn subscribed(&self, source: &(Sid, Mid)) -> Option<Mid> {
        self.outbound.get(source).copied()
    }

    pub fn new(group: &str, call_id: &str, rtc: Rtc, now: Instant) -> Peer {
        Peer {
            group: group.to_string(),
            call_id: call_id.to_string(),
            rtc,
            inbound: BTreeMap::new(),
            outbound: FastMap::default(),
            outbound_source: FastMap::default(),
            queued: Vec::new(),
            removing: Vec::new(),
            pending: None,
            muted: true,
            screen_stream_id: None,
            video_stream_id: None,
            timeout: None,
            lazy: false,
            written: false,
            audio_writes: 0,
            audio_in: 0,
            full_drain_at: None,
            pacer_deferred: false,
            scheduled: None,
            dc: None,
            dc_signaling: false,
            av1: false,
            client_lock_until: None,
            created: now,
            connected_at: None,
            dc_reported: false,
            reports: Vec::new(),
            rtp: RtpCounts::default(),
            keys: None,
            sealing: Sealing::Pending,
            path: None,
            audio_paths: AudioPaths::default(),
            #[cfg(test)]
            panic_on_input: false,
        }
    }

    /// A datagram (or timeout) for this peer's str0m.
    pub fn handle_input(&mut self, input: str0m::Input) -> Result<(), str0m::RtcError> {
        #[cfg(test)]
        if std::mem::take(&mut self.panic_on_input) {
            panic!("injected panic");
        }
        self.rtc.handle_input(input)
    }

    /// One audio packet of `source` to this subscriber on our mid `local`: sealed
    /// here if this mid's audio is, else to be written to str0m. Decided at the
    /// mid's first packet for good: voice is sealed when it can be, other audio (a
    /// screen's) never on a mid of its own.
    pub fn seal_audio(
        &mut self,
        local: Mid,
        source: &Sid,
        data: &MediaData,
        voice: bool,
        pool: &mut DatagramPool,
    ) -> Sealed {
        let egress = match self.audio_paths.get_mut(local) {
            Some(AudioPath::Sealed(e)) => e,
            Some(AudioPath::Str0m) => return Sealed::Str0m,
            None if !voice => {
                // Recorded, so that a recycled mid never goes from str0m to sealed.
                self.audio_paths.or_insert(local, AudioPath::Str0m);
                return Sealed::Str0m;
            }
            None => {
                let path = match self.open_egress(local, source, data) {
                    Opening::Sealed(e) => AudioPath::Sealed(e),
                    Opening::Str0m => AudioPath::Str0m,
                    // Until the mid is negotiated str0m could not send it either.
                    Opening::NotYet => return Sealed::Nothing,
                };
                match self.audio_paths.or_insert(local, path) {
                    AudioPath::Sealed(e) => e,
                    AudioPath::Str0m => return Sealed::Str0m,
                }
            }
        };
        let (Sealing::Ready(sealer), Some((proto, source_addr, destination))) =
            (&self.sealing, self.path)
        else {
            return Sealed::Nothing;
        };
        if !egress.carries(source, *data.pt) {
            // The mid was recycled for another track, or the publisher's payload
            // type changed: the subscriber's payload type may differ.
            let Some((ssrc, pt)) = negotiated(&mut self.rtc, local, data) else {
                return Sealed::Nothing;
            };
            egress.carry(source, *data.pt, pt, ssrc);
        }
        match egress.packet(data, sealer, pool) {
            Some(contents) => Sealed::Datagram(Output::Transmit {
                proto,
                source: source_addr,
                destination,
                contents,
            }),
            None => Sealed::Nothing,
        }
    }

    /// An egress for our mid `local` once it can have one: the DTLS keys are in
    /// (with an AEAD profile, else never), the selected pair is known and the mid is
    /// negotiated (packets come from the moment our offer goes out).
    fn open_egress(&mut self, local: Mid, source: &Sid, data: &MediaData) -> Opening {
        match &self.sealing {
            Sealing::Unavailable => return Opening::Str0m,
            Sealing::Ready(_) => {}
            Sealing::Pending => {
                let Some(keys) = self.keys.as_deref() else {
                    return Opening::Str0m;
                };
                match Sealer::from_slot(keys) {
                    Ok(s) => self.sealing = Sealing::Ready(s),
                    Err(EgressError::NoKeys) => return Opening::NotYet,
                    Err(e) => {
                        self.sealing = Sealing::Unavailable;
                        tracing::debug!(error = %e, "voice to this session goes through str0m");
                        return Opening::Str0m;
                    }
                }
            }
        }
        if self.path.is_none() {
            return Opening::NotYet;
        }
        let Some((ssrc, pt)) = negotiated(&mut self.rtc, local, data) else {
            return Opening::NotYet;
        };
        let Some(media) = self.rtc.media(local) else {
            return Opening::NotYet;
        };
        let exts = media.remote_extmap();
        let mid = exts.id_of(Extension::RtpMid).map(|id| (id, &*local));
        let level = exts.id_of(Extension::AudioLevel);
        Opening::Sealed(AudioEgress::new(ssrc, mid, level, source, *data.pt, pt))
    }

    /// Reports what changed since the last drain to the metrics observer.
    pub fn report(&mut self, now: Instant, obs: &dyn RtcObserver) {
        if self.connected_at.is_none() && self.rtc.is_connected() {
            self.connected_at = Some(now);
            obs.conn_state("connected");
            obs.connection_time(&self.group, (now - self.created).as_secs_f64());
        }
        if !self.dc_reported && self.dc.is_some() {
            self.dc_reported = true;
            obs.dc_open_time(&self.group, (now - self.created).as_secs_f64());
        }
        for r in self.reports.drain(..) {
            match r {
                PeerReport::Error(kind) => obs.error(&self.group, kind),
                PeerReport::ClientStat(stat, v) => obs.client_stat(&self.group, stat, v),
            }
        }
    }

    pub fn client_locked(&self, now: Instant) -> bool {
        self.client_lock_until.is_some_and(|t| t > now)
    }

    /// A client offer; our answer's SDP text.
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, SfuError> {
        if self.pending.is_some() {
            // We are impolite (as rtcd): the client rolls back and answers ours.
            return Err(SfuError::Glare);
        }
        #[cfg(test)]
        if std::mem::take(&mut self.panic_on_input) {
            panic!("injected panic");
        }
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| sdp_error(sdp, e))?;
        let answer = self.rtc.sdp_api().accept_offer(offer)?;
        Ok(answer.to_sdp_string())
    }

    /// The client's answer to our offer; returns the mids it added. An offer still
    /// held for the websocket has not reached the client: an answer then is to an
    /// earlier one (withdrawn unanswered) and must not settle this one. An answer that
    /// does not parse leaves our offer pending (its timeout offers again).
    pub fn accept_answer(&mut self, sdp: &str) -> Result<Vec<Mid>, SfuError> {
        if self.pending.as_ref().is_none_or(|p| p.held.is_some()) {
            return Err(SfuError::NoPendingOffer);
        }
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| sdp_error(sdp, e))?;
        let pending = self.pending.take().ok_or(SfuError::NoPendingOffer)?;
        self.rtc.sdp_api().accept_answer(pending.offer, answer)?;
        Ok(pending.added.into_iter().map(|(m, _)| m).collect())
    }

    /// The track type of a receiving m-line, from its msid stream id.
    pub fn classify(&self, mid: Mid, kind: MediaKind) -> (Option<TrackType>, String) {
        let stream = self
            .rtc
            .media(mid)
            .map(|m| m.stream_id().to_string())
            .unwrap_or_default();
        let is = |s: &Option<String>| s.as_deref() == Some(stream.as_str()) && !stream.is_empty();
        let track = match kind {
            MediaKind::Audio if is(&self.screen_stream_id) => Some(TrackType::ScreenAudio),
            MediaKind::Audio => Some(TrackType::Voice),
            MediaKind::Video if is(&self.screen_stream_id) => Some(TrackType::Screen),
            MediaKind::Video if is(&self.video_stream_id) => Some(TrackType::Video),
            MediaKind::Video => None,
        };
        (track, stream)
    }

    /// Writes a message on the data channel, if it is open.
    pub fn dc_send(&mut self, msg: &DcMessage) -> bool {
        let Some(id) = self.dc else { return false };
        match self.rtc.channel(id) {
            Some(mut ch) => ch.write(true, &msg.encode()).is_ok(),
            None => false,
        }
    }

    /// Whether everything written to the data channel has been acknowledged by the
    /// client's SCTP stack (so its MediaMap has arrived); true without a channel.
    pub fn dc_delivered(&mut self) -> bool {
        let Some(id) = self.dc else { return true };
        self.rtc
            .channel(id)
            .is_none_or(|mut ch| ch.buffered_amount() == 0)
    }

    /// Sends a session description JSON over the data channel (`dcSignaling`).
    pub fn dc_send_sdp(&mut self, json: &str) -> bool {
        self.dc_send(&DcMessage::Sdp(deflate_sdp(json)))
    }

    fn on_dc_text(&mut self, sid: &Sid, data: &[u8]) {
        if data == b"ping" {
            if let Some(mut ch) = self.dc.and_then(|id| self.rtc.channel(id)) {
                let _ = ch.write(false, b"pong");
            }
        } else {
            tracing::debug!(
                session_id = %sid,
                len = data.len(),
                "unknown data channel text"
            );
        }
    }

    fn on_dc_binary(&mut self, sid: &Sid, now: Instant, data: &[u8], cross: &mut Vec<Cross>) {
        let msg = match DcMessage::decode(data) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(session_id = %sid, error = %e, "bad data channel message");
                self.reports.push(PeerReport::Error("signaling"));
                return;
            }
        };
        match msg {
            DcMessage::Ping => {
                self.dc_send(&DcMessage::Pong);
            }
            DcMessage::Lock => {
                // Granted when no offer of ours is in flight and nobody holds it.
                let granted = self.pending.is_none() && !self.client_locked(now);
                if granted {
                    self.client_lock_until = Some(now + CLIENT_LOCK_TIMEOUT);
                }
                self.dc_send(&DcMessage::LockResponse(granted));
            }
            DcMessage::Unlock => self.client_lock_until = None,
            DcMessage::Sdp(bytes) => {
                if let Err(e) = self.on_dc_sdp(sid, &bytes, cross) {
                    tracing::warn!(session_id = %sid, error = %e, "data channel sdp refused");
                    self.reports.push(PeerReport::Error("signaling"));
                }
            }
            DcMessage::LossRate(v) => self.reports.push(PeerReport::ClientStat("loss_rate", v)),
            DcMessage::RoundTripTime(v) => self.reports.push(PeerReport::ClientStat("rtt", v)),
            DcMessage::Jitter(v) => self.reports.push(PeerReport::ClientStat("jitter", v)),
            DcMessage::Pong | DcMessage::LockResponse(_) | DcMessage::MediaMap(_) => {
                tracing::debug!(
                    session_id = %sid,
                    "unexpected server-side data channel message"
                );
            }
        }
    }

    fn on_dc_sdp(
        &mut self,
        sid: &Sid,
        bytes: &[u8],
        cross: &mut Vec<Cross>,
    ) -> Result<(), SfuError> {
        let json = inflate_sdp(bytes).map_err(|e| SfuError::Sdp(e.to_string()))?;
        let desc =
            SessionDescription::from_json(&json).map_err(|e| SfuError::Sdp(e.to_string()))?;
        match desc.kind.as_str() {
            "offer" => {
                let answer = self.accept_offer(&desc.sdp)?;
                self.dc_send_sdp(&SessionDescription::answer(answer).to_json());
            }
            "answer" => {
                let added = self.accept_answer(&desc.sdp)?;
                cross.push(Cross::Answered(sid.clone(), added));
            }
            other => return Err(SfuError::Sdp(format!("unknown description type {other:?}"))),
        }
        Ok(())
    }

    /// Hands str0m the clock (a failure is logged; the drain that follows sees it).
    pub fn handle_timeout(&mut self, sid: &Sid, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::warn!(session_id = %sid, error = %e, "rtc timeout failed");
        }
    }

    /// The timeout after a drain that stopped once its audio was sent: the last full
    /// drain's, pushed on if it was the pacer's deferred bookkeeping, and no later
    /// than the next full drain is due.
    fn after_quick_drain(&mut self, now: Instant, full_drain_at: Instant) {
        let cap = full_drain_at + FULL_DRAIN_EVERY;
        let (t, lazy) = match self.timeout {
            Some(_) if self.pacer_deferred => (now + PACER_DEFER, false),
            Some(t) => (t, self.lazy),
            None => (cap, false),
        };
        (self.timeout, self.lazy) = if t < cap {
            (Some(t), lazy)
        } else {
            (Some(cap), false)
        };
    }

    /// Drains the peer's output: datagrams to `out`, media and negotiation events
    /// for the others to `cross`. `stirred`: since the last drain, something other
    /// than audio writes may have queued output (a datagram in, a timer, video, a
    /// data channel message, a keyframe request). Returns false when the peer
    /// connection is over.
    pub fn drain(
        &mut self,
        sid: &Sid,
        now: Instant,
        stirred: bool,
        out: &mut Vec<Output>,
        cross: &mut Vec<Cross>,
    ) -> bool {
        let mut due_rounds = 0;
        let mut sent = false;
        if std::mem::take(&mut self.written) {
            // Packetize what was written without first polling for the timeout
            // (set to now) that asks for it: each poll walks all of str0m's subsystems.
            self.handle_timeout(sid, now);
        }
        // A drain for audio alone (frames written to this peer, packets received from
        // it) may stop once that many RTP packets went out and that many frames came
        // out, instead of polling once more for str0m's next timeout (the dearest
        // poll: it asks every subsystem). str0m puts events before datagrams, and
        // ICE, DTLS and SCTP datagrams and RTCP before RTP, so anything else queued
        // shows as a non-RTP datagram first, and the drain then runs to the end; so
        // does a received packet that makes no frame (reordered, duplicate). A full
        // drain still happens at least every FULL_DRAIN_EVERY.
        let audio_writes = std::mem::take(&mut self.audio_writes);
        let audio_in = std::mem::take(&mut self.audio_in);
        let mut quick = match self.full_drain_at {
            Some(at) if !stirred && audio_writes + audio_in > 0 && now < at + FULL_DRAIN_EVERY => {
                Some(Quick {
                    rtp_out: audio_writes,
                    frames_in: audio_in,
                    full_drain_at: at,
                })
            }
            _ => None,
        };
        loop {
            let o = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(session_id = %sid, error = %e, "rtc failed");
                    return false;
                }
            };
            let e = match o {
                // After a send, the pacer's bookkeeping waits (see PACER_DEFER).
                RtcOutput::Timeout(t)
                    if t <= now
                        && sent
                        && self.rtc.last_timeout_reason() == Reason::Pacer(PacerReason::Handle) =>
                {
                    self.timeout = Some(now + PACER_DEFER);
                    self.lazy = false;
                    self.full_drain_at = Some(now);
                    self.pacer_deferred = true;
                    return true;
                }
                // Before anything was sent, a timeout str0m sets to "now" releases what
                // is queued (the pacer, after a retransmission a NACK asked for): handle
                // it here, so one drain takes a packet to the wire instead of one core
                // poll per step (bounded, in case a timeout stays due).
                RtcOutput::Timeout(t) if t <= now && due_rounds < MAX_DUE_ROUNDS => {
                    due_rounds += 1;
                    self.handle_timeout(sid, now);
                    continue;
                }
                RtcOutput::Timeout(t) => {
                    self.timeout = Some(t);
                    self.lazy = lazy(self.rtc.last_timeout_reason());
                    self.full_drain_at = Some(now);
                    self.pacer_deferred = false;
                    return true;
                }
                RtcOutput::Transmit(t) => {
                    sent = true;
                    if on_selected_pair(&t.contents) {
                        self.path = Some((t.proto, t.source, t.destination));
                    }
                    quick = quick.and_then(|q| q.sent(is_rtp(&t.contents)));
                    out.push(Output::Transmit {
                        proto: t.proto,
                        source: t.source,
                        destination: t.destination,
                        // The datagram str0m made is handed on, not copied.
                        contents: t.contents.into(),
                    });
                    if let Some(q) = quick.filter(Quick::done) {
                        self.after_quick_drain(now, q.full_drain_at);
                        return true;
                    }
                    continue;
                }
                RtcOutput::Event(e) => e,
            };
            let frame = matches!(e, Event::MediaData(_));
            if let Some(q) = quick.as_mut().filter(|_| frame) {
                q.frames_in = q.frames_in.saturating_sub(1);
            }
            match e {
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    return false;
                }
                Event::MediaAdded(m)
                    if matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) =>
                {
                    cross.push(Cross::Added(sid.clone(), m.mid, m.kind));
                }
                Event::MediaChanged(m) => {
                    let receiving =
                        matches!(m.direction, Direction::RecvOnly | Direction::SendRecv);
                    match (receiving, self.inbound.contains_key(&m.mid)) {
                        (false, true) => cross.push(Cross::Stopped(sid.clone(), m.mid)),
                        (true, false) => {
                            if let Some(kind) = self.rtc.media(m.mid).map(|x| x.kind()) {
                                cross.push(Cross::Added(sid.clone(), m.mid, kind));
                            }
                        }
                        _ => {}
                    }
                }
                Event::MediaData(d) => cross.push(Cross::Media(sid.clone(), d)),
                Event::MediaEgressStats(s) => {
                    if let Some(loss) = s.loss {
                        cross.push(Cross::Loss(sid.clone(), s.mid, loss));
                    }
                }
                Event::KeyframeRequest(r) => {
                    cross.push(Cross::Keyframe(sid.clone(), r.mid, r.kind))
                }
                Event::ChannelOpen(id, label) => {
                    tracing::debug!(session_id = %sid, label, "data channel open");
                    if self.dc.is_none() {
                        self.dc = Some(id);
                    }
                }
                Event::ChannelData(d) if Some(d.id) == self.dc => {
                    if d.binary {
                        self.on_dc_binary(sid, now, &d.data, cross);
                    } else {
                        self.on_dc_text(sid, &d.data);
                    }
                }
                Event::ChannelClose(id) if Some(id) == self.dc => self.dc = None,
                _ => {}
            }
            if let Some(q) = quick.filter(|q| frame && q.done()) {
                self.after_quick_drain(now, q.full_drain_at);
                return true;
            }
        }
    }

    /// Whether a received RTP packet may be drained quickly (`Peer::drain`): the
    /// peer publishes audio only (a video packet may complete no frame, or several,
    /// and asks for retransmissions and keyframes).
    pub fn audio_only_publisher(&self) -> bool {
        self.inbound.values().all(|i| i.kind == MediaKind::Audio)
    }
}

/// A parse error of a client's SDP as one log line. str0m's parser names the position
/// as a pointer (`PointerOffset(0x55a7…)`): a heap address in the log helps an
/// attacker and no admin; it becomes the line and column of `sdp` it points into.
pub(super) fn sdp_error(sdp: &str, e: impl std::fmt::Display) -> SfuError {
    let text = e.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("PointerOffset(0x") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "PointerOffset(0x".len()..];
        let end = after.find(')').unwrap_or(after.len());
        let offset = usize::from_str_radix(&after[..end], 16)
            .ok()
            .and_then(|addr| addr.checked_sub(sdp.as_ptr() as usize))
            .filter(|o| *o <= sdp.len());
        match offset {
            Some(o) => {
                let before = &sdp.as_bytes()[..o];
                let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                let col = o - before
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |p| p + 1)
                    + 1;
                out.push_str(&format!("line {line} column {col}"));
            }
            None => out.push_str("an unknown position"),
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    SfuError::Sdp(
        out.split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

#[cfg(test)]
// Tests start their own clock.
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::DatagramPool;

    use str0m::media::Mid;
    use str0m::Rtc;

    use super::{AudioPath, Peer, Sealed};
    use crate::sim::opus_frame;
    use crate::Sid;

    /// The probe's finding: an SDP parse error logged a heap address (str0m's parser
    /// names positions as `PointerOffset(0x…)`); it names a line and column now.
    #[test]
    fn an_sdp_parse_error_names_a_position_not_an_address() {
        let sdp =
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio x UDP/TLS/RTP/SAVPF 111\r\n";
        for offer in [true, false] {
            let e = crate::parse_client_sdp(sdp, offer)
                .expect_err("not a valid SDP")
                .to_string();
            assert!(!e.contains("0x"), "{e}");
            assert!(!e.contains("PointerOffset"), "{e}");
        }
    }

    /// A peer hearing more speakers than its inline audio-mid slots keeps every
    /// mid's path, each found again by its own mid and no other.
    #[test]
    fn audio_paths_beyond_the_inline_slots_are_kept() {
        let now = Instant::now();
        let mut p = Peer::new("default", "call", Rtc::new(now), now);
        let src: Sid = Arc::from("sess-x");
        let mids = ["a1", "a2", "a3", "a4"].map(Mid::from);
        for mid in mids {
            let frame = opus_frame(mid, 1, None);
            let mut pool = DatagramPool::default();
            assert!(matches!(
                p.seal_audio(mid, &src, &frame, false, &mut pool),
                Sealed::Str0m
            ));
        }
        assert_eq!(p.audio_paths.iter().count(), 4);
        for mid in mids {
            assert!(matches!(p.audio_paths.get_mut(mid), Some(AudioPath::Str0m)));
        }
        assert!(p.audio_paths.get_mut(Mid::from("a5")).is_none());
    }

    /// A mid whose audio went to str0m (a screen's) stays with str0m when it later
    /// carries voice: str0m has used its SSRC, and a sealed packet could repeat one
    /// of str0m's (SSRC, index) nonces.
    #[test]
    fn a_mid_once_written_to_str0m_is_never_sealed() {
        let now = Instant::now();
        let mut p = Peer::new("default", "call", Rtc::new(now), now);
        let mid = Mid::from("a1");
        let src: Sid = Arc::from("sess-x");
        let frame = opus_frame(mid, 1, None);
        assert!(matches!(
            p.seal_audio(mid, &src, &frame, false, &mut DatagramPool::default()),
            Sealed::Str0m
        ));
        assert!(matches!(p.audio_paths.get_mut(mid), Some(AudioPath::Str0m)));
        assert!(matches!(
            p.seal_audio(mid, &src, &frame, true, &mut DatagramPool::default()),
            Sealed::Str0m
        ));
    }
}
