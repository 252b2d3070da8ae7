//! The `rtcd` binary as upstream clients see it: HTTP API and auth, the plugin
//! websocket protocol, and media forwarded between two str0m participants joined over
//! that websocket; malformed frames refused without harm.

use std::time::{Duration, Instant};

use crate::common::peer::Peer;
use crate::common::*;
use base64::Engine;
use calls_wire::rtcd::{rtc_type, Envelope, Join, RtcMessage};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn basic(id: &str, key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"))
    )
}

type WsWrite = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// A plugin-side connection to rtcd: decoded envelopes arrive on `rx`.
struct Conn {
    tx: WsWrite,
    rx: mpsc::UnboundedReceiver<Envelope>,
    closed: mpsc::UnboundedReceiver<()>,
}

async fn connect(r: &RtcdProc, auth: &str) -> Result<Conn, String> {
    let mut req = r
        .url("/ws")
        .replace("http", "ws")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", auth.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut rd) = ws.split();
    let (etx, rx) = mpsc::unbounded_channel();
    let (ctx, closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = rd.next().await {
            if let Message::Binary(b) = m {
                let _ = etx.send(Envelope::decode(&b).expect("rtcd sent a bad frame"));
            }
        }
        let _ = ctx.send(());
    });
    Ok(Conn { tx, rx, closed })
}

impl Conn {
    async fn send(&mut self, e: Envelope) {
        self.tx
            .send(Message::Binary(e.encode().into()))
            .await
            .unwrap();
    }

    async fn rtc(&mut self, session: &str, t: i64, data: Option<Vec<u8>>) {
        self.send(Envelope::Rtc(RtcMessage {
            session_id: session.into(),
            msg_type: t,
            data,
            ..Default::default()
        }))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_and_auth_as_upstream() {
    let prom = free_port_on("127.0.0.2").to_string();
    let r = RtcdProc::start_with(
        "127.0.0.2",
        free_port_on("127.0.0.2"),
        free_port_on("127.0.0.2"),
        &[
            ("RTCD_METRICS_ENABLEPROM", "true"),
            ("RTCD_METRICS_PROMPORT", &prom),
            ("RTCD_API_SECURITY_ALLOWEDORIGINS", "https://mm.example.com"),
        ],
    );
    let http = reqwest::Client::new();
    let v: Value = http
        .get(r.url("/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["buildVersion"], "v1.2.6");
    for k in ["buildDate", "buildHash", "goVersion", "goOS", "goArch"] {
        assert!(v[k].is_string(), "{k}");
    }
    let v: Value = http
        .get(r.url("/api/v1/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"status": "ok"}));
    assert_eq!(
        http.post(r.url("/version")).send().await.unwrap().status(),
        404
    );
    let sys = http.get(r.url("/system")).send().await.unwrap();
    assert_eq!(sys.status(), 200);

    let key = "k".repeat(32);
    let reg = |id: &str, key: &str| {
        http.post(r.url("/register"))
            .json(&json!({"clientID": id, "authKey": key}))
            .send()
    };
    let resp = reg("plugin-a", &key).await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"clientID": "plugin-a", "code": "201"})
    );
    let resp = reg("plugin-a", &key).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "registration failed: already registered", "code": "400"})
    );
    let resp = reg("plugin-b", "short").await.unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "registration failed: key not long enough"
    );
    let resp = http
        .post(r.url("/register"))
        .json(&json!({"clientID": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    reg("plugin-b", &key).await.unwrap();

    // /login: a token; a bad key is a 400 (not 401) as upstream.
    let resp = http
        .post(r.url("/login"))
        .json(&json!({"clientID": "plugin-a", "authKey": key}))
        .send()
        .await
        .unwrap();
    let token = resp.json::<Value>().await.unwrap()["bearerToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 32);
    let resp = http
        .post(r.url("/login"))
        .json(&json!({"clientID": "plugin-a", "authKey": "x".repeat(32)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Wrong keys: the websocket is refused (no upgrade), session lookups are 401.
    assert!(connect(&r, &basic("plugin-a", &"x".repeat(32)))
        .await
        .is_err());
    assert!(connect(&r, "Bearer nope").await.is_err());
    assert!(connect(&r, &basic("nobody", &key)).await.is_err());
    let resp = http
        .get(r.url("/calls/c1/sessions"))
        .header("Authorization", basic("plugin-a", "wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(r.url("/calls/c1/sessions"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.text().await.unwrap().trim(),
        "failed to get session configs: group not found"
    );

    // A client may unregister itself only; the admin anyone.
    let unreg = |auth: String, id: &str| {
        http.post(r.url("/unregister"))
            .header("Authorization", auth)
            .json(&json!({"clientID": id}))
            .send()
    };
    assert_eq!(
        unreg(basic("plugin-b", &key), "plugin-a")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        unreg(basic("x", RTCD_ADMIN_KEY), "plugin-b")
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        connect(&r, &basic("plugin-b", &key)).await.is_err(),
        "unregistered"
    );
    let mut c = connect(&r, &format!("Bearer {token}")).await.unwrap();
    match c.rx.recv().await.unwrap() {
        Envelope::Hello { client_id, conn_id } => {
            assert_eq!(client_id, "plugin-a");
            assert_eq!(conn_id.len(), 26);
        }
        other => panic!("expected hello, got {other:?}"),
    }
    let m = http
        .get(r.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("rtcd_ws_connections_total{clientID=\"plugin-a\"} 1"),
        "{m}"
    );
    // The deployment guide's [metrics] port serves the same metrics.
    let m2 = http
        .get(format!("http://127.0.0.2:{prom}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m2.contains("rtcd_ws_connections_total"), "{m2}");
    // allowed_origins: CORS for the listed origin; a websocket from another is refused.
    let resp = http
        .get(r.url("/version"))
        .header("Origin", "https://mm.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://mm.example.com"
    );
    let mut req = r
        .url("/ws")
        .replace("http", "ws")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", basic("plugin-a", &key).parse().unwrap());
    req.headers_mut()
        .insert("Origin", "https://evil.example.com".parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(req).await.is_err(),
        "foreign origin accepted"
    );
}

/// Drives two participants' signaling over one plugin connection.
async fn pump(c: &mut Conn, peers: &mut [(&str, &mut Peer)], talk: Option<usize>, d: Duration) {
    let end = Instant::now() + d;
    let mut next = Instant::now();
    while Instant::now() < end {
        while let Ok(e) = c.rx.try_recv() {
            if let Envelope::Rtc(m) = e {
                if m.msg_type != rtc_type::SDP {
                    continue;
                }
                let desc: Value = serde_json::from_slice(&m.data.unwrap()).unwrap();
                let (sid, p) = peers.iter_mut().find(|(s, _)| *s == m.session_id).unwrap();
                if let Some(answer) = p.on_description(&desc) {
                    let sid = sid.to_string();
                    c.rtc(&sid, rtc_type::SDP, Some(answer.to_string().into_bytes()))
                        .await;
                }
            }
        }
        if Instant::now() >= next {
            if let Some(i) = talk {
                if peers[i].1.rtc.is_connected() {
                    peers[i].1.speak();
                }
            }
            next += Duration::from_millis(20);
        }
        for (_, p) in peers.iter_mut() {
            p.pump();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_between_two_sessions_and_bad_frames_refused() {
    let r = RtcdProc::start(
        "127.0.0.3",
        free_port_on("127.0.0.3"),
        free_port_on("127.0.0.3"),
    );
    let http = reqwest::Client::new();
    let key = "k".repeat(40);
    http.post(r.url("/register"))
        .json(&json!({"clientID": "plugin", "authKey": key}))
        .send()
        .await
        .unwrap();
    let mut c = connect(&r, &basic("plugin", &key)).await.unwrap();
    assert!(matches!(c.rx.recv().await, Some(Envelope::Hello { .. })));

    let (sa, sb) = ("a".repeat(26), "b".repeat(26));
    let (mut a, offer_a) = Peer::new("127.0.0.1", true);
    let (mut b, offer_b) = Peer::new("127.0.0.1", false);
    for (sid, offer) in [(&sa, &offer_a), (&sb, &offer_b)] {
        c.send(Envelope::Join(Join {
            call_id: "call1".into(),
            user_id: format!("user-{sid}"),
            session_id: sid.clone(),
            channel_id: "chan".into(),
            ..Default::default()
        }))
        .await;
        c.rtc(sid, rtc_type::SDP, Some(offer.to_string().into_bytes()))
            .await;
    }
    pump(
        &mut c,
        &mut [(&sa, &mut a), (&sb, &mut b)],
        None,
        Duration::from_secs(2),
    )
    .await;
    assert!(
        a.rtc.is_connected() && b.rtc.is_connected(),
        "ICE/DTLS to rtcd"
    );

    // Muted at first; unmute (rtc type 4) and B hears A.
    c.rtc(&sa, rtc_type::UNMUTE, None).await;
    let end = Instant::now() + Duration::from_secs(15);
    while b.received.len() < 40 && Instant::now() < end {
        pump(
            &mut c,
            &mut [(&sa, &mut a), (&sb, &mut b)],
            Some(0),
            Duration::from_millis(200),
        )
        .await;
    }
    assert!(b.received.len() >= 40, "B heard {}", b.received.len());
    assert!(
        b.track_ids
            .iter()
            .any(|t| t.starts_with(&format!("voice_{sa}_"))),
        "{:?}",
        b.track_ids
    );

    // The session lookup sees both.
    let v: Value = http
        .get(r.url("/calls/call1/sessions"))
        .header("Authorization", basic("plugin", &key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v[0]["GroupID"], "plugin");
    assert!(v[0]["Props"]["channelID"] == "chan");

    // Bad frames on a second connection: refused and logged, that connection (and the
    // call on the first one) unaffected; an oversized frame closes its connection.
    let mut bad = connect(&r, &basic("plugin", &key)).await.unwrap();
    bad.rx.recv().await.unwrap();
    for frame in [
        vec![0xc1, 0x00],
        {
            let mut v = vec![0xa4];
            v.extend_from_slice(b"nope");
            v.push(0xc0);
            v
        },
        Envelope::Leave {
            session_id: String::new(),
        }
        .encode(),
        Envelope::Rtc(RtcMessage {
            session_id: "z".repeat(26),
            msg_type: 2,
            data: Some(b"{}".to_vec()),
            ..Default::default()
        })
        .encode(),
        Envelope::Rtc(RtcMessage {
            session_id: sa.clone(),
            msg_type: 99,
            ..Default::default()
        })
        .encode(),
        Envelope::Rtc(RtcMessage {
            session_id: sa.clone(),
            msg_type: 2,
            data: Some(b"not json".to_vec()),
            ..Default::default()
        })
        .encode(),
    ] {
        bad.tx.send(Message::Binary(frame.into())).await.unwrap();
    }
    bad.tx.send(Message::Text("hello".into())).await.unwrap();

    // Another installation (its own group) names A's session: its leave, reconnect
    // and offer are refused and change nothing; it gets no answer, and A's call goes on.
    let ikey = "i".repeat(40);
    http.post(r.url("/register"))
        .json(&json!({"clientID": "intruder", "authKey": ikey}))
        .send()
        .await
        .unwrap();
    let mut intruder = connect(&r, &basic("intruder", &ikey)).await.unwrap();
    assert!(matches!(
        intruder.rx.recv().await,
        Some(Envelope::Hello { .. })
    ));
    intruder
        .send(Envelope::Reconnect {
            session_id: sa.clone(),
        })
        .await;
    intruder
        .rtc(&sa, rtc_type::SDP, Some(offer_a.to_string().into_bytes()))
        .await;
    intruder
        .send(Envelope::Leave {
            session_id: sa.clone(),
        })
        .await;
    let code = http
        .get(r.url("/calls/call1/sessions"))
        .header("Authorization", basic("intruder", &ikey))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(code, 404, "another group's call is visible");
    bad.tx
        .send(Message::Binary(vec![0u8; (1 << 20) + 10].into()))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), bad.closed.recv())
        .await
        .expect("oversized frame did not close the connection");

    let heard = b.received.len();
    let end = Instant::now() + Duration::from_secs(15);
    while b.received.len() < heard + 40 && Instant::now() < end {
        pump(
            &mut c,
            &mut [(&sa, &mut a), (&sb, &mut b)],
            Some(0),
            Duration::from_millis(200),
        )
        .await;
    }
    assert!(
        b.received.len() >= heard + 40,
        "audio stopped after bad frames"
    );
    assert!(
        intruder.rx.try_recv().is_err(),
        "the intruder got a message of another group's session"
    );

    // Leave: rtcd closes the session and says so.
    c.send(Envelope::Leave {
        session_id: sb.clone(),
    })
    .await;
    let end = Instant::now() + Duration::from_secs(10);
    let mut closed = false;
    while !closed && Instant::now() < end {
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), c.rx.recv()).await {
            closed = e
                == Envelope::Close {
                    session_id: sb.clone(),
                };
        }
    }
    assert!(closed, "no close for the leaver");
}
