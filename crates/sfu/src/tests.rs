//! The SFU against real str0m peers on an in-memory network, in simulated time.

use std::time::Duration;

use str0m::net::Protocol;

use super::datachannel::DcMessage;
use super::sim::{Net, SFU_ADDR};

#[test]
fn audio_is_forwarded_within_a_call_only_and_mute_stops_it() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    let c = net.join("call-2", "sess-c", "3.3.3.3:3000", true);
    let d = net.join("call-2", "sess-d", "4.4.4.4:4000", false);
    net.run(Duration::from_secs(2));
    assert!(
        net.clients.iter().all(|c| c.rtc.is_connected()),
        "all connected"
    );
    assert_eq!(net.sfu.session_count(), 4);

    // A (call 1) and C (call 2) talk at the same time; each call hears only its own.
    net.sfu.set_muted("sess-a", false).unwrap();
    net.sfu.set_muted("sess-c", false).unwrap();
    let mut counter = 0;
    let mut other = 10_000;
    for _ in 0..100 {
        net.talk(a, Duration::from_millis(20), &mut counter);
        net.talk(c, Duration::from_millis(20), &mut other);
    }
    let value = |p: &Vec<u8>| u32::from_be_bytes(p[..4].try_into().unwrap());
    let got_b = net.clients[b].received.len();
    let got_d = net.clients[d].received.len();
    assert!(got_b > 50 && got_d > 50, "B got {got_b}, D got {got_d}");
    assert!(
        net.clients[b].received.iter().all(|p| value(p) < 10_000),
        "B got a packet of call 2"
    );
    assert!(
        net.clients[d].received.iter().all(|p| value(p) >= 10_000),
        "D got a packet of call 1"
    );
    assert_eq!(net.clients[c].received.len(), 0, "C hears itself or call 1");
    assert_eq!(net.clients[a].received.len(), 0, "A hears itself");
    // The forwarded track follows the client protocol's naming.
    let tid = &net.clients[b].track_ids;
    assert!(
        tid.iter()
            .any(|t| t.starts_with("voice_sess-a_") && t.len() == "voice_sess-a_".len() + 8),
        "{tid:?}"
    );

    // Mute stops forwarding.
    net.sfu.set_muted("sess-a", true).unwrap();
    net.run(Duration::from_millis(200));
    let before = net.clients[b].received.len();
    net.talk(a, Duration::from_secs(1), &mut counter);
    assert_eq!(
        net.clients[b].received.len(),
        before,
        "muted audio was forwarded"
    );
}

/// Audio leaves the SFU in the poll after it arrived, for every subscriber, for as
/// long as two people talk: the drain that stops once the written frames are sent
/// (without polling str0m for its next timeout) must never leave a frame behind.
#[test]
fn forwarded_audio_is_never_held_back() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", true);
    let listeners: Vec<usize> = (0..3)
        .map(|i| {
            net.join(
                "call-1",
                &format!("sess-l{i}"),
                &format!("3.3.3.{i}:3000"),
                false,
            )
        })
        .collect();
    net.run(Duration::from_secs(2));
    net.sfu.set_muted("sess-a", false).unwrap();
    net.sfu.set_muted("sess-b", false).unwrap();
    let (mut ca, mut cb) = (0u32, 100_000u32);
    let mut written_at = std::collections::HashMap::new();
    // 4 s: many full-drain periods, str0m's reports and the listeners' feedback. Half
    // the time both speak in the same tick, so one drain sends two written frames.
    for i in 0..200 {
        for (who, counter) in [(a, &mut ca), (b, &mut cb)] {
            written_at.insert(*counter + 1, net.now);
            net.speak(who, counter);
            if i % 2 == 0 {
                net.run(Duration::from_millis(10));
            }
        }
        if i % 2 == 1 {
            net.run(Duration::from_millis(20));
        }
    }
    let value = |p: &Vec<u8>| u32::from_be_bytes(p[..4].try_into().unwrap());
    for l in listeners {
        let c = &net.clients[l];
        // The first frames may precede the listener's answer to the server offer.
        let from = c.received.len().saturating_sub(300);
        assert!(
            c.received.len() >= 300,
            "listener {l} got {}",
            c.received.len()
        );
        for (p, at) in c.received.iter().zip(&c.received_at).skip(from) {
            let sent = written_at[&value(p)];
            // Publisher → SFU → listener is two 5 ms network steps in the simulation.
            let delay = *at - sent;
            assert!(
                delay <= Duration::from_millis(10),
                "listener {l}: frame {} took {delay:?}",
                value(p)
            );
        }
    }
}

/// Voice leaves the SFU sealed by the core (`egress`), never written to the
/// subscriber's str0m: the subscriber's own str0m decrypts every frame, in order,
/// with its RTP timing and audio level; and after the speaker leaves, a newcomer's
/// voice reaches the same subscriber the same way. Frames that come while the
/// subscriber has not answered the offer yet do not decide the mid's path.
#[test]
fn voice_is_sealed_by_the_core_and_arrives_whole() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    net.clients[a].level = Some(-30);
    net.hold_offers.insert("sess-b".to_string());
    net.sfu.set_muted("sess-a", false).unwrap();
    let mut counter = 0;
    net.talk(a, Duration::from_secs(2), &mut counter);
    assert!(net.clients[b].received.is_empty());
    net.release_offers();
    net.talk(a, Duration::from_secs(2), &mut counter);
    assert_eq!(net.sfu.sealed_audio_mids("sess-b"), 1);
    assert_eq!(net.sfu.sealed_audio_mids("sess-a"), 0, "A receives nothing");

    let value = |p: &Vec<u8>| u32::from_be_bytes(p[..4].try_into().unwrap());
    let c = &net.clients[b];
    let got: Vec<u32> = c.received.iter().map(value).collect();
    // The first frames may precede B's answer to the server offer.
    assert!(got.len() >= 90, "B got {}", got.len());
    assert_eq!(got.last(), Some(&counter));
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "out of order or lost: {got:?}"
    );
    for (w, m) in got.windows(2).zip(c.received_meta.windows(2)) {
        // 20 ms frames at 48 kHz, as the publisher stamped them.
        assert_eq!(m[1].0 - m[0].0, u64::from(w[1] - w[0]) * 960);
    }
    assert!(c.received_meta.iter().all(|m| m.1 == Some(-30)));

    // A leaves; C joins and talks; B hears C through a sealed mid too.
    net.sfu.remove_session("sess-a");
    let c3 = net.join("call-1", "sess-c", "3.3.3.3:3000", true);
    net.run(Duration::from_secs(2));
    net.sfu.set_muted("sess-c", false).unwrap();
    let before = net.clients[b].received.len();
    let mut other = 10_000;
    net.talk(c3, Duration::from_secs(2), &mut other);
    let got: Vec<u32> = net.clients[b].received[before..]
        .iter()
        .map(value)
        .collect();
    assert!(got.len() >= 90, "B got {} of C", got.len());
    assert!(got.iter().all(|v| *v > 10_000));
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
    assert!(net.sfu.sealed_audio_mids("sess-b") >= 1);
}

#[test]
fn newcomer_gets_existing_tracks_and_leaver_is_dropped() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    net.sfu.set_muted("sess-a", false).unwrap();
    net.run(Duration::from_secs(1));
    let mut counter = 0;
    net.talk(a, Duration::from_millis(500), &mut counter);
    // B joins mid-call and receives A's existing track.
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    net.run(Duration::from_secs(1));
    net.talk(a, Duration::from_secs(1), &mut counter);
    assert!(
        net.clients[b].received.len() > 20,
        "late joiner got {}",
        net.clients[b].received.len()
    );
    net.sfu.remove_session("sess-a");
    assert_eq!(net.sfu.session_count(), 1);
    net.run(Duration::from_millis(500));
}

/// A leaver's place in the core goes to the next session: the publisher's fan-out
/// list must not carry the leaver's subscription over to the newcomer.
#[test]
fn a_leavers_place_goes_to_a_newcomer_without_its_subscriptions() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    let c = net.join("call-1", "sess-c", "3.3.3.3:3000", false);
    net.sfu.set_muted("sess-a", false).unwrap();
    net.run(Duration::from_secs(1));
    let mut counter = 0;
    net.talk(a, Duration::from_secs(1), &mut counter);
    assert!(net.clients[b].received.len() > 20 && net.clients[c].received.len() > 20);
    assert!(net.sfu.fan_out_is_current());

    net.sfu.remove_session("sess-b");
    let d = net.join("call-1", "sess-d", "4.4.4.4:4000", false);
    assert!(
        net.sfu.fan_out_is_current(),
        "a list still names the leaver"
    );
    let (got_b, got_c) = (net.clients[b].received.len(), net.clients[c].received.len());
    net.talk(a, Duration::from_secs(2), &mut counter);
    assert!(net.sfu.fan_out_is_current());
    assert_eq!(
        net.clients[b].received.len(),
        got_b,
        "the leaver still gets audio"
    );
    assert!(net.clients[c].received.len() > got_c + 50);
    assert!(
        net.clients[d].received.len() > 20,
        "the newcomer got {}",
        net.clients[d].received.len()
    );
}

#[test]
fn bad_signaling_is_refused_without_harm() {
    let mut net = Net::new();
    net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let now = net.now;
    let e = net.sfu.handle_offer("sess-a", "v=0 garbage").unwrap_err();
    // The message is logged: it says what is wrong, and no memory address (str0m's
    // parser reports positions as pointers).
    let msg = e.to_string();
    assert!(msg.starts_with("invalid sdp"), "{msg}");
    assert!(!msg.contains("0x"), "{msg}");
    assert!(net.sfu.handle_offer("nobody", "v=0").is_err());
    assert!(
        net.sfu.handle_answer("sess-a", "v=0").is_err(),
        "answer without offer"
    );
    assert!(net
        .sfu
        .handle_candidate("sess-a", "candidate:not a candidate")
        .is_err());
    assert!(net.sfu.add_session(now, "call-1", "sess-a").is_err());
    // Garbage datagrams are not claimed by any session.
    assert!(!net.sfu.handle_receive(
        now,
        Protocol::Udp,
        "9.9.9.9:9".parse().unwrap(),
        SFU_ADDR.parse().unwrap(),
        b"\x00\x01garbage"
    ));
    net.run(Duration::from_secs(1));
    assert!(net.clients[0].rtc.is_connected());
}

/// Every `a=extmap` id must name the same extension in every offer to a client:
/// Chromium rejects re-offers that change them.
fn assert_stable_extmaps(offers: &[String]) {
    let mut ids = std::collections::HashMap::new();
    for sdp in offers {
        for l in sdp.lines().filter_map(|l| l.strip_prefix("a=extmap:")) {
            let mut it = l.split_whitespace();
            let (id, uri) = (it.next().unwrap(), it.next().unwrap());
            let id = id.split('/').next().unwrap().to_string();
            let prev = ids.entry(id.clone()).or_insert_with(|| uri.to_string());
            assert_eq!(prev, uri, "extmap id {id} changed meaning");
        }
    }
}

#[test]
fn screen_share_renegotiates_both_ways_with_stable_extension_ids() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    net.sfu.set_muted("sess-a", false).unwrap();
    net.run(Duration::from_secs(1));
    let mut n = 0;
    net.talk(a, Duration::from_millis(200), &mut n);

    // Video from a stream nobody announced is held back.
    net.add_video(a, "camera-1");
    let offers_before = net.clients[b].offers.len();
    let mut frames = 0;
    net.send_video(a, Duration::from_millis(500), &mut frames);
    assert!(
        net.clients[b].video.is_empty(),
        "unannounced video forwarded"
    );
    assert_eq!(net.clients[b].offers.len(), offers_before);
    net.stop_video(a);
    net.run(Duration::from_millis(200));

    // screen_on announces the stream, then the client adds the track.
    net.share_screen(a, "screen-1", &[]);
    net.run(Duration::from_millis(300));
    net.send_video(a, Duration::from_secs(1), &mut frames);
    let c = &net.clients[b];
    assert!(
        c.track_ids.iter().any(|t| t.starts_with("screen_sess-a_")),
        "{:?}",
        c.track_ids
    );
    assert!(
        c.video.len() > 10,
        "B decoded {} screen frames",
        c.video.len()
    );
    // MediaMap came over the data channel before the offer, naming the screen.
    let maps = c.media_maps();
    assert!(
        maps.iter()
            .any(|e| e.iter().any(|(_, t, s)| t == "screen" && s == "sess-a")),
        "{maps:?}"
    );

    // screen_off: the client removes its track, the receiver's m-line goes inactive.
    net.stop_video(a);
    net.sfu.set_screen_stream("sess-a", None).unwrap();
    net.run(Duration::from_millis(500));
    let last = net.clients[b].offers.last().unwrap().clone();
    assert!(last.contains("a=inactive"), "{last}");
    let got = net.clients[b].video.len();

    // Sharing again works, on a new m-line, with the same extension ids throughout.
    net.share_screen(a, "screen-2", &[]);
    net.run(Duration::from_millis(300));
    net.send_video(a, Duration::from_secs(1), &mut frames);
    assert!(net.clients[b].video.len() > got + 10);
    assert!(net.clients[b].offers.len() >= 3);
    assert_stable_extmaps(&net.clients[b].offers);
    // Audio kept flowing through all of it.
    let heard = net.clients[b].received.len();
    net.talk(a, Duration::from_millis(500), &mut n);
    assert!(net.clients[b].received.len() > heard + 10);
}

/// The mid of the last video m-line of an SDP.
fn last_video_mid(sdp: &str) -> Option<String> {
    let mut mid = None;
    let mut in_video = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video");
        } else if let Some(m) = line.strip_prefix("a=mid:").filter(|_| in_video) {
            mid = Some(m.trim().to_string());
        }
    }
    mid
}

/// The Calls client looks a track's info up in the last MediaMap once, when the track
/// arrives, and drops a video track without it. A websocket offer adding a screen
/// used to leave in the same poll as the MediaMap written to the data channel, free to
/// overtake it; now it leaves once the client has it. Voice is not held.
#[test]
fn a_websocket_offer_adding_a_screen_leaves_after_the_clients_media_map() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    net.sfu.set_muted("sess-a", false).unwrap();
    net.run(Duration::from_secs(1));
    let c = &net.clients[b];
    let voice_offer = c.offers.len();
    assert!(voice_offer > 0, "no offer for A's voice");
    assert!(
        !c.map_at_offer[voice_offer - 1]
            .iter()
            .any(|(_, t, _)| t == "voice"),
        "the voice offer waited for its MediaMap"
    );
    net.share_screen(a, "screen-1", &[]);
    net.run(Duration::from_millis(300));
    let mut frames = 0;
    net.send_video(a, Duration::from_secs(1), &mut frames);
    let c = &net.clients[b];
    assert!(c.offers.len() > voice_offer, "no offer for A's screen");
    let mid = last_video_mid(c.offers.last().unwrap()).expect("a video m-line");
    let map = c.map_at_offer.last().unwrap();
    assert!(
        map.iter()
            .any(|(m, t, s)| *m == mid && t == "screen" && s == "sess-a"),
        "the offer for mid {mid} came before its MediaMap: {map:?}"
    );
    assert!(
        c.video.len() > 5,
        "B decoded {} screen frames",
        c.video.len()
    );
}

/// Found in review: an answer that came while the offer was held (so to an earlier
/// offer, or garbage) took the pending offer with it, which was then never sent.
#[test]
fn an_answer_while_the_offer_is_held_settles_nothing() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    net.sfu.set_muted("sess-a", false).unwrap();
    net.run(Duration::from_secs(1));
    // B's SCTP acknowledgements are lost for a while: its screen offer stays held.
    let b_addr: std::net::SocketAddr = "2.2.2.2:2000".parse().unwrap();
    net.block_dtls_from.insert(b_addr);
    net.share_screen(a, "screen-1", &[]);
    net.run(Duration::from_millis(300));
    let mut frames = 0;
    let mut held = false;
    for _ in 0..100 {
        net.send_video(a, Duration::from_millis(5), &mut frames);
        if net.sfu.offer_held("sess-b") {
            held = true;
            break;
        }
    }
    assert!(held, "B's screen offer was never held");
    assert!(net
        .sfu
        .handle_answer("sess-b", "v=0\r\nnot an answer")
        .is_err());
    net.block_dtls_from.remove(&b_addr);
    net.send_video(a, Duration::from_secs(1), &mut frames);
    let c = &net.clients[b];
    assert!(
        c.track_ids.iter().any(|t| t.starts_with("screen_sess-a_")),
        "the held offer was lost: {:?}",
        c.track_ids
    );
    assert!(c.video.len() > 5, "B decoded {} frames", c.video.len());
}

#[test]
fn lost_video_packets_are_recovered_by_nack() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", false);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    net.run(Duration::from_secs(1));
    net.share_screen(a, "screen-1", &[]);
    net.run(Duration::from_millis(500));
    // One RTP packet in 10 lost on the way in (A→SFU) and on the way out (SFU→B).
    net.lose_every.insert("1.1.1.1:1000".parse().unwrap(), 10);
    net.lose_every.insert("2.2.2.2:2000".parse().unwrap(), 10);
    let mut frames = 0;
    net.send_video(a, Duration::from_secs(5), &mut frames);
    net.run(Duration::from_secs(2));
    let mut got: Vec<u32> = net.clients[b]
        .video
        .iter()
        .map(|f| u32::from_be_bytes(f[1..5].try_into().unwrap()))
        .collect();
    got.sort_unstable();
    got.dedup();
    // Frames sent before B's answer landed may be missing; after that, none. B's
    // offer is made at A's first frame and waits for its MediaMap's acknowledgement
    // (up to OFFER_HOLD, 400 ms: 8 frames at 20 fps).
    let first = got.first().copied().unwrap_or(u32::MAX);
    assert!(first <= 12, "B started at frame {first}");
    let expected: Vec<u32> = (first..=frames).collect();
    assert_eq!(got, expected, "frames lost for good despite NACK");
    assert!(
        net.rtp_lost() > 50,
        "the loss rule dropped {}",
        net.rtp_lost()
    );
}

#[test]
fn a_client_that_never_finishes_dtls_is_closed_and_others_carry_on() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    net.block_dtls_from.insert("3.3.3.3:3000".parse().unwrap());
    let c = net.join("call-1", "sess-c", "3.3.3.3:3000", false);
    net.sfu.set_muted("sess-a", false).unwrap();
    net.run(Duration::from_secs(29));
    assert!(!net.clients[c].rtc.is_connected());
    // The client's own handshake gave up (str0m's DTLS times out); the SFU's side of it
    // is closed by the SFU's own rule, below.
    assert!(net.closed.is_empty(), "closed too early: {:?}", net.closed);
    net.run(Duration::from_secs(2));
    assert_eq!(net.closed, vec!["sess-c".to_string()]);
    assert_eq!(net.sfu.session_count(), 2);
    let mut n = 0;
    net.talk(a, Duration::from_secs(1), &mut n);
    assert!(net.clients[b].received.len() > 30);
}

#[test]
fn data_channel_ping_lock_and_garbage() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    net.sfu.set_muted("sess-a", false).unwrap();
    net.run(Duration::from_secs(1));
    let replies =
        |net: &Net, i: usize| -> Vec<(bool, Vec<u8>)> { net.clients[i].dc_received.clone() };

    net.dc_send(b, false, b"ping");
    net.dc_send(b, true, &DcMessage::Ping.encode());
    net.dc_send(b, true, &[0xcc, 0x01]); // Go's uint8 form
    net.dc_send(b, true, &[0xc1, 0xff, 0x00]); // garbage
    net.dc_send(b, true, &DcMessage::Sdp(b"not zlib".to_vec()).encode());
    net.dc_send(b, true, &DcMessage::Lock.encode());
    net.dc_send(b, true, &DcMessage::Lock.encode());
    net.run(Duration::from_millis(200));
    let got = replies(&net, b);
    assert!(got.contains(&(false, b"pong".to_vec())), "{got:?}");
    let binary: Vec<DcMessage> = got
        .iter()
        .filter(|(bin, _)| *bin)
        .filter_map(|(_, d)| DcMessage::decode(d).ok())
        .collect();
    assert_eq!(binary.iter().filter(|m| **m == DcMessage::Pong).count(), 2);
    let locks: Vec<&DcMessage> = binary
        .iter()
        .filter(|m| matches!(m, DcMessage::LockResponse(_)))
        .collect();
    assert_eq!(
        locks,
        vec![
            &DcMessage::LockResponse(true),
            &DcMessage::LockResponse(false)
        ]
    );

    // While B holds the lock, the server makes no offer to B.
    let offers = net.clients[b].offers.len();
    net.sfu.set_muted("sess-b", false).unwrap();
    net.share_screen(a, "screen-1", &[]);
    let mut frames = 0;
    net.send_video(a, Duration::from_millis(500), &mut frames);
    assert_eq!(
        net.clients[b].offers.len(),
        offers,
        "offer during client lock"
    );
    net.dc_send(b, true, &DcMessage::Unlock.encode());
    net.run(Duration::from_millis(300));
    assert_eq!(
        net.clients[b].offers.len(),
        offers + 1,
        "offer after unlock"
    );

    // The session survived all of it: audio still flows.
    let heard = net.clients[b].received.len();
    let mut n = 0;
    net.talk(a, Duration::from_millis(500), &mut n);
    assert!(net.clients[b].received.len() > heard + 10);
}

#[test]
fn simulcast_subscriber_moves_between_layers_on_keyframes() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", false);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    net.run(Duration::from_secs(1));
    net.share_screen(a, "screen-1", &["h", "l"]);
    net.run(Duration::from_millis(500));
    let layer = |f: &Vec<u8>| f[5] as char;
    let is_key = |f: &Vec<u8>| f[0] == 0;
    let mut n = 0;

    // A new subscriber starts on the low layer.
    net.send_video(a, Duration::from_secs(2), &mut n);
    let v = &net.clients[b].video;
    assert!(v.len() > 10, "B got {} frames", v.len());
    assert!(v.iter().all(|f| layer(f) == 'l'), "high before any report");
    assert!(is_key(&v[0]), "started on a non-keyframe");

    // Clean receiver reports: up to the high layer, entering on a keyframe.
    net.send_video(a, Duration::from_secs(8), &mut n);
    let v = net.clients[b].video.clone();
    let up = v
        .iter()
        .position(|f| layer(f) == 'h')
        .expect("never moved up");
    assert!(is_key(&v[up]), "moved up on a non-keyframe");
    assert!(v[up..].iter().all(|f| layer(f) == 'h'), "flapped back down");

    // Heavy loss towards B: back down to the low layer, again on a keyframe (the loss
    // stops once the SFU decided, so that B sees what the SFU sent).
    net.lose_every.insert("2.2.2.2:2000".parse().unwrap(), 3);
    for _ in 0..400 {
        net.send_video(a, Duration::from_millis(50), &mut n);
        if net.sfu.wanted_layers("sess-b") == ["l"] {
            break;
        }
    }
    assert_eq!(
        net.sfu.wanted_layers("sess-b"),
        ["l"],
        "loss never moved B down"
    );
    net.lose_every.clear();
    net.send_video(a, Duration::from_secs(2), &mut n);
    let v = net.clients[b].video.clone();
    let down = v[up..]
        .iter()
        .position(|f| layer(f) == 'l')
        .map(|p| p + up)
        .expect("never moved down");
    assert!(is_key(&v[down]), "moved down on a non-keyframe");
    assert_eq!(layer(v.last().unwrap()), 'l');

    // One continuous RTP clock for B across both switches.
    let t = &net.clients[b].video_times;
    assert!(
        t.windows(2).all(|w| w[1] >= w[0] && w[1] - w[0] < 90_000),
        "clock jumped: {t:?}"
    );
}

#[test]
fn av1_receivers_get_the_av1_copy_of_a_screen_and_others_vp8() {
    use str0m::format::Codec;
    let mut net = Net::new();
    let a = net.join_with("call-1", "sess-a", "1.1.1.1:1000", false, true);
    let b = net.join_with("call-1", "sess-b", "2.2.2.2:2000", false, true);
    let c = net.join("call-1", "sess-c", "3.3.3.3:3000", false);
    net.run(Duration::from_secs(1));
    // An AV1-capable sharer sends the screen twice: VP8 and AV1.
    let vp8 = net.share_screen(a, "screen-1", &[]);
    let av1 = net.add_video(a, "screen-1");
    let (mut n, mut m) = (0, 0);
    for _ in 0..30 {
        net.clients[a].video_mid = Some(vp8);
        net.send_video(a, Duration::from_millis(50), &mut n);
        net.send_av1(a, av1, Duration::from_millis(50), &mut m);
    }
    let (vb, vc) = (&net.clients[b], &net.clients[c]);
    assert!(
        vb.video.len() > 10 && vc.video.len() > 10,
        "{} {}",
        vb.video.len(),
        vc.video.len()
    );
    assert!(
        vb.video_codecs.iter().all(|c| *c == Codec::Av1),
        "B got VP8"
    );
    assert!(
        vc.video_codecs.iter().all(|c| *c == Codec::Vp8),
        "C got AV1"
    );
    for x in [vb, vc] {
        let screens = x
            .track_ids
            .iter()
            .filter(|t| t.starts_with("screen_sess-a_"))
            .count();
        assert_eq!(screens, 1, "{:?}", x.track_ids);
    }
}

/// Speech is reported on and, after a second of silence, off; only a session that is
/// connecting, has an offer out or talks is looked at between its own timers, so a
/// quiet call costs nothing but its statistics.
/// One call, connected: `sess-a` (1.1.1.1:1000) with a microphone, muted, and
/// `sess-b` (2.2.2.2:2000) listening.
fn two_connected() -> (Net, usize, usize) {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    net.run(Duration::from_secs(2));
    assert!(net.clients.iter().all(|c| c.rtc.is_connected()));
    (net, a, b)
}

#[test]
fn voice_activity_comes_and_goes_and_quiet_sessions_are_left_alone() {
    let (mut net, a, _) = two_connected();
    assert_eq!(net.sfu.watched_count(), 0, "connected, quiet, no offer out");

    net.sfu.set_muted("sess-a", false).unwrap();
    net.clients[a].level = Some(-20);
    let mut counter = 0;
    net.talk(a, Duration::from_millis(500), &mut counter);
    assert_eq!(net.voice, vec![("sess-a".to_string(), true)]);
    assert_eq!(net.sfu.watched_count(), 1, "the talker is watched");

    // Frames keep coming, but quiet ones: speech ends a second after the last loud one.
    net.clients[a].level = Some(-127);
    net.talk(a, Duration::from_millis(700), &mut counter);
    assert_eq!(net.voice.len(), 1, "off too early: {:?}", net.voice);
    net.run(Duration::from_millis(600));
    assert_eq!(
        net.voice,
        vec![("sess-a".to_string(), true), ("sess-a".to_string(), false)]
    );
    assert_eq!(net.sfu.watched_count(), 0, "quiet again");
}

#[test]
fn the_core_is_quiet_while_no_media_flows_and_ticks_on_its_grid() {
    let (mut net, a, _) = two_connected();

    // Connected, nobody talking: the shell may read at grid points, the next one
    // strictly ahead and at most a step away; every instant up to it names it.
    let now = net.now;
    let tick = net.sfu.quiet_tick(now).expect("quiet: no media yet");
    assert!(
        tick > now && tick <= now + super::TIMER_GRID,
        "{now:?} {tick:?}"
    );
    assert_eq!(
        net.sfu.quiet_tick(tick - Duration::from_nanos(1)),
        Some(tick)
    );
    assert!(net.sfu.quiet_tick(tick).is_some_and(|t| t > tick));

    net.sfu.set_muted("sess-a", false).unwrap();
    let mut counter = 0;
    net.talk(a, Duration::from_millis(200), &mut counter);
    assert_eq!(net.sfu.quiet_tick(net.now), None, "media flows");

    // Receiver reports, consent checks and the rest keep coming, but no media: quiet
    // again once the last packet is `QUIET_AFTER` old.
    net.run(super::QUIET_AFTER - Duration::from_millis(100));
    assert_eq!(net.sfu.quiet_tick(net.now), None);
    net.run(Duration::from_millis(200));
    assert!(net.sfu.quiet_tick(net.now).is_some());
}

/// Packets from a publisher of audio alone are drained quickly (no poll for str0m's
/// next timeout after each): its reports and feedback must still go out.
#[test]
fn a_talking_publisher_still_gets_its_reports_and_feedback() {
    let (mut net, a, b) = two_connected();
    net.sfu.set_muted("sess-a", false).unwrap();
    let mut counter = 0;
    net.talk(a, Duration::from_secs(1), &mut counter);
    let publisher = "1.1.1.1:1000".parse().unwrap();
    let before = net.rtcp_to.get(&publisher).copied().unwrap_or(0);
    let heard = net.clients[b].received_count;
    net.talk(a, Duration::from_secs(3), &mut counter);
    assert_eq!(
        net.clients[b].received_count - heard,
        150,
        "every frame forwarded"
    );
    let rtcp = net.rtcp_to.get(&publisher).copied().unwrap_or(0) - before;
    // Transport-wide feedback at least every 200 ms (str0m: 100 ms), reports each second.
    assert!(rtcp >= 15, "{rtcp} RTCP datagrams in 3 s of talk");
}

/// A panic in one session's str0m work closes that session alone (with the usual
/// `Closed`), and the rest of its call goes on.
#[test]
fn a_panicking_session_is_closed_and_the_others_go_on() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let _b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    let c = net.join("call-1", "sess-c", "3.3.3.3:3000", false);
    net.run(Duration::from_secs(2));
    assert!(net.clients.iter().all(|c| c.rtc.is_connected()));
    net.sfu.set_muted("sess-a", false).unwrap();
    net.sfu.inject_panic("sess-b");
    // B's next datagram (a receiver report or consent check) makes its str0m panic.
    net.run(Duration::from_secs(6));
    assert_eq!(net.closed, vec!["sess-b".to_string()]);
    let mut counter = 0;
    for _ in 0..50 {
        net.talk(a, Duration::from_millis(20), &mut counter);
    }
    assert_eq!(net.sfu.session_count(), 2);
    let heard = net.clients[c].received.len();
    assert!(heard > 30, "C heard {heard} of 50 after B's panic");
}

/// A panic while a session's offer is handled removes that session at once: the
/// publisher forwarding to it in the same turn does not reach its broken `Rtc`, and
/// the others of the call go on.
#[test]
fn a_session_that_panics_on_its_offer_is_gone_before_anything_reaches_it() {
    let mut net = Net::new();
    let a = net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let _b = net.join("call-1", "sess-b", "2.2.2.2:2000", false);
    let c = net.join("call-1", "sess-c", "3.3.3.3:3000", false);
    net.run(Duration::from_secs(2));
    net.sfu.set_muted("sess-a", false).unwrap();
    let mut counter = 0;
    net.talk(a, Duration::from_millis(200), &mut counter);
    net.sfu.inject_panic("sess-b");
    let e = net.sfu.handle_offer("sess-b", "v=0").unwrap_err();
    assert!(matches!(e, super::SfuError::Panicked(_)), "{e}");
    assert_eq!(net.sfu.session_count(), 2, "the session was kept");
    for _ in 0..50 {
        net.talk(a, Duration::from_millis(20), &mut counter);
    }
    assert_eq!(net.closed, vec!["sess-b".to_string()]);
    let heard = net.clients[c].received.len();
    assert!(heard > 40, "C heard {heard} after B's panic");
}
