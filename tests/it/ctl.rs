//! `calls-ctl` against a real calls-host and calls-plugin: every subcommand, as an
//! admin scripting what the System Console does would run it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::json;

struct Ctl<'a> {
    home: &'a Path,
}

impl Ctl<'_> {
    /// Runs calls-ctl with `args` (and `stdin`), its credentials kept under `home`.
    fn run_in(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(exe("calls-ctl", env!("CARGO_BIN_EXE_calls-ctl")))
            .args(args)
            .env("HOME", self.home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("CALLS_CTL_URL")
            .env_remove("CALLS_CTL_TOKEN")
            .env_remove("CALLS_CTL_PASSWORD")
            .env_remove("CALLS_CTL_CREDENTIALS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Succeeds; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run_in(args, "");
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "calls-ctl {args:?} failed:\n{o}\n{e}");
        o.into_owned()
    }

    /// Fails with exit status 1; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run_in(args, "");
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "calls-ctl {args:?}: {e}");
        assert!(e.starts_with("Error: "), "{e}");
        e
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_ctl_does_what_the_console_does() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let (_, admin) = h.user("", "admin").await;
    let (alice_id, alice) = h.user(&admin, "alice").await;
    let home = tempfile::tempdir().unwrap();
    let ctl = Ctl { home: home.path() };
    let url = h.url("");
    let url = url.trim_end_matches('/');

    // Every command says what it does.
    for cmd in [
        &[][..],
        &["auth"],
        &["auth", "login"],
        &["auth", "logout"],
        &["auth", "current"],
        &["config"],
        &["config", "show"],
        &["config", "get"],
        &["config", "set"],
        &["plugin"],
        &["plugin", "install"],
        &["plugin", "enable"],
        &["plugin", "disable"],
        &["plugin", "list"],
        &["channel"],
        &["channel", "enable"],
        &["channel", "disable"],
        &["channel", "show"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let help = ctl.ok(&args);
        assert!(help.contains("Usage: calls-ctl"), "{args:?}: {help}");
    }

    // Logged out, a command says how to log in.
    assert!(ctl.fails(&["config", "show"]).contains("auth login"));
    // A wrong password: the server's own words.
    let out = ctl.run_in(&["auth", "login", url, "--username", "admin"], "nope\n");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("401"), "{e}");
    // The password on stdin, as a script gives it; the token kept for the owner only.
    let out = ctl.run_in(
        &["auth", "login", url, "--username", "admin"],
        "password1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = home.path().join(".config/calls-ctl/credentials.json");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600);
    assert!(ctl.ok(&["auth", "current"]).contains("as admin"));

    // Plugin: install the bundle, enable it, list it.
    let bundle = home.path().join("calls.tar.gz");
    std::fs::write(&bundle, build_bundle(h.dir.path())).unwrap();
    let bundle = bundle.display().to_string();
    assert!(ctl
        .ok(&["plugin", "install", &bundle])
        .contains("installed com.mattermost.calls"));
    let list = ctl.ok(&["plugin", "list"]);
    let disabled = list.split("disabled:").nth(1).unwrap_or_default();
    assert!(disabled.contains("com.mattermost.calls"), "{list}");
    assert!(ctl
        .fails(&["plugin", "install", "/nonexistent.tar.gz"])
        .contains("/nonexistent.tar.gz"));
    assert!(ctl
        .ok(&["plugin", "enable", "com.mattermost.calls"])
        .contains("enabled com.mattermost.calls"));
    let hr = &h;
    let running = |want: bool| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (st, _) = hr.get("", "/plugins/com.mattermost.calls/version").await;
            if (st == 200) == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "plugin running: {want}?"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    running(true).await;
    let list = ctl.ok(&["plugin", "list"]);
    let enabled = list.split("disabled:").next().unwrap_or_default();
    assert!(enabled.contains("com.mattermost.calls"), "{list}");

    // Config: a plugin setting nobody has saved yet, in the manifest's spelling or not.
    let key = "PluginSettings.Plugins.com.mattermost.calls.MaxCallParticipants";
    assert!(ctl.ok(&["config", "set", key, "7"]).contains(": 7"));
    let (_, cfg) = h.get(&admin, "/plugins/com.mattermost.calls/config").await;
    assert_eq!(cfg["MaxCallParticipants"], 7, "{cfg}");
    assert_eq!(ctl.ok(&["config", "get", key]).trim(), "7");
    assert_eq!(ctl.ok(&["config", "get", &key.to_lowercase()]).trim(), "7");
    // A value the plugin refuses: its error, and the old config stays.
    let bad = "PluginSettings.Plugins.com.mattermost.calls.MaxRecordingDuration";
    let e = ctl.fails(&["config", "set", bad, "5"]);
    assert!(
        e.contains("MaxRecordingDuration") && e.contains("400"),
        "{e}"
    );
    let (_, cfg) = h.get(&admin, "/plugins/com.mattermost.calls/config").await;
    assert_eq!(cfg["MaxRecordingDuration"], 60, "{cfg}");
    assert_eq!(cfg["MaxCallParticipants"], 7, "{cfg}");
    // A host setting, typed as it is; a wrong type is refused before anything is sent.
    assert!(ctl
        .fails(&["config", "set", "ServiceSettings.SiteURL.Nope", "x"])
        .contains("ServiceSettings.SiteURL"));
    let shown: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["config", "show"])).expect("config show is JSON");
    assert!(shown["PluginSettings"]["PluginStates"]["com.mattermost.calls"]["Enable"] == true);
    // A non-admin's token gets the server's refusal.
    let as_alice = ["--url", url, "--token", alice.as_str()];
    let e = ctl.fails(&[&as_alice[..], &["config", "show"]].concat());
    assert!(e.contains("403"), "{e}");

    // Channels, by team:channel names or by id.
    let (st, team) = h
        .post(
            &admin,
            "/api/v4/teams",
            json!({"name": "ops", "display_name": "Ops", "type": "O"}),
        )
        .await;
    assert_eq!(st, 201, "{team}");
    let team_id = team["id"].as_str().unwrap();
    let (st, ch) = h
        .post(
            &admin,
            "/api/v4/channels",
            json!({"team_id": team_id, "name": "standup", "display_name": "Standup", "type": "O"}),
        )
        .await;
    assert_eq!(st, 201, "{ch}");
    let ch_id = ch["id"].as_str().unwrap().to_string();
    let (st, b) = h
        .post(
            &admin,
            &format!("/api/v4/teams/{team_id}/members"),
            json!({"team_id": team_id, "user_id": alice_id}),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let (st, b) = h
        .post(
            &admin,
            &format!("/api/v4/channels/{ch_id}/members"),
            json!({"user_id": alice_id}),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let enabled_now = || async {
        let (_, v) = h
            .get(&admin, &format!("/plugins/com.mattermost.calls/{ch_id}"))
            .await;
        v["enabled"].clone()
    };
    // Test mode, and nothing chosen for the channel yet.
    let shown = ctl.ok(&["channel", "show", "ops:standup"]);
    assert!(
        shown.contains("Standup") && shown.contains("calls disabled"),
        "{shown}"
    );
    assert!(ctl
        .ok(&["channel", "enable", "ops:standup"])
        .contains("calls enabled in Standup"));
    assert_eq!(enabled_now().await, true);
    assert!(ctl
        .ok(&["channel", "show", &ch_id])
        .contains("calls enabled"));
    // Alice, a member, may not enable or disable in test mode.
    let e = ctl.fails(&[&as_alice[..], &["channel", "disable", "ops:standup"]].concat());
    assert!(e.contains("403"), "{e}");
    assert_eq!(enabled_now().await, true);
    assert!(ctl
        .ok(&["channel", "disable", &ch_id])
        .contains("calls disabled in Standup"));
    assert_eq!(enabled_now().await, false);
    assert!(ctl
        .fails(&["channel", "enable", "ops:nope"])
        .contains("404"));
    assert!(ctl
        .fails(&["channel", "enable", "ops:"])
        .contains("team:channel"));

    // Plugin disabled: the server stops it.
    assert!(ctl
        .ok(&["plugin", "disable", "com.mattermost.calls"])
        .contains("disabled com.mattermost.calls"));
    running(false).await;
    assert!(ctl.ok(&["auth", "logout"]).contains("logged out"));
    assert!(!kept.exists());
    assert!(ctl.fails(&["plugin", "list"]).contains("auth login"));
}
