//! One simulated Calls participant: the Mattermost websocket (join, msgpack `sdp`,
//! `signal` events), a str0m peer on its own UDP socket, Opus from a file when it
//! speaks, VP8 from a file when it shares its screen. Listeners run str0m in RTP mode:
//! packets are decrypted and counted, never depacketized.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const PREFIX: &str = "custom_com.mattermost.calls_";

/// What a participant does.
#[derive(Clone)]
pub struct Role {
    pub speaker: bool,
    pub sharer: bool,
}

/// Media every participant replays.
pub struct Media {
    pub opus: Vec<Vec<u8>>,
    pub vp8: Option<super::media_files::Video>,
}

/// Counters shared by all participants (read by the progress line and the report).
#[derive(Default)]
pub struct Totals {
    pub joined: AtomicU64,
    pub failed: AtomicU64,
    pub connected: AtomicU64,
    pub sent_audio: AtomicU64,
    pub sent_video: AtomicU64,
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    /// UDP payload bytes sent to the SFU and received from it (media with its RTP and
    /// SRTP overhead, RTCP, STUN, DTLS): the SFU's bandwidth in and out.
    pub wire_sent_bytes: AtomicU64,
    pub wire_received_bytes: AtomicU64,
}

/// What one participant saw, for the report.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Outcome {
    pub ok: bool,
    pub error: Option<String>,
    /// From sending `join` to the first media packet received.
    pub first_media_ms: Option<f64>,
    /// Where that time went: milestones on the way, from sending `join`.
    pub stages: Stages,
    pub received: u64,
    /// Per received stream: packets expected from sequence numbers minus received.
    pub lost: u64,
    pub expected: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ParticipantError {
    #[error("websocket: {0}")]
    Ws(String),
    #[error("join refused: {0}")]
    Join(String),
    #[error("rtc: {0}")]
    Rtc(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The client `sdp` action: a msgpack binary frame whose `data.data` is zlib JSON.
pub fn sdp_frame(seq: i64, desc: &Value) -> Message {
    Message::Binary(calls_wire::client::sdp_frame(seq, &desc.to_string()).into())
}

struct Stream {
    min: u64,
    max: u64,
    count: u64,
}

/// A received stream: by SSRC in RTP mode, by mid when frames are depacketized.
#[derive(Hash, PartialEq, Eq)]
enum StreamKey {
    Ssrc(u32),
    Mid(Mid),
}

struct Peer {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    audio: Option<Mid>,
    video: Option<Mid>,
    streams: HashMap<StreamKey, Stream>,
    first_media: Option<Instant>,
}

/// Milestones of a join, in ms from sending `join` (none if never reached).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stages {
    /// The plugin's `join` event came back (websocket, call lock, database).
    pub joined_ms: Option<f64>,
    /// The SFU's answer to our offer arrived.
    pub answered_ms: Option<f64>,
    /// ICE and DTLS are up.
    pub connected_ms: Option<f64>,
    /// The SFU's first offer of others' tracks arrived.
    pub server_offer_ms: Option<f64>,
}

impl Stages {
    /// Records the time since `since` into `slot`, the first time only.
    fn mark(slot: &mut Option<f64>, since: Instant) {
        if slot.is_none() {
            *slot = Some(since.elapsed().as_secs_f64() * 1000.0);
        }
    }
}

/// Who joins where, and as what.
pub struct Spec {
    /// Base URL of the host.
    pub base: String,
    pub token: String,
    pub channel_id: String,
    pub role: Role,
    pub bind_ip: IpAddr,
}

/// Runs one participant until `stop` fires, then leaves.
pub async fn run(
    spec: Spec,
    media: Arc<Media>,
    totals: Arc<Totals>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Outcome {
    match participate(&spec, &media, &totals, stop).await {
        Ok(o) => o,
        Err(e) => {
            totals.failed.fetch_add(1, Ordering::Relaxed);
            Outcome {
                error: Some(e.to_string()),
                ..Default::default()
            }
        }
    }
}

async fn participate(
    spec: &Spec,
    media: &Media,
    totals: &Totals,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Outcome, ParticipantError> {
    let (base, token, channel_id, role) = (&spec.base, &spec.token, &spec.channel_id, &spec.role);
    let ws_err = |e: tokio_tungstenite::tungstenite::Error| ParticipantError::Ws(e.to_string());
    let url = format!("{}/api/v4/websocket", base.replacen("http", "ws", 1));
    let mut req = url.into_client_request().map_err(ws_err)?;
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| ParticipantError::Ws("bad token".into()))?,
    );
    // Nagle off, as the browsers' websockets.
    let (mut ws, _): (WsStream, _) = tokio_tungstenite::connect_async_with_config(req, None, true)
        .await
        .map_err(ws_err)?;
    let mut seq = 1i64;
    let join_at = Instant::now();
    let join =
        json!({"action": format!("{PREFIX}join"), "seq": seq, "data": {"channelID": channel_id}});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .map_err(ws_err)?;
    // Wait for our `join` event (or an `error`).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| ParticipantError::Timeout("join"))?;
        let Some(Ok(Message::Text(t))) = m else {
            if m.is_none() {
                return Err(ParticipantError::Ws("closed before join".into()));
            }
            continue;
        };
        let v: Value = serde_json::from_str(&t).unwrap_or_default();
        match v["event"].as_str() {
            Some(e) if e == format!("{PREFIX}join") => break,
            Some(e) if e == format!("{PREFIX}error") => {
                return Err(ParticipantError::Join(v["data"]["data"].to_string()))
            }
            _ => {}
        }
    }
    totals.joined.fetch_add(1, Ordering::Relaxed);
    let mut stages = Stages::default();
    Stages::mark(&mut stages.joined_ms, join_at);

    let sock = UdpSocket::bind((spec.bind_ip, 0))
        .await
        .map_err(|e| ParticipantError::Rtc(e.to_string()))?;
    let local = sock
        .local_addr()
        .map_err(|e| ParticipantError::Rtc(e.to_string()))?;
    let sends = role.speaker || role.sharer;
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        // Listeners only count: no depacketizing.
        .set_rtp_mode(!sends)
        // The load tool must outpace the SFU it measures: the same cheap SRTP.
        .set_crypto_provider(calls_sfu::crypto::provider())
        .build(Instant::now());
    let cand = Candidate::host(local, "udp").map_err(|e| ParticipantError::Rtc(e.to_string()))?;
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    api.add_channel("calls-dc".into());
    let audio = role.speaker.then(|| {
        api.add_media(
            MediaKind::Audio,
            Direction::SendRecv,
            Some("mic".into()),
            Some("mic-track".into()),
            None,
        )
    });
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| ParticipantError::Rtc("no offer".into()))?;
    seq += 1;
    ws.send(sdp_frame(
        seq,
        &json!({"type": "offer", "sdp": offer.to_sdp_string()}),
    ))
    .await
    .map_err(ws_err)?;
    let mut peer = Peer {
        rtc,
        sock,
        local,
        pending: Some(pending),
        audio,
        video: None,
        streams: HashMap::new(),
        first_media: None,
    };

    let screen_stream = format!("screen-{}", calls_wire::ids::new_id());
    let (mut unmuted, mut announced) = (false, false);
    // Our offer adding the screen is out (withdrawn if the server's offer crosses it).
    let mut video_offered = false;
    let mut audio_i = 0usize;
    let mut video_i = 0usize;
    let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
    let fps = media.vp8.as_ref().map_or(10, |v| v.fps);
    let mut video_tick = tokio::time::interval(Duration::from_millis(1000 / u64::from(fps)));
    let mut buf = vec![0u8; 2048];
    let mut next_timeout = Instant::now();
    let start = Instant::now();
    let mut media_t = 0u64;
    let mut was_connected = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or_default();
                    if v["event"] == format!("{PREFIX}signal").as_str() {
                        let desc: Value = serde_json::from_str(v["data"]["data"].as_str().unwrap_or("{}")).unwrap_or_default();
                        match desc["type"].as_str() {
                            Some("answer") => Stages::mark(&mut stages.answered_ms, join_at),
                            Some("offer") => Stages::mark(&mut stages.server_offer_ms, join_at),
                            _ => {}
                        }
                        let withdrawn = on_description(&mut peer, &desc)?;
                        if withdrawn.1 && video_offered {
                            // The server's offer crossed ours: offer the screen again later.
                            peer.video = None;
                        }
                        if withdrawn.1 || peer.pending.is_none() {
                            video_offered = false;
                        }
                        if let Some(answer) = withdrawn.0 {
                            seq += 1;
                            ws.send(sdp_frame(seq, &answer)).await.map_err(ws_err)?;
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_err(e)),
                None => return Err(ParticipantError::Ws("closed".into())),
            },
            r = peer.sock.recv_from(&mut buf) => {
                if let Ok((n, src)) = r {
                    totals.wire_received_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if let Ok(contents) = buf[..n].try_into() {
                        let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source: src, destination: peer.local, contents });
                        let _ = peer.rtc.handle_input(input);
                    }
                }
            }
            _ = audio_tick.tick(), if peer.audio.is_some() && peer.rtc.is_connected() => {
                if !unmuted {
                    unmuted = true;
                    seq += 1;
                    let m = json!({"action": format!("{PREFIX}unmute"), "seq": seq, "data": {}});
                    ws.send(Message::Text(m.to_string().into())).await.map_err(ws_err)?;
                }
                if let Some(w) = peer.audio.and_then(|mid| peer.rtc.writer(mid)) {
                    let pt = w.payload_params().find(|p| p.spec().codec == str0m::format::Codec::Opus).map(|p| p.pt());
                    if let Some(pt) = pt {
                        media_t += 960;
                        let pkt = media.opus[audio_i % media.opus.len()].clone();
                        audio_i += 1;
                        if w.write(pt, Instant::now(), MediaTime::new(media_t, Frequency::FORTY_EIGHT_KHZ), pkt).is_ok() {
                            totals.sent_audio.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            _ = video_tick.tick(), if role.sharer && media.vp8.is_some() && peer.rtc.is_connected() => {
                if !announced {
                    // screen_on first, with the stream id the server will see.
                    announced = true;
                    seq += 1;
                    let data = json!({"screenStreamID": screen_stream}).to_string();
                    let m = json!({"action": format!("{PREFIX}screen_on"), "seq": seq, "data": {"data": data}});
                    ws.send(Message::Text(m.to_string().into())).await.map_err(ws_err)?;
                }
                if peer.video.is_none() && peer.pending.is_none() {
                    let mut api = peer.rtc.sdp_api();
                    let mid = api.add_media(MediaKind::Video, Direction::SendOnly, Some(screen_stream.clone()), Some("screen-track".into()), None);
                    if let Some((offer, pending)) = api.apply() {
                        peer.pending = Some(pending);
                        peer.video = Some(mid);
                        video_offered = true;
                        seq += 1;
                        ws.send(sdp_frame(seq, &json!({"type": "offer", "sdp": offer.to_sdp_string()}))).await.map_err(ws_err)?;
                    }
                }
                if let (Some(v), Some(w)) = (&media.vp8, peer.video.and_then(|mid| peer.rtc.writer(mid))) {
                    let (frames, fps) = (&v.frames, &v.fps);
                    let pt = w.payload_params().find(|p| p.spec().codec == str0m::format::Codec::Vp8).map(|p| p.pt());
                    if let Some(pt) = pt {
                        let (_, f) = &frames[video_i % frames.len()];
                        video_i += 1;
                        let ts = MediaTime::new(video_i as u64 * 90_000 / u64::from(*fps), Frequency::NINETY_KHZ);
                        if w.write(pt, Instant::now(), ts, f.clone()).is_ok() {
                            totals.sent_video.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(next_timeout.into()) => {}
        }
        let _ = peer.rtc.handle_input(Input::Timeout(Instant::now()));
        next_timeout = drain(&mut peer, totals).await?;
        if !was_connected && peer.rtc.is_connected() {
            was_connected = true;
            Stages::mark(&mut stages.connected_ms, join_at);
            totals.connected.fetch_add(1, Ordering::Relaxed);
        }
        if !peer.rtc.is_connected() && start.elapsed() > Duration::from_secs(30) {
            return Err(ParticipantError::Timeout("ICE/DTLS"));
        }
    }
    // Leave politely.
    seq += 1;
    let m = json!({"action": format!("{PREFIX}leave"), "seq": seq, "data": {}});
    let _ = ws.send(Message::Text(m.to_string().into())).await;
    let _ = ws.close(None).await;
    let (mut lost, mut expected, mut received) = (0, 0, 0);
    for s in peer.streams.values() {
        let e = s.max - s.min + 1;
        expected += e;
        received += s.count;
        lost += e.saturating_sub(s.count);
    }
    Ok(Outcome {
        ok: true,
        error: None,
        first_media_ms: peer
            .first_media
            .map(|t| t.duration_since(join_at).as_secs_f64() * 1000.0),
        stages,
        received,
        lost,
        expected,
    })
}

/// Applies a server description: our answer to its offer, and whether our own
/// pending offer was withdrawn for it.
fn on_description(
    peer: &mut Peer,
    desc: &Value,
) -> Result<(Option<Value>, bool), ParticipantError> {
    let err = |e: String| ParticipantError::Rtc(e);
    let sdp = desc["sdp"].as_str().unwrap_or_default();
    match desc["type"].as_str() {
        Some("answer") => {
            if let Some(p) = peer.pending.take() {
                let a = SdpAnswer::from_sdp_string(sdp).map_err(|e| err(e.to_string()))?;
                peer.rtc
                    .sdp_api()
                    .accept_answer(p, a)
                    .map_err(|e| err(e.to_string()))?;
            }
            Ok((None, false))
        }
        Some("offer") => {
            // The server wins a glare: our own offer is withdrawn (as a polite peer).
            let withdrawn = peer.pending.take().is_some();
            let o = SdpOffer::from_sdp_string(sdp).map_err(|e| err(e.to_string()))?;
            let a = peer
                .rtc
                .sdp_api()
                .accept_offer(o)
                .map_err(|e| err(e.to_string()))?;
            Ok((
                Some(json!({"type": "answer", "sdp": a.to_sdp_string()})),
                withdrawn,
            ))
        }
        _ => Ok((None, false)),
    }
}

/// Sends what str0m wants sent and counts what arrived; returns the next timeout.
async fn drain(peer: &mut Peer, totals: &Totals) -> Result<Instant, ParticipantError> {
    loop {
        match peer.rtc.poll_output() {
            Ok(Output::Timeout(t)) => return Ok(t),
            Ok(Output::Transmit(t)) => {
                if peer.sock.send_to(&t.contents, t.destination).await.is_ok() {
                    totals
                        .wire_sent_bytes
                        .fetch_add(t.contents.len() as u64, Ordering::Relaxed);
                }
            }
            Ok(Output::Event(Event::RtpPacket(p))) => {
                let seq = *p.seq_no;
                let s = peer
                    .streams
                    .entry(StreamKey::Ssrc(*p.header.ssrc))
                    .or_insert(Stream {
                        min: seq,
                        max: seq,
                        count: 0,
                    });
                s.min = s.min.min(seq);
                s.max = s.max.max(seq);
                s.count += 1;
                count(peer, totals, p.payload.len());
            }
            Ok(Output::Event(Event::MediaData(d))) => {
                let (a, b) = (**d.seq_range.start(), **d.seq_range.end());
                let s = peer.streams.entry(StreamKey::Mid(d.mid)).or_insert(Stream {
                    min: a,
                    max: b,
                    count: 0,
                });
                s.min = s.min.min(a);
                s.max = s.max.max(b);
                s.count += b - a + 1;
                count(peer, totals, d.data.len());
            }
            Ok(Output::Event(_)) => {}
            Err(e) => return Err(ParticipantError::Rtc(e.to_string())),
        }
    }
}

fn count(peer: &mut Peer, totals: &Totals, bytes: usize) {
    if peer.first_media.is_none() {
        peer.first_media = Some(Instant::now());
    }
    totals.received.fetch_add(1, Ordering::Relaxed);
    totals
        .received_bytes
        .fetch_add(bytes as u64, Ordering::Relaxed);
}
