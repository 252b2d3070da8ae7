//! A simulated network of str0m clients around one [`Sfu`], in simulated time: used by
//! the SFU's tests and by the forwarding benchmark (`cargo bench --bench forward`).
//! The SFU's own processing time is accounted separately from the clients'.
//!
//! The simulated time starts at the real clock's reading, and the SFU's own time is
//! measured on it: the one part of the crate allowed to read a clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

use super::datachannel::DcMessage;
use super::{Output, Sfu, SfuConfig};

/// A publisher's 20 ms Opus frame as str0m hands it over (payload type 111), for
/// tests below the network: RTP sequence number `seq`, payload "opus", and an audio
/// level (-dBov) if given.
pub fn opus_frame(mid: Mid, seq: u64, level: Option<i8>) -> str0m::media::MediaData {
    use str0m::format::{Codec, CodecExtra, CodecSpec, FormatParams, PayloadParams};
    let spec = CodecSpec {
        codec: Codec::Opus,
        clock_rate: Frequency::FORTY_EIGHT_KHZ,
        channels: Some(2),
        format: FormatParams::default(),
    };
    let ext_vals = str0m::rtp::ExtensionValues {
        audio_level: level,
        voice_activity: level.map(|_| true),
        ..Default::default()
    };
    str0m::media::MediaData {
        mid,
        pt: 111.into(),
        rid: None,
        params: PayloadParams::new(111.into(), None, spec),
        time: MediaTime::new(seq * 960, Frequency::FORTY_EIGHT_KHZ),
        network_time: Instant::now(),
        seq_range: seq.into()..=seq.into(),
        contiguous: true,
        data: std::sync::Arc::from(&b"opus"[..]),
        ext_vals,
        codec_extra: CodecExtra::None,
        last_sender_info: None,
        audio_start_of_talk_spurt: false,
    }
}

pub const SFU_ADDR: &str = "10.0.0.1:8443";

pub struct Client {
    pub session: String,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub audio: Option<Mid>,
    /// Payloads received, when `keep_payloads` (else only counted).
    pub received: Vec<Vec<u8>>,
    /// When each of `received` arrived (simulated time).
    pub received_at: Vec<Instant>,
    /// RTP time and audio level (-dBov) of each kept audio payload.
    pub received_meta: Vec<(u64, Option<i8>)>,
    pub received_count: usize,
    /// Video frames received (payloads), their codecs and RTP times (source clock).
    pub video: Vec<Vec<u8>>,
    pub video_codecs: Vec<str0m::format::Codec>,
    pub video_times: Vec<u64>,
    /// Simulcast layers of its video sender; a keyframe was asked for.
    pub video_rids: Vec<str0m::media::Rid>,
    pub keyframe_wanted: bool,
    /// The audio level (dBov) `speak` puts in its frames' RFC 6464 extension.
    pub level: Option<i8>,
    pub track_ids: Vec<String>,
    /// Every server offer this client got, in order.
    pub offers: Vec<String>,
    /// Its own video sender, once added.
    pub video_mid: Option<Mid>,
    /// The data channel, once open, and what arrived on it (binary?, bytes).
    pub dc: Option<str0m::channel::ChannelId>,
    pub dc_received: Vec<(bool, Vec<u8>)>,
    /// Per websocket offer: the last MediaMap the client had received by then.
    pub map_at_offer: Vec<Vec<(String, String, String)>>,
    /// Why the client's own `Rtc` gave up (its DTLS handshake timed out, say): it
    /// takes no part in the network from then on, as a browser that closed the call.
    pub failed: Option<String>,
}

impl Client {
    /// The MediaMaps received on the data channel so far, in order.
    pub fn media_maps(&self) -> Vec<Vec<(String, String, String)>> {
        self.dc_received
            .iter()
            .filter(|(binary, _)| *binary)
            .filter_map(|(_, d)| match DcMessage::decode(d) {
                Ok(DcMessage::MediaMap(m)) => Some(m),
                _ => None,
            })
            .collect()
    }
}

pub struct Net {
    pub now: Instant,
    pub sfu: Sfu,
    pub clients: Vec<Client>,
    /// Time spent inside the SFU (receive + poll), the benchmark's measure.
    pub sfu_busy: Duration,
    pub keep_payloads: bool,
    /// Every Nth RTP packet to (or from) these addresses is lost.
    pub lose_every: HashMap<SocketAddr, usize>,
    /// DTLS records from these clients never reach the SFU.
    pub block_dtls_from: HashSet<SocketAddr>,
    /// Sessions the SFU reported closed, and voice activity changes.
    pub closed: Vec<String>,
    pub voice: Vec<(String, bool)>,
    /// Sessions whose server offers wait (in `held_offers`) for `release_offers`.
    pub hold_offers: HashSet<String>,
    held_offers: Vec<(String, String)>,
    rtp_seen: HashMap<SocketAddr, usize>,
    /// RTCP datagrams delivered, by destination.
    pub rtcp_to: HashMap<SocketAddr, usize>,
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Net {
    pub fn new() -> Net {
        let now = Instant::now();
        let sfu = Sfu::new(SfuConfig::new(vec![(
            SFU_ADDR.parse().unwrap(),
            Protocol::Udp,
        )]));
        Net {
            now,
            sfu,
            clients: Vec::new(),
            sfu_busy: Duration::ZERO,
            keep_payloads: true,
            lose_every: HashMap::new(),
            block_dtls_from: HashSet::new(),
            closed: Vec::new(),
            voice: Vec::new(),
            hold_offers: HashSet::new(),
            held_offers: Vec::new(),
            rtp_seen: HashMap::new(),
            rtcp_to: HashMap::new(),
        }
    }

    /// A browser-like participant joins `call`: data channel + audio sender in its first
    /// offer, answered by the SFU.
    pub fn join(&mut self, call: &str, session: &str, addr: &str, with_audio: bool) -> usize {
        self.join_with(call, session, addr, with_audio, false)
    }

    /// As `join`; `av1`: the client supports AV1 and says so in its join.
    pub fn join_with(
        &mut self,
        call: &str,
        session: &str,
        addr: &str,
        with_audio: bool,
        av1: bool,
    ) -> usize {
        let addr: SocketAddr = addr.parse().unwrap();
        // Clients keep str0m's own SRTP: every simulated call checks that our
        // AES-GCM (sfu::crypto) and str0m's understand each other.
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_av1(av1)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let opts = super::SessionOptions {
            av1,
            ..Default::default()
        };
        self.sfu
            .add_session_with(self.now, call, session, opts)
            .unwrap();
        let mut api = rtc.sdp_api();
        api.add_channel("calls-dc".into());
        let audio = with_audio.then(|| {
            api.add_media(
                MediaKind::Audio,
                Direction::SendRecv,
                Some(format!("stream-{session}")),
                Some(format!("mic-{session}")),
                None,
            )
        });
        let (offer, pending): (SdpOffer, SdpPendingOffer) = api.apply().unwrap();
        let answer = self
            .sfu
            .handle_offer(session, &offer.to_sdp_string())
            .unwrap();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        self.clients.push(Client {
            session: session.into(),
            addr,
            rtc,
            audio,
            received: Vec::new(),
            received_at: Vec::new(),
            received_meta: Vec::new(),
            received_count: 0,
            video: Vec::new(),
            video_codecs: Vec::new(),
            video_times: Vec::new(),
            video_rids: Vec::new(),
            keyframe_wanted: false,
            level: None,
            track_ids: Vec::new(),
            offers: Vec::new(),
            video_mid: None,
            dc: None,
            dc_received: Vec::new(),
            map_at_offer: Vec::new(),
            failed: None,
        });
        self.clients.len() - 1
    }

    /// One 5 ms tick of the network: everyone polls, datagrams are delivered.
    pub fn step(&mut self) {
        let mut packets: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
        let keep = self.keep_payloads;
        for c in &mut self.clients {
            if c.failed.is_some() {
                continue;
            }
            if let Err(e) = c.rtc.handle_input(Input::Timeout(self.now)) {
                c.failed = Some(e.to_string());
                continue;
            }
            loop {
                let out = match c.rtc.poll_output() {
                    Ok(o) => o,
                    Err(e) => {
                        c.failed = Some(e.to_string());
                        break;
                    }
                };
                match out {
                    RtcOutput::Timeout(_) => break,
                    RtcOutput::Transmit(t) => {
                        packets.push((t.source, t.destination, t.contents.to_vec()))
                    }
                    RtcOutput::Event(Event::MediaData(d)) => {
                        let video = c
                            .rtc
                            .media(d.mid)
                            .is_some_and(|m| m.kind() == MediaKind::Video);
                        if video {
                            c.video.push(d.data.to_vec());
                            c.video_codecs.push(d.params.spec().codec);
                            c.video_times.push(d.time.numer());
                        } else {
                            c.received_count += 1;
                            if keep {
                                c.received.push(d.data.to_vec());
                                c.received_at.push(self.now);
                                c.received_meta
                                    .push((d.time.numer(), d.ext_vals.audio_level));
                            }
                        }
                    }
                    RtcOutput::Event(Event::ChannelOpen(id, _)) => c.dc = Some(id),
                    RtcOutput::Event(Event::KeyframeRequest(_)) => c.keyframe_wanted = true,
                    RtcOutput::Event(Event::ChannelData(d)) => {
                        c.dc_received.push((d.binary, d.data.to_vec()))
                    }
                    RtcOutput::Event(_) => {}
                }
            }
        }
        let mut out = Vec::new();
        let t = Instant::now();
        self.sfu.poll(self.now, &mut out);
        self.sfu_busy += t.elapsed();
        for o in out {
            match o {
                Output::Transmit {
                    source,
                    destination,
                    contents,
                    ..
                } => packets.push((source, destination, contents)),
                Output::Offer { session_id, json } => {
                    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                    let sdp = v["sdp"].as_str().unwrap();
                    if let Some(c) = self.clients.iter_mut().find(|c| c.session == session_id) {
                        c.offers.push(sdp.to_string());
                        let map = c.media_maps().pop().unwrap_or_default();
                        c.map_at_offer.push(map);
                    }
                    for line in sdp.lines().filter(|l| l.starts_with("a=msid:")) {
                        if let Some(track) = line.split_whitespace().nth(1) {
                            let c = self
                                .clients
                                .iter_mut()
                                .find(|c| c.session == session_id)
                                .unwrap();
                            c.track_ids.push(track.to_string());
                        }
                    }
                    if self.hold_offers.contains(&session_id) {
                        self.held_offers.push((session_id, sdp.to_string()));
                    } else {
                        self.answer(&session_id, sdp);
                    }
                }
                Output::Closed { session_id } => self.closed.push(session_id),
                Output::Voice { session_id, on } => self.voice.push((session_id, on)),
            }
        }
        let sfu_addr: SocketAddr = SFU_ADDR.parse().unwrap();
        for (src, dst, bytes) in packets {
            if self.lost(src, dst, &bytes) {
                continue;
            }
            if dst == sfu_addr {
                let t = Instant::now();
                self.sfu
                    .handle_receive(self.now, Protocol::Udp, src, dst, &bytes);
                self.sfu_busy += t.elapsed();
            } else if let Some(c) = self
                .clients
                .iter_mut()
                .find(|c| c.addr == dst && c.failed.is_none())
            {
                let input = Input::Receive(
                    self.now,
                    Receive {
                        proto: Protocol::Udp,
                        source: src,
                        destination: dst,
                        contents: bytes.as_slice().try_into().unwrap(),
                    },
                );
                if let Err(e) = c.rtc.handle_input(input) {
                    c.failed = Some(e.to_string());
                }
                // As the shell does once a datagram is sent.
                self.sfu.recycle(bytes);
            }
        }
        self.now += Duration::from_millis(5);
    }

    /// The client's answer to a server offer, handed to the SFU.
    fn answer(&mut self, session_id: &str, sdp: &str) {
        let c = self
            .clients
            .iter_mut()
            .find(|c| c.session == session_id)
            .unwrap();
        let answer = c
            .rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(sdp).unwrap())
            .unwrap();
        self.sfu
            .handle_answer(session_id, &answer.to_sdp_string())
            .unwrap();
    }

    /// Answers the server offers held back (`hold_offers`) and stops holding them.
    pub fn release_offers(&mut self) {
        self.hold_offers.clear();
        for (session_id, sdp) in std::mem::take(&mut self.held_offers) {
            self.answer(&session_id, &sdp);
        }
    }

    /// Applies the loss rules: RTP (not RTCP) packets every Nth per address, and
    /// blocked DTLS.
    fn lost(&mut self, src: SocketAddr, dst: SocketAddr, bytes: &[u8]) -> bool {
        let first = bytes.first().copied().unwrap_or(0);
        if (20..=63).contains(&first) && self.block_dtls_from.contains(&src) {
            return true;
        }
        if !super::peer::is_rtp(bytes) {
            if (128..192).contains(&first) {
                *self.rtcp_to.entry(dst).or_default() += 1;
            }
            return false;
        }
        for addr in [src, dst] {
            if let Some(&n) = self.lose_every.get(&addr) {
                let seen = self.rtp_seen.entry(addr).or_default();
                *seen += 1;
                if (*seen).is_multiple_of(n) {
                    return true;
                }
            }
        }
        false
    }

    /// RTP packets the loss rule dropped so far.
    pub fn rtp_lost(&self) -> usize {
        self.lose_every
            .iter()
            .map(|(a, n)| self.rtp_seen.get(a).copied().unwrap_or(0) / n)
            .sum()
    }

    /// The client adds a video sender on `stream_id` (renegotiation from its side).
    pub fn add_video(&mut self, i: usize, stream_id: &str) -> Mid {
        self.add_video_layers(i, stream_id, &[])
    }

    /// As `add_video`, sending simulcast layers with these rids (empty: no simulcast).
    pub fn add_video_layers(&mut self, i: usize, stream_id: &str, rids: &[&str]) -> Mid {
        let c = &mut self.clients[i];
        c.video_rids = rids.iter().map(|r| str0m::media::Rid::from(*r)).collect();
        let simulcast = (!rids.is_empty()).then(|| {
            let mut s = str0m::media::Simulcast::new();
            for r in rids {
                s.add_send_layer(str0m::media::SimulcastLayer::new(r));
            }
            s
        });
        let mut api = c.rtc.sdp_api();
        let mid = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            Some(stream_id.to_string()),
            Some(format!("{stream_id}-video")),
            simulcast,
        );
        let (offer, pending) = api.apply().unwrap();
        c.video_mid = Some(mid);
        self.offer_to_sfu(i, offer, pending);
        mid
    }

    /// The client's renegotiation: the SFU answers its offer.
    fn offer_to_sfu(&mut self, i: usize, offer: SdpOffer, pending: SdpPendingOffer) {
        let c = &mut self.clients[i];
        let answer = self
            .sfu
            .handle_offer(&c.session, &offer.to_sdp_string())
            .unwrap();
        c.rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
    }

    /// `screen_on` then the screen track, as a client shares: the SFU learns the
    /// stream id, the client adds a video sender on it (simulcast with `rids`).
    pub fn share_screen(&mut self, i: usize, stream_id: &str, rids: &[&str]) -> Mid {
        let session = self.clients[i].session.clone();
        self.sfu
            .set_screen_stream(&session, Some(stream_id.to_string()))
            .unwrap();
        self.add_video_layers(i, stream_id, rids)
    }

    /// The client stops its video sender (renegotiation from its side).
    pub fn stop_video(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let mid = c.video_mid.take().unwrap();
        let mut api = c.rtc.sdp_api();
        api.set_direction(mid, Direction::Inactive);
        let (offer, pending) = api.apply().unwrap();
        self.offer_to_sfu(i, offer, pending);
    }

    /// VP8-packetized frames of ~3 KB (several packets each) at 20 fps from client `i`
    /// for `d`, on every simulcast layer if it has some. Payload: byte 0 is VP8's
    /// inverse keyframe bit (a keyframe every second and when asked), bytes 1..5 the
    /// frame number, byte 5 the layer's rid initial.
    pub fn send_video(&mut self, i: usize, d: Duration, counter: &mut u32) {
        let end = self.now + d;
        while self.now < end {
            let c = &mut self.clients[i];
            let mid = c.video_mid.unwrap();
            *counter += 1;
            let key = c.keyframe_wanted || *counter % 20 == 1;
            c.keyframe_wanted = false;
            let layers: Vec<Option<str0m::media::Rid>> = if c.video_rids.is_empty() {
                vec![None]
            } else {
                c.video_rids.iter().copied().map(Some).collect()
            };
            for rid in layers {
                let Some(w) = c.rtc.writer(mid) else { break };
                let pt = w
                    .payload_params()
                    .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
                    .unwrap()
                    .pt();
                let ts = MediaTime::new(u64::from(*counter) * 4500, Frequency::NINETY_KHZ);
                let mut frame = vec![u8::from(!key)];
                frame.extend_from_slice(&counter.to_be_bytes());
                frame.push(rid.map(|r| r.as_bytes()[0]).unwrap_or(b'-'));
                frame.resize(3000, 0x5a);
                let w = match rid {
                    Some(r) => w.rid(r),
                    None => w,
                };
                w.write(pt, self.now, ts, frame).unwrap();
            }
            for _ in 0..10 {
                self.step();
            }
        }
    }

    /// Client `i` writes on its data channel.
    pub fn dc_send(&mut self, i: usize, binary: bool, data: &[u8]) {
        let c = &mut self.clients[i];
        let id = c.dc.expect("data channel open");
        c.rtc.channel(id).unwrap().write(binary, data).unwrap();
    }

    /// AV1 frames (one OBU_FRAME each) on `mid` of client `i` at 20 fps for `d`.
    pub fn send_av1(&mut self, i: usize, mid: Mid, d: Duration, counter: &mut u32) {
        let end = self.now + d;
        while self.now < end {
            let c = &mut self.clients[i];
            *counter += 1;
            if let Some(w) = c.rtc.writer(mid) {
                let pt = w
                    .payload_params()
                    .find(|p| p.spec().codec == str0m::format::Codec::Av1)
                    .unwrap()
                    .pt();
                let ts = MediaTime::new(u64::from(*counter) * 4500, Frequency::NINETY_KHZ);
                let mut frame = vec![0x30];
                frame.extend_from_slice(&counter.to_be_bytes());
                frame.resize(1000, 0x5a);
                w.write(pt, self.now, ts, frame).unwrap();
            }
            for _ in 0..10 {
                self.step();
            }
        }
    }

    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// 20 ms Opus frames from client `i` for `d`, payload = frame counter.
    pub fn talk(&mut self, i: usize, d: Duration, counter: &mut u32) {
        let end = self.now + d;
        while self.now < end {
            self.speak(i, counter);
            for _ in 0..4 {
                self.step();
            }
        }
    }

    /// One 20 ms Opus frame from client `i` now (sent at its next step), payload =
    /// the incremented frame counter.
    pub fn speak(&mut self, i: usize, counter: &mut u32) {
        let c = &mut self.clients[i];
        let mid = c.audio.unwrap();
        let mut w = c.rtc.writer(mid).unwrap();
        let pt = w.payload_params().next().unwrap().pt();
        if let Some(level) = c.level {
            w = w.audio_level(level, true);
        }
        *counter += 1;
        let ts = MediaTime::new(u64::from(*counter) * 960, Frequency::FORTY_EIGHT_KHZ);
        w.write(pt, self.now, ts, counter.to_be_bytes().to_vec())
            .unwrap();
    }
}
