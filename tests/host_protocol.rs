//! Host protocol details and plugin API edges, against real processes (SQLite).

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
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
        tar.into_inner().unwrap().finish().unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plugin_bundles_are_refused() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let (_, admin) = h.user("", "admin").await;
    let (_, user) = h.user(&admin, "alice").await;
    let exe: &[u8] = b"#!/bin/sh\n";
    let good_manifest =
        json!({"id": "com.example.x", "server": {"executables": {"linux-amd64": "server/plugin"}}})
            .to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not gzip", b"garbage".to_vec(), "invalid bundle"),
        ("no manifest", bundle_with(&[("server/plugin", exe)]), "plugin.json not found"),
        ("bad id", bundle_with(&[("plugin.json", json!({"id": "a/b", "server": {"executable": "server/plugin"}}).to_string().as_bytes()), ("server/plugin", exe)]), "invalid plugin id"),
        ("no executable for platform", bundle_with(&[("plugin.json", json!({"id": "com.example.x", "server": {"executables": {"darwin-amd64": "p"}}}).to_string().as_bytes())]), "no server executable"),
        ("executable missing", bundle_with(&[("plugin.json", good_manifest.as_bytes())]), "is not in the bundle"),
        ("bad setting type", bundle_with(&[("plugin.json", json!({"id": "com.example.x", "server": {"executable": "server/plugin"}, "settings_schema": {"settings": [{"key": "K", "type": "weird"}]}}).to_string().as_bytes()), ("server/plugin", exe)]), "invalid type"),
        ("path traversal", bundle_with(&[("../../escape.txt", b"x"), ("plugin.json", good_manifest.as_bytes()), ("server/plugin", exe)]), "invalid bundle"),
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
    let now = mmcalls::ids::now_ms() / 1000;
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
