//! The SFU against real str0m peers on an in-memory network, in simulated time.

use std::time::Duration;

use str0m::net::Protocol;

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

#[test]
fn bad_signaling_is_refused_without_harm() {
    let mut net = Net::new();
    net.join("call-1", "sess-a", "1.1.1.1:1000", true);
    let now = net.now;
    assert!(net.sfu.handle_offer("sess-a", "v=0 garbage").is_err());
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
