//! rtcd's HTTP API and plugin websocket on `api.http.listen_address` (reference rtcd.md
//! §1, §2.1): exact paths, upstream's response shapes (`{"code": "<status>", ...}`),
//! auth before the websocket upgrade (a failure is an empty 200, as upstream).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use super::auth::{AuthError, Identity};
use super::Rtcd;
use calls_service::client_api;
use calls_wire::rtcd::{Envelope, MAX_FRAME};

/// The rtcd release whose protocol this server speaks, reported as `buildVersion`:
/// the Calls plugin checks it (≥ 0.17.0 to connect, ≥ 1.1.0 for the DC lock).
pub const COMPAT_VERSION: &str = "v1.2.6";
const PING_EVERY: Duration = Duration::from_secs(10);
const READ_DEADLINE: Duration = Duration::from_secs(20);

pub fn router(r: Arc<Rtcd>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/api/v1/health", get(health))
        .route("/register", post(register))
        .route("/unregister", post(unregister))
        .route("/login", post(login))
        .route("/ws", get(ws))
        .route("/system", get(system))
        .route("/metrics", any(metrics))
        .route("/calls/{call_id}/sessions", get(sessions))
        .route("/calls/{call_id}/sessions/{session_id}", get(session))
        // Wrong methods are 404 upstream (stdlib not-found), not 405.
        .method_not_allowed_fallback(|| async { StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn_with_state(r.clone(), cors))
        .with_state(r)
}

/// `/metrics` alone, for `[metrics] prom_port`.
pub fn metrics_router(r: Arc<Rtcd>) -> Router {
    Router::new().route("/metrics", any(metrics)).with_state(r)
}

/// Whether a browser origin may call us: the same host, or listed in
/// `api.security.allowed_origins` ("*" allows any).
fn origin_allowed(r: &Rtcd, headers: &HeaderMap) -> Option<bool> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let same = origin.split_once("://").is_some_and(|(_, h)| h == host);
    let listed = r
        .config
        .api
        .security
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o == origin);
    Some(same || listed)
}

/// CORS for the allowed origins (preflights answered here).
async fn cors(
    State(r): State<Arc<Rtcd>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin_allowed(&r, req.headers()) == Some(true);
    let preflight = req.method() == axum::http::Method::OPTIONS;
    let mut resp = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    if let (true, Some(o)) = (allowed, origin) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, POST".parse().expect("static"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type".parse().expect("static"),
            );
        }
    }
    resp
}

async fn version() -> Json<Value> {
    Json(json!({
        "buildDate": option_env!("RTCD_BUILD_DATE").unwrap_or(""),
        "buildVersion": COMPAT_VERSION,
        "buildHash": format!("mattermost-calls-rs-{}", env!("CARGO_PKG_VERSION")),
        "goVersion": "n/a (Rust)",
        "goOS": std::env::consts::OS,
        "goArch": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
    }))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn system(State(r): State<Arc<Rtcd>>) -> Response {
    let load = r.cpu_load.get();
    if !load.is_finite() {
        // Upstream's JSON encoding fails on +Inf and answers an empty 200.
        return StatusCode::OK.into_response();
    }
    Json(json!({"cpu_load": load})).into_response()
}

async fn metrics(State(r): State<Arc<Rtcd>>) -> Response {
    let (ct, body) = r.metrics.render();
    ([(header::CONTENT_TYPE, ct)], body).into_response()
}

/// Basic or Bearer, as upstream's authHandler.
async fn authenticate(
    r: &Rtcd,
    headers: &HeaderMap,
    from: SocketAddr,
) -> Result<Identity, AuthError> {
    client_api::authenticate(&r.auth, headers, from).await
}

fn security(r: &Rtcd) -> client_api::Security {
    let s = &r.config.api.security;
    client_api::Security {
        allow_self_registration: s.allow_self_registration,
        enable_admin: s.enable_admin,
    }
}

async fn register(
    State(r): State<Arc<Rtcd>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    client_api::register(&r.auth, security(&r), &headers, from, &body).await
}

async fn unregister(
    State(r): State<Arc<Rtcd>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    client_api::unregister(&r.auth, security(&r), &headers, from, &body).await
}

async fn login(
    State(r): State<Arc<Rtcd>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    client_api::login(&r.auth, from, &body).await
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

fn session_config(sid: &str, e: &super::session::SessionEntry) -> Value {
    json!({
        "GroupID": e.group, "CallID": e.call, "UserID": e.user, "SessionID": sid,
        "Props": {"channelID": e.channel, "av1Support": e.av1, "dcSignaling": e.dc_signaling},
    })
}

async fn client_of(r: &Rtcd, headers: &HeaderMap, from: SocketAddr) -> Result<String, Response> {
    match authenticate(r, headers, from).await {
        // The admin has no group: always 401 here, as upstream.
        Ok(Identity::Client(id)) => Ok(id),
        _ => Err(plain(StatusCode::UNAUTHORIZED, "unauthorized")),
    }
}

async fn sessions(
    State(r): State<Arc<Rtcd>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Response {
    let group = match client_of(&r, &headers, from).await {
        Ok(g) => g,
        Err(resp) => return resp,
    };
    match r.sessions.of_call(&group, &call_id) {
        Ok(list) => Json(Value::Array(
            list.iter().map(|(s, e)| session_config(s, e)).collect(),
        ))
        .into_response(),
        Err(why) => plain(
            StatusCode::NOT_FOUND,
            &format!("failed to get session configs: {why}"),
        ),
    }
}

async fn session(
    State(r): State<Arc<Rtcd>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((call_id, session_id)): Path<(String, String)>,
) -> Response {
    let group = match client_of(&r, &headers, from).await {
        Ok(g) => g,
        Err(resp) => return resp,
    };
    match r.sessions.of_call(&group, &call_id) {
        Ok(list) => match list.iter().find(|(s, _)| *s == session_id) {
            Some((s, e)) => Json(session_config(s, e)).into_response(),
            None => plain(
                StatusCode::NOT_FOUND,
                "failed to get session config: session not found",
            ),
        },
        Err(why) => plain(
            StatusCode::NOT_FOUND,
            &format!("failed to get session config: {why}"),
        ),
    }
}

async fn ws(
    State(r): State<Arc<Rtcd>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    up: WebSocketUpgrade,
) -> Response {
    if origin_allowed(&r, &headers) == Some(false) {
        tracing::warn!(origin = ?headers.get(header::ORIGIN), "websocket from a disallowed origin refused");
        return StatusCode::FORBIDDEN.into_response();
    }
    let who = match authenticate(&r, &headers, from).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "websocket authentication failed");
            // Upstream writes nothing: the client sees a bad handshake.
            return StatusCode::OK.into_response();
        }
    };
    up.max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| serve(r, who.client_id().to_string(), socket))
}

/// One plugin connection: `hello`, then messages both ways, a ping every 10 s and a
/// read deadline refreshed only by pongs.
async fn serve(r: Arc<Rtcd>, client_id: String, socket: WebSocket) {
    let conn_id = calls_wire::ids::new_id();
    let (mut tx, mut rx) = socket.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(5000);
    r.sessions.add_conn(&conn_id, &client_id, out_tx);
    let gauge = r
        .metrics
        .ws_connections
        .with_label_values(&[client_id.as_str()]);
    gauge.inc();
    tracing::info!(client_id, conn_id, "plugin connected");
    let hello = Envelope::Hello {
        client_id: client_id.clone(),
        conn_id: conn_id.clone(),
    };
    let mut ok = tx
        .send(Message::Binary(hello.encode().into()))
        .await
        .is_ok();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut deadline = tokio::time::Instant::now() + READ_DEADLINE;
    // What this connection does wrong is logged once per window, with a count.
    let repeats = calls_service::log_limit::Repeats::default();
    while ok {
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    match Envelope::decode(&b) {
                        Ok(env) => {
                            r.metrics.ws_messages.with_label_values(&[client_id.as_str(), env.type_name(), "in"]).inc();
                            if let Err(e) = r.sessions.handle(&conn_id, &client_id, env) {
                                if let Some(left_out) = repeats.admit("refused") {
                                    tracing::warn!(client_id, conn_id, error = %e, left_out, "plugin message refused");
                                }
                            }
                        }
                        Err(e) => if let Some(left_out) = repeats.admit("bad") {
                            tracing::warn!(client_id, conn_id, error = %e, left_out, "bad plugin message");
                        },
                    }
                }
                Some(Ok(Message::Pong(_))) => deadline = tokio::time::Instant::now() + READ_DEADLINE,
                Some(Ok(Message::Text(_))) => if let Some(left_out) = repeats.admit("text") {
                    tracing::warn!(client_id, conn_id, left_out, "unexpected text message");
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(client_id, conn_id, error = %e, "websocket read failed");
                    break;
                }
                None => break,
            },
            Some(frame) = out_rx.recv() => {
                ok = tokio::time::timeout(Duration::from_secs(10), tx.send(Message::Binary(frame.into()))).await.is_ok_and(|r| r.is_ok());
            }
            _ = ping.tick() => {
                ok = tx.send(Message::Ping(Vec::new().into())).await.is_ok();
            }
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(client_id, conn_id, "no pong within the read deadline, closing");
                break;
            }
        }
    }
    r.sessions.remove_conn(&conn_id);
    gauge.dec();
    tracing::info!(client_id, conn_id, "plugin disconnected");
}
