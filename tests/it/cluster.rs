//! High availability: several `calls-host` nodes (each with its plugin) on one real
//! PostgreSQL, on 127.0.0.2–4, sharing configuration, bundles and websocket events
//! through the database. A call is hosted on the node where it starts; participants
//! whose websocket is on another node are served by the call's node through cluster
//! messages; a node that dies takes only its own calls with it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::media_client::*;
use crate::common::*;

/// Nodes of one cluster on a fresh database.
pub struct Cluster {
    pub name: String,
    pub nodes: Vec<HostProc>,
}

impl Cluster {
    pub async fn start(n: usize, env: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(n, env, &[]).await
    }

    /// With more `calls-host` arguments for every node.
    pub async fn start_with(n: usize, env: &[(&str, &str)], args: &[&str]) -> Cluster {
        let db = fresh_postgres().await;
        let name = format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let nodes = (0..n)
            .map(|i| {
                HostProc::start_node_with(&db, &name, &format!("127.0.0.{}", i + 2), env, args)
            })
            .collect();
        Cluster { name, nodes }
    }

    /// Users and a channel made through the first node, the bundle installed and
    /// enabled there, `settings` saved; waits until every node runs the plugin.
    pub async fn setup(&self, names: &[&str], settings: Value) -> CallSetup {
        let s = self.nodes[0].setup(names, settings).await;
        for n in &self.nodes {
            wait_for_plugin(n, &n.login("admin").await).await;
        }
        s
    }
}

/// The node's id, as its ping names it.
pub async fn node_id(h: &HostProc) -> String {
    let (code, v) = h.get("", "/api/v4/system/ping").await;
    assert_eq!(code, 200, "{v}");
    v["NodeId"]
        .as_str()
        .expect("a cluster node names itself")
        .to_string()
}

/// Waits until the node's plugin answers (started from the cluster's bundle).
pub async fn wait_for_plugin(h: &HostProc, token: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        let (code, _) = h.get(token, "/plugins/com.mattermost.calls/version").await;
        if code == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the plugin did not start on {}", h.base);
}

/// The active call of a channel, from the shared database: (id, node id, end_at).
async fn call_row(db: &calls_db::Db, channel: &str) -> Option<(String, String, i64)> {
    let calls_db::Db::Postgres(p) = db else {
        unreachable!()
    };
    sqlx::query_as(
        "SELECT id, COALESCE(props->>'node_id', ''), COALESCE(endat, 0) FROM calls WHERE channelid = $1 ORDER BY createat DESC LIMIT 1",
    )
    .bind(channel)
    .fetch_optional(p)
    .await
    .unwrap()
}

async fn session_exists(db: &calls_db::Db, session: &str) -> bool {
    let calls_db::Db::Postgres(p) = db else {
        unreachable!()
    };
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM calls_sessions WHERE id = $1")
        .bind(session)
        .fetch_one(p)
        .await
        .unwrap()
        > 0
}

/// Whether `c` receives the voice track of the session on connection `conn`.
fn has_voice_of(c: &MediaClient, conn: &str) -> bool {
    let prefix = format!("voice_{conn}_");
    c.peer.track_ids.iter().any(|t| t.starts_with(&prefix))
}

/// Waits for an event on each websocket.
async fn all_get(wss: &mut [&mut Ws], event: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for w in wss.iter_mut() {
        out.push(w.expect(event).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_hosted_where_they_start_and_served_to_every_node() {
    let c = Cluster::start(3, &[]).await;
    let (a, b, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let s = c
        .setup(
            &["alice", "bob", "carol", "dave", "erin"],
            json!({"DefaultEnabled": true}),
        )
        .await;
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for n in &c.nodes {
            v.push(node_id(n).await);
        }
        v
    };
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "node ids: {ids:?}"
    );

    // A setting saved through B is in force on A and C.
    let (a_admin, b_admin, c_admin) = (
        a.login("admin").await,
        b.login("admin").await,
        n3.login("admin").await,
    );
    let saved = Instant::now();
    let (code, body) = b
        .set_plugin_settings(
            &b_admin,
            json!({"DefaultEnabled": true, "MaxCallParticipants": 7}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    for (n, t) in [(a, &a_admin), (n3, &c_admin)] {
        let end = saved + Duration::from_secs(2);
        loop {
            let (_, cfg) = n.get(t, "/plugins/com.mattermost.calls/config").await;
            if cfg["MaxCallParticipants"] == 7 {
                break;
            }
            assert!(
                Instant::now() < end,
                "{}: MaxCallParticipants not in force 2 s after it was saved on B: {cfg}",
                n.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "setting in force on every node {:?} after saving",
        saved.elapsed()
    );

    let db = a.db().await;
    let channel = &s.channel;
    let (alice_t, bob_t, carol_t) = (
        a.login("alice").await,
        b.login("bob").await,
        n3.login("carol").await,
    );
    // Alice, on A, starts the call: it is hosted on A.
    let mut al = MediaClient::join(a, &alice_t, channel, true).await;
    let (call_id, node, _) = call_row(&db, channel).await.unwrap();
    assert_eq!(node, ids[0], "the call is not hosted where it started");
    // Bob on B and carol on C join; their media goes to A's SFU.
    let mut bo = MediaClient::join(b, &bob_t, channel, true).await;
    let mut ca = MediaClient::join(n3, &carol_t, channel, false).await;
    run_until(
        &mut [&mut al, &mut bo, &mut ca],
        Duration::from_secs(20),
        &[false, false, false],
        |cs| cs.iter().all(|c| c.peer.rtc.is_connected()),
    )
    .await;
    for (who, m) in [("alice", &al), ("bob", &bo), ("carol", &ca)] {
        assert!(m.peer.rtc.is_connected(), "{who}: no media connection");
    }

    // Audio both ways across nodes: alice (A) → bob (B) and carol (C); bob → alice.
    al.ws.send_calls("unmute", json!({}));
    bo.ws.send_calls("unmute", json!({}));
    ca.ws.expect("user_unmuted").await;
    run_until(
        &mut [&mut al, &mut bo, &mut ca],
        Duration::from_secs(20),
        &[true, true, false],
        |cs| cs.iter().all(|c| c.peer.received.len() > 40),
    )
    .await;
    for (who, m) in [("alice", &al), ("bob", &bo), ("carol", &ca)] {
        assert!(
            m.peer.received.len() > 40,
            "{who} heard {} packets",
            m.peer.received.len()
        );
    }

    // Hand, reaction and screen events reach every participant on every node (how
    // long they take here and across nodes is printed, not asserted).
    let sent = Instant::now();
    al.ws.send_calls("raise_hand", json!({}));
    al.ws.expect("user_raise_hand").await;
    let here = sent.elapsed();
    all_get(&mut [&mut bo.ws, &mut ca.ws], "user_raise_hand").await;
    println!(
        "user_raise_hand from A: on A after {here:?}, on B and C after {:?}",
        sent.elapsed()
    );
    ca.ws.send_calls(
        "react",
        json!({"data": r#"{"name":"+1","unified":"1f44d"}"#}),
    );
    all_get(&mut [&mut al.ws, &mut bo.ws], "user_reacted").await;
    bo.ws.send_calls(
        "screen_on",
        json!({"data": r#"{"screenStreamID":"bob-screen"}"#}),
    );
    all_get(&mut [&mut al.ws, &mut ca.ws], "user_screen_on").await;
    bo.ws.send_calls("screen_off", json!({}));
    all_get(&mut [&mut al.ws, &mut ca.ws], "user_screen_off").await;
    bo.ws.send_calls("mute", json!({}));
    all_get(&mut [&mut al.ws, &mut ca.ws], "user_muted").await;

    // Bob's websocket moves from B to C (a load balancer's choice): his session stays.
    let bob_session = bo.ws.conn_id.clone();
    let mut moved = Ws::connect(n3, &n3.login("bob").await).await;
    moved.send_calls(
        "reconnect",
        json!({"channelID": channel, "originalConnID": bob_session, "prevConnID": bob_session}),
    );
    std::mem::replace(&mut bo.ws, moved).kill();
    // Past B's reconnect grace, the session is still in the call...
    run_for(
        &mut [&mut al, &mut bo, &mut ca],
        Duration::from_secs(12),
        &[true, false, false],
    )
    .await;
    assert!(
        session_exists(&db, &bob_session).await,
        "bob's session was removed after his websocket moved"
    );
    // ...his actions on C reach the others, and the call's node now signals him on C:
    // dave joins, and bob gets dave's voice through a renegotiation over C.
    bo.ws.send_calls("raise_hand", json!({}));
    all_get(&mut [&mut al.ws, &mut ca.ws], "user_raise_hand").await;
    let mut da = MediaClient::join(a, &a.login("dave").await, channel, true).await;
    da.ws.send_calls("unmute", json!({}));
    let dave_conn = da.ws.conn_id.clone();
    run_until(
        &mut [&mut al, &mut bo, &mut ca, &mut da],
        Duration::from_secs(20),
        &[false, false, false, true],
        |cs| has_voice_of(cs[1], &dave_conn),
    )
    .await;
    assert!(
        has_voice_of(&bo, &dave_conn),
        "bob (moved to C) did not get dave's track: {:?}",
        bo.peer.track_ids
    );

    // A second call, started from C by erin, is hosted on C; both run at once.
    let ch2 = n3
        .channel(&c_admin, &s.team, &[s.users[4].0.as_str()])
        .await;
    let mut er = MediaClient::join(n3, &n3.login("erin").await, &ch2, true).await;
    let (call2, node2, _) = call_row(&db, &ch2).await.unwrap();
    assert_eq!(node2, ids[2], "the second call is not hosted on C");
    run_until(&mut [&mut er], Duration::from_secs(15), &[false], |cs| {
        cs[0].peer.rtc.is_connected()
    })
    .await;
    assert!(er.peer.rtc.is_connected());
    drop(al);
    drop(da);

    // Node A dies: its call ends for everyone on B and C within 30 s.
    let killed = Instant::now();
    let mut a_gone = c.nodes;
    let dead = a_gone.remove(0);
    drop(dead);
    let (b, n3) = (&a_gone[0], &a_gone[1]);
    let end = bo
        .ws
        .expect_within("call_end", Duration::from_secs(30))
        .await;
    assert_eq!(end["broadcast"]["channel_id"], channel.as_str());
    ca.ws
        .expect_within("call_end", Duration::from_secs(30))
        .await;
    ca.ws.expect("user_left").await;
    let (id, _, end_at) = call_row(&db, channel).await.unwrap();
    assert_eq!(id, call_id);
    assert!(end_at > 0, "the dead node's call has no end_at");
    println!(
        "the dead node's call ended {:?} after the kill",
        killed.elapsed()
    );

    // A new call starts at once from B, hosted on B; the call on C goes on.
    let mut da2 = MediaClient::join(b, &b.login("dave").await, channel, false).await;
    let (new_call, new_node, new_end) = call_row(&db, channel).await.unwrap();
    assert_ne!(new_call, call_id);
    assert_eq!((new_node.as_str(), new_end), (ids[1].as_str(), 0));
    run_until(
        &mut [&mut da2, &mut er],
        Duration::from_secs(15),
        &[false, false],
        |cs| cs[0].peer.rtc.is_connected(),
    )
    .await;
    assert!(
        da2.peer.rtc.is_connected(),
        "the new call on B has no media"
    );
    let (id2, _, end2) = call_row(&db, &ch2).await.unwrap();
    assert_eq!(
        (id2.as_str(), end2),
        (call2.as_str(), 0),
        "the call on C was ended"
    );
    assert!(er.peer.rtc.is_connected(), "the call on C lost its media");
    let _ = n3;
}

/// rtcd mode in a cluster: both nodes use the shared fleet (found through DNS); a
/// call started on A and joined from B keeps its media while A restarts, and
/// alice's websocket, back on the restarted A, carries her session on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rtcd_media_keeps_flowing_while_a_node_restarts() {
    const FLEET: [&str; 2] = ["127.0.0.5", "127.0.0.6"];
    let http = free_port_on(FLEET[0]);
    let rtc = free_port_on(FLEET[0]);
    let fleet: Vec<RtcdProc> = FLEET
        .iter()
        .map(|ip| RtcdProc::start(ip, http, rtc))
        .collect();
    let dns = crate::common::dns::TestDns::start("rtcd.test", &FLEET).await;
    let url = format!("http://rtcd.test:{http}");
    let dns_addr = dns.addr.to_string();
    let env = [
        ("MM_CALLS_RTCD_DNS_SERVER", dns_addr.as_str()),
        ("MM_CALLS_RTCD_SERVICE_URL", url.as_str()),
    ];
    let mut c = Cluster::start(2, &env).await;
    let s = c
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let channel = s.channel.clone();
    let db = c.nodes[0].db().await;
    let alice_t = c.nodes[0].login("alice").await;
    let bob_t = c.nodes[1].login("bob").await;
    let mut al = MediaClient::join(&c.nodes[0], &alice_t, &channel, true).await;
    let mut bo = MediaClient::join(&c.nodes[1], &bob_t, &channel, true).await;
    run_until(
        &mut [&mut al, &mut bo],
        Duration::from_secs(20),
        &[false, false],
        |cs| cs.iter().all(|c| c.peer.rtc.is_connected()),
    )
    .await;
    assert!(al.peer.rtc.is_connected() && bo.peer.rtc.is_connected());
    // One rtcd host has the call, with both sessions (one group for both nodes).
    let mut counts = Vec::new();
    for r in &fleet {
        counts.push(r.sessions().await);
    }
    counts.sort();
    assert_eq!(counts, vec![0, 2], "the call's sessions across the fleet");
    let (_, node, _) = call_row(&db, &channel).await.unwrap();
    assert_eq!(node, "", "an rtcd call belongs to no node");

    al.ws.send_calls("unmute", json!({}));
    bo.ws.send_calls("unmute", json!({}));
    run_until(
        &mut [&mut al, &mut bo],
        Duration::from_secs(20),
        &[true, true],
        |cs| cs.iter().all(|c| c.peer.received.len() > 40),
    )
    .await;
    assert!(al.peer.received.len() > 40 && bo.peer.received.len() > 40);

    // A restarts (as an admin does: SIGTERM, then start again). Media goes on
    // meanwhile, both ways.
    let alice_session = al.ws.conn_id.clone();
    let a = c.nodes.remove(0);
    let mut a = a;
    a.stop_gracefully();
    // While A is down.
    let (heard_a, heard_b) = (al.peer.received.len(), bo.peer.received.len());
    run_for(
        &mut [&mut al, &mut bo],
        Duration::from_secs(3),
        &[true, true],
    )
    .await;
    assert!(
        al.peer.received.len() > heard_a + 40 && bo.peer.received.len() > heard_b + 40,
        "media stopped while A was down: alice {} → {}, bob {} → {}",
        heard_a,
        al.peer.received.len(),
        heard_b,
        bo.peer.received.len()
    );
    let a = a.restart(&c.name, &env);
    wait_for_plugin(&a, &a.login("admin").await).await;
    // Alice's client reconnects to the restarted A: her session goes on.
    let mut back = Ws::connect(&a, &alice_t).await;
    back.send_calls(
        "reconnect",
        json!({"channelID": channel, "originalConnID": alice_session, "prevConnID": alice_session}),
    );
    std::mem::replace(&mut al.ws, back).kill();
    run_for(
        &mut [&mut al, &mut bo],
        Duration::from_secs(12),
        &[true, true],
    )
    .await;
    assert!(
        session_exists(&db, &alice_session).await,
        "alice's session was removed"
    );
    al.ws.send_calls("mute", json!({}));
    bo.ws.expect("user_muted").await;
    bo.ws.send_calls("raise_hand", json!({}));
    al.ws.expect("user_raise_hand").await;
    let heard = al.peer.received.len();
    run_for(
        &mut [&mut al, &mut bo],
        Duration::from_secs(2),
        &[false, true],
    )
    .await;
    assert!(
        al.peer.received.len() > heard + 40,
        "alice no longer hears bob"
    );

    // B dies and bob never comes back: his session leaves the call (the others are
    // told), once B has been gone for the reconnect grace.
    let bob_session = bo.ws.conn_id.clone();
    let killed = Instant::now();
    drop(c.nodes.remove(0));
    drop(bo);
    let left = al
        .ws
        .expect_within("user_left", Duration::from_secs(40))
        .await;
    assert_eq!(left["data"]["session_id"], bob_session.as_str());
    assert!(!session_exists(&db, &bob_session).await);
    println!(
        "a dead node's session left {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        session_exists(&db, &alice_session).await,
        "alice's session went too"
    );
    c.nodes.insert(0, a);
}

/// Counts the lines of a log that contain `what`.
fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

/// Waits until a node's log contains `what`.
async fn logged(h: &HostProc, what: &str, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if h.log().contains(what) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Bad input on the cluster bus: notifications that do not decode, and plugin
/// events whose data is not a cluster message, are logged once (not per message)
/// and dropped; events between the nodes go on. A node reporting another plugin
/// version is named in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cluster_messages_are_dropped_and_mixed_versions_reported() {
    use base64::Engine;
    let c = Cluster::start(2, &[]).await;
    let s = c
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let db = a.db().await;
    let calls_db::Db::Postgres(pool) = &db else {
        unreachable!()
    };
    let channel = calls_host::cluster::bus::channel_name(&c.name);
    let from = node_id(a).await;
    let bad_plugin_event = json!({
        "from": from, "kind": "plugin_event", "plugin_id": "com.mattermost.calls",
        "id": "connect",
        "data": base64::engine::general_purpose::STANDARD.encode(b"{not json"),
    })
    .to_string();
    let unknown_type = json!({
        "from": from, "kind": "plugin_event", "plugin_id": "com.mattermost.calls",
        "id": "no_such_type", "data": base64::engine::general_purpose::STANDARD.encode(b"{}"),
    })
    .to_string();
    for _ in 0..20 {
        for payload in [
            "garbage",
            r#"{"from":"x","kind":"no_such_kind"}"#,
            r#"{"ref": 999999999}"#,
            bad_plugin_event.as_str(),
            unknown_type.as_str(),
        ] {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&channel)
                .bind(payload)
                .execute(pool)
                .await
                .unwrap();
        }
    }
    // The nodes still talk: alice on A starts a call, bob on B sees it and joins.
    let mut bob_ws = Ws::connect(b, &b.login("bob").await).await;
    let mut al = MediaClient::join(a, &a.login("alice").await, &s.channel, false).await;
    bob_ws.expect("call_start").await;
    bob_ws.join(&s.channel).await;
    bob_ws.expect("join").await;
    al.ws.expect("user_joined").await;
    assert!(logged(b, "cluster event not handled", Duration::from_secs(5)).await);
    let log = b.log();
    assert_eq!(
        count(&log, "cluster message dropped: it does not decode"),
        1,
        "undecodable messages were not logged once:\n{log}"
    );
    assert_eq!(
        count(&log, "cluster event not handled"),
        1,
        "bad plugin events were not logged once:\n{log}"
    );

    // A third node (as its heartbeat says) runs another plugin version.
    sqlx::query(
        "INSERT INTO clusternodes (clustername, nodeid, address, version, plugins, startedat, lastpingat) \
         VALUES ($1, 'oldnode0000000000000000000', 'http://127.0.0.9:8065', '11.0.0', $2, 0, \
         (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT + 60000)",
    )
    .bind(&c.name)
    .bind(r#"{"com.mattermost.calls":"0.0.1-old"}"#)
    .execute(pool)
    .await
    .unwrap();
    assert!(
        logged(
            a,
            "cluster nodes run different versions",
            Duration::from_secs(10)
        )
        .await,
        "mixed versions not reported:\n{}",
        a.log()
    );
    assert!(a.log().contains("0.0.1-old"));
    drop(al);
}

/// Debian's nginx in front of nodes, with `deploy/nginx/calls-cluster.conf` (its
/// node list and address replaced by the test's).
struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn start(port: u16, nodes: &[&HostProc]) -> Nginx {
        assert!(
            std::path::Path::new("/usr/sbin/nginx").exists(),
            "Debian's nginx is required (apt-get install nginx; .ci/run installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let deploy = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/nginx/calls-cluster.conf"),
        )
        .unwrap();
        let mut servers = String::new();
        for n in nodes {
            servers.push_str(&format!(
                "    server {} max_fails=1 fail_timeout=10s;\n",
                n.base.trim_start_matches("http://")
            ));
        }
        let mut site = String::new();
        let mut placed = false;
        for line in deploy.lines() {
            let t = line.trim_start();
            if t.starts_with("server 127.0.0.") {
                if !placed {
                    site.push_str(&servers);
                    placed = true;
                }
                continue;
            }
            if t.starts_with("listen ") {
                site.push_str(&format!("    listen 127.0.0.1:{port};\n"));
                continue;
            }
            site.push_str(line);
            site.push('\n');
        }
        assert!(placed, "the deploy config lists no nodes");
        let d = dir.path().display();
        std::fs::write(dir.path().join("calls-cluster.conf"), site).unwrap();
        let main = format!(
            "daemon off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log {d}/access.log;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             include {d}/calls-cluster.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let child = std::process::Command::new("/usr/sbin/nginx")
            .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, _dir: dir }
    }
}

/// The nodes (by index) on whose log user `user_id` opened a websocket.
fn ws_nodes(nodes: &[&HostProc], user_id: &str) -> Vec<usize> {
    let needle = "websocket connected";
    let user = format!("user_id=\"{user_id}\"");
    (0..nodes.len())
        .filter(|i| {
            nodes[*i]
                .log()
                .lines()
                .any(|l| l.contains(needle) && l.contains(&user))
        })
        .collect()
}

/// Real Chromium participants on three nodes: alice on A starts, bob on B and carol
/// on C join; audio both ways, mute, hand and screen share across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_three_nodes_share_a_call() {
    let c = Cluster::start(3, &[]).await;
    let s = c
        .setup(&["alice", "bob", "carol"], json!({"DefaultEnabled": true}))
        .await;
    let bases: Vec<String> = c.nodes.iter().map(|n| n.url("/")).collect();
    let out =
        crate::browser::run_browsers_at(&bases, &s.channel, &["alice", "bob", "carol"], "cluster")
            .await;
    assert!(out.contains("RESULT"), "{out}");
    let db = c.nodes[0].db().await;
    let (_, node, _) = call_row(&db, &s.channel).await.unwrap();
    assert_eq!(node, node_id(&c.nodes[0]).await, "the call is not on A");
    let nodes: Vec<&HostProc> = c.nodes.iter().collect();
    for (i, u) in s.users.iter().enumerate() {
        assert_eq!(ws_nodes(&nodes, &u.0), vec![i], "user {i}'s websocket");
    }
}

/// Through nginx (deploy/nginx): two browsers, each on a different node behind the
/// balancer, talk; bob's websocket drops and comes back through it; his session stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_behind_nginx_talk_each_on_its_node() {
    let port = free_port_on("127.0.0.1");
    let lb = format!("http://127.0.0.1:{port}");
    let c = Cluster::start_with(2, &[], &["--site-url", &lb]).await;
    let s = c
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let nodes: Vec<&HostProc> = c.nodes.iter().collect();
    let _nginx = Nginx::start(port, &nodes);
    let out = crate::browser::run_browsers_at(
        &[format!("{lb}/")],
        &s.channel,
        &["alice", "bob"],
        "balanced",
    )
    .await;
    let result: Value = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|r| serde_json::from_str(r).unwrap())
        .unwrap_or_else(|| panic!("no result: {out}"));
    let ids = [node_id(&c.nodes[0]).await, node_id(&c.nodes[1]).await];
    let on: Vec<String> = result["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        on.len() == 2 && on[0] != on[1] && on.iter().all(|n| ids.contains(n)),
        "alice and bob were not each on a node of the cluster: {on:?}, nodes {ids:?}"
    );
}

/// A cluster on SQLite is refused at start, with a clear error.
#[test]
fn a_cluster_on_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_calls-host"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-demo",
            "--cluster",
            "demo",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cluster needs a PostgreSQL database"),
        "{err}"
    );
}

/// A plugin disabled through one node stops on every node, enabled through another
/// starts on every node; a node keeps its id across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_state_changed_on_any_node_applies_to_all() {
    let c = Cluster::start(2, &[]).await;
    c.setup(&["alice"], json!({"DefaultEnabled": true})).await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let (ta, tb) = (a.login("admin").await, b.login("admin").await);
    let (code, v) = b
        .post(
            &tb,
            "/api/v4/plugins/com.mattermost.calls/disable",
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = a.get(&ta, "/plugins/com.mattermost.calls/version").await;
        if code != 200 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the plugin still runs on A after B disabled it"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, v) = a
        .post(
            &ta,
            "/api/v4/plugins/com.mattermost.calls/enable",
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    wait_for_plugin(b, &tb).await;

    let id = node_id(b).await;
    let mut c = c;
    let mut b = c.nodes.remove(1);
    b.stop_gracefully();
    let b = b.restart(&c.name, &[]);
    assert_eq!(
        node_id(&b).await,
        id,
        "the node id changed across a restart"
    );
    wait_for_plugin(&b, &b.login("admin").await).await;
}

/// A participant cannot take another's session with a `reconnect` naming the other's
/// connection as `prevConnID` (connection ids are no secret: events carry session
/// ids), neither on the victim's node nor across nodes: the victim's websocket node
/// keeps his entry and the call's node keeps signaling him.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_cannot_take_someone_elses_session() {
    let c = Cluster::start(2, &[]).await;
    let s = c
        .setup(
            &["alice", "bob", "mallory", "carol"],
            json!({"DefaultEnabled": true}),
        )
        .await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let channel = &s.channel;
    let mut al = MediaClient::join(a, &a.login("alice").await, channel, false).await;
    let mut bo = MediaClient::join(b, &b.login("bob").await, channel, false).await;
    let mut ma = Ws::connect(a, &a.login("mallory").await).await;
    ma.join(channel).await;
    let mallory_session = ma.expect("join").await["data"]["connID"]
        .as_str()
        .unwrap()
        .to_string();
    run_until(
        &mut [&mut al, &mut bo],
        Duration::from_secs(20),
        &[false, false],
        |cs| cs.iter().all(|c| c.peer.rtc.is_connected()),
    )
    .await;
    let bob_conn = bo.ws.conn_id.clone();
    // Across nodes (mallory's new websocket on A, bob's on B), then on bob's node.
    for node in [a, b] {
        let mut hijack = Ws::connect(node, &node.login("mallory").await).await;
        hijack.send_calls(
            "reconnect",
            json!({"channelID": channel, "originalConnID": mallory_session, "prevConnID": bob_conn}),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        bo.ws.send_calls("raise_hand", json!({}));
        al.ws.expect("user_raise_hand").await;
        bo.ws.send_calls("unraise_hand", json!({}));
        al.ws.expect("user_unraise_hand").await;
    }
    // The call's node still signals bob on his own connection: carol's voice reaches him.
    let mut ca = MediaClient::join(a, &a.login("carol").await, channel, true).await;
    let carol_conn = ca.ws.conn_id.clone();
    run_until(
        &mut [&mut al, &mut bo, &mut ca],
        Duration::from_secs(20),
        &[false, false, false],
        |cs| has_voice_of(cs[1], &carol_conn),
    )
    .await;
    assert!(
        has_voice_of(&bo, &carol_conn),
        "bob's signaling was taken: {:?}",
        bo.peer.track_ids
    );
}
