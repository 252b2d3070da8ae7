//! The recorder in the call: the Calls websocket as the bot (join with the job's id,
//! `signal` descriptions, `job_stop`), a receive-only WebRTC peer (str0m, frames
//! depacketized), and what it receives turned into the recording: every voice (and a
//! screen's sound) into the mixer, the screen's VP8 frames as they are.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::config::Config;
use super::mixer::{Mixer, RATE};
use super::timeline::{Clock, Report, TrackClock};
use super::webm::Muxer;
use calls_wire::client::{action, event_name, sdp_frame};

/// How long received audio may be late and still be mixed in.
const PLAYOUT_MS: f64 = 300.0;
/// How long the recorder waits to be in the call (join, ICE, DTLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Keyframe requests for one screen at most this often.
const PLI_EVERY: Duration = Duration::from_millis(500);
/// Screen frames wait for the audio of their time; one placed further ahead than this
/// (a broken timestamp), or beyond this many waiting frames, is dropped.
const MAX_VIDEO_AHEAD_MS: f64 = 10_000.0;
const MAX_VIDEO_QUEUE: usize = 2_000;
/// A connection lost this long ends the recording (the call is gone for us).
const DISCONNECTED_FOR: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("websocket: {0}")]
    Ws(String),
    #[error("join refused: {0}")]
    Join(String),
    #[error("rtc: {0}")]
    Rtc(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error(transparent)]
    Mix(#[from] super::mixer::MixError),
    #[error(transparent)]
    Mux(#[from] super::webm::MuxError),
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_err(e: tokio_tungstenite::tungstenite::Error) -> CallError {
    CallError::Ws(e.to_string())
}

fn rtc_err(e: impl std::fmt::Display) -> CallError {
    CallError::Rtc(e.to_string())
}

/// Why the recording stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The plugin's `job_stop` (the host stopped it, the call ended).
    JobStop,
    /// SIGTERM / SIGINT (the job service's time limit).
    Signal,
    /// The websocket closed or the media connection was lost.
    Lost,
}

enum Track {
    Voice(u64, TrackClock),
    Screen(Screen),
    Ignored,
}

struct Screen {
    clock: TrackClock,
    waiting_key: bool,
    last_pli: Option<Instant>,
}

/// A joined call with its media connection up.
pub struct Session {
    ws: Ws,
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    seq: i64,
    tracks: HashMap<Mid, Track>,
    next_voice: u64,
    next_timeout: Instant,
    ice: IceConnectionState,
    /// `job_stop` came while joining: there is nothing to record.
    pub stop_requested: bool,
    job_id: String,
}

fn report(d: &MediaData) -> Option<Report> {
    d.last_sender_info.map(|s| Report {
        ntp: s.ntp_time,
        rtp_s: s.rtp_time.as_seconds(),
    })
}

impl Session {
    /// Joins as the bot with the job's id, connects the media; errors say which step.
    pub async fn join(cfg: &Config) -> Result<Session, CallError> {
        let url = format!(
            "{}/api/v4/websocket",
            cfg.site_url.replacen("http", "ws", 1)
        );
        let mut req = url.into_client_request().map_err(ws_err)?;
        let auth = format!("Bearer {}", cfg.auth_token)
            .parse()
            .map_err(|_| CallError::Ws("invalid token".into()))?;
        req.headers_mut().insert("Authorization", auth);
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true)
            .await
            .map_err(ws_err)?;
        let join = json!({"channelID": cfg.call_id, "jobID": cfg.recording_id});
        ws.send(Message::Text(action(1, "join", &join.to_string()).into()))
            .await
            .map_err(ws_err)?;
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        loop {
            let m = tokio::time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| CallError::Timeout("the join"))?;
            let t = match m {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ws_err(e)),
                None => return Err(CallError::Ws("closed before the join".into())),
            };
            let v: Value = serde_json::from_str(&t).unwrap_or_default();
            match v["event"].as_str().and_then(event_name) {
                Some("join") => break,
                Some("error") => {
                    let msg = v["data"]["data"].as_str().unwrap_or("refused");
                    return Err(CallError::Join(msg.to_string()));
                }
                _ => {}
            }
        }
        let sock = UdpSocket::bind(("0.0.0.0", 0)).await.map_err(rtc_err)?;
        let local = sock.local_addr().map_err(rtc_err)?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(Instant::now());
        // Every local address the SFU may reach us on.
        for ip in local_ips() {
            let addr = SocketAddr::new(ip, local.port());
            if let Ok(c) = Candidate::host(addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        let mut api = rtc.sdp_api();
        // The SFU sends its offers once the client's data channel is up.
        api.add_channel("calls-dc".into());
        let (offer, pending) = api.apply().ok_or_else(|| rtc_err("no offer"))?;
        let desc = json!({"type": "offer", "sdp": offer.to_sdp_string()});
        ws.send(Message::Binary(sdp_frame(2, &desc.to_string()).into()))
            .await
            .map_err(ws_err)?;
        let mut s = Session {
            ws,
            rtc,
            sock,
            local,
            pending: Some(pending),
            seq: 2,
            tracks: HashMap::new(),
            next_voice: 1,
            next_timeout: Instant::now(),
            ice: IceConnectionState::New,
            stop_requested: false,
            job_id: cfg.recording_id.clone(),
        };
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut buf = vec![0u8; 2048];
        while !s.rtc.is_connected() {
            if Instant::now() > deadline {
                return Err(CallError::Timeout("the media connection"));
            }
            let wait = s.next_timeout.min(deadline);
            tokio::select! {
                m = s.ws.next() => {
                    if let Some(v) = s.on_ws(m).await? {
                        s.stop_requested |= v["job_id"].as_str() == Some(s.job_id.as_str());
                    }
                }
                r = s.sock.recv_from(&mut buf) => {
                    if let Ok((n, src)) = r { s.input(&buf[..n], src); }
                }
                _ = tokio::time::sleep_until(wait.into()) => {}
            }
            s.drive(&mut |_, _| Ok(())).await?;
        }
        Ok(s)
    }

    fn input(&mut self, data: &[u8], source: SocketAddr) {
        if let Ok(contents) = data.try_into() {
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.local,
                    contents,
                },
            );
            if let Err(e) = self.rtc.handle_input(input) {
                tracing::debug!(error = %e, "packet not taken");
            }
        }
    }

    /// A websocket message: the SFU's descriptions are answered; `job_stop` for this
    /// job is reported.
    async fn on_ws(
        &mut self,
        m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<Option<Value>, CallError> {
        let t = match m {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => return Err(CallError::Ws("closed".into())),
            Some(Ok(_)) => return Ok(None),
            Some(Err(e)) => return Err(ws_err(e)),
        };
        let v: Value = serde_json::from_str(&t).unwrap_or_default();
        match v["event"].as_str().and_then(event_name) {
            Some("signal") => {
                let desc: Value = serde_json::from_str(v["data"]["data"].as_str().unwrap_or("{}"))
                    .unwrap_or_default();
                self.on_description(&desc).await?;
                Ok(None)
            }
            Some("job_stop") => Ok(Some(v["data"].clone())),
            _ => Ok(None),
        }
    }

    async fn on_description(&mut self, desc: &Value) -> Result<(), CallError> {
        let sdp = desc["sdp"].as_str().unwrap_or_default();
        match desc["type"].as_str() {
            Some("answer") => {
                if let Some(p) = self.pending.take() {
                    let a = SdpAnswer::from_sdp_string(sdp).map_err(rtc_err)?;
                    self.rtc.sdp_api().accept_answer(p, a).map_err(rtc_err)?;
                }
            }
            Some("offer") => {
                let o = SdpOffer::from_sdp_string(sdp).map_err(rtc_err)?;
                let a = self.rtc.sdp_api().accept_offer(o).map_err(rtc_err)?;
                self.seq += 1;
                let desc = json!({"type": "answer", "sdp": a.to_sdp_string()});
                self.ws
                    .send(Message::Binary(
                        sdp_frame(self.seq, &desc.to_string()).into(),
                    ))
                    .await
                    .map_err(ws_err)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends what str0m wants sent; media frames go to `on_media`.
    async fn drive(
        &mut self,
        on_media: &mut dyn FnMut(&mut Session, MediaData) -> Result<(), CallError>,
    ) -> Result<(), CallError> {
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        loop {
            match self.rtc.poll_output().map_err(rtc_err)? {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    let _ = self.sock.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::MediaAdded(m)) => self.track_added(m.mid, m.kind),
                Output::Event(Event::IceConnectionStateChange(st)) => self.ice = st,
                Output::Event(Event::MediaData(d)) => on_media(self, d)?,
                Output::Event(_) => {}
            }
        }
    }

    fn track_added(&mut self, mid: Mid, kind: MediaKind) {
        let track_id = self
            .rtc
            .media(mid)
            .map(|m| m.track_id().to_string())
            .unwrap_or_default();
        // The SFU names tracks as upstream: voice_…, screen_…, screen-audio_…, video_….
        let track = match kind {
            MediaKind::Audio => {
                self.next_voice += 1;
                Track::Voice(self.next_voice, TrackClock::default())
            }
            MediaKind::Video if track_id.starts_with("screen") || track_id.is_empty() => {
                Track::Screen(Screen {
                    clock: TrackClock::default(),
                    waiting_key: true,
                    last_pli: None,
                })
            }
            MediaKind::Video => Track::Ignored,
        };
        tracing::info!(%mid, track_id, ?kind, "track received");
        self.tracks.insert(mid, track);
        if matches!(self.tracks.get(&mid), Some(Track::Screen(_))) {
            self.request_keyframe(mid);
        }
    }

    fn request_keyframe(&mut self, mid: Mid) {
        let now = Instant::now();
        if let Some(Track::Screen(s)) = self.tracks.get_mut(&mid) {
            if s.last_pli.is_some_and(|t| now - t < PLI_EVERY) {
                return;
            }
            s.last_pli = Some(now);
        }
        if let Some(mut w) = self.rtc.writer(mid) {
            // Refused before the stream's first packet: asked again on the next frame.
            let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
        }
    }

    /// Records until stopped: the mixed audio and the screen into `mux`. Returns why it
    /// stopped and the recording's length in ms.
    pub async fn record(
        &mut self,
        cfg: &Config,
        mux: &mut Muxer,
        stop: &mut (dyn std::future::Future<Output = ()> + Unpin + Send),
    ) -> Result<(Stopped, u64), CallError> {
        let start = Instant::now();
        let mut clock = Clock::new(start, SystemTime::now());
        let mut mixer = Mixer::new(cfg.audio_kbps * 1000)?;
        // Screen frames wait here until the audio up to their time is written, so that
        // the file's blocks go in time order.
        let mut video: Vec<(u64, bool, Vec<u8>)> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut buf = vec![0u8; 2048];
        let mut lost_since: Option<Instant> = None;
        let why = loop {
            let wait = self.next_timeout;
            let mut job_stop = None;
            tokio::select! {
                _ = &mut *stop => break Stopped::Signal,
                m = self.ws.next() => match self.on_ws(m).await {
                    Ok(v) => job_stop = v,
                    Err(e) => {
                        tracing::warn!(error = %e, "websocket lost: stopping");
                        break Stopped::Lost;
                    }
                },
                r = self.sock.recv_from(&mut buf) => {
                    if let Ok((n, src)) = r { self.input(&buf[..n], src); }
                }
                _ = tick.tick() => {
                    let horizon = clock.now_ms(Instant::now()) - PLAYOUT_MS;
                    write_until(&mut mixer, mux, &mut video, horizon)?;
                }
                _ = tokio::time::sleep_until(wait.into()) => {}
            }
            if let Some(v) = job_stop {
                if v["job_id"].as_str() == Some(cfg.recording_id.as_str()) {
                    break Stopped::JobStop;
                }
            }
            let mut on_media =
                |s: &mut Session, d: MediaData| s.on_media(&mut clock, &mut mixer, &mut video, d);
            self.drive(&mut on_media).await?;
            match self.ice {
                IceConnectionState::Disconnected => {
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > DISCONNECTED_FOR {
                        tracing::warn!("media connection lost: stopping");
                        break Stopped::Lost;
                    }
                }
                _ => lost_since = None,
            }
        };
        let end = clock.now_ms(Instant::now());
        write_until(&mut mixer, mux, &mut video, end)?;
        Ok((why, end.max(0.0) as u64))
    }

    fn on_media(
        &mut self,
        clock: &mut Clock,
        mixer: &mut Mixer,
        video: &mut Vec<(u64, bool, Vec<u8>)>,
        d: MediaData,
    ) -> Result<(), CallError> {
        let rtp_s = d.time.as_seconds();
        let mut want_key = false;
        match self.tracks.get_mut(&d.mid) {
            Some(Track::Voice(n, tc)) => {
                let at_ms = tc.place(clock, rtp_s, d.network_time, report(&d));
                let at = (at_ms * RATE as f64 / 1000.0).round() as i64;
                if let Err(e) = mixer.add(*n, at, &d.data) {
                    tracing::debug!(error = %e, "audio frame not decoded");
                }
            }
            Some(Track::Screen(s)) => {
                let key = d.is_keyframe();
                let at = s.clock.place(clock, rtp_s, d.network_time, report(&d));
                // A frame claiming a place far past what is written would wait (in
                // memory) for a time that may never come.
                let written_ms = (mixer.position() * 1000 / RATE) as f64;
                if at > written_ms + MAX_VIDEO_AHEAD_MS || video.len() >= MAX_VIDEO_QUEUE {
                    tracing::debug!(at, written_ms, "screen frame out of place: dropped");
                    return Ok(());
                }
                if !d.contiguous && !key {
                    // A gap: what follows cannot be decoded until the next keyframe.
                    s.waiting_key = true;
                }
                if s.waiting_key && !key {
                    want_key = true;
                } else {
                    s.waiting_key = false;
                    video.push((at.max(0.0) as u64, key, d.data.to_vec()));
                }
            }
            _ => {}
        }
        if want_key {
            self.request_keyframe(d.mid);
        }
        Ok(())
    }

    /// Leaves the call politely (the plugin ends the job with the session).
    pub async fn leave(mut self) {
        self.seq += 1;
        let _ = self
            .ws
            .send(Message::Text(action(self.seq, "leave", "").into()))
            .await;
        let _ = self.ws.close(None).await;
    }
}

/// Writes the mixed audio before `horizon_ms` and the screen frames up to the same
/// time, in time order.
fn write_until(
    mixer: &mut Mixer,
    mux: &mut Muxer,
    video: &mut Vec<(u64, bool, Vec<u8>)>,
    horizon_ms: f64,
) -> Result<(), CallError> {
    if horizon_ms <= 0.0 {
        return Ok(());
    }
    let upto = (horizon_ms * RATE as f64 / 1000.0) as u64;
    let audio = mixer.take_until(upto)?;
    let limit = (mixer.position() * 1000 / RATE) as f64;
    video.sort_by_key(|v| v.0);
    let ready = video.partition_point(|v| (v.0 as f64) < limit);
    let mut frames = video.drain(..ready).peekable();
    for (sample, packet) in audio {
        let ms = sample * 1000 / RATE;
        while let Some((t, key, data)) = frames.next_if(|v| v.0 <= ms) {
            mux.video(t, key, &data)?;
        }
        mux.audio(ms, &packet)?;
    }
    for (t, key, data) in frames {
        mux.video(t, key, &data)?;
    }
    Ok(())
}

/// The addresses of this machine's interfaces (the SFU may be on any of them).
fn local_ips() -> Vec<std::net::IpAddr> {
    let mut ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    // The address a route to the outside would use (no packet is sent).
    if let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0") {
        if s.connect("192.0.2.1:9").is_ok() {
            if let Ok(a) = s.local_addr() {
                if !a.ip().is_unspecified() && !ips.contains(&a.ip()) {
                    ips.push(a.ip());
                }
            }
        }
    }
    ips
}
