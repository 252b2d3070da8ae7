//! Process tests of the control plane: real calls-host + real calls-plugin on
//! loopback, on SQLite and on PostgreSQL.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

struct Setup {
    host: HostProc,
    admin: (String, String),
    alice: (String, String),
    bob: (String, String),

    channel: String,
}

async fn setup(backend: Backend, settings: Value) -> Setup {
    setup_licensed(backend, "enterprise", settings).await
}

async fn setup_licensed(backend: Backend, license: &str, settings: Value) -> Setup {
    let host = HostProc::start(backend, license).await;
    let admin = host.user("", "admin").await;
    let alice = host.user(&admin.1, "alice").await;
    let bob = host.user(&admin.1, "bob").await;
    host.install_and_enable(&admin.1).await;
    let (s, b) = host.set_plugin_settings(&admin.1, settings).await;
    assert_eq!(s, 200, "{b}");
    let (team, channel) = host.team_and_channel(&admin.1, &[&alice.0, &bob.0]).await;
    let _ = team;
    Setup {
        host,
        admin,
        alice,
        bob,
        channel,
    }
}

/// Alice, then Bob, join the setup's channel; both joins acknowledged.
async fn both_join(s: &Setup) -> (Ws, Ws) {
    let mut wa = Ws::connect(&s.host, &s.alice.1).await;
    let mut wb = Ws::connect(&s.host, &s.bob.1).await;
    wa.join(&s.channel).await;
    wa.expect("join").await;
    wb.join(&s.channel).await;
    wb.expect("join").await;
    (wa, wb)
}

fn call_of(v: &Value) -> Value {
    serde_json::from_str(v["data"]["call"].as_str().unwrap()).unwrap()
}

async fn install_configure_and_test_mode(b: Backend) {
    let s = setup(b, json!({"DefaultEnabled": false})).await;
    let h = &s.host;
    // A bad setting is refused with a clear error and the old config stays.
    let (st, body) = h
        .set_plugin_settings(&s.admin.1, json!({"MaxRecordingDuration": 5}))
        .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["id"], "app.save_config.error");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("MaxRecordingDuration"),
        "{body}"
    );
    let (_, cfg) = h
        .get(&s.admin.1, "/plugins/com.mattermost.calls/config")
        .await;
    assert_eq!(cfg["MaxRecordingDuration"], 60);
    assert_eq!(cfg["DefaultEnabled"], false);
    // Non-admin sees the client config only.
    let (_, ccfg) = h
        .get(&s.alice.1, "/plugins/com.mattermost.calls/config")
        .await;
    assert!(ccfg.get("UDPServerPort").is_none());
    assert_eq!(ccfg["AllowEnableCalls"], true);
    assert_eq!(ccfg["sku_short_name"], "enterprise");

    // Test mode: alice cannot start a call in a channel that is not enabled.
    let mut wa = Ws::connect(h, &s.alice.1).await;
    wa.join(&s.channel).await;
    let err = wa.expect("error").await;
    assert_eq!(err["data"]["data"], "insufficient permissions");
    assert_eq!(err["data"]["connID"], wa.conn_id.as_str());
    // Alice may not enable it herself in test mode.
    let (st, body) = h
        .post(
            &s.alice.1,
            &format!("/plugins/com.mattermost.calls/{}", s.channel),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(st, 403, "{body}");
    let (st, body) = h
        .post(
            &s.admin.1,
            &format!("/plugins/com.mattermost.calls/{}", s.channel),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, json!({"channel_id": s.channel, "enabled": true}));
    wa.expect("channel_enable_voice").await;
    wa.join(&s.channel).await;
    let ev = wa.expect("join").await;
    assert_eq!(ev["data"]["connID"], wa.conn_id.as_str());
}
both_backends!(
    install_configure_and_test_mode_t,
    install_configure_and_test_mode
);

async fn two_users_call_lifecycle(b: Backend) {
    let s = setup(b, json!({"DefaultEnabled": true})).await;
    let h = &s.host;
    let mut wa = Ws::connect(h, &s.alice.1).await;
    let mut wb = Ws::connect(h, &s.bob.1).await;
    wa.join(&s.channel).await;
    // Upstream order for a new call.
    let evs = wa.drain(Duration::from_millis(1500)).await;
    let n = names(&evs);
    let order: Vec<&str> = [
        "call_host_changed",
        "call_start",
        "join",
        "user_joined",
        "call_state",
    ]
    .to_vec();
    let pos: Vec<usize> = order
        .iter()
        .map(|e| {
            n.iter()
                .position(|x| x == e)
                .unwrap_or_else(|| panic!("{e} missing in {n:?}"))
        })
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "order {n:?}");
    let start = &evs[pos[1]]["data"];
    assert_eq!(start["owner_id"], s.alice.0.as_str());
    assert_eq!(start["host_id"], s.alice.0.as_str());
    assert_eq!(start["channelID"], s.channel.as_str());
    assert!(start["post_id"].as_str().unwrap().len() == 26);
    let state = call_of(&evs[pos[4]]);
    assert_eq!(state["sessions"].as_array().unwrap().len(), 1);

    wb.join(&s.channel).await;
    wb.expect("join").await;
    let uj = wa.expect("user_joined").await;
    assert_eq!(
        uj["data"],
        json!({"user_id": s.bob.0, "session_id": wb.conn_id, "channelID": s.channel})
    );
    let st = wb.expect("call_state").await;
    assert_eq!(call_of(&st)["sessions"].as_array().unwrap().len(), 2);

    // REST views.
    let (code, chans) = h
        .get(&s.alice.1, "/plugins/com.mattermost.calls/channels")
        .await;
    assert_eq!(code, 200);
    let entry = chans
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel_id"] == s.channel.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["call"]["sessions"].as_array().unwrap().len(), 2);
    let (_, one) = h
        .get(
            &s.bob.1,
            &format!("/plugins/com.mattermost.calls/{}", s.channel),
        )
        .await;
    assert_eq!(one["call"]["host_id"], s.alice.0.as_str());
    let (_, active) = h
        .get(
            &s.bob.1,
            &format!("/plugins/com.mattermost.calls/calls/{}/active", s.channel),
        )
        .await;
    assert_eq!(active, json!({"active": true}));

    // Mute / hand / react round trips.
    wb.send_calls("unmute", json!({}));
    let ev = wa.expect("user_unmuted").await;
    assert_eq!(ev["data"]["userID"], s.bob.0.as_str());
    assert_eq!(ev["data"]["session_id"], wb.conn_id.as_str());
    wb.send_calls("mute", json!({}));
    wa.expect("user_muted").await;
    wb.send_calls("raise_hand", json!({}));
    let ev = wa.expect("user_raise_hand").await;
    assert!(ev["data"]["raised_hand"].as_i64().unwrap() > 0);
    wb.send_calls("unraise_hand", json!({}));
    assert_eq!(
        wa.expect("user_unraise_hand").await["data"]["raised_hand"],
        0
    );
    wb.send_calls(
        "react",
        json!({"data": "{\"name\":\"+1\",\"unified\":\"1f44d\"}"}),
    );
    let ev = wa.expect("user_reacted").await;
    assert_eq!(
        ev["data"]["emoji"],
        json!({"name": "+1", "unified": "1f44d"})
    );
    assert_eq!(ev["data"]["user_id"], s.bob.0.as_str());

    // Host controls honour permissions.
    let base = format!("/plugins/com.mattermost.calls/calls/{}/host", s.channel);
    let (code, body) = h
        .req(
            reqwest::Method::POST,
            &s.bob.1,
            &format!("{base}/mute"),
            Some(json!({"session_id": wa.conn_id})),
        )
        .await;
    assert_eq!(
        (code, body.as_str()),
        (
            400,
            "{\"message\":\"no permissions\",\"status_code\":400}\n"
        )
    );
    wb.send_calls("unmute", json!({}));
    wa.expect("user_unmuted").await;
    let (code, _) = h
        .post(
            &s.alice.1,
            &format!("{base}/mute"),
            json!({"session_id": wb.conn_id}),
        )
        .await;
    assert_eq!(code, 200);
    let hm = wb.expect("host_mute").await;
    assert_eq!(hm["data"]["session_id"], wb.conn_id.as_str());
    let (code, body) = h
        .post(
            &s.alice.1,
            &format!("{base}/make"),
            json!({"new_host_id": "nobodynobodynobodynobodyx"}),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "requested session or user is not in the call"
    );
    let (code, _) = h
        .post(
            &s.alice.1,
            &format!("{base}/make"),
            json!({"new_host_id": s.bob.0}),
        )
        .await;
    assert_eq!(code, 200);
    let ev = wa.expect("call_host_changed").await;
    assert_eq!(ev["data"]["hostID"], s.bob.0.as_str());

    // Leaving: the last leave ends the call.
    wb.send_calls("leave", json!({}));
    let ev = wa.expect("user_left").await;
    assert_eq!(ev["data"]["session_id"], wb.conn_id.as_str());
    wa.send_calls("leave", json!({}));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, active) = h
        .get(
            &s.bob.1,
            &format!("/plugins/com.mattermost.calls/calls/{}/active", s.channel),
        )
        .await;
    assert_eq!(active, json!({"active": false}));
    let db = h.db().await;
    let end_at: i64 = calls_db::db_run!(&db, |p| sqlx::query_scalar(
        "SELECT endat FROM calls WHERE channelid = $1"
    )
    .bind(&s.channel)
    .fetch_one(p)
    .await
    .unwrap());
    assert!(end_at > 0);
}
both_backends!(two_users_call_lifecycle_t, two_users_call_lifecycle);

async fn reconnect_grace_and_limits(b: Backend) {
    let s = setup(b, json!({"DefaultEnabled": true, "MaxCallParticipants": 2})).await;
    let h = &s.host;
    let (mut wa, wb) = both_join(&s).await;
    // Past max participants: the upstream refusal.
    let mut wadmin = Ws::connect(h, &s.admin.1).await;
    h.post(
        &s.admin.1,
        &format!("/api/v4/channels/{}/members", s.channel),
        json!({"user_id": s.admin.0}),
    )
    .await;
    wadmin.join(&s.channel).await;
    assert_eq!(
        wadmin.expect("error").await["data"]["data"],
        "user cannot join because of limits"
    );

    // Drop bob's socket and resume within 10 s: the session stays.
    let bob_session = wb.conn_id.clone();
    let seq = wb.last_seq.load(std::sync::atomic::Ordering::SeqCst);
    wb.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut wb2 = Ws::connect_resume(h, &s.bob.1, &bob_session, seq + 1).await;
    wb2.send_calls(
        "reconnect",
        json!({"channelID": s.channel, "originalConnID": bob_session, "prevConnID": bob_session}),
    );
    tokio::time::sleep(Duration::from_secs(9)).await;
    let (_, one) = h
        .get(
            &s.alice.1,
            &format!("/plugins/com.mattermost.calls/{}", s.channel),
        )
        .await;
    assert_eq!(
        one["call"]["sessions"].as_array().unwrap().len(),
        2,
        "bob kept: {one}"
    );
    wb2.send_calls("raise_hand", json!({}));
    assert_eq!(
        wa.expect("user_raise_hand").await["data"]["session_id"],
        bob_session.as_str()
    );

    // Drop again and stay away: removed after the grace.
    wb2.kill();
    let ev = wa.expect_within("user_left", Duration::from_secs(15)).await;
    assert_eq!(ev["data"]["session_id"], bob_session.as_str());
}
both_backends!(reconnect_grace_and_limits_t, reconnect_grace_and_limits);

async fn bad_input(b: Backend) {
    let s = setup(b, json!({"DefaultEnabled": true})).await;
    let h = &s.host;
    let p = "/plugins/com.mattermost.calls";
    // A call in the channel keeps going while bad input flies around.
    let mut wa = Ws::connect(h, &s.alice.1).await;
    wa.join(&s.channel).await;
    wa.expect("join").await;

    let (code, body) = h
        .post_raw(
            &s.admin.1,
            &format!("{p}/{}", s.channel),
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(code, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status_code"], 400);
    let (code, _) = h
        .post_raw(
            &s.admin.1,
            &format!("{p}/{}", s.channel),
            br#"{"enabled":"yes"}"#.to_vec(),
        )
        .await;
    assert_eq!(code, 400);
    let big = format!("{{\"session_id\":\"{}\"}}", "x".repeat(2 << 20));
    let (code, body) = h
        .post_raw(
            &s.alice.1,
            &format!("{p}/calls/{}/host/mute", s.channel),
            big.into_bytes(),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    // Unauthenticated, and a client-supplied user id header is not trusted.
    let resp = h
        .http
        .get(h.url(&format!("{p}/config")))
        .header("Mattermost-User-Id", &s.admin.0)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.text().await.unwrap(), "Unauthorized\n");
    // Unknown route.
    let (code, _) = h.get(&s.alice.1, &format!("{p}/no/such/route")).await;
    assert_eq!(code, 404);
    // A channel the user cannot read.
    let (_, team2) = h
        .post(
            &s.admin.1,
            "/api/v4/teams",
            json!({"name": "private-team", "display_name": "P"}),
        )
        .await;
    let secret = h
        .channel(&s.admin.1, team2["id"].as_str().unwrap(), &[])
        .await;
    let (code, body) = h.get(&s.bob.1, &format!("{p}/{secret}")).await;
    assert_eq!((code, body), (403, Value::String("Forbidden\n".into())));
    let mut wb = Ws::connect(h, &s.bob.1).await;
    wb.join(&secret).await;
    assert_eq!(wb.expect("error").await["data"]["data"], "forbidden");
    wb.join("unknownchannelunknownchann").await;
    assert_eq!(wb.expect("error").await["data"]["data"], "forbidden");
    // Unknown websocket actions and malformed frames are dropped.
    wb.send_calls("no_such_action", json!({"x": 1}));
    wb.send("made_up", json!({}));
    wb.send_raw(tokio_tungstenite::tungstenite::Message::Binary(
        vec![0xc1, 0xff, 0x00].into(),
    ));
    wb.send_raw(tokio_tungstenite::tungstenite::Message::Text("{{{".into()));
    wb.send_calls("join", json!({"channelID": 42}));
    // The ongoing call is unaffected.
    wa.send_calls("raise_hand", json!({}));
    wa.expect("user_raise_hand").await;
    let (_, one) = h.get(&s.alice.1, &format!("{p}/{}", s.channel)).await;
    assert_eq!(one["call"]["sessions"].as_array().unwrap().len(), 1);
}
both_backends!(bad_input_t, bad_input);

async fn plugin_killed_mid_call(b: Backend) {
    let s = setup(b, json!({"DefaultEnabled": true})).await;
    let h = &s.host;
    let (wa, wb) = both_join(&s).await;
    let bob_session = wb.conn_id.clone();
    // Alice moves to a brand-new connection (not a resume): her session now lives on a
    // connection id different from the session id.
    let alice_session = wa.conn_id.clone();
    wa.kill();
    let mut wa = Ws::connect(h, &s.alice.1).await;
    assert_ne!(wa.conn_id, alice_session);
    wa.send_calls("reconnect", json!({"channelID": s.channel, "originalConnID": alice_session, "prevConnID": alice_session}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = h.plugin_pid().await.expect("plugin running");
    // Bob's socket goes away while the plugin is dead.
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    wb.kill();
    // The host restarts the plugin; it recovers the call from the database.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, one) = h
            .get(
                &s.alice.1,
                &format!("/plugins/com.mattermost.calls/{}", s.channel),
            )
            .await;
        if code == 200 && h.plugin_pid().await.is_some_and(|p| p != pid) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "plugin did not come back: {code} {one}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_ne!(h.plugin_pid().await, Some(pid));
    // The media of an integrated call died with the process, and no client can get it
    // back: Alice (connected) is told on her current connection, as for a failed
    // connection, so that her client leaves and offers to join again; both sessions
    // end and so does the call.
    let err = wa.expect_within("error", Duration::from_secs(20)).await;
    assert_eq!(err["data"]["connID"], wa.conn_id.as_str(), "{err}");
    let mut left = Vec::new();
    for _ in 0..2 {
        let ev = wa.expect_within("user_left", Duration::from_secs(20)).await;
        left.push(ev["data"]["session_id"].as_str().unwrap().to_string());
    }
    left.sort();
    let mut want = vec![alice_session.clone(), bob_session.clone()];
    want.sort();
    assert_eq!(left, want);
    let (_, one) = h
        .get(
            &s.alice.1,
            &format!("/plugins/com.mattermost.calls/{}", s.channel),
        )
        .await;
    assert!(one.get("call").is_none_or(|c| c.is_null()), "{one}");
    // She can start again at once.
    wa.join(&s.channel).await;
    wa.expect("join").await;
}
both_backends!(plugin_killed_mid_call_t, plugin_killed_mid_call);

async fn deactivation_marks_sessions_left(b: Backend) {
    let s = setup(b, json!({"DefaultEnabled": true})).await;
    let h = &s.host;
    let mut wa = Ws::connect(h, &s.alice.1).await;
    wa.join(&s.channel).await;
    wa.expect("join").await;
    // Metrics through the plugin route, with upstream names.
    let metrics = h.plugin_metrics().await;
    assert!(
        metrics.contains(
            "mattermost_plugin_calls_websocket_events_total{direction=\"in\",type=\"join\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("mattermost_plugin_calls_store_ops_total{type=\"CreateCall\"} 1"));
    assert!(metrics
        .contains("mattermost_plugin_calls_cluster_mutex_grab_time_count{group=\"mutex_call\"}"));
    let (code, _) = h
        .post(
            &s.admin.1,
            "/api/v4/plugins/com.mattermost.calls/disable",
            json!({}),
        )
        .await;
    assert_eq!(code, 200);
    let ev = wa.expect("user_left").await;
    assert_eq!(ev["data"]["session_id"], wa.conn_id.as_str());
    let db = h.db().await;
    let n: i64 = calls_db::db_run!(&db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM calls_sessions"
    )
    .fetch_one(p)
    .await
    .unwrap());
    assert_eq!(n, 0);
    let end_at: i64 = calls_db::db_run!(&db, |p| sqlx::query_scalar(
        "SELECT endat FROM calls WHERE channelid = $1"
    )
    .bind(&s.channel)
    .fetch_one(p)
    .await
    .unwrap());
    assert!(end_at > 0);
    assert_eq!(h.plugin_pid().await, None);
    // Routes answer 404 while the plugin is disabled.
    let (code, _) = h
        .get(&s.alice.1, "/plugins/com.mattermost.calls/config")
        .await;
    assert_eq!(code, 404);
}
both_backends!(
    deactivation_marks_sessions_left_t,
    deactivation_marks_sessions_left
);

async fn logout_removes_session(b: Backend) {
    let s = setup(b, json!({"DefaultEnabled": true})).await;
    let h = &s.host;
    let (mut wa, mut wb) = both_join(&s).await;
    // A second connection of Bob's login, not in the call.
    let mut wb2 = Ws::connect(h, &s.bob.1).await;
    let (code, _) = h.post(&s.bob.1, "/api/v4/users/logout", json!({})).await;
    assert_eq!(code, 200);
    // As Mattermost: the host closes every websocket of the revoked login, so none
    // of them can join (or do anything) any more.
    assert!(
        wb2.closed_within(Duration::from_secs(5)).await,
        "a websocket outlived its login"
    );
    let ev = wa.expect_within("user_left", Duration::from_secs(25)).await;
    assert_eq!(ev["data"]["session_id"], wb.conn_id.as_str());
    assert!(wb.closed_within(Duration::from_secs(1)).await);
    // Alice (still logged in) stays.
    let (_, one) = h
        .get(
            &s.alice.1,
            &format!("/plugins/com.mattermost.calls/{}", s.channel),
        )
        .await;
    assert_eq!(one["call"]["sessions"].as_array().unwrap().len(), 1);
}
both_backends!(logout_removes_session_t, logout_removes_session);

async fn posts_screen_share_and_host_end(b: Backend) {
    let s = setup(b, json!({"DefaultEnabled": true})).await;
    let h = &s.host;
    let mut wa = Ws::connect(h, &s.alice.1).await;
    let mut wb = Ws::connect(h, &s.bob.1).await;
    wa.send_calls("join", json!({"channelID": s.channel, "title": "Standup"}));
    let start = wa.expect("call_start").await;
    wb.join(&s.channel).await;
    wb.expect("join").await;
    // The call post.
    let post_id = start["data"]["post_id"].as_str().unwrap().to_string();
    let (_, posts) = h
        .get(&s.alice.1, &format!("/api/v4/channels/{}/posts", s.channel))
        .await;
    let post = &posts["posts"][&post_id];
    assert_eq!(post["type"], "custom_calls");
    assert_eq!(post["message"], "alice started a call");
    assert_eq!(post["props"]["title"], "Standup");
    assert_eq!(start["data"]["thread_id"], post_id.as_str());

    // One screen sharer at a time.
    wb.send_calls(
        "screen_on",
        json!({"data": "{\"screenStreamID\":\"stream-b\"}"}),
    );
    let ev = wa.expect("user_screen_on").await;
    assert_eq!(ev["data"]["session_id"], wb.conn_id.as_str());
    wa.send_calls(
        "screen_on",
        json!({"data": "{\"screenStreamID\":\"stream-a\"}"}),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, one) = h
        .get(
            &s.alice.1,
            &format!("/plugins/com.mattermost.calls/{}", s.channel),
        )
        .await;
    assert_eq!(
        one["call"]["screen_sharing_session_id"],
        wb.conn_id.as_str()
    );
    // Host asks the sharer to stop; the sharer stops.
    let base = format!("/plugins/com.mattermost.calls/calls/{}/host", s.channel);
    let (code, _) = h
        .post(
            &s.alice.1,
            &format!("{base}/screen-off"),
            json!({"session_id": wb.conn_id}),
        )
        .await;
    assert_eq!(code, 200);
    wb.expect("host_screen_off").await;
    wb.send_calls("screen_off", json!({}));
    wa.expect("user_screen_off").await;

    // Only the host (or an admin) ends the call for everyone.
    let (code, body) = h.post(&s.bob.1, &format!("{base}/end"), json!({})).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (400, Some("no permissions"))
    );
    let (code, body) = h.post(&s.alice.1, &format!("{base}/end"), json!({})).await;
    assert_eq!(
        (code, body),
        (200, json!({"message": "success", "status_code": 200}))
    );
    wa.expect("call_end").await;
    wb.expect("call_end").await;
    // Nobody leaves: the forced cleanup after 5 s removes everyone and ends the call.
    wa.expect_within("user_left", Duration::from_secs(10)).await;
    let (_, active) = h
        .get(
            &s.bob.1,
            &format!("/plugins/com.mattermost.calls/calls/{}/active", s.channel),
        )
        .await;
    assert_eq!(active, json!({"active": false}));
    let (_, posts) = h
        .get(&s.alice.1, &format!("/api/v4/channels/{}/posts", s.channel))
        .await;
    let post = &posts["posts"][&post_id];
    assert_eq!(post["message"], "Call ended");
    assert!(post["props"]["end_at"].as_i64().unwrap() > 0);
    assert_eq!(post["props"]["participants"].as_array().unwrap().len(), 2);
    // Stats see one finished call with two participants.
    let (code, stats) = h
        .get(&s.admin.1, "/plugins/com.mattermost.calls/stats")
        .await;
    assert_eq!(code, 200);
    assert_eq!(stats["total_calls"], 1);
    assert_eq!(stats["avg_participants"], 2);
    assert_eq!(stats["total_screen_share_calls"], 1);
    assert_eq!(stats["calls_by_channel_type"]["O"], 1);
    let (code, _) = h.get(&s.bob.1, "/plugins/com.mattermost.calls/stats").await;
    assert_eq!(code, 403);
}
both_backends!(
    posts_screen_share_and_host_end_t,
    posts_screen_share_and_host_end
);

async fn unlicensed_server_allows_dm_calls_only(b: Backend) {
    let s = setup_licensed(b, "none", json!({"DefaultEnabled": true})).await;
    let (host, alice, bob, channel) = (&s.host, &s.alice, &s.bob, &s.channel);
    let (_, cfg) = host
        .get(&alice.1, "/plugins/com.mattermost.calls/config")
        .await;
    assert_eq!(cfg["sku_short_name"], "starter");
    assert_eq!(cfg["GroupCallsAllowed"], false);
    assert_eq!(cfg["HostControlsAllowed"], false);
    let mut wa = Ws::connect(host, &alice.1).await;
    wa.join(channel).await;
    let evs = wa.drain(Duration::from_secs(2)).await;
    let err = evs
        .iter()
        .find(|e| e["event"] == format!("{PREFIX}error"))
        .expect("error event");
    assert_eq!(
        err["data"]["data"],
        "unlicensed servers only allow calls in DMs"
    );
    let notice = evs
        .iter()
        .find(|e| e["event"] == "ephemeral_message")
        .expect("ephemeral notice");
    assert!(notice["data"]["post"]
        .as_str()
        .unwrap()
        .contains("only available in DMs"));
    let (code, dm) = host
        .post(&alice.1, "/api/v4/channels/direct", json!([alice.0, bob.0]))
        .await;
    assert_eq!(code, 201);
    wa.join(dm["id"].as_str().unwrap()).await;
    wa.expect("join").await;
    // Malformed ids do not match upstream's routes.
    let (code, _) = host
        .get(
            &alice.1,
            "/plugins/com.mattermost.calls/calls/NOT-AN-ID/active",
        )
        .await;
    assert_eq!(code, 404);
}
both_backends!(
    unlicensed_server_allows_dm_calls_only_t,
    unlicensed_server_allows_dm_calls_only
);

async fn host_remove_and_plugin_sigterm(b: Backend) {
    let s = setup(b, json!({"DefaultEnabled": true})).await;
    let h = &s.host;
    let (mut wa, mut wb) = both_join(&s).await;
    let p = "/plugins/com.mattermost.calls";
    let (code, body) = h.get(&s.bob.1, &format!("{p}/debug/pprof/")).await;
    assert_eq!(
        (code, body),
        (403, json!({"message": "Forbidden", "status_code": 403}))
    );
    // The host removes bob: everyone is told, and 3 s later his session is gone.
    let (code, _) = h
        .post(
            &s.alice.1,
            &format!("{p}/calls/{}/host/remove", s.channel),
            json!({"session_id": wb.conn_id}),
        )
        .await;
    assert_eq!(code, 200);
    let ev = wb.expect("host_removed").await;
    assert_eq!(ev["data"]["session_id"], wb.conn_id.as_str());
    assert_eq!(ev["data"]["user_id"], s.bob.0.as_str());
    let ev = wa.expect("user_left").await;
    assert_eq!(ev["data"]["session_id"], wb.conn_id.as_str());

    // SIGTERM to the plugin: a clean shutdown marks its sessions left, then the host
    // starts it again.
    let pid = h.plugin_pid().await.expect("plugin running");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let ev = wa.expect("user_left").await;
    assert_eq!(ev["data"]["session_id"], wa.conn_id.as_str());
    let db = h.db().await;
    let n: i64 = calls_db::db_run!(&db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM calls_sessions"
    )
    .fetch_one(p)
    .await
    .unwrap());
    assert_eq!(n, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.get(&s.alice.1, &format!("{p}/version")).await.0 != 200
        || h.plugin_pid().await == Some(pid)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "plugin not restarted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A new call works after the restart.
    wa.join(&s.channel).await;
    wa.expect("call_start").await;
}
both_backends!(
    host_remove_and_plugin_sigterm_t,
    host_remove_and_plugin_sigterm
);

/// The README's first flow on the demo `make run` seeds: the bundle installed by the
/// admin, alice starts a call in *Calls* (enabled by the demo once the plugin runs)
/// and bob joins it; in *Town Square* test mode is left on, so alice cannot start one
/// there and the admin can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_calls_channel_takes_calls_from_everyone_and_town_square_is_in_test_mode() {
    let h = HostProc::start_demo();
    let Demo {
        admin,
        alice,
        calls,
        town,
    } = h.demo_ready().await;
    let bob = h.login_with("bob", "bob-password").await;
    let (_, v) = h
        .get(&alice, &format!("/plugins/com.mattermost.calls/{town}"))
        .await;
    assert_eq!(v["enabled"], false, "{v}");
    let (_, cfg) = h.get(&admin, "/plugins/com.mattermost.calls/config").await;
    assert_eq!(cfg["DefaultEnabled"], false, "test mode stays on");
    // Once answered, nothing is left pending in the data dir (the file goes right after
    // the plugin's answer).
    let pending = h.dir.path().join("demo-pending.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pending.exists() {
        assert!(std::time::Instant::now() < deadline, "still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut wa = Ws::connect(&h, &alice).await;
    wa.join(&town).await;
    let err = wa.expect("error").await;
    assert_eq!(err["data"]["data"], "insufficient permissions");
    wa.join(&calls).await;
    wa.expect("join").await;
    let mut wb = Ws::connect(&h, &bob).await;
    wb.join(&calls).await;
    wb.expect("join").await;
    let (_, state) = h
        .get(&alice, &format!("/plugins/com.mattermost.calls/{calls}"))
        .await;
    assert_eq!(
        state["call"]["sessions"].as_array().map(Vec::len),
        Some(2),
        "{state}"
    );
    let mut wadmin = Ws::connect(&h, &admin).await;
    wadmin.join(&town).await;
    wadmin.expect("join").await;
}
