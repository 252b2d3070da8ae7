//! Call recordings end to end: a host with its plugin, our job service (`calls-jobs`)
//! running `calls-recorder`, participants whose media is known (two test tones and a
//! screen share, sent by the load tool's participants), the file checked with
//! Debian's ffprobe and ffmpeg.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use calls_lt::participant::{self, Media, Role, Spec, Totals};

/// A `calls-jobs` process on a port of its own.
struct JobsProc {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for JobsProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("jobs.log")).unwrap_or_default();
            eprintln!("----- log of calls-jobs -----\n{log}");
            for job_log in job_logs(self.dir.path()) {
                eprintln!("----- {} -----\n{}", job_log.0.display(), job_log.1);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Recorders it started go with it.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", env!("CARGO_BIN_EXE_calls-recorder")])
            .env("NOTHING", "")
            .status();
    }
}

fn job_logs(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("store/jobs")) {
        for e in rd.flatten() {
            let p = e.path().join("job.log");
            if let Ok(s) = std::fs::read_to_string(&p) {
                out.push((p, s));
            }
        }
    }
    out
}

impl JobsProc {
    async fn start(env: &[(&str, &str)]) -> JobsProc {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_on("127.0.0.1");
        let log = std::fs::File::create(dir.path().join("jobs.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_calls-jobs"))
            .args(["--config", "/nonexistent/calls-jobs.toml"])
            .env(
                "CALLS_JOBS_API_HTTP_LISTENADDRESS",
                format!("127.0.0.1:{port}"),
            )
            .env("CALLS_JOBS_API_SECURITY_ALLOWSELFREGISTRATION", "true")
            .env("CALLS_JOBS_STORE_DATASOURCE", dir.path().join("store"))
            .env("CALLS_JOBS_LOGGER_ENABLEFILE", "false")
            .env(
                "CALLS_JOBS_JOBS_RECORDERPATH",
                env!("CARGO_BIN_EXE_calls-recorder"),
            )
            .env("RUST_LOG", "info,calls_recorder=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let j = JobsProc { child, port, dir };
        for _ in 0..100 {
            if reqwest::get(j.url("/version")).await.is_ok() {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("calls-jobs did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The pid of the recorder running for this service (its working directory is
    /// its job's directory under our store).
    fn recorder_pid(&self) -> Option<u32> {
        let store = self.dir.path().join("store/jobs");
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) {
                if cwd.starts_with(&store) {
                    return Some(pid);
                }
            }
        }
        None
    }
}

/// Two tones and a screen, made by Debian's ffmpeg: (440 Hz, 1000 Hz, screen).
fn make_media(dir: &Path) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, calls_lt::media_files::Video) {
    let run = |args: &[&str]| {
        let ok = Command::new("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ffmpeg {args:?} failed (.ci/run installs ffmpeg)");
    };
    let tone = |hz: u32| {
        let path = dir.join(format!("tone{hz}.ogg"));
        let src = format!("sine=frequency={hz}:sample_rate=48000:duration=60");
        run(&[
            "-f",
            "lavfi",
            "-i",
            &src,
            "-ac",
            "1",
            "-c:a",
            "libopus",
            "-b:a",
            "48k",
            "-frame_duration",
            "20",
            path.to_str().unwrap(),
        ]);
        calls_lt::media_files::opus_packets(&path).unwrap()
    };
    let screen = dir.join("screen.ivf");
    run(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x360:rate=15",
        "-t",
        "20",
        "-c:v",
        "libvpx",
        "-b:v",
        "800k",
        "-g",
        "45",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-f",
        "ivf",
        screen.to_str().unwrap(),
    ]);
    (
        tone(440),
        tone(1000),
        calls_lt::media_files::ivf_frames(&screen).unwrap(),
    )
}

/// A load-tool participant in the call until `stop` fires.
fn join(
    h: &HostProc,
    token: &str,
    channel: &str,
    role: Role,
    media: Media,
    totals: &Arc<Totals>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<participant::Outcome> {
    let spec = Spec {
        base: h.url(""),
        token: token.to_string(),
        channel_id: channel.to_string(),
        role,
        bind_ip: "127.0.0.1".parse().unwrap(),
    };
    tokio::spawn(participant::run(
        spec,
        Arc::new(media),
        totals.clone(),
        stop.clone(),
    ))
}

async fn until(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The next `call_job_state` whose job state passes `f`.
async fn job_state(ws: &mut Ws, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = ws.expect_within("call_job_state", left).await;
        if f(&ev["data"]["jobState"]) {
            return ev["data"].clone();
        }
    }
}

/// Energy of `hz` in `pcm` (Goertzel).
fn power(pcm: &[i16], hz: f64) -> f64 {
    let w = std::f64::consts::TAU * hz / 48_000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for x in pcm {
        let s = f64::from(*x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / pcm.len() as f64
}

fn rec_path(channel: &str, action: &str) -> String {
    format!("/plugins/com.mattermost.calls/calls/{channel}/recording/{action}")
}

/// The recording post of the channel, once it is there: (post, file id).
async fn recording_post(h: &HostProc, token: &str, channel: &str, secs: u64) -> (Value, String) {
    let mut found = None;
    until("the recording post", secs, async || {
        let (_, posts) = h
            .get(token, &format!("/api/v4/channels/{channel}/posts"))
            .await;
        found = posts["posts"].as_object().and_then(|m| {
            m.values()
                .find(|p| p["type"] == "custom_calls_recording")
                .cloned()
        });
        found.is_some()
    })
    .await;
    let post = found.unwrap();
    let file = post["file_ids"][0].as_str().expect("a file").to_string();
    (post, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recording_has_the_screen_and_both_voices() {
    let jobs = JobsProc::start(&[]).await;
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h
        .setup(
            &["alice", "bob"],
            json!({"DefaultEnabled": true, "EnableRecordings": true, "JobServiceURL": jobs.url("")}),
        )
        .await;
    let (alice, bob) = (&s.users[0], &s.users[1]);
    // carol is no member of the call's channel.
    let carol = h.user(&s.admin.1, "carol2").await;
    let media_dir = tempfile::tempdir().unwrap();
    let (tone_a, tone_b, screen) = make_media(media_dir.path());
    let mut alice_ws = Ws::connect(&h, &alice.1).await;
    let totals = Arc::new(Totals::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let role = |speaker, sharer| Role { speaker, sharer };
    let pa = join(
        &h,
        &alice.1,
        &s.channel,
        role(true, true),
        Media {
            opus: tone_a,
            vp8: Some(screen),
        },
        &totals,
        &stop,
    );
    until("alice in the call", 30, async || {
        totals.connected.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;
    let pb = join(
        &h,
        &bob.1,
        &s.channel,
        role(true, false),
        Media {
            opus: tone_b,
            vp8: None,
        },
        &totals,
        &stop,
    );
    until("bob in the call", 30, async || {
        totals.connected.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;

    // Only the call's host records.
    let (code, body) = h
        .post(&bob.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (403, Some("no permissions to record")),
        "{body}"
    );
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["type"], "recording");
    assert!(
        body["init_at"].as_i64().unwrap() > 0 && body["start_at"] == 0,
        "{body}"
    );
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (403, Some("recording already in progress"))
    );
    let started = job_state(&mut alice_ws, 45, |j| {
        j["start_at"].as_i64().unwrap_or(0) > 0
    })
    .await;
    assert_eq!(started["callID"], s.channel.as_str());
    assert_eq!(started["jobState"]["err"], "");
    // The recorder is nobody's participant.
    let (_, call) = h
        .get(
            &alice.1,
            &format!("/plugins/com.mattermost.calls/{}", s.channel),
        )
        .await;
    assert_eq!(
        call["call"]["sessions"].as_array().map(Vec::len),
        Some(2),
        "{call}"
    );
    assert!(
        call["call"]["recording"]["start_at"].as_i64().unwrap() > 0,
        "{call}"
    );

    tokio::time::sleep(Duration::from_secs(20)).await;
    let (code, body) = h
        .post(&bob.1, &rec_path(&s.channel, "stop"), json!({}))
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "stop"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(body["end_at"].as_i64().unwrap() > 0, "{body}");
    job_state(&mut alice_ws, 10, |j| j["end_at"].as_i64().unwrap_or(0) > 0).await;

    let (post, file_id) = recording_post(&h, &bob.1, &s.channel, 90).await;
    let (_, posts) = h
        .get(&bob.1, &format!("/api/v4/channels/{}/posts", s.channel))
        .await;
    let call_post = posts["posts"]
        .as_object()
        .unwrap()
        .values()
        .find(|p| p["type"] == "custom_calls")
        .cloned()
        .unwrap();
    assert_eq!(post["root_id"], call_post["id"], "in the call's thread");
    assert_eq!(post["message"], "Here's the call recording");
    let rec_id = post["props"]["recording_id"].as_str().unwrap().to_string();
    assert_eq!(post["props"]["call_post_id"], call_post["id"]);
    assert_eq!(
        call_post["props"]["recordings"][&rec_id]["file_id"],
        file_id.as_str(),
        "{call_post}"
    );

    // The file, for the channel's members only.
    let (code, info) = h
        .get(&bob.1, &format!("/api/v4/files/{file_id}/info"))
        .await;
    assert_eq!(code, 200, "{info}");
    assert_eq!(info["mime_type"], "video/webm");
    assert!(info["name"].as_str().unwrap().ends_with(".webm"), "{info}");
    let (code, _) = h.get(&carol.1, &format!("/api/v4/files/{file_id}")).await;
    assert_eq!(code, 403);
    let resp = reqwest::Client::new()
        .get(h.url(&format!("/api/v4/files/{file_id}")))
        .bearer_auth(&bob.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(bytes.len() as i64, info["size"].as_i64().unwrap());
    let file = media_dir.path().join("recording.webm");
    std::fs::write(&file, &bytes).unwrap();

    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name:format=duration",
            "-of",
            "json",
        ])
        .arg(&file)
        .output()
        .expect("ffprobe (.ci/run installs ffmpeg)");
    let p: Value = serde_json::from_slice(&probe.stdout).unwrap();
    let streams: Vec<(String, String)> = p["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap().into(),
                s["codec_name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        streams,
        vec![
            ("audio".into(), "opus".into()),
            ("video".into(), "vp8".into())
        ],
        "{p}"
    );
    let duration: f64 = p["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((18.0..=22.0).contains(&duration), "duration {duration}");

    // The screen's frames decode without an error.
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-map", "0:v", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(decode.status.success(), "{decode:?}");
    assert!(
        decode.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&decode.stderr)
    );
    let frames = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let n: u64 = String::from_utf8_lossy(&frames.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    // 15 fps for about 20 s.
    assert!(n > 200, "{n} video frames");

    // Both voices are there, each tone well above the bands nobody sent.
    let pcm = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args([
            "-map", "0:a", "-f", "s16le", "-ac", "1", "-ar", "48000", "-",
        ])
        .output()
        .unwrap();
    assert!(pcm.status.success());
    let pcm: Vec<i16> = pcm
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let rms = (pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    assert!(rms > 500.0, "audio is silent: rms {rms}");
    let (p440, p1000) = (power(&pcm, 440.0), power(&pcm, 1000.0));
    let noise = power(&pcm, 700.0).max(power(&pcm, 2500.0));
    eprintln!(
        "recording: {} bytes, {duration:.2} s, {n} video frames, audio rms {rms:.0}, 440 Hz {:.1} dB and 1000 Hz {:.1} dB over the quietest band",
        bytes.len(),
        10.0 * (p440 / noise).log10(),
        10.0 * (p1000 / noise).log10()
    );
    assert!(p440 > 50.0 * noise, "440 Hz: {p440} vs {noise}");
    assert!(p1000 > 50.0 * noise, "1000 Hz: {p1000} vs {noise}");

    let _ = stop_tx.send(true);
    for p in [pa, pb] {
        let o = p.await.unwrap();
        assert!(o.ok, "{o:?}");
    }
    // The recorder's job ended well: the service forgot it.
    assert!(job_logs(jobs.dir.path()).is_empty());
}
