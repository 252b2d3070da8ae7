//! A simulated network of str0m clients around one [`Sfu`], in simulated time: used by
//! the SFU's tests and by the forwarding benchmark (`cargo bench --bench forward`).
//! The SFU's own processing time is accounted separately from the clients'.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

use super::{Output, Sfu, SfuConfig};

pub const SFU_ADDR: &str = "10.0.0.1:8443";

pub struct Client {
    pub session: String,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub audio: Option<Mid>,
    /// Payloads received, when `keep_payloads` (else only counted).
    pub received: Vec<Vec<u8>>,
    pub received_count: usize,
    pub track_ids: Vec<String>,
}

pub struct Net {
    pub now: Instant,
    pub sfu: Sfu,
    pub clients: Vec<Client>,
    /// Time spent inside the SFU (receive + poll), the benchmark's measure.
    pub sfu_busy: Duration,
    pub keep_payloads: bool,
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
        }
    }

    /// A browser-like participant joins `call`: data channel + audio sender in its first
    /// offer, answered by the SFU.
    pub fn join(&mut self, call: &str, session: &str, addr: &str, with_audio: bool) -> usize {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        self.sfu.add_session(self.now, call, session).unwrap();
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
            received_count: 0,
            track_ids: Vec::new(),
        });
        self.clients.len() - 1
    }

    /// One 5 ms tick of the network: everyone polls, datagrams are delivered.
    pub fn step(&mut self) {
        let mut packets: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
        let keep = self.keep_payloads;
        for c in &mut self.clients {
            c.rtc.handle_input(Input::Timeout(self.now)).unwrap();
            loop {
                match c.rtc.poll_output().unwrap() {
                    RtcOutput::Timeout(_) => break,
                    RtcOutput::Transmit(t) => {
                        packets.push((t.source, t.destination, t.contents.to_vec()))
                    }
                    RtcOutput::Event(Event::MediaData(d)) => {
                        c.received_count += 1;
                        if keep {
                            c.received.push(d.data.to_vec());
                        }
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
                        .handle_answer(&session_id, &answer.to_sdp_string())
                        .unwrap();
                }
                Output::Closed { .. } | Output::Voice { .. } => {}
            }
        }
        let sfu_addr: SocketAddr = SFU_ADDR.parse().unwrap();
        for (src, dst, bytes) in packets {
            if dst == sfu_addr {
                let t = Instant::now();
                self.sfu
                    .handle_receive(self.now, Protocol::Udp, src, dst, &bytes);
                self.sfu_busy += t.elapsed();
            } else if let Some(c) = self.clients.iter_mut().find(|c| c.addr == dst) {
                let input = Input::Receive(
                    self.now,
                    Receive {
                        proto: Protocol::Udp,
                        source: src,
                        destination: dst,
                        contents: bytes.as_slice().try_into().unwrap(),
                    },
                );
                c.rtc.handle_input(input).unwrap();
            }
        }
        self.now += Duration::from_millis(5);
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
            let c = &mut self.clients[i];
            let mid = c.audio.unwrap();
            let w = c.rtc.writer(mid).unwrap();
            let pt = w.payload_params().next().unwrap().pt();
            *counter += 1;
            let ts = MediaTime::new(u64::from(*counter) * 960, Frequency::FORTY_EIGHT_KHZ);
            w.write(pt, self.now, ts, counter.to_be_bytes().to_vec())
                .unwrap();
            for _ in 0..4 {
                self.step();
            }
        }
    }
}
