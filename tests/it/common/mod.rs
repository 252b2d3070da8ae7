//! Process-test harness: a real `calls-host` (which starts the real `calls-plugin`
//! from a bundle built here), driven over HTTP and the websocket like a client.

#![allow(dead_code)]

pub mod coturn;
pub mod dns;
pub mod media_client;
pub mod peer;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub const PREFIX: &str = "custom_com.mattermost.calls_";

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One of the project's executables: the test build, or the one in
/// `CALLS_TEST_BIN_DIR` (measurements run on release builds: `scripts/recording-cost.sh`).
/// The pseudo-argument of `HostProc::spawn` asking for the demo (never given to the host).
const DEMO: &str = "(demo)";

pub fn exe(name: &str, test_build: &str) -> PathBuf {
    match std::env::var_os("CALLS_TEST_BIN_DIR") {
        Some(d) => PathBuf::from(d).join(name),
        None => PathBuf::from(test_build),
    }
}

/// Builds the plugin bundle from the test build of `calls-plugin` (no release build).
pub fn build_bundle(dir: &Path) -> Vec<u8> {
    let exe = exe("calls-plugin", env!("CARGO_BIN_EXE_calls-plugin"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.append_path_with_name(root.join("plugin.json"), "com.mattermost.calls/plugin.json")
            .unwrap();
        tar.append_path_with_name(&exe, "com.mattermost.calls/server/dist/plugin-linux-amd64")
            .unwrap();
        tar.append_path_with_name(
            root.join("webapp-stub/main.js"),
            "com.mattermost.calls/webapp/dist/main.js",
        )
        .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    std::fs::write(dir.join("bundle.tar.gz"), &out).unwrap();
    out
}

/// A port free right now for both UDP and TCP within the settings' valid range
/// [80, 49151] (tests run in parallel; each host needs its own RTC port, and the
/// ICE-TCP listener uses the same number, as with the default 8443).
pub fn free_rtc_port() -> u16 {
    free_port_on("0.0.0.0")
}

/// A fresh PostgreSQL database for one test.
pub async fn fresh_postgres() -> String {
    let base = std::env::var("CALLS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("calls_test_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&format!("{base}/postgres"))
        .await
        .expect("PostgreSQL reachable (set CALLS_TEST_POSTGRES)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    format!("{base}/{name}")
}

pub struct HostProc {
    pub child: Child,
    pub base: String,
    pub metrics_base: String,
    pub dir: tempfile::TempDir,
    pub db_url: String,
    pub http: reqwest::Client,
    /// The plugin's RTC port (UDP and ICE-TCP).
    pub rtc_port: u16,
}

impl Drop for HostProc {
    fn drop(&mut self) {
        // A failing test shows what the host and its plugin said.
        if std::thread::panicking() {
            eprintln!(
                "----- log of the host at {} -----\n{}",
                self.base,
                self.log()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The plugin dies with the host's process group? Not necessarily: kill it.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.dir.path().display().to_string()])
            .status();
    }
}

impl HostProc {
    pub async fn start(backend: Backend, license: &str) -> HostProc {
        HostProc::start_on(backend, license, "127.0.0.1").await
    }

    /// Listens (API and advertised RTC address) on `ip` instead of loopback: for
    /// clients in a network namespace of their own.
    pub async fn start_on(backend: Backend, license: &str, ip: &str) -> HostProc {
        HostProc::start_with(backend, license, ip, &[]).await
    }

    /// As `start_on`, with extra environment for the host and the plugin it starts.
    pub async fn start_with(
        backend: Backend,
        license: &str,
        ip: &str,
        env: &[(&str, &str)],
    ) -> HostProc {
        let dir = tempfile::tempdir().unwrap();
        let db_url = match backend {
            Backend::Sqlite => format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("calls.db").display()
            ),
            Backend::Postgres => fresh_postgres().await,
        };
        HostProc::spawn(dir, db_url, license, ip, &[], env, free_rtc_port())
    }

    /// A host on SQLite with the demo `make run` seeds (users `admin`, `alice`, `bob`
    /// with passwords `<name>-password`), no plugin installed yet.
    pub fn start_demo() -> HostProc {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("calls.db").display()
        );
        HostProc::spawn(
            dir,
            db_url,
            "enterprise",
            "127.0.0.1",
            &[DEMO],
            &[],
            free_rtc_port(),
        )
    }

    /// The demo host with the bundle installed by its admin, once the plugin has
    /// enabled the demo's *Calls* channel (it does so by itself when it runs).
    pub async fn demo_ready(&self) -> Demo {
        let admin = self.login_with("admin", "admin-password").await;
        self.install_and_enable(&admin).await;
        let alice = self.login_with("alice", "alice-password").await;
        let (st, chans) = self.get(&alice, "/api/v4/users/me/channels").await;
        assert_eq!(st, 200, "{chans}");
        let id_of = |name: &str| {
            chans
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("no channel {name} in {chans}"))["id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let (calls, town) = (id_of("calls"), id_of("town-square"));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (st, v) = self
                .get(&alice, &format!("/plugins/com.mattermost.calls/{calls}"))
                .await;
            assert_eq!(st, 200, "{v}");
            if v["enabled"] == true {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the demo's Calls channel was not enabled: {v}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Demo {
            admin,
            alice,
            calls,
            town,
        }
    }

    /// A node of cluster `cluster` on database `db_url`, listening (API and RTC) on
    /// `ip`, with its own data dir.
    pub fn start_node(db_url: &str, cluster: &str, ip: &str, env: &[(&str, &str)]) -> HostProc {
        HostProc::start_node_with(db_url, cluster, ip, env, &[])
    }

    /// As `start_node`, with more `calls-host` arguments.
    pub fn start_node_with(
        db_url: &str,
        cluster: &str,
        ip: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> HostProc {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_on(ip);
        let mut all = vec!["--cluster", cluster];
        all.extend_from_slice(args);
        HostProc::spawn(dir, db_url.to_string(), "enterprise", ip, &all, env, port)
    }

    /// Stops the host as an admin's restart does (SIGTERM: plugins deactivated),
    /// waiting for it to exit.
    pub fn stop_gracefully(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the host did not stop on SIGTERM");
    }

    /// Starts `calls-host` again on the same data dir, database, address, port
    /// and arguments (a node restarting); the old process is killed if it still runs.
    pub fn restart(self, cluster: &str, env: &[(&str, &str)]) -> HostProc {
        let mut me = self;
        let _ = me.child.kill();
        let _ = me.child.wait();
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &me.dir.path().display().to_string()])
            .status();
        let ip = me
            .base
            .trim_start_matches("http://")
            .rsplit_once(':')
            .map(|(ip, _)| ip.to_string())
            .unwrap();
        let listen = me.base.trim_start_matches("http://").to_string();
        // Moves the data dir into the new process (the old handle must not delete it).
        let dir = std::mem::replace(&mut me.dir, tempfile::tempdir().unwrap());
        let db = me.db_url.clone();
        let port = me.rtc_port;
        let args = ["--cluster", cluster];
        let mut h = HostProc::spawn_at(dir, db, "enterprise", &ip, &listen, &args, env, port);
        h.base = me.base.clone();
        h
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        dir: tempfile::TempDir,
        db_url: String,
        license: &str,
        ip: &str,
        args: &[&str],
        env: &[(&str, &str)],
        rtc_port: u16,
    ) -> HostProc {
        let listen = format!("{ip}:0");
        HostProc::spawn_at(dir, db_url, license, ip, &listen, args, env, rtc_port)
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_at(
        dir: tempfile::TempDir,
        db_url: String,
        license: &str,
        ip: &str,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
        rtc_port: u16,
    ) -> HostProc {
        let log = std::fs::File::create(dir.path().join("host.log")).unwrap();
        // `DEMO` among the arguments: the host seeds its demo (as `make run` does);
        // without it, a bare host.
        let demo = args.contains(&DEMO);
        let args: Vec<&str> = args.iter().copied().filter(|a| *a != DEMO).collect();
        let mut child = Command::new(exe("calls-host", env!("CARGO_BIN_EXE_calls-host")))
            .arg("--listen")
            .arg(listen)
            .args(if demo { None } else { Some("--no-demo") })
            .args([
                "--metrics-listen",
                "127.0.0.1:0",
                "--license",
                license,
                "--database-url",
                &db_url,
                "--data-dir",
            ])
            .arg(dir.path())
            .args(args)
            .env("RUST_LOG", "info,calls_plugin=debug,calls_host=debug,calls_rtcd=debug,calls_rtc=debug,calls_sfu=debug")
            // The plugin inherits these: its own RTC port, advertised on `ip`.
            .env("MM_CALLS_UDP_SERVER_PORT", rtc_port.to_string())
            .env("MM_CALLS_TCP_SERVER_PORT", rtc_port.to_string())
            .env("MM_CALLS_ICE_HOST_OVERRIDE", ip)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let addrs = announced(
            &mut child,
            &["calls-host listening on ", "calls-host metrics on "],
            "host did not start",
        );
        let (base, metrics_base) = (addrs[0].clone(), addrs[1].clone());
        HostProc {
            child,
            base,
            metrics_base,
            dir,
            db_url,
            http: reqwest::Client::new(),
            rtc_port,
        }
    }

    /// What the host and its plugin logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    /// Logs in an existing user; returns the token.
    pub async fn login(&self, name: &str) -> String {
        self.login_with(name, "password1").await
    }

    pub async fn login_with(&self, name: &str, password: &str) -> String {
        let resp = self
            .http
            .post(self.url("/api/v4/users/login"))
            .json(&json!({"login_id": name, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.headers()["Token"].to_str().unwrap().to_string()
    }

    /// The plugin's Prometheus text (asserts a 200).
    pub async fn plugin_metrics(&self) -> String {
        let (code, text) = self
            .req(
                reqwest::Method::GET,
                "",
                "/plugins/com.mattermost.calls/metrics",
                None,
            )
            .await;
        assert_eq!(code, 200);
        text
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn req(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut r = self.http.request(method, self.url(path));
        if !token.is_empty() {
            r = r.bearer_auth(token);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let (s, t) = self.req(reqwest::Method::GET, token, path, None).await;
        (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let (s, t) = self
            .req(reqwest::Method::POST, token, path, Some(body))
            .await;
        (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    pub async fn post_raw(&self, token: &str, path: &str, body: Vec<u8>) -> (u16, String) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let s = resp.status().as_u16();
        (s, resp.text().await.unwrap())
    }

    /// Creates a user (the first becomes admin) and logs in; returns (id, token).
    pub async fn user(&self, admin_token: &str, name: &str) -> (String, String) {
        let (s, u) = self
            .post(admin_token, "/api/v4/users", json!({"username": name, "email": format!("{name}@example.com"), "password": "password1"}))
            .await;
        assert_eq!(s, 201, "create user: {u}");
        let token = self.login(name).await;
        (u["id"].as_str().unwrap().to_string(), token)
    }

    pub async fn install_and_enable(&self, admin: &str) {
        let bundle = build_bundle(self.dir.path());
        let form = reqwest::multipart::Form::new().part(
            "plugin",
            reqwest::multipart::Part::bytes(bundle).file_name("bundle.tar.gz"),
        );
        let resp = self
            .http
            .post(self.url("/api/v4/plugins"))
            .bearer_auth(admin)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            201,
            "install: {}",
            resp.text().await.unwrap()
        );
        let (s, b) = self
            .post(
                admin,
                "/api/v4/plugins/com.mattermost.calls/enable",
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "enable: {b}");
    }

    /// Sets plugin settings through PUT /config; returns the status and body.
    pub async fn set_plugin_settings(&self, admin: &str, settings: Value) -> (u16, Value) {
        let (_, mut cfg) = self.get(admin, "/api/v4/config").await;
        cfg["PluginSettings"]["Plugins"]["com.mattermost.calls"] = settings;
        let (s, t) = self
            .req(reqwest::Method::PUT, admin, "/api/v4/config", Some(cfg))
            .await;
        (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    /// Team + open channel with the given members; returns (team id, channel id).
    pub async fn team_and_channel(&self, admin: &str, members: &[&str]) -> (String, String) {
        let (s, t) = self.post(admin, "/api/v4/teams", json!({"name": format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]), "display_name": "T", "type": "O"})).await;
        assert_eq!(s, 201, "{t}");
        let team = t["id"].as_str().unwrap().to_string();
        let ch = self.channel(admin, &team, members).await;
        (team, ch)
    }

    pub async fn channel(&self, admin: &str, team: &str, members: &[&str]) -> String {
        for m in members {
            let (s, b) = self
                .post(
                    admin,
                    &format!("/api/v4/teams/{team}/members"),
                    json!({"team_id": team, "user_id": m}),
                )
                .await;
            assert_eq!(s, 201, "{b}");
        }
        let (s, c) = self
            .post(admin, "/api/v4/channels", json!({"team_id": team, "name": format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..8]), "display_name": "C", "type": "O"}))
            .await;
        assert_eq!(s, 201, "{c}");
        let ch = c["id"].as_str().unwrap().to_string();
        for m in members {
            let (s, b) = self
                .post(
                    admin,
                    &format!("/api/v4/channels/{ch}/members"),
                    json!({"user_id": m}),
                )
                .await;
            assert_eq!(s, 201, "{b}");
        }
        ch
    }

    pub async fn plugin_pid(&self) -> Option<u32> {
        let out = Command::new("pgrep")
            .args(["-f", &format!("{}/plugins", self.dir.path().display())])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub async fn db(&self) -> calls_db::Db {
        calls_db::Db::connect(&self.db_url, 2).await.unwrap()
    }
}

/// A websocket client: events arrive on a channel in order.
pub struct Ws {
    pub conn_id: String,
    out: mpsc::UnboundedSender<Message>,
    pub events: mpsc::UnboundedReceiver<Value>,
    seq: i64,
    pub last_seq: std::sync::Arc<std::sync::atomic::AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Ws {
    pub async fn connect(host: &HostProc, token: &str) -> Ws {
        Self::connect_resume(host, token, "", 0).await
    }

    pub async fn connect_resume(host: &HostProc, token: &str, conn_id: &str, seq: i64) -> Ws {
        let url = format!(
            "{}/api/v4/websocket?connection_id={conn_id}&sequence_number={seq}",
            host.base.replace("http://", "ws://")
        );
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
                .unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Value>();
        let last_seq = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1));
        let ls = last_seq.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(m) => { if sink.send(m).await.is_err() { break; } }
                        None => { let _ = sink.close().await; break; }
                    },
                    m = stream.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            let v: Value = serde_json::from_str(t.as_str()).unwrap();
                            if let Some(s) = v.get("seq").and_then(Value::as_i64) { ls.store(s, std::sync::atomic::Ordering::SeqCst); }
                            if v.get("event").is_some() { let _ = ev_tx.send(v); }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
        });
        let mut ws = Ws {
            conn_id: conn_id.to_string(),
            out: out_tx,
            events: ev_rx,
            seq: 0,
            last_seq,
            task,
        };
        if conn_id.is_empty() {
            let hello = ws.expect("hello").await;
            ws.conn_id = hello["data"]["connection_id"].as_str().unwrap().to_string();
        }
        ws
    }

    pub fn send(&mut self, action: &str, data: Value) {
        self.seq += 1;
        let frame = json!({"action": action, "seq": self.seq, "data": data});
        let _ = self.out.send(Message::Text(frame.to_string().into()));
    }

    pub fn send_calls(&mut self, t: &str, data: Value) {
        self.send(&format!("{PREFIX}{t}"), data);
    }

    pub fn send_raw(&mut self, m: Message) {
        let _ = self.out.send(m);
    }

    /// Drops the connection without a close handshake.
    pub fn kill(self) {
        self.task.abort();
    }

    /// Next event with this name (others before it are skipped); panics after 10 s.
    pub async fn expect(&mut self, name: &str) -> Value {
        let full = if name == "hello"
            || name.starts_with("custom_")
            || name == "posted"
            || name == "ephemeral_message"
        {
            name.to_string()
        } else {
            format!("{PREFIX}{name}")
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) if ev["event"] == full.as_str() => return ev,
                Ok(Some(_)) => continue,
                _ => panic!("timed out waiting for {full}"),
            }
        }
    }

    /// Like `expect` with a longer deadline.
    pub async fn expect_within(&mut self, name: &str, d: Duration) -> Value {
        let full = format!("{PREFIX}{name}");
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) if ev["event"] == full.as_str() => return ev,
                Ok(Some(_)) => continue,
                _ => panic!("timed out waiting for {full}"),
            }
        }
    }

    /// Collects the events of the next `d`.
    pub async fn drain(&mut self, d: Duration) -> Vec<Value> {
        let mut v = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            v.push(ev);
        }
        v
    }

    /// True when the server closes the connection within `d` (events until then are
    /// dropped).
    pub async fn closed_within(&mut self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    pub async fn join(&mut self, channel_id: &str) {
        self.send_calls("join", json!({"channelID": channel_id}));
    }
}

pub fn names(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| {
            e["event"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches(PREFIX)
                .to_string()
        })
        .collect()
}

/// Defines a test for each backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body(Backend::Postgres).await
            }
        }
    };
}

/// A real `rtcd` process listening on `ip` (API on `http_port`, media on `rtc_port`
/// for UDP and ICE-TCP), self-registration on, admin key `admin-secret-key`.
pub struct RtcdProc {
    pub child: Child,
    pub base: String,
    pub ip: String,
    pub dir: tempfile::TempDir,
}

impl Drop for RtcdProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const RTCD_ADMIN_KEY: &str = "admin-secret-key";

impl RtcdProc {
    pub fn start(ip: &str, http_port: u16, rtc_port: u16) -> RtcdProc {
        RtcdProc::start_with(ip, http_port, rtc_port, &[])
    }

    pub fn start_with(ip: &str, http_port: u16, rtc_port: u16, env: &[(&str, &str)]) -> RtcdProc {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rtcd"))
            .arg("--config")
            .arg(dir.path().join("none.toml"))
            .env("RTCD_API_HTTP_LISTENADDRESS", format!("{ip}:{http_port}"))
            .env("RTCD_API_SECURITY_ALLOWSELFREGISTRATION", "true")
            .env("RTCD_API_SECURITY_ENABLEADMIN", "true")
            .env("RTCD_API_SECURITY_ADMINSECRETKEY", RTCD_ADMIN_KEY)
            .env("RTCD_RTC_ICEADDRESSUDP", ip)
            .env("RTCD_RTC_ICEADDRESSTCP", ip)
            .env("RTCD_RTC_ICEPORTUDP", rtc_port.to_string())
            .env("RTCD_RTC_ICEPORTTCP", rtc_port.to_string())
            .env("RTCD_RTC_ICEHOSTOVERRIDE", ip)
            .env("RTCD_STORE_DATASOURCE", dir.path().join("db"))
            .env("RTCD_LOGGER_ENABLEFILE", "false")
            .env("RTCD_LOGGER_CONSOLELEVEL", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let base = announced(&mut child, &["rtcd listening on "], "rtcd did not start").remove(0);
        RtcdProc {
            child,
            base,
            ip: ip.to_string(),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// A port free on `ip` for TCP and UDP, and reserved for this test process: tests run
/// in parallel processes that each pick ports which something else binds only later
/// (a host's plugin binds its RTC port seconds after the pick). Two things keep a
/// pick from being taken in between: ports come from below the kernel's ephemeral
/// range (`ip_local_port_range`), so no socket bound to port 0 and no outgoing
/// connection can get one; and each pick holds an exclusive lock on a file named
/// after the port until the process exits, which every other test process checks.
pub fn free_port_on(ip: &str) -> u16 {
    use rand::Rng;
    use std::sync::Mutex;
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("mmcalls-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let (lo, hi) = reservable_ports();
    let mut r = rand::rng();
    loop {
        let port = r.random_range(lo..hi);
        let Ok(file) = std::fs::File::create(dir.join(port.to_string())) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        if std::net::UdpSocket::bind((ip, port)).is_ok()
            && std::net::TcpListener::bind((ip, port)).is_ok()
        {
            HELD.lock().unwrap().push(file);
            return port;
        }
    }
}

/// Ports tests may reserve: from 20000 to the start of the ephemeral range.
fn reservable_ports() -> (u16, u16) {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    assert!(
        first_ephemeral > 21_000,
        "the ephemeral port range starts at {first_ephemeral}: tests need [20000, 21000) free of it"
    );
    (20_000, first_ephemeral)
}

/// An installed, enabled plugin with `settings`, an admin, users and one channel
/// they are all members of.
/// The demo, ready: tokens of its admin and of alice, its channels' ids.
pub struct Demo {
    pub admin: String,
    pub alice: String,
    pub calls: String,
    pub town: String,
}

pub struct CallSetup {
    pub admin: (String, String),
    /// (user id, token) per name given.
    pub users: Vec<(String, String)>,
    pub team: String,
    pub channel: String,
}

impl HostProc {
    pub async fn setup(&self, names: &[&str], settings: Value) -> CallSetup {
        let admin = self.user("", "admin").await;
        let mut users = Vec::new();
        for n in names {
            users.push(self.user(&admin.1, n).await);
        }
        self.install_and_enable(&admin.1).await;
        let (code, body) = self.set_plugin_settings(&admin.1, settings).await;
        assert_eq!(code, 200, "{body}");
        let ids: Vec<&str> = users.iter().map(|u| u.0.as_str()).collect();
        let (team, channel) = self.team_and_channel(&admin.1, &ids).await;
        CallSetup {
            admin,
            users,
            team,
            channel,
        }
    }
}

impl RtcdProc {
    /// `rtcd_rtc_sessions_total`, summed over groups (-1 when rtcd does not answer).
    pub async fn sessions(&self) -> i64 {
        let Ok(resp) = reqwest::get(self.url("/metrics")).await else {
            return -1;
        };
        resp.text()
            .await
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("rtcd_rtc_sessions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .sum()
    }
}

/// Waits for the `<prefix><value>` lines a child prints on stdout when it is ready
/// (its listening addresses); the values in the order of `prefixes`.
fn announced(child: &mut Child, prefixes: &[&'static str], what: &str) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = prefixes.to_vec();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            for (i, p) in wanted.iter().enumerate() {
                if let Some(v) = line.strip_prefix(p) {
                    let _ = tx.send((i, v.to_string()));
                }
            }
        }
    });
    let mut values = vec![String::new(); prefixes.len()];
    while values.iter().any(String::is_empty) {
        let (i, v) = rx.recv_timeout(Duration::from_secs(60)).expect(what);
        values[i] = v;
    }
    values
}
