//! `calls-lt` against a real host + plugin: its help, a small run with speakers and a
//! screen sharer, the report and the plot.

use std::process::Command;

use crate::common::*;
use serde_json::{json, Value};

#[test]
fn help_documents_every_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_calls-lt"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--url",
        "--admin-user",
        "--admin-password",
        "--calls",
        "--participants",
        "--unmuted",
        "--sharers",
        "--join-rate",
        "--duration",
        "--audio",
        "--video",
        "--pid",
        "--bind-ip",
        "--user-prefix",
        "--password",
        "--out",
    ] {
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with('-') && l.contains(&format!("{opt} <")))
            .unwrap_or_else(|| panic!("{opt} missing"));
        // Each option is followed by its description.
        assert!(
            text.lines()
                .nth(line + 1)
                .is_some_and(|l| !l.trim().is_empty()),
            "{opt} undocumented:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_reports_and_plots() {
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h.setup(&[], json!({"DefaultEnabled": true})).await;
    let _ = s;
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    let made = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lt-media.sh"))
        .arg(&media)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&made.stdout);
    assert!(made.status.success(), "scripts/lt-media.sh failed (espeak-ng, opus-tools, vpx-tools needed; scripts/test-deps.sh installs them):\n{said}\n{}", String::from_utf8_lossy(&made.stderr));
    // The seed's media: speech at 80 kbit/s, a screen share at 1.6 Mbit/s.
    let kbps = |file: &str| -> f64 {
        said.lines()
            .find_map(|l| l.strip_prefix(file))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no bitrate for {file} in {said}"))
    };
    let (speech, screen) = (kbps("speech.ogg"), kbps("screen.ivf"));
    assert!((72.0..=88.0).contains(&speech), "speech at {speech} kbit/s");
    assert!(
        (1440.0..=1760.0).contains(&screen),
        "screen at {screen} kbit/s"
    );
    let pid = h.plugin_pid().await.expect("plugin running");
    let out_dir = dir.path().join("report");
    let bin = env!("CARGO_BIN_EXE_calls-lt");
    let url = h.url("");
    let args = vec![
        "--url".to_string(),
        url,
        "--admin-password".into(),
        "password1".into(),
        "--calls".into(),
        "2".into(),
        "--participants".into(),
        "3".into(),
        "--unmuted".into(),
        "1".into(),
        "--sharers".into(),
        "1".into(),
        "--duration".into(),
        "6".into(),
        "--pid".into(),
        pid.to_string(),
        "--audio".into(),
        media.join("speech.ogg").display().to_string(),
        "--video".into(),
        media.join("screen.ivf").display().to_string(),
        "--out".into(),
        out_dir.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || Command::new(bin).args(&args).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "calls-lt failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("joined 6/6"), "no progress line: {stderr}");
    assert!(
        stdout.contains("joins ok / failed") && stdout.contains("report:"),
        "{stdout}"
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["joins_ok"], 6, "{r}");
    assert!(r["sent_audio"].as_u64().unwrap() > 100, "{r}");
    assert!(r["sent_video"].as_u64().unwrap() > 20, "{r}");
    // 2 listeners per call get the speaker's audio; the speaker and the sharer too.
    assert!(r["received"].as_u64().unwrap() > 500, "{r}");
    let first_media = r["first_media_p50_ms"].as_f64().expect("first media p50");
    // Every milestone of the join was reached, and each comes before the first media.
    let stages = r["join_stages"].as_array().expect("join stages");
    assert_eq!(stages.len(), 4, "{r}");
    for s in stages {
        let p50 = s["p50_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{s} never reached"));
        assert!(
            p50 > 0.0 && p50 <= first_media,
            "{s} after first media {first_media}"
        );
    }
    assert!(r["lt_cpu_avg_pct"].as_f64().is_some_and(|c| c > 0.0), "{r}");
    // Two sharers at 1.6 Mbit/s reach the SFU, and each share goes out to two
    // receivers: more out than in.
    let (bw_in, bw_out) = (
        r["sfu_in_mbit_per_s"].as_f64().expect("bandwidth in"),
        r["sfu_out_mbit_per_s"].as_f64().expect("bandwidth out"),
    );
    assert!(bw_in > 2.0, "SFU bandwidth in {bw_in} Mbit/s: {r}");
    assert!(
        bw_out > bw_in,
        "SFU bandwidth out {bw_out} <= in {bw_in}: {r}"
    );
    assert!(stdout.contains("SFU bandwidth in / out"), "{stdout}");
    assert!(r["sfu_rss_max_mb"].as_f64().unwrap() > 1.0, "{r}");
    let png = std::fs::read(out_dir.join("report.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
