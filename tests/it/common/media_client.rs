//! A Calls participant for process tests: the Calls websocket (join, msgpack `sdp`
//! frames with zlib JSON, `signal` events) plus a str0m peer with real UDP.

use std::time::{Duration, Instant};

use serde_json::Value;

pub use calls_lt::participant::sdp_frame;

use crate::common::peer::Peer;
use crate::common::{HostProc, Ws, PREFIX};

pub struct MediaClient {
    pub ws: Ws,
    pub peer: Peer,
}

impl MediaClient {
    /// Joins over the websocket and makes the first offer (data channel, plus a
    /// microphone track for talkers).
    pub async fn join(h: &HostProc, token: &str, channel: &str, talker: bool) -> MediaClient {
        let mut ws = Ws::connect(h, token).await;
        ws.join(channel).await;
        ws.expect("join").await;
        let (peer, offer) = Peer::new("127.0.0.1", talker);
        ws.send_raw(sdp_frame(100, &offer));
        let mut c = MediaClient { ws, peer };
        let sig = c.ws.expect("signal").await;
        c.on_signal(&sig);
        c
    }

    fn on_signal(&mut self, ev: &Value) {
        let desc: Value = serde_json::from_str(ev["data"]["data"].as_str().unwrap()).unwrap();
        if let Some(answer) = self.peer.on_description(&desc) {
            self.ws.send_raw(sdp_frame(101, &answer));
        }
    }

    /// Runs the peer connection for a moment: signals, datagrams, timers.
    fn pump(&mut self) {
        while let Ok(ev) = self.ws.events.try_recv() {
            if ev["event"] == format!("{PREFIX}signal").as_str() {
                self.on_signal(&ev);
            }
        }
        self.peer.pump();
    }
}

pub async fn run_for(clients: &mut [&mut MediaClient], d: Duration, talk: &[bool]) {
    run_until(clients, d, talk, |_| false).await;
}

/// Pumps every client, speaking on the talkers every 20 ms, until `done` holds or
/// `limit` passes. Loaded CI machines delay delivery, so conditions wait for an
/// outcome instead of counting on a timing.
pub async fn run_until(
    clients: &mut [&mut MediaClient],
    limit: Duration,
    talk: &[bool],
    done: impl Fn(&[&mut MediaClient]) -> bool,
) {
    let end = Instant::now() + limit;
    let mut next_frame = Instant::now();
    while Instant::now() < end && !done(clients) {
        if Instant::now() >= next_frame {
            for (c, t) in clients.iter_mut().zip(talk) {
                if *t && c.peer.rtc.is_connected() {
                    c.peer.speak();
                }
            }
            next_frame += Duration::from_millis(20);
        }
        for c in clients.iter_mut() {
            c.pump();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
