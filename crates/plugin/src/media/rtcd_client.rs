//! One rtcd host as the plugin sees it (reference rtcd.md §6): its HTTP API
//! (`/version`, `/system`, `/register`) and one authenticated websocket that
//! reconnects with a growing back-off, carrying the §2 envelopes both ways.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use calls_wire::rtcd::Envelope;

/// The oldest rtcd the Calls plugin accepts (manifest `min_rtcd_version`).
pub const MIN_RTCD_VERSION: (u64, u64, u64) = (0, 17, 0);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const DIAL_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum RtcdClientError {
    #[error("rtcd {0}: {1}")]
    Http(String, String),
    #[error("rtcd {0}: version {1:?} is older than the minimum v0.17.0")]
    Version(String, String),
    #[error("rtcd {0}: registration failed: {1}")]
    Register(String, String),
    #[error("rtcd {0}: websocket: {1}")]
    Ws(String, String),
}

/// What the host's messages and state changes look like to the pool.
pub type Inbound = mpsc::UnboundedSender<(String, Envelope)>;

pub struct RtcdClient {
    pub ip: String,
    /// `http://<ip>:<port>`: dialled by address; the URL's host name is sent as Host.
    base: String,
    host_header: String,
    auth: String,
    client_id: String,
    auth_key: String,
    http: reqwest::Client,
    out: mpsc::UnboundedSender<Vec<u8>>,
    out_rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Vec<u8>>>>,
    connected: AtomicBool,
    stop: Notify,
    stopped: AtomicBool,
    pub version: parking_lot::Mutex<String>,
}

#[derive(Deserialize)]
struct VersionInfo {
    #[serde(rename = "buildVersion", default)]
    build_version: String,
}

#[derive(Deserialize)]
struct SystemInfo {
    cpu_load: f64,
}

/// Whether the plugin may use an rtcd of this `buildVersion`.
pub fn version_ok(v: &str) -> bool {
    if v.is_empty() || v == "master" || v.starts_with("dev") {
        return true;
    }
    let core = v.trim_start_matches('v');
    let core = core.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<u64> = core.split('.').filter_map(|p| p.parse().ok()).collect();
    parts.len() == 3 && (parts[0], parts[1], parts[2]) >= MIN_RTCD_VERSION
}

impl RtcdClient {
    pub fn new(
        ip: &str,
        port: u16,
        host_name: &str,
        client_id: &str,
        auth_key: &str,
    ) -> Arc<RtcdClient> {
        let (out, out_rx) = mpsc::unbounded_channel();
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{auth_key}"))
        );
        Arc::new(RtcdClient {
            ip: ip.to_string(),
            base: format!("http://{ip}:{port}"),
            host_header: format!("{host_name}:{port}"),
            auth,
            client_id: client_id.to_string(),
            auth_key: auth_key.to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(DIAL_TIMEOUT)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            out,
            out_rx: parking_lot::Mutex::new(Some(out_rx)),
            connected: AtomicBool::new(false),
            stop: Notify::new(),
            stopped: AtomicBool::new(false),
            version: parking_lot::Mutex::new(String::new()),
        })
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Queues a message; it goes out as soon as the websocket is (back) up.
    pub fn send(&self, e: &Envelope) {
        let _ = self.out.send(e.encode());
    }

    pub fn close(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.stop.notify_waiters();
        self.stop.notify_one();
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, RtcdClientError> {
        let err = |e: String| RtcdClientError::Http(self.ip.clone(), e);
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Host", &self.host_header)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !r.status().is_success() {
            return Err(err(format!("GET {path}: {}", r.status())));
        }
        r.json().await.map_err(|e| err(e.to_string()))
    }

    /// `GET /system` → `cpu_load` (lower is less loaded).
    pub async fn cpu_load(&self) -> Result<f64, RtcdClientError> {
        Ok(self.get::<SystemInfo>("/system").await?.cpu_load)
    }

    /// `GET /version`, checked against the minimum.
    pub async fn check_version(&self) -> Result<String, RtcdClientError> {
        let v = self.get::<VersionInfo>("/version").await?.build_version;
        if !version_ok(&v) {
            return Err(RtcdClientError::Version(self.ip.clone(), v));
        }
        *self.version.lock() = v.clone();
        Ok(v)
    }

    /// `GET /calls/{id}/sessions`: Some(true) when rtcd still has sessions of the
    /// call, Some(false) on 404, None when it cannot tell.
    pub async fn call_alive(&self, call_id: &str) -> Option<bool> {
        let r = self
            .http
            .get(format!("{}/calls/{call_id}/sessions", self.base))
            .header("Host", &self.host_header)
            .header("Authorization", &self.auth)
            .send()
            .await
            .ok()?;
        match r.status().as_u16() {
            200 => Some(true),
            404 => Some(false),
            _ => None,
        }
    }

    async fn register(&self) -> Result<(), RtcdClientError> {
        let r = self
            .http
            .post(format!("{}/register", self.base))
            .header("Host", &self.host_header)
            .header("Authorization", &self.auth)
            .json(&serde_json::json!({"clientID": self.client_id, "authKey": self.auth_key}))
            .send()
            .await
            .map_err(|e| RtcdClientError::Register(self.ip.clone(), e.to_string()))?;
        if r.status().as_u16() != 201 {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            let msg = body["error"]
                .as_str()
                .unwrap_or("unexpected status")
                .to_string();
            return Err(RtcdClientError::Register(self.ip.clone(), msg));
        }
        Ok(())
    }

    async fn dial(
        &self,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        RtcdClientError,
    > {
        let err = |e: String| RtcdClientError::Ws(self.ip.clone(), e);
        let mut req = format!("{}/ws", self.base.replacen("http", "ws", 1))
            .into_client_request()
            .map_err(|e| err(e.to_string()))?;
        let h = req.headers_mut();
        h.insert(
            "Authorization",
            self.auth
                .parse()
                .map_err(|_| err("bad credentials".into()))?,
        );
        if let Ok(v) = self.host_header.parse() {
            h.insert("Host", v);
        }
        // Nagle off, as Go's dialer (see `calls_service::nodelay`).
        let dial = tokio_tungstenite::connect_async_with_config(req, None, true);
        match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(err(e.to_string())),
            Err(_) => Err(err("timed out".into())),
        }
    }

    /// Connects, registering first if rtcd does not know us (upstream: try the
    /// websocket; on failure register with the same id and key, then connect), checks
    /// the version, and starts the connection loop.
    pub async fn start(self: &Arc<Self>, inbound: Inbound) -> Result<(), RtcdClientError> {
        let ws = match self.dial().await {
            Ok(ws) => ws,
            Err(first) => {
                tracing::info!(host = self.ip, error = %first, "rtcd connect failed, registering");
                self.register().await?;
                self.dial().await?
            }
        };
        self.check_version().await?;
        let me = self.clone();
        let out_rx = self.out_rx.lock().take();
        let Some(out_rx) = out_rx else {
            return Ok(());
        };
        tokio::spawn(async move { me.run(Some(ws), out_rx, inbound).await });
        Ok(())
    }

    /// The connection loop: read and write until the socket ends, then reconnect
    /// after a back-off growing by 2 s per failed attempt, up to 30 s.
    async fn run(
        self: Arc<Self>,
        mut ws: Option<
            tokio_tungstenite::WebSocketStream<
                tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
            >,
        >,
        mut out_rx: mpsc::UnboundedReceiver<Vec<u8>>,
        inbound: Inbound,
    ) {
        let mut wait = Duration::ZERO;
        let mut failures = 0u32;
        while !self.stopped.load(Ordering::Relaxed) {
            let socket = match ws.take() {
                Some(s) => Ok(s),
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.stop.notified() => break,
                    }
                    self.dial().await
                }
            };
            let socket = match socket {
                Ok(s) => s,
                Err(e) => {
                    failures += 1;
                    if wait < MAX_BACKOFF {
                        wait += Duration::from_secs(2);
                    }
                    tracing::warn!(host = self.ip, attempt = failures, error = %e, "rtcd reconnect failed");
                    continue;
                }
            };
            failures = 0;
            self.connected.store(true, Ordering::Relaxed);
            tracing::info!(host = self.ip, "rtcd connected");
            let (mut tx, mut rx) = socket.split();
            loop {
                tokio::select! {
                    m = rx.next() => match m {
                        Some(Ok(Message::Binary(b))) => match Envelope::decode(&b) {
                            Ok(e) => { let _ = inbound.send((self.ip.clone(), e)); }
                            Err(e) => tracing::warn!(host = self.ip, error = %e, "bad message from rtcd"),
                        },
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::warn!(host = self.ip, error = %e, "rtcd websocket failed");
                            break;
                        }
                        None => break,
                    },
                    Some(frame) = out_rx.recv() => {
                        if let Err(e) = tx.send(Message::Binary(frame.into())).await {
                            tracing::warn!(host = self.ip, error = %e, "rtcd send failed");
                            break;
                        }
                    }
                    _ = self.stop.notified() => {
                        self.connected.store(false, Ordering::Relaxed);
                        return;
                    }
                }
            }
            self.connected.store(false, Ordering::Relaxed);
            tracing::warn!(host = self.ip, "rtcd connection lost, reconnecting");
            wait = Duration::from_secs(1);
        }
        self.connected.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_gate_as_upstream() {
        use super::version_ok;
        for ok in [
            "",
            "master",
            "dev-abc123",
            "v0.17.0",
            "v1.2.6",
            "1.10.0",
            "v2.0.0-rc1",
        ] {
            assert!(version_ok(ok), "{ok}");
        }
        for bad in ["v0.16.9", "0.1.0", "banana", "v1.2"] {
            assert!(!version_ok(bad), "{bad}");
        }
    }
}
