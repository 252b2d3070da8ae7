//! The plugin in rtcd mode against a fleet of real `rtcd` processes on 127.0.0.2-4,
//! found through a test DNS server: calls spread and stay pinned, DNS changes and a
//! killed instance steer new calls, and switching modes at runtime keeps ongoing calls
//! where they are.

use std::time::Duration;

use crate::common::dns::TestDns;
use crate::common::media_client::*;
use crate::common::*;
use serde_json::json;

const FLEET: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

/// One port free for TCP and UDP on every address given.
fn port_free_on_all(ips: &[&str]) -> u16 {
    loop {
        let p = free_port_on(ips[0]);
        if ips.iter().all(|ip| {
            std::net::TcpListener::bind((*ip, p)).is_ok()
                && std::net::UdpSocket::bind((*ip, p)).is_ok()
        }) {
            return p;
        }
    }
}

async fn counts(fleet: &[RtcdProc]) -> Vec<i64> {
    let mut v = Vec::new();
    for r in fleet {
        v.push(r.sessions().await);
    }
    v
}

/// A user alone in a new call of a new channel, media connected.
async fn call(h: &HostProc, admin: &str, team: &str, name: &str) -> MediaClient {
    let u = h.user(admin, name).await;
    let ch = h.channel(admin, team, &[&u.0]).await;
    let mut c = MediaClient::join(h, &u.1, &ch, false).await;
    run_until(&mut [&mut c], Duration::from_secs(15), &[false], |c| {
        c[0].peer.rtc.is_connected()
    })
    .await;
    assert!(c.peer.rtc.is_connected(), "{name}: media to rtcd");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_the_fleet_and_follow_dns() {
    let http = port_free_on_all(&FLEET);
    let rtc = port_free_on_all(&FLEET);
    let mut fleet: Vec<RtcdProc> = FLEET
        .iter()
        .map(|ip| RtcdProc::start(ip, http, rtc))
        .collect();
    let dns = TestDns::start("rtcd.test", &FLEET).await;
    let url = format!("http://rtcd.test:{http}");
    let dns_addr = dns.addr.to_string();
    let h = HostProc::start_with(
        Backend::Sqlite,
        "enterprise",
        "127.0.0.1",
        &[
            ("MM_CALLS_RTCD_DNS_SERVER", &dns_addr),
            ("MM_CALLS_RTCD_SERVICE_URL", &url),
        ],
    )
    .await;
    let s = h.setup(&[], json!({"DefaultEnabled": true})).await;
    let (admin, team) = (&s.admin, &s.team);
    let (code, v) = h
        .get(&admin.1, "/plugins/com.mattermost.calls/version")
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["rtcd_version"], "v1.2.6", "{v}");

    // Three calls on three idle hosts: one each, each pinned to its host.
    let mut clients = Vec::new();
    for name in ["user1", "user2", "user3"] {
        clients.push(call(&h, &admin.1, team, name).await);
    }
    assert_eq!(counts(&fleet).await, vec![1, 1, 1], "calls spread");

    // .4 leaves DNS: after a refresh it gets no new calls (its call goes on).
    dns.set(&FLEET[..2]);
    let mut refs: Vec<&mut MediaClient> = clients.iter_mut().collect();
    run_for(&mut refs, Duration::from_secs(16), &[false, false, false]).await;
    for name in ["user4", "user5"] {
        clients.push(call(&h, &admin.1, team, name).await);
    }
    assert_eq!(
        counts(&fleet).await,
        vec![2, 2, 1],
        "no new call on the host gone from DNS"
    );

    // .3 dies: new calls avoid it.
    let _ = fleet[1].child.kill();
    let _ = fleet[1].child.wait();
    let mut refs: Vec<&mut MediaClient> = clients.iter_mut().collect();
    run_for(&mut refs, Duration::from_secs(2), &[false; 5]).await;
    clients.push(call(&h, &admin.1, team, "user6").await);
    let c = counts(&fleet).await;
    assert_eq!(
        (c[0], c[2]),
        (3, 1),
        "new call went to the live host in DNS: {c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_rtcd_at_runtime_keeps_the_ongoing_call_integrated() {
    let http = port_free_on_all(&FLEET[..1]);
    let rtc = port_free_on_all(&FLEET[..1]);
    let fleet = vec![RtcdProc::start(FLEET[0], http, rtc)];
    let dns = TestDns::start("rtcd.test", &FLEET[..1]).await;
    let dns_addr = dns.addr.to_string();
    let h = HostProc::start_with(
        Backend::Sqlite,
        "enterprise",
        "127.0.0.1",
        &[("MM_CALLS_RTCD_DNS_SERVER", &dns_addr)],
    )
    .await;
    let s = h
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let (admin, alice, bob) = (&s.admin, &s.users[0], &s.users[1]);
    let (team, ch) = (&s.team, &s.channel);

    // Call 1 in integrated mode, alice talking to bob.
    let mut a = MediaClient::join(&h, &alice.1, ch, true).await;
    let mut b = MediaClient::join(&h, &bob.1, ch, false).await;
    a.ws.send_calls("unmute", json!({}));
    run_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(15),
        &[true, false],
        |c| c[1].peer.received.len() > 40,
    )
    .await;
    assert!(b.peer.received.len() > 40, "integrated call carries audio");
    assert_eq!(counts(&fleet).await, vec![0]);

    // Switch to rtcd in the settings.
    let url = format!("http://rtcd.test:{http}");
    let (code, body) = h
        .set_plugin_settings(
            &admin.1,
            json!({"DefaultEnabled": true, "RTCDServiceURL": url}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let mut ready = false;
    for _ in 0..50 {
        let (_, v) = h
            .get(&admin.1, "/plugins/com.mattermost.calls/version")
            .await;
        if v["rtcd_version"].is_string() {
            ready = true;
            break;
        }
        run_for(
            &mut [&mut a, &mut b],
            Duration::from_millis(200),
            &[true, false],
        )
        .await;
    }
    assert!(ready, "plugin did not connect to rtcd");

    // A new call lands on rtcd; the old one goes on in the integrated SFU.
    let carol = call(&h, &admin.1, team, "carol").await;
    assert_eq!(counts(&fleet).await, vec![1], "new call on rtcd");
    let heard = b.peer.received.len();
    run_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(15),
        &[true, false],
        |c| c[1].peer.received.len() > heard + 40,
    )
    .await;
    assert!(
        b.peer.received.len() > heard + 40,
        "the integrated call stopped"
    );
    drop(carol);
}
