//! A str0m WebRTC participant for process tests: offers first (data channel, plus a
//! microphone for talkers), answers server offers, speaks numbered Opus frames, and
//! counts what it receives. Signaling transport is up to the caller.

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub struct Peer {
    pub rtc: Rtc,
    pub sock: std::net::UdpSocket,
    pub addr: SocketAddr,
    pending: Option<SdpPendingOffer>,
    pub audio: Option<Mid>,
    /// The frame numbers of the audio received.
    pub received: Vec<u32>,
    pub counter: u32,
    /// Track ids of the server's offers (`a=msid:<stream> <track>`).
    pub track_ids: Vec<String>,
}

impl Peer {
    /// A new participant on `bind_ip` and its first offer (`{"type","sdp"}` JSON).
    pub fn new(bind_ip: &str, talker: bool) -> (Peer, Value) {
        let sock = std::net::UdpSocket::bind((bind_ip, 0)).unwrap();
        sock.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_channel("calls-dc".into());
        let audio = talker.then(|| {
            api.add_media(
                MediaKind::Audio,
                Direction::SendRecv,
                Some("mic-stream".into()),
                Some("mic".into()),
                None,
            )
        });
        let (offer, pending) = api.apply().unwrap();
        let peer = Peer {
            rtc,
            sock,
            addr,
            pending: Some(pending),
            audio,
            received: Vec::new(),
            counter: 0,
            track_ids: Vec::new(),
        };
        (peer, json!({"type": "offer", "sdp": offer.to_sdp_string()}))
    }

    /// Applies a server description; returns our answer to an offer.
    pub fn on_description(&mut self, desc: &Value) -> Option<Value> {
        let sdp = desc["sdp"].as_str().unwrap();
        match desc["type"].as_str().unwrap() {
            "answer" => {
                let pending = self.pending.take().expect("answer without offer");
                self.rtc
                    .sdp_api()
                    .accept_answer(pending, SdpAnswer::from_sdp_string(sdp).unwrap())
                    .unwrap();
                None
            }
            "offer" => {
                for line in sdp.lines().filter(|l| l.starts_with("a=msid:")) {
                    self.track_ids
                        .push(line.split_whitespace().nth(1).unwrap_or("").to_string());
                }
                let answer = self
                    .rtc
                    .sdp_api()
                    .accept_offer(SdpOffer::from_sdp_string(sdp).unwrap())
                    .unwrap();
                Some(json!({"type": "answer", "sdp": answer.to_sdp_string()}))
            }
            other => panic!("unexpected description {other}"),
        }
    }

    /// Datagrams in, timers, datagrams out, media counted.
    pub fn pump(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, src)) = self.sock.recv_from(&mut buf) {
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source: src,
                    destination: self.addr,
                    contents: buf[..n].try_into().unwrap(),
                },
            );
            self.rtc.handle_input(input).unwrap();
        }
        self.rtc
            .handle_input(Input::Timeout(Instant::now()))
            .unwrap();
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::MediaData(d)) => self
                    .received
                    .push(u32::from_be_bytes(d.data[..4].try_into().unwrap())),
                Output::Event(_) => {}
            }
        }
    }

    /// One 20 ms Opus frame carrying the next frame number.
    pub fn speak(&mut self) {
        let Some(mid) = self.audio else { return };
        let Some(w) = self.rtc.writer(mid) else {
            return;
        };
        let pt = w.payload_params().next().unwrap().pt();
        self.counter += 1;
        let ts = MediaTime::new(u64::from(self.counter) * 960, Frequency::FORTY_EIGHT_KHZ);
        let _ = w.write(pt, Instant::now(), ts, self.counter.to_be_bytes().to_vec());
    }
}
