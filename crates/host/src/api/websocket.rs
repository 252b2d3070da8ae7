//! `/api/v4/websocket`: authentication (header, cookie or `authentication_challenge`),
//! `hello`, `ping` → `seq_reply`, resumption, and `custom_*` actions handed to the
//! plugin's `WebSocketMessageHasBeenPosted` in order, one at a time per connection.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::credentials::{session_from_headers, token_from_headers};
use crate::{Host, CALLS_PLUGIN_ID, SERVER_VERSION};
use calls_wire::proto;

/// Largest frame accepted from a client (SDP offers are the big ones).
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Deserialize)]
pub struct WsParams {
    #[serde(default)]
    connection_id: String,
    #[serde(default)]
    sequence_number: i64,
}

pub async fn upgrade(
    State(host): State<Host>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(params): Query<WsParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&host.site_url, &headers) {
        if let Some(left_out) = host.repeats.admit("websocket origin refused") {
            tracing::warn!(origin = ?headers.get(axum::http::header::ORIGIN), left_out, "websocket upgrade from another origin refused");
        }
        return axum::http::StatusCode::FORBIDDEN.into_response();
    }
    let auth = session_from_headers(&host, &headers, true)
        .await
        .ok()
        .flatten();
    let xff = headers
        .get("X-Forwarded-For")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    ws.max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| run(host, socket, auth, params, addr.to_string(), xff))
}

/// Mattermost's websocket origin rule: a request without an Origin (native clients,
/// token-authenticated tools) is let through; a browser's Origin must be this server,
/// as the site URL names it or as the request's Host does (scheme and host compared
/// without case). Another site's page would otherwise ride the user's cookie.
fn origin_allowed(site_url: &str, headers: &HeaderMap) -> bool {
    use axum::http::header;
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some((scheme, authority)) = origin.to_str().ok().and_then(|o| o.split_once("://")) else {
        // "null" (sandboxed frames, file: pages) and anything unparsable.
        return false;
    };
    let same_host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case(authority));
    let site = site_url.trim_end_matches('/');
    let site = site
        .split_once("://")
        .map(|(s, rest)| (s, rest.split('/').next().unwrap_or(rest)));
    let same_site = site
        .is_some_and(|(s, a)| s.eq_ignore_ascii_case(scheme) && a.eq_ignore_ascii_case(authority));
    (same_host && matches!(scheme, "http" | "https")) || same_site
}

/// A custom action's data as the plugin gets it: the client's map (anything else is
/// an empty one) with the connection's addresses added, msgpack-encoded.
pub fn plugin_action_data(data: rmpv::Value, remote_addr: &str, xff: &str) -> Option<Vec<u8>> {
    let mut data = match data {
        rmpv::Value::Map(m) => m,
        _ => Vec::new(),
    };
    data.push(("remote_addr".into(), remote_addr.into()));
    data.push(("x_forwarded_for".into(), xff.into()));
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, &rmpv::Value::Map(data)).ok()?;
    Some(buf)
}

/// A client frame, from JSON text or a MessagePack binary frame.
#[derive(Debug)]
pub struct Frame {
    pub action: String,
    pub seq: i64,
    pub data: rmpv::Value,
}

/// A client's websocket frame (JSON text or msgpack binary), or `None` if it is not
/// a well-formed action.
pub fn parse_frame(msg: &Message) -> Option<Frame> {
    match msg {
        Message::Text(t) => {
            let v: Value = serde_json::from_str(t.as_str()).ok()?;
            Some(Frame {
                action: v.get("action")?.as_str()?.to_string(),
                seq: v.get("seq").and_then(Value::as_i64).unwrap_or(0),
                data: v
                    .get("data")
                    .and_then(|d| rmpv::ext::to_value(d).ok())
                    .unwrap_or(rmpv::Value::Nil),
            })
        }
        Message::Binary(b) => {
            let v = rmpv::decode::read_value(&mut &b[..]).ok()?;
            let map = v.as_map()?;
            let get = |k: &str| {
                map.iter()
                    .find(|(mk, _)| mk.as_str() == Some(k))
                    .map(|(_, v)| v)
            };
            Some(Frame {
                action: get("action")?.as_str()?.to_string(),
                seq: get("seq").and_then(rmpv::Value::as_i64).unwrap_or(0),
                data: get("data").cloned().unwrap_or(rmpv::Value::Nil),
            })
        }
        _ => None,
    }
}

async fn run(
    host: Host,
    socket: WebSocket,
    mut auth: Option<(String, String)>,
    params: WsParams,
    remote_addr: String,
    xff: String,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<String>(crate::hub::OUTBOUND_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(Message::Text(frame.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    // Unauthenticated sockets get 30 s to send an authentication_challenge.
    if auth.is_none() {
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                msg = stream.next() => {
                    let Some(Ok(msg)) = msg else { break };
                    let Some(f) = parse_frame(&msg) else { continue };
                    if f.action != "authentication_challenge" {
                        continue;
                    }
                    let token = f.data.as_map().and_then(|m| {
                        m.iter().find(|(k, _)| k.as_str() == Some("token")).and_then(|(_, v)| v.as_str().map(str::to_string))
                    });
                    if let Some(t) = token {
                        if let Ok(Some((sid, uid, _))) = host.store.session_by_token(&t).await {
                            auth = Some((sid, uid));
                            let _ = tx.try_send(json!({"status": "OK", "seq_reply": f.seq}).to_string());
                            break;
                        }
                    }
                    let _ = tx.try_send(json!({"status": "FAIL", "seq_reply": f.seq, "error": {"id": "api.web_socket_router.not_authenticated.app_error", "message": "invalid or expired session, please login again.", "status_code": 401}}).to_string());
                }
            }
        }
    }
    let Some((session_id, user_id)) = auth else {
        drop(tx);
        let _ = writer.await;
        return;
    };

    let resume = (!params.connection_id.is_empty())
        .then_some((params.connection_id.as_str(), params.sequence_number));
    let attached = host
        .hub
        .attach(&user_id, &session_id, resume, tx.clone(), SERVER_VERSION);
    let (conn, generation, ended) = (attached.conn, attached.generation, attached.ended);
    tracing::debug!(conn_id = conn.id, user_id, "websocket connected");
    if let Some(mut p) = host.plugin_client(CALLS_PLUGIN_ID) {
        let _ = p
            .on_web_socket_connect(proto::WebSocketConnectEvent {
                connection_id: conn.id.clone(),
                user_id: user_id.clone(),
            })
            .await;
    }

    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            // Revoked login, or a client that does not read: the host hangs up.
            _ = ended.notified() => break,
        };
        let Some(Ok(msg)) = msg else { break };
        if matches!(msg, Message::Close(_)) {
            break;
        }
        if matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            continue;
        }
        let Some(f) = parse_frame(&msg) else {
            tracing::debug!(conn_id = conn.id, "unparseable websocket frame dropped");
            continue;
        };
        match f.action.as_str() {
            "ping" => conn.send_reply(&json!({
                "status": "OK", "seq_reply": f.seq,
                "data": {"text": "pong", "version": SERVER_VERSION, "server_time": calls_wire::ids::now_ms(), "node_id": ""}
            })),
            "authentication_challenge" => conn.send_reply(&json!({"status": "OK", "seq_reply": f.seq})),
            a if a.starts_with("custom_") => {
                let Some(buf) = plugin_action_data(f.data, &remote_addr, &xff) else {
                    continue;
                };
                let Some(mut p) = host.plugin_client(CALLS_PLUGIN_ID) else {
                    tracing::debug!(action = a, "no active plugin for websocket action");
                    continue;
                };
                let req = proto::WebSocketMessage {
                    connection_id: conn.id.clone(),
                    user_id: user_id.clone(),
                    action: a.to_string(),
                    seq: f.seq,
                    data_msgpack: buf,
                    session_id: session_id.clone(),
                };
                if let Err(e) = p.web_socket_message_has_been_posted(req).await {
                    tracing::warn!(error = %e, "plugin websocket hook failed");
                }
            }
            other => conn.send_reply(&json!({
                "status": "FAIL", "seq_reply": f.seq,
                "error": {"id": "api.web_socket_router.bad_action.app_error", "message": format!("invalid action {other:?}"), "status_code": 400}
            })),
        }
    }
    // A socket another one took over (a resume after this one was cut) tells nobody:
    // the connection lives on.
    let current = host.hub.detach(&conn, generation);
    tracing::debug!(conn_id = conn.id, current, "websocket disconnected");
    if let (true, Some(mut p)) = (current, host.plugin_client(CALLS_PLUGIN_ID)) {
        let _ = p
            .on_web_socket_disconnect(proto::WebSocketConnectEvent {
                connection_id: conn.id.clone(),
                user_id,
            })
            .await;
    }
    // The writer ends (with a close frame) once the last sender is gone: ours here,
    // the hub's at detach. A socket that does not take the close is cut.
    drop(tx);
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(1), &mut writer)
        .await
        .is_err()
    {
        tracing::debug!(
            conn_id = conn.id,
            "websocket close not taken, connection cut"
        );
        writer.abort();
    }
}

/// The token a websocket or API request carries (re-exported for tests).
pub fn token(headers: &HeaderMap) -> Option<String> {
    token_from_headers(headers)
}
