//! Real Chromium participants (tests/browser/calls.mjs, playwright-core driving
//! Debian's /usr/bin/chromium) against a real calls-host + calls-plugin on SQLite with
//! the integrated SFU: audio both ways, mute, screen share on/off, a third joiner
//! getting the existing tracks, websocket drop + reconnect, leave; clients that may
//! only relay through coturn; the plugin killed or paused mid-call.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use serde_json::json;

/// Installs the driver (playwright-core, pinned in package-lock.json) when missing.
fn ensure_driver(dir: &Path) {
    if dir.join("node_modules/playwright-core").exists() {
        return;
    }
    let ok = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "npm ci in {} failed", dir.display());
}

/// A network namespace joined to this host by a veth pair, with every UDP packet
/// leaving it dropped: a client network where only TCP gets through.
struct UdpBlockedNet {
    name: String,
    host_ip: String,
}

impl UdpBlockedNet {
    fn create() -> UdpBlockedNet {
        let tag = format!("{:04x}", rand::random::<u16>());
        let subnet = format!(
            "10.{}.{}",
            200 + rand::random::<u8>() % 50,
            rand::random::<u8>()
        );
        let name = format!("calls-{tag}");
        let (host_if, ns_if) = (format!("vh{tag}"), format!("vn{tag}"));
        let host_ip = format!("{subnet}.1");
        let run = |args: &[&str]| {
            let ok = std::process::Command::new(args[0])
                .args(&args[1..])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "network setup failed (needs root, iproute2, iptables): {args:?}"
            );
        };
        run(&["ip", "netns", "add", &name]);
        let net = UdpBlockedNet { name, host_ip };
        let ns = net.name.as_str();
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        run(&["ip", "link", "set", &ns_if, "netns", ns]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{subnet}.1/30"),
            "dev",
            &host_if,
        ]);
        run(&["ip", "link", "set", &host_if, "up"]);
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "ip",
            "addr",
            "add",
            &format!("{subnet}.2/30"),
            "dev",
            &ns_if,
        ]);
        run(&["ip", "netns", "exec", ns, "ip", "link", "set", &ns_if, "up"]);
        run(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
        run(&[
            "ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-p", "udp", "!", "-o", "lo",
            "-j", "DROP",
        ]);
        net
    }
}

impl Drop for UdpBlockedNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and so the pair.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs the browser scenario; returns its output (the test fails on a non-zero exit).
pub async fn run_browsers(h: &HostProc, channel: &str, users: &[&str], scenario: &str) -> String {
    run_browsers_in(h, channel, users, scenario, None, &[]).await
}

async fn run_browsers_in(
    h: &HostProc,
    channel: &str,
    users: &[&str],
    scenario: &str,
    netns: Option<&str>,
    env: &[(&str, String)],
) -> String {
    run_scenario(&[h.url("/")], channel, users, scenario, netns, env).await
}

/// Runs a browser scenario with each user on its own server (`bases[i]` for
/// `users[i]`, the first for any left): a cluster's nodes, or one load balancer.
pub async fn run_browsers_at(
    bases: &[String],
    channel: &str,
    users: &[&str],
    scenario: &str,
) -> String {
    run_scenario(bases, channel, users, scenario, None, &[]).await
}

async fn run_scenario(
    bases: &[String],
    channel: &str,
    users: &[&str],
    scenario: &str,
    netns: Option<&str>,
    env: &[(&str, String)],
) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is required (apt-get install chromium; .ci/run installs it)"
    );
    ensure_driver(&dir);
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns, "node"]);
            c
        }
        None => tokio::process::Command::new("node"),
    };
    // Only loopback origins are secure contexts (getUserMedia) by default.
    let origins: Vec<&str> = bases.iter().map(|b| b.trim_end_matches('/')).collect();
    let child = cmd
        .arg("calls.mjs")
        .current_dir(&dir)
        .env("BASE_URL", &bases[0])
        .env("BASES", bases.join(","))
        .env("CHANNEL_ID", channel)
        .env("USERS", users.join(","))
        .env("PASSWORD", "password1")
        .env("SCENARIO", scenario)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env(
            "CHROMIUM_FLAGS",
            format!(
                "--unsafely-treat-insecure-origin-as-secure={}",
                origins.join(",")
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("browser scenario timed out")
        .expect("node output");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{text}");
    assert!(out.status.success(), "browser scenario failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_talk_share_the_screen_reconnect_and_leave() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let names = ["alice", "bob", "carol"];
    let s = h.setup(&names, json!({"DefaultEnabled": true})).await;
    let out = run_browsers(&h, &s.channel, &names, "full").await;
    assert!(out.contains("RESULT {\"ok\":true"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_udp_blocked_media_flows_over_ice_tcp() {
    let net = UdpBlockedNet::create();
    let h = HostProc::start_on(Backend::Sqlite, "enterprise", &net.host_ip).await;
    let s = h
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let out = run_browsers_in(
        &h,
        &s.channel,
        &["alice", "bob"],
        "pair",
        Some(&net.name),
        &[],
    )
    .await;
    let v = result(&out);
    assert_eq!(v["pair"]["local"], "tcp", "{v}");
    assert!(
        v["pair"]["remote"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("tcp {}:", net.host_ip)),
        "{v}"
    );
}

/// Two participants with the given plugin settings, alice sharing her screen; the
/// scenario's result line.
async fn screen_with(settings: serde_json::Value) -> serde_json::Value {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h.setup(&["alice", "bob"], settings).await;
    let out = run_browsers(&h, &s.channel, &["alice", "bob"], "screen").await;
    result(&out)
}

/// The scenario's `RESULT {json}` line.
fn result(out: &str) -> serde_json::Value {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .expect("no result line");
    serde_json::from_str(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_screen_share_with_data_channel_signaling() {
    let v = screen_with(
        json!({"DefaultEnabled": true, "EnableSimulcast": true, "EnableDCSignaling": true}),
    )
    .await;
    assert_eq!(v["rids"], json!(["h", "l"]), "{v}");
    assert_eq!(v["codec"], "video/VP8", "{v}");
    assert!(
        v["dcSdp"].as_u64().unwrap_or(0) > 0,
        "no SDP over the data channel: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn av1_screen_share_reaches_an_av1_receiver() {
    let v = screen_with(json!({"DefaultEnabled": true, "EnableAV1": true})).await;
    assert_eq!(v["codec"], "video/AV1", "{v}");
    assert_eq!(v["dcSdp"], 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_talk_through_rtcd_while_the_plugin_restarts() {
    let http = free_port_on("127.0.0.2");
    let rtc = free_port_on("127.0.0.2");
    let rtcd = RtcdProc::start("127.0.0.2", http, rtc);
    let url = format!("http://127.0.0.2:{http}");
    let h = HostProc::start_with(
        Backend::Sqlite,
        "enterprise",
        "127.0.0.1",
        &[("MM_CALLS_RTCD_SERVICE_URL", &url)],
    )
    .await;
    let s = h
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let channel = s.channel;
    let pid = h.plugin_pid().await.expect("plugin running");
    let out = run_browsers_in(
        &h,
        &channel,
        &["alice", "bob"],
        "restart",
        None,
        &[("PLUGIN_PID", pid.to_string())],
    )
    .await;
    assert!(
        out.contains("RESULT {\"ok\":true,\"sawDown\":true"),
        "{out}"
    );
    let new_pid = h.plugin_pid().await.expect("plugin restarted");
    assert_ne!(new_pid, pid);
    // The media ran on rtcd the whole time: both sessions are there.
    assert_eq!(rtcd.sessions().await, 2);
}

/// Alice and Bob in a call on the integrated SFU, running `scenario`, which is given
/// the plugin's pid; returns the scenario's output and that pid.
async fn pair_with_plugin_pid(scenario: &str) -> (HostProc, String, u32) {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let pid = h.plugin_pid().await.expect("plugin running");
    let out = run_browsers_in(
        &h,
        &s.channel,
        &["alice", "bob"],
        scenario,
        None,
        &[("PLUGIN_PID", pid.to_string())],
    )
    .await;
    (h, out, pid)
}

/// Integrated SFU, the plugin killed mid-call (SIGKILL): the host restarts it, the
/// media that died with it cannot be resumed, so each browser is told (`error` on its
/// connection), leaves the call by itself, and joins again into a working call
/// (before, both stayed "in" a call whose audio never came back, untold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_are_told_when_the_plugin_dies_and_can_join_again() {
    let (h, out, pid) = pair_with_plugin_pid("crash").await;
    assert!(out.contains("RESULT {\"ok\":true"), "{out}");
    assert_ne!(h.plugin_pid().await, Some(pid));
}

/// The plugin paused for 15 s (SIGSTOP) and resumed: the browsers' call goes on
/// (before, it was ended at once on SIGCONT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_keep_their_call_when_the_plugin_is_paused() {
    let (h, out, pid) = pair_with_plugin_pid("pause").await;
    assert!(
        out.contains("RESULT {\"ok\":true,\"participants\":2"),
        "{out}"
    );
    assert_eq!(
        h.plugin_pid().await,
        Some(pid),
        "the paused plugin was replaced"
    );
}

/// Alice and Bob whose browsers may use relay candidates only, through a real coturn
/// with `use-auth-secret`, the TURN server and secret set in the plugin's settings,
/// media on the integrated SFU (`rtcd: None`) or on rtcd; the scenario's result.
async fn relayed_call(rtcd: Option<&RtcdProc>) -> (serde_json::Value, String) {
    let turn_port = free_port_on("127.0.0.1");
    let secret = "turn-secret-of-the-test";
    let _turn = crate::common::coturn::Coturn::relay("127.0.0.1", turn_port, secret);
    let rtcd_url = rtcd.map(|r| r.url("").trim_end_matches('/').to_string());
    let env: Vec<(&str, &str)> = rtcd_url
        .iter()
        .map(|u| ("MM_CALLS_RTCD_SERVICE_URL", u.as_str()))
        .collect();
    let h = HostProc::start_with(Backend::Sqlite, "enterprise", "127.0.0.1", &env).await;
    let turn_url = format!("turn:127.0.0.1:{turn_port}?transport=udp");
    let s = h
        .setup(
            &["alice", "bob"],
            json!({
                "DefaultEnabled": true,
                "ICEServersConfigs": json!([{"urls": [turn_url]}]).to_string(),
                "TURNStaticAuthSecret": secret,
                "TURNCredentialsExpirationMinutes": 10,
            }),
        )
        .await;
    // Minted as the plugin does, but valid until a minute ago.
    let (expired_user, expired_cred) = calls_plugin::api::turn_credentials_for(
        secret,
        "alice",
        calls_wire::ids::now_ms() / 1000 - 60,
    );
    let out = run_browsers_in(
        &h,
        &s.channel,
        &["alice", "bob"],
        "relay",
        None,
        &[
            ("RELAY_ONLY", "1".into()),
            ("TURN_URL", turn_url.clone()),
            ("EXPIRED_USER", expired_user),
            ("EXPIRED_CREDENTIAL", expired_cred),
        ],
    )
    .await;
    let media = match rtcd {
        Some(r) => format!("udp {}:", r.ip),
        None => format!("udp 127.0.0.1:{}", h.rtc_port),
    };
    (result(&out), media)
}

/// What a relayed call must show: both participants' media on a relay pair to the
/// media server, credentials minted for the user with the configured expiry accepted
/// by coturn, expired ones refused by it (401).
fn assert_relayed(v: &serde_json::Value, media: &str) {
    for p in ["alice", "bob"] {
        assert_eq!(v[p]["localType"], "relay", "{p} not relayed: {v}");
        assert_eq!(v[p]["relayProtocol"], "udp", "{v}");
        assert!(
            v[p]["remote"]
                .as_str()
                .unwrap_or_default()
                .starts_with(media),
            "{p}'s media does not reach {media}: {v}"
        );
    }
    // `<expiry>:<username>`, the expiry TURNCredentialsExpirationMinutes (10) ahead.
    let user = v["minted"][0].as_str().unwrap_or_default();
    let (expiry, name) = user.split_once(':').unwrap_or_default();
    assert_eq!(name, "alice", "{v}");
    let ahead = expiry.parse::<i64>().unwrap_or(0) - calls_wire::ids::now_ms() / 1000;
    assert!((480..=600).contains(&ahead), "expiry {ahead} s ahead: {v}");
    assert!(v["fresh"]["relay"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(
        v["fresh"]["errors"]
            .as_array()
            .is_some_and(|e| e.is_empty()),
        "{v}"
    );
    assert_eq!(
        v["expired"]["relay"], 0,
        "an expired credential was accepted: {v}"
    );
    assert!(
        v["expired"]["errors"]
            .as_array()
            .is_some_and(|e| e.contains(&json!(401))),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_browsers_talk_through_coturn_on_the_integrated_sfu() {
    let (v, media) = relayed_call(None).await;
    assert_relayed(&v, &media);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_browsers_talk_through_coturn_to_rtcd() {
    let http = free_port_on("127.0.0.2");
    let rtc = free_port_on("127.0.0.2");
    let rtcd = RtcdProc::start("127.0.0.2", http, rtc);
    let (v, media) = relayed_call(Some(&rtcd)).await;
    assert_relayed(&v, &format!("{media}{rtc}"));
    assert_eq!(rtcd.sessions().await, 2);
}

/// Bob joins Alice's call 20 times while she talks and shares her screen: every track
/// he receives comes with its info (the data channel's MediaMap reached him before the
/// offer that adds the track). The
/// page's peer is the stub's, or the Calls client's own RTCPeer when
/// CALLS_COMMON_BUNDLE names a browser bundle of @mattermost/calls-common.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejoin_gets_its_tracks_with_their_info() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let v = result(&run_browsers(&h, &s.channel, &["alice", "bob"], "rejoin").await);
    // Her voice and her screen, each time.
    assert_eq!(v["tracks"], 2 * v["joins"].as_u64().unwrap_or(0), "{v}");
    assert_eq!(v["withoutInfo"], 0, "tracks without their info: {v}");
}

/// The README's flow, as a newcomer does it after `make run`: the demo host with the
/// bundle installed; alice in Town Square (test mode) is told why she cannot start a
/// call; in Calls she starts one, bob joins, audio goes both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_flow_works_on_the_demo() {
    let h = HostProc::start_demo();
    let Demo { calls, town, .. } = h.demo_ready().await;
    let out = run_browsers_in(
        &h,
        &calls,
        &["alice", "bob"],
        "readme",
        None,
        &[
            ("PASSWORD", "{user}-password".to_string()),
            ("TEST_MODE_CHANNEL", town),
        ],
    )
    .await;
    assert!(out.contains("RESULT"), "{out}");
}
