//! End-to-end media through the integrated SFU, with str0m clients that speak the Calls
//! client protocol (websocket join, msgpack `sdp` frames with zlib JSON, `signal`
//! events) and real UDP to the plugin's RTC port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::media_client::*;
use crate::common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_participants_hear_each_other_through_the_integrated_sfu() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let (alice, bob, channel) = (&s.users[0], &s.users[1], &s.channel);

    let mut a = MediaClient::join(&h, &alice.1, channel, true).await;
    let mut b = MediaClient::join(&h, &bob.1, channel, false).await;
    run_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(15),
        &[false, false],
        |c| c.iter().all(|c| c.peer.rtc.is_connected()),
    )
    .await;
    assert!(
        a.peer.rtc.is_connected() && b.peer.rtc.is_connected(),
        "ICE/DTLS over UDP to the RTC port"
    );

    // Muted (the initial state): nothing is forwarded.
    run_for(
        &mut [&mut a, &mut b],
        Duration::from_secs(1),
        &[true, false],
    )
    .await;
    assert_eq!(b.peer.received.len(), 0, "muted audio was forwarded");

    a.ws.send_calls("unmute", json!({}));
    b.ws.expect("user_unmuted").await;
    run_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(15),
        &[true, false],
        |c| c[1].peer.received.len() > 40,
    )
    .await;
    let heard = b.peer.received.len();
    assert!(heard > 40, "bob heard {heard} packets");
    assert!(
        b.peer
            .track_ids
            .iter()
            .any(|t| t.starts_with(&format!("voice_{}_", a.ws.conn_id))),
        "{:?}",
        b.peer.track_ids
    );
    assert!(a.peer.received.is_empty(), "alice heard herself");

    // Mute stops the flow: the SFU applies it before `user_muted` goes out, so
    // nothing alice says after bob saw the event may reach him. Packets already in
    // flight (numbered up to `said`) may still arrive late; a small margin covers
    // the mute command racing the datagrams queued ahead of it.
    a.ws.send_calls("mute", json!({}));
    b.ws.expect("user_muted").await;
    let said = a.peer.counter;
    run_for(
        &mut [&mut a, &mut b],
        Duration::from_millis(1500),
        &[true, false],
    )
    .await;
    assert!(a.peer.counter > said + 40, "alice kept talking while muted");
    let late: Vec<u32> = b
        .peer
        .received
        .iter()
        .copied()
        .filter(|n| *n > said + 10)
        .collect();
    assert!(
        late.is_empty(),
        "audio after mute: {late:?} (mute at {said})"
    );

    // The rtc_* family counts what happened (flushed about once a second).
    let m = metrics_until(&h, |m| {
        metric(m, "mattermost_plugin_calls_rtc_rtp_packets_total{direction=\"out\",groupID=\"default\",type=\"voice\"}") >= heard as f64
    })
    .await;
    assert_eq!(
        metric(
            &m,
            "mattermost_plugin_calls_rtc_sessions_total{groupID=\"default\"}"
        ),
        2.0,
        "{m}"
    );
    assert_eq!(metric(&m, "mattermost_plugin_calls_rtc_rtp_tracks_total{direction=\"in\",groupID=\"default\",type=\"audio/opus\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "mattermost_plugin_calls_rtc_rtp_tracks_total{direction=\"out\",groupID=\"default\",type=\"audio/opus\"}"), 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "mattermost_plugin_calls_rtc_conn_states_total{type=\"connected\"}"
        ),
        2.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "mattermost_plugin_calls_rtc_connection_time_count{groupID=\"default\"}"
        ) >= 2.0,
        "{m}"
    );

    // Leaving frees the session in the SFU and the call.
    b.ws.send_calls("leave", json!({}));
    a.ws.expect("user_left").await;
    let m = metrics_until(&h, |m| {
        metric(
            m,
            "mattermost_plugin_calls_rtc_sessions_total{groupID=\"default\"}",
        ) == 1.0
    })
    .await;
    assert_eq!(metric(&m, "mattermost_plugin_calls_rtc_rtp_tracks_total{direction=\"out\",groupID=\"default\",type=\"audio/opus\"}"), 0.0, "{m}");
}

/// The value of one sample line of a Prometheus exposition (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Scrapes the plugin's metrics until `ok` holds (10 s at most), returning the text.
async fn metrics_until(h: &HostProc, ok: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = h.plugin_metrics().await;
        if ok(&text) || Instant::now() > end {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_rtc_port_and_bad_signaling_leave_the_call_alone() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let (alice, bob, channel) = (&s.users[0], &s.users[1], &s.channel);
    let mut a = MediaClient::join(&h, &alice.1, channel, true).await;
    let mut b = MediaClient::join(&h, &bob.1, channel, false).await;
    a.ws.send_calls("unmute", json!({}));
    b.ws.expect("user_unmuted").await;
    run_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(15),
        &[true, false],
        |c| c[1].peer.received.len() > 20,
    )
    .await;
    assert!(b.peer.received.len() > 20, "no audio before the garbage");

    // Garbage datagrams: random bytes, a fake STUN header, a fake RTP header.
    let rtc: SocketAddr = format!("127.0.0.1:{}", h.rtc_port).parse().unwrap();
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in [
        &b"\x00\x01\x00\x00garbage-stun-without-cookie"[..],
        &[0x80, 0x6f, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef][..],
        &[0xffu8; 1200][..],
        &[][..],
    ] {
        junk.send_to(d, rtc).unwrap();
    }
    // A garbage ICE-TCP frame: the server closes that connection.
    let mut tcp = tokio::net::TcpStream::connect(rtc).await.unwrap();
    tcp.write_all(&[0, 5, b'h', b'e', b'l', b'l', b'o'])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("garbage tcp connection left open")
        .unwrap_or(0);
    assert_eq!(n, 0, "server answered garbage");

    // Malformed signaling over the websocket: bad msgpack, bad zlib, bad SDP, bad ICE.
    b.ws.send_raw(Message::Binary(vec![0xc1, 0x00, 0x13].into()));
    b.ws.send_raw(sdp_frame(
        102,
        &json!({"type": "offer", "sdp": "v=0\r\nnot sdp"}),
    ));
    b.ws.send_raw(sdp_frame(103, &json!({"type": "pranswer", "sdp": ""})));
    b.ws.send_calls("ice", json!({"data": "{not json"}));
    b.ws.send_calls(
        "ice",
        json!({"data": "{\"candidate\":\"candidate:bogus\"}"}),
    );

    // The call carries on: same sessions, audio still flows both ways of the SFU.
    let before = b.peer.received.len();
    run_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(15),
        &[true, false],
        |c| c[1].peer.received.len() > before + 40,
    )
    .await;
    assert!(
        b.peer.received.len() > before + 40,
        "audio stopped after garbage"
    );
    assert!(a.peer.rtc.is_connected() && b.peer.rtc.is_connected());
    b.ws.send_calls("leave", json!({}));
    a.ws.expect("user_left").await;
}

/// The plugin process is paused for 15 s (SIGSTOP) and resumed: both participants
/// are still there, so the call goes on, no one is removed, and audio flows again
/// (before, the call was ended at once on SIGCONT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_and_resumed_plugin_keeps_its_call() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let (alice, bob, channel) = (&s.users[0], &s.users[1], &s.channel);
    let mut a = MediaClient::join(&h, &alice.1, channel, true).await;
    let mut b = MediaClient::join(&h, &bob.1, channel, false).await;
    a.ws.send_calls("unmute", json!({}));
    run_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(15),
        &[true, false],
        |c| c[1].peer.received.len() > 40,
    )
    .await;
    assert!(b.peer.received.len() > 40, "no audio before the pause");

    let pid = h.plugin_pid().await.expect("plugin running").to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
    };
    assert!(signal("-STOP").success());
    // The clients keep running (and talking) while the plugin is stopped.
    run_for(
        &mut [&mut a, &mut b],
        Duration::from_secs(15),
        &[true, false],
    )
    .await;
    assert!(signal("-CONT").success());
    let heard = b.peer.received.len();
    run_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(20),
        &[true, false],
        |c| c[1].peer.received.len() > heard + 100,
    )
    .await;
    assert!(
        b.peer.received.len() > heard + 100,
        "audio did not come back after the pause"
    );
    let left: Vec<String> = names(&b.ws.drain(Duration::from_secs(2)).await)
        .into_iter()
        .filter(|n| n == "user_left" || n == "call_end")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        h.plugin_pid().await.map(|p| p.to_string()),
        Some(pid.clone())
    );
    let (_, one) = h
        .get(
            &alice.1,
            &format!("/plugins/com.mattermost.calls/{channel}"),
        )
        .await;
    assert_eq!(
        one["call"]["sessions"].as_array().unwrap().len(),
        2,
        "{one}"
    );
}
