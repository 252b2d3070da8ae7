//! Host protocol details and plugin API edges, against real processes (SQLite).

use std::io::Write;
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

fn ws_url(h: &HostProc) -> String {
    format!("{}/api/v4/websocket", h.base.replace("http://", "ws://"))
}

/// The data dir and its files (the config with its secrets, the database) are the
/// host's alone (they were 0644 in a 0755 dir).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    h.user("", "admin").await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(h.dir.path()), 0o700);
    for f in ["config.json", "calls.db", "diagnostic_id"] {
        assert_eq!(mode(&h.dir.path().join(f)), 0o600, "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_auth_variants_ping_and_seq() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let (_, token) = h.user("", "admin").await;

    // authentication_challenge after connecting without credentials.
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&h)).await.unwrap();
    ws.send(Message::Text(
        json!({"action": "authentication_challenge", "seq": 1, "data": {"token": "wrong"}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let r = next_json(&mut ws).await;
    assert_eq!(
        (r["status"].as_str(), r["seq_reply"].as_i64()),
        (Some("FAIL"), Some(1))
    );
    ws.send(Message::Text(
        json!({"action": "authentication_challenge", "seq": 2, "data": {"token": token}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let r = next_json(&mut ws).await;
    assert_eq!(r, json!({"status": "OK", "seq_reply": 2}));
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["event"], "hello");
    assert_eq!(hello["seq"], 0);
    assert_eq!(hello["data"]["connection_id"].as_str().unwrap().len(), 26);
    ws.send(Message::Text(
        json!({"action": "ping", "seq": 3}).to_string().into(),
    ))
    .await
    .unwrap();
    let pong = next_json(&mut ws).await;
    assert_eq!(pong["seq_reply"], 3);
    assert_eq!(pong["data"]["text"], "pong");
    ws.send(Message::Text(
        json!({"action": "no_such_action", "seq": 4})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let bad = next_json(&mut ws).await;
    assert_eq!(
        (bad["status"].as_str(), bad["seq_reply"].as_i64()),
        (Some("FAIL"), Some(4))
    );

    // Session cookie on the upgrade request (the browser webapp).
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url(&h))
            .unwrap();
    req.headers_mut()
        .insert("Cookie", format!("MMAUTHTOKEN={token}").parse().unwrap());
    let (mut ws2, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(next_json(&mut ws2).await["event"], "hello");

    // Origin, as Mattermost checks it: another site's page cannot open a socket with
    // the user's cookie (403 before the upgrade); the host's own pages can.
    let cookie_upgrade = |origin: &str| {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url(
                &h,
            ))
            .unwrap();
        req.headers_mut()
            .insert("Cookie", format!("MMAUTHTOKEN={token}").parse().unwrap());
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    for evil in [
        "http://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        match cookie_upgrade(evil).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 403, "{evil}")
            }
            other => panic!("{evil}: upgrade not refused: {:?}", other.map(|_| ())),
        }
    }
    let (mut ws3, _) = cookie_upgrade(&h.base)
        .await
        .expect("the host's own origin");
    assert_eq!(next_json(&mut ws3).await["event"], "hello");

    // A cookie without CSRF proof cannot change state over HTTP; a Bearer token can.
    let resp = h
        .http
        .post(h.url("/api/v4/teams"))
        .header("Cookie", format!("MMAUTHTOKEN={token}"))
        .json(&json!({"name": "abc", "display_name": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = h
        .http
        .post(h.url("/api/v4/teams"))
        .header("Cookie", format!("MMAUTHTOKEN={token}"))
        .header("X-Requested-With", "XMLHttpRequest")
        .json(&json!({"name": "abc", "display_name": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

fn bundle_with(files: &[(&str, &[u8])]) -> Vec<u8> {
    bundle_with_links(files, &[])
}

/// A bundle of regular files and links (`(path, target, hard)`).
fn bundle_with_links(files: &[(&str, &[u8])], links: &[(&str, &str, bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (path, data) in files {
            let mut hdr = tar::Header::new_gnu();
            hdr.set_size(data.len() as u64);
            hdr.set_mode(0o755);
            // Write the raw name so that hostile paths reach the server unchanged.
            let name = hdr.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            hdr.set_cksum();
            tar.append(&hdr, *data).unwrap();
        }
        for (path, target, hard) in links {
            let mut hdr = tar::Header::new_gnu();
            hdr.set_entry_type(if *hard {
                tar::EntryType::Link
            } else {
                tar::EntryType::Symlink
            });
            hdr.set_size(0);
            tar.append_link(&mut hdr, path, target).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plugin_bundles_are_refused() {
    // A small unpacked-size cap, so that a bomb is cheap to make here.
    let h = HostProc::start_with(
        Backend::Sqlite,
        "enterprise",
        "127.0.0.1",
        &[("CALLS_HOST_MAX_BUNDLE_UNPACKED_MB", "64")],
    )
    .await;
    let (_, admin) = h.user("", "admin").await;
    let (_, user) = h.user(&admin, "alice").await;
    let exe: &[u8] = b"#!/bin/sh\n";
    let good_manifest =
        json!({"id": "com.example.x", "server": {"executables": {"linux-amd64": "server/plugin"}}})
            .to_string();
    let calls_manifest = json!({"id": "com.mattermost.calls", "server": {"executable": "server/plugin"}, "webapp": {"bundle_path": "webapp/dist/main.js"}}).to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not gzip", b"garbage".to_vec(), "invalid bundle"),
        ("no manifest", bundle_with(&[("server/plugin", exe)]), "plugin.json not found"),
        ("bad id", bundle_with(&[("plugin.json", json!({"id": "a/b", "server": {"executable": "server/plugin"}}).to_string().as_bytes()), ("server/plugin", exe)]), "invalid plugin id"),
        ("no executable for platform", bundle_with(&[("plugin.json", json!({"id": "com.example.x", "server": {"executables": {"darwin-amd64": "p"}}}).to_string().as_bytes())]), "no server executable"),
        ("executable missing", bundle_with(&[("plugin.json", good_manifest.as_bytes())]), "is not in the bundle"),
        ("bad setting type", bundle_with(&[("plugin.json", json!({"id": "com.example.x", "server": {"executable": "server/plugin"}, "settings_schema": {"settings": [{"key": "K", "type": "weird"}]}}).to_string().as_bytes()), ("server/plugin", exe)]), "invalid type"),
        ("path traversal", bundle_with(&[("../../escape.txt", b"x"), ("plugin.json", good_manifest.as_bytes()), ("server/plugin", exe)]), "invalid bundle"),
        ("symlink to a host file", bundle_with_links(&[("plugin.json", calls_manifest.as_bytes()), ("server/plugin", exe)], &[("webapp/dist/leak.js", "/etc/hostname", false)]), "only regular files and directories"),
        ("hard link to a host file", bundle_with_links(&[("plugin.json", good_manifest.as_bytes()), ("server/plugin", exe)], &[("webapp/dist/leak.js", "/etc/hostname", true)]), "only regular files and directories"),
        ("executable is a symlink", bundle_with_links(&[("plugin.json", good_manifest.as_bytes())], &[("server/plugin", "/bin/sh", false)]), "only regular files and directories"),
        ("absolute executable", bundle_with(&[("plugin.json", json!({"id": "com.example.x", "server": {"executable": "/bin/sh"}}).to_string().as_bytes())]), "is not in the bundle"),
        ("unpacks too large", bundle_with(&[("plugin.json", good_manifest.as_bytes()), ("server/plugin", exe), ("zeros", &vec![0u8; 65 << 20])]), "unpacks to more than 64 MiB"),
        ("too many entries", {
            let names: Vec<String> = (0..10_001).map(|i| format!("f/{i}")).collect();
            let mut files: Vec<(&str, &[u8])> = vec![("plugin.json", good_manifest.as_bytes()), ("server/plugin", exe)];
            files.extend(names.iter().map(|n| (n.as_str(), &b""[..])));
            bundle_with(&files)
        }, "more than 10000 entries"),
    ];
    for (what, bundle, expect) in cases {
        let form = reqwest::multipart::Form::new().part(
            "plugin",
            reqwest::multipart::Part::bytes(bundle).file_name("b.tar.gz"),
        );
        let resp = h
            .http
            .post(h.url("/api/v4/plugins"))
            .bearer_auth(&admin)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains(expect),
            "{what}: {body}"
        );
    }
    assert!(!h.dir.path().parent().unwrap().join("escape.txt").exists());
    // Refused bundles leave nothing behind.
    let left: Vec<_> = std::fs::read_dir(h.dir.path().join("plugins"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left on disk: {left:?}");
    let code = h
        .http
        .get(h.url("/static/plugins/com.mattermost.calls/leak.js"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(code, 404);
    // Only admins install plugins.
    let form = reqwest::multipart::Form::new().part(
        "plugin",
        reqwest::multipart::Part::bytes(build_bundle(h.dir.path())).file_name("b.tar.gz"),
    );
    let resp = h
        .http
        .post(h.url("/api/v4/plugins"))
        .bearer_auth(&user)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let _ = std::io::stdout().flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_turn_credentials_env_and_dismissal() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let admin = h.user("", "admin").await;
    let alice = h.user(&admin.1, "alice").await;
    let bob = h.user(&admin.1, "bob").await;
    h.install_and_enable(&admin.1).await;
    let (code, _) = h
        .set_plugin_settings(
            &admin.1,
            json!({"DefaultEnabled": true, "TURNStaticAuthSecret": "s3cret", "TURNCredentialsExpirationMinutes": 60,
                   "ICEServersConfigs": "[{\"urls\":[\"stun:stun.example.com:3478\"]},{\"urls\":[\"turn:turn.example.com:3478\"]}]"}),
        )
        .await;
    assert_eq!(code, 200);
    let p = "/plugins/com.mattermost.calls";

    // TURN credentials in coturn's REST scheme, verified independently.
    let (code, creds) = h.get(&alice.1, &format!("{p}/turn-credentials")).await;
    assert_eq!(code, 200, "{creds}");
    let c = &creds[0];
    assert_eq!(c["urls"], json!(["turn:turn.example.com:3478"]));
    let username = c["username"].as_str().unwrap();
    let (expiry, name) = username.split_once(':').unwrap();
    assert_eq!(name, "alice");
    let expiry: i64 = expiry.parse().unwrap();
    let now = calls_wire::ids::now_ms() / 1000;
    assert!((now + 3500..=now + 3700).contains(&expiry));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' '{username}' | openssl dgst -sha1 -hmac s3cret -binary | base64"
        ))
        .output()
        .unwrap();
    assert_eq!(
        c["credential"].as_str().unwrap(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    // The admin's config shows secrets masked, as Mattermost does; saving the masked
    // config back keeps the stored secret (the next credentials still verify).
    let fake = "********************************";
    let (_, full) = h.get(&admin.1, "/api/v4/config").await;
    let calls = &full["PluginSettings"]["Plugins"]["com.mattermost.calls"];
    assert_eq!(calls["TURNStaticAuthSecret"], fake, "{calls}");
    assert_eq!(calls["ICEServersConfigs"], fake, "{calls}");
    assert!(!full.to_string().contains("s3cret"));
    let (code, saved) = h
        .req(
            reqwest::Method::PUT,
            &admin.1,
            "/api/v4/config",
            Some(full.clone()),
        )
        .await;
    assert_eq!(code, 200, "{saved}");
    assert!(!saved.contains("s3cret"));
    let (_, again) = h.get(&alice.1, &format!("{p}/turn-credentials")).await;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' '{}' | openssl dgst -sha1 -hmac s3cret -binary | base64",
            again[0]["username"].as_str().unwrap()
        ))
        .output()
        .unwrap();
    assert_eq!(
        again[0]["credential"].as_str().unwrap(),
        String::from_utf8_lossy(&out.stdout).trim(),
        "the stored secret was replaced by the mask"
    );

    let (_, cfg) = h.get(&alice.1, &format!("{p}/config")).await;
    assert_eq!(cfg["NeedsTURNCredentials"], true);
    assert_eq!(
        cfg["ICEServersConfigs"],
        json!([{"urls": ["stun:stun.example.com:3478"]}])
    );
    // The secret is an admin-only field.
    assert!(cfg.get("TURNStaticAuthSecret").is_none());

    // /env: admins only.
    let (code, env) = h.get(&admin.1, &format!("{p}/env")).await;
    // The harness sets the RTC port and ICE host through MM_CALLS_* env vars.
    assert_eq!(code, 200);
    assert_eq!(env["ICEHostOverride"], "127.0.0.1");
    assert!(
        env["UDPServerPort"]
            .as_str()
            .unwrap()
            .parse::<u16>()
            .is_ok(),
        "{env}"
    );
    assert_eq!(env["TCPServerPort"], env["UDPServerPort"], "{env}");
    assert_eq!(env.as_object().unwrap().len(), 3, "{env}");
    let (code, _) = h.get(&alice.1, &format!("{p}/env")).await;
    assert_eq!(code, 403);

    // Dismissing the ringing notification of an ongoing call.
    let (_, ch) = h.team_and_channel(&admin.1, &[&alice.0, &bob.0]).await;
    let (code, body) = h
        .post(
            &bob.1,
            &format!("{p}/calls/{ch}/dismiss-notification"),
            json!({}),
        )
        .await;
    assert_eq!(
        (code, body),
        (
            400,
            json!({"message": "no call ongoing", "status_code": 400})
        )
    );
    let mut wa = Ws::connect(&h, &alice.1).await;
    let mut wb = Ws::connect(&h, &bob.1).await;
    wa.join(&ch).await;
    wa.expect("join").await;
    let (code, _) = h
        .post(
            &bob.1,
            &format!("{p}/calls/{ch}/dismiss-notification"),
            json!({}),
        )
        .await;
    assert_eq!(code, 200);
    let ev = wb.expect("user_dismissed_notification").await;
    assert_eq!(ev["data"]["userID"], bob.0.as_str());
    let (_, one) = h.get(&bob.1, &format!("{p}/{ch}")).await;
    assert_eq!(
        one["call"]["dismissed_notification"],
        json!({bob.0.clone(): true})
    );
    let (_, one) = h.get(&alice.1, &format!("{p}/{ch}")).await;
    assert!(one["call"].get("dismissed_notification").is_none());

    // Recording routes answer as upstream while the feature is off.
    let (code, body) = h
        .post(
            &alice.1,
            &format!("{p}/calls/{ch}/recording/start"),
            json!({}),
        )
        .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (403, Some("Recordings are not enabled"))
    );

    // API rate limit: 1 request/s with a burst of 10 per user; others unaffected.
    let carol = h.user(&admin.1, "carol").await;
    let mut limited = None;
    for i in 0..20 {
        let (code, body) = h
            .req(reqwest::Method::GET, &carol.1, &format!("{p}/config"), None)
            .await;
        if code == 429 {
            limited = Some((i, body));
            break;
        }
    }
    let (i, body) = limited.expect("rate limited");
    // Ten at once, maybe one more refilled while looping.
    assert!((10..=11).contains(&i), "limited after {i} requests");
    assert_eq!(
        body,
        "{\"message\": \"too many requests\", \"status_code\": 429}\n"
    );
    let (code, _) = h.get(&alice.1, &format!("{p}/version")).await;
    assert_eq!(code, 200);
}

/// A channel member floods `call_state`: beyond its connection's budget the frames are
/// dropped before any work (no lock, no permission round trip), so the flooder gets a
/// bounded number of answers while another user's join and the host's end-call go
/// through (before, 20,000 frames held the call lock for seconds: end-call failed with
/// 500 "timed out waiting for lock").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_state_flood_stays_within_the_connections_budget() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let (alice, bob) = (&s.users[0], &s.users[1]);
    let mut wa = Ws::connect(&h, &alice.1).await;
    wa.join(&s.channel).await;
    wa.expect("join").await;
    wa.expect("call_state").await;

    let flood = 2_000;
    let started = std::time::Instant::now();
    for _ in 0..flood {
        wa.send_calls("call_state", json!({"channelID": s.channel}));
    }
    let mut wb = Ws::connect(&h, &bob.1).await;
    wb.join(&s.channel).await;
    wb.expect_within("join", Duration::from_secs(20)).await;
    let answers = wa
        .drain(Duration::from_secs(3))
        .await
        .iter()
        .filter(|e| e["event"] == format!("{PREFIX}call_state").as_str())
        .count();
    let elapsed = started.elapsed().as_secs_f64();
    // The control budget: a burst of 20, then 2 a second.
    let allowed = 20.0 + 2.0 * elapsed + 1.0;
    assert!(
        answers >= 10 && answers as f64 <= allowed,
        "{answers} call_state answers to {flood} requests in {elapsed:.1} s"
    );
    let (code, body) = h
        .post(
            &alice.1,
            &format!("/plugins/com.mattermost.calls/calls/{}/end", s.channel),
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    wb.expect("call_end").await;
}

/// Peak RSS (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends a POST with a `len`-byte body over a raw socket, as fast as the server takes
/// it, and returns the status line of the answer (which may come before the body is
/// all sent).
async fn post_big(h: &HostProc, path: &str, token: Option<&str>, len: usize) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let addr = h.base.trim_start_matches("http://").to_string();
    let sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (rd, mut wr) = sock.into_split();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 << 10];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            wr.write_all(&chunk[..n]).await?;
            left -= n;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut status = String::new();
    // A server that answers without reading the body closes the connection with
    // unread data, which resets it: the answer may be lost to that reset.
    let read = tokio::io::BufReader::new(rd).read_line(&mut status).await;
    writer.abort();
    match read {
        Ok(_) => status.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset".into(),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// Bodies to plugin routes stream from the host to the handler that reads them: an
/// unauthenticated 60 MB POST is refused before its body is read (before, the host
/// buffered it whole and sent it over gRPC: host +150 MB, plugin +100 MB), a body over
/// a route's limit gets upstream's 400, and the logs upload takes what its 2 MiB limit
/// allows (it refused 1.5 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_request_bodies_are_read_only_as_far_as_the_route_allows() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h.setup(&["alice"], json!({"DefaultEnabled": true})).await;
    let alice = &s.users[0];
    let host_pid = h.child.id();
    let plugin_pid = h.plugin_pid().await.expect("plugin running");
    let (host_before, plugin_before) = (peak_rss_kib(host_pid), peak_rss_kib(plugin_pid));

    for path in [
        "/plugins/com.mattermost.calls/version",
        "/plugins/com.mattermost.calls/logs/upload",
        &format!("/plugins/com.mattermost.calls/{}", s.channel),
    ] {
        let status = post_big(&h, path, None, 60 << 20).await;
        assert!(
            status.contains(" 401 ") || status.contains(" 405 ") || status == "reset",
            "{path}: {status}"
        );
    }
    // Authenticated, over the route's 1 MiB: upstream's 400, after 1 MiB read.
    let status = post_big(
        &h,
        &format!(
            "/plugins/com.mattermost.calls/calls/{}/host/mute",
            s.channel
        ),
        Some(&alice.1),
        60 << 20,
    )
    .await;
    assert!(status.contains(" 400 "), "{status}");
    let grown = |before: u64, pid: u32| (peak_rss_kib(pid) - before) / 1024;
    assert!(
        grown(host_before, host_pid) < 20 && grown(plugin_before, plugin_pid) < 20,
        "peak RSS grew: host {} MB, plugin {} MB",
        grown(host_before, host_pid),
        grown(plugin_before, plugin_pid)
    );

    // The logs upload: 1.5 MB of logs is within its 2 MiB, 3 MB is not.
    let logs = |n: usize| {
        json!({"logs": "l".repeat(n), "channel_id": s.channel, "team_id": s.team}).to_string()
    };
    let p = "/plugins/com.mattermost.calls/logs/upload";
    let (code, body) = h.post_raw(&alice.1, p, logs(1_500_000).into_bytes()).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = h.post_raw(&alice.1, p, logs(3_000_000).into_bytes()).await;
    assert_eq!((code, body.as_str()), (400, "Invalid request body\n"));
}

/// A wrong-password flood from one address: the address's login budget (5/s, burst
/// 10) answers most with 429 before any hashing, at most one hash per core runs at a
/// time, the host's peak memory stays flat (before: 256 such logins took it from 51 to
/// 248 MB), and the user is locked out after 10 failures while others still log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_limited_hashed_in_turn_and_locks_the_account() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let (_, admin) = h.user("", "admin").await;
    h.user(&admin, "alice").await;
    let bob = h
        .post(
            &admin,
            "/api/v4/users",
            json!({"username": "bob", "email": "bob@example.com", "password": "password1"}),
        )
        .await;
    assert_eq!(bob.0, 201);
    let pid = h.child.id();
    tokio::time::sleep(Duration::from_secs(2)).await; // the address's budget refills
    let before = peak_rss_kib(pid);

    let url = h.url("/api/v4/users/login");
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                // A connection of its own for each task.
                let http = reqwest::Client::new();
                let mut codes = Vec::new();
                for _ in 0..4 {
                    codes.push(try_login(&http, &url, "alice", "wrong-password").await);
                }
                codes
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.extend(t.await.unwrap());
    }
    let wrong = codes.iter().filter(|c| **c == 401).count();
    let limited = codes.iter().filter(|c| **c == 429).count();
    assert_eq!(wrong + limited, 256, "{codes:?}");
    assert!(limited >= 200, "only {limited} of 256 rate-limited");
    let grown_mb = (peak_rss_kib(pid) - before) / 1024;
    assert!(grown_mb < 60, "host peak RSS grew {grown_mb} MB");

    // Ten failures in a row: Alice is locked out, even with her password; Bob is not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, body) = h
        .req(
            reqwest::Method::POST,
            "",
            "/api/v4/users/login",
            Some(json!({"login_id": "alice", "password": "password1"})),
        )
        .await;
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("api.user.check_user_login_attempts.too_many.app_error"),
        "{body}"
    );
    assert_eq!(
        try_login(&reqwest::Client::new(), &url, "bob", "password1").await,
        200
    );
}

async fn try_login(http: &reqwest::Client, url: &str, user: &str, password: &str) -> u16 {
    http.post(url)
        .json(&json!({"login_id": user, "password": password}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}
