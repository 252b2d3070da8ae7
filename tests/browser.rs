//! Real Chromium participants (tests/browser/calls.mjs, playwright-core driving
//! Debian's /usr/bin/chromium) against a real calls-host + calls-plugin on SQLite with
//! the integrated SFU: audio both ways, mute, screen share on/off, a third joiner
//! getting the existing tracks, websocket drop + reconnect, leave.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
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

/// Runs the browser scenario; returns its output (the test fails on a non-zero exit).
pub async fn run_browsers(h: &HostProc, channel: &str, users: &[&str], scenario: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is required (apt-get install chromium; .ci/run installs it)"
    );
    ensure_driver(&dir);
    let child = tokio::process::Command::new("node")
        .arg("calls.mjs")
        .current_dir(&dir)
        .env("BASE_URL", h.url("/"))
        .env("CHANNEL_ID", channel)
        .env("USERS", users.join(","))
        .env("PASSWORD", "password1")
        .env("SCENARIO", scenario)
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
    let admin = h.user("", "admin").await;
    let alice = h.user(&admin.1, "alice").await;
    let bob = h.user(&admin.1, "bob").await;
    let carol = h.user(&admin.1, "carol").await;
    h.install_and_enable(&admin.1).await;
    h.set_plugin_settings(&admin.1, json!({"DefaultEnabled": true}))
        .await;
    let (_, channel) = h
        .team_and_channel(&admin.1, &[&alice.0, &bob.0, &carol.0])
        .await;
    let out = run_browsers(&h, &channel, &["alice", "bob", "carol"], "full").await;
    assert!(out.contains("RESULT {\"ok\":true"), "{out}");
}
