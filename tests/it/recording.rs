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
        // A recorder it started goes with it.
        if let Some(pid) = self.recorder_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn recorder_exe() -> PathBuf {
    exe("calls-recorder", env!("CARGO_BIN_EXE_calls-recorder"))
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
        let child = Command::new(exe("calls-jobs", env!("CARGO_BIN_EXE_calls-jobs")))
            .args(["--config", "/nonexistent/calls-jobs.toml"])
            .env(
                "CALLS_JOBS_API_HTTP_LISTENADDRESS",
                format!("127.0.0.1:{port}"),
            )
            .env("CALLS_JOBS_API_SECURITY_ALLOWSELFREGISTRATION", "true")
            .env("CALLS_JOBS_STORE_DATASOURCE", dir.path().join("store"))
            .env("CALLS_JOBS_LOGGER_ENABLEFILE", "false")
            .env("CALLS_JOBS_JOBS_RECORDERPATH", recorder_exe())
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

/// As `join`, then waits until `connected` participants (this one among them) are in.
#[allow(clippy::too_many_arguments)]
async fn join_connected(
    h: &HostProc,
    token: &str,
    channel: &str,
    role: Role,
    media: Media,
    totals: &Arc<Totals>,
    stop: &tokio::sync::watch::Receiver<bool>,
    connected: u64,
) -> tokio::task::JoinHandle<participant::Outcome> {
    let p = join(h, token, channel, role, media, totals, stop);
    until("a participant in the call", 30, async || {
        totals.connected.load(std::sync::atomic::Ordering::SeqCst) >= connected
    })
    .await;
    p
}

/// The recording's sound, decoded by ffmpeg: 48 kHz mono samples.
fn audio_of(file: &Path) -> Vec<i16> {
    let pcm = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args([
            "-map", "0:a", "-f", "s16le", "-ac", "1", "-ar", "48000", "-",
        ])
        .output()
        .unwrap();
    assert!(pcm.status.success(), "{pcm:?}");
    pcm.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
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

/// A job state of a recorder that reported it started and has not ended.
fn started(j: &Value) -> bool {
    j["start_at"].as_i64().unwrap_or(0) > 0 && j["end_at"] == 0
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
    let (jobs, h, s) = recording_host(&[], &["alice", "bob"]).await;
    let (alice, bob) = (&s.users[0], &s.users[1]);
    // carol is no member of the call's channel.
    let carol = h.user(&s.admin.1, "carol2").await;
    let media_dir = tempfile::tempdir().unwrap();
    let (tone_a, tone_b, screen) = make_media(media_dir.path());
    let mut alice_ws = Ws::connect(&h, &alice.1).await;
    let totals = Arc::new(Totals::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let role = |speaker, sharer| Role { speaker, sharer };
    let pa = join_connected(
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
        1,
    )
    .await;
    let pb = join_connected(
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
        2,
    )
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
    let first = job_state(&mut alice_ws, 45, started).await;
    assert_eq!(first["callID"], s.channel.as_str());
    assert_eq!(first["jobState"]["err"], "");
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
    let pcm = audio_of(&file);
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

/// Our job service (with `jobs_env`), an Enterprise host on SQLite whose plugin records
/// through it, and `names` in one channel.
async fn recording_host(
    jobs_env: &[(&str, &str)],
    names: &[&str],
) -> (JobsProc, HostProc, CallSetup) {
    let jobs = JobsProc::start(jobs_env).await;
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h
        .setup(
            names,
            json!({"DefaultEnabled": true, "EnableRecordings": true, "JobServiceURL": jobs.url("")}),
        )
        .await;
    (jobs, h, s)
}

/// A call of `n` listeners (load-tool participants), connected.
async fn listeners(
    h: &HostProc,
    s: &CallSetup,
    n: usize,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> (
    Arc<Totals>,
    Vec<tokio::task::JoinHandle<participant::Outcome>>,
) {
    let totals = Arc::new(Totals::default());
    let mut out = Vec::new();
    for (i, u) in s.users.iter().take(n).enumerate() {
        let media = Media {
            opus: vec![vec![0xf8, 0xff, 0xfe]],
            vp8: None,
        };
        let role = Role {
            speaker: false,
            sharer: false,
        };
        out.push(join(h, &u.1, &s.channel, role, media, &totals, stop));
        let want = i as u64 + 1;
        until("a listener in the call", 30, async || {
            totals.connected.load(std::sync::atomic::Ordering::SeqCst) >= want
        })
        .await;
    }
    (totals, out)
}

async fn call_state(h: &HostProc, token: &str, channel: &str) -> Value {
    let (_, v) = h
        .get(token, &format!("/plugins/com.mattermost.calls/{channel}"))
        .await;
    v["call"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_are_refused_as_upstream_refuses_them() {
    let jobs = JobsProc::start(&[]).await;
    // Professional: no recordings, and no bot API.
    let h = HostProc::start(Backend::Sqlite, "professional").await;
    let s = h
        .setup(
            &["alice"],
            json!({"DefaultEnabled": true, "EnableRecordings": true, "JobServiceURL": jobs.url("")}),
        )
        .await;
    let alice = &s.users[0];
    let mut ws = Ws::connect(&h, &alice.1).await;
    ws.join(&s.channel).await;
    ws.expect("join").await;
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (403, Some("Recordings are not allowed by your license")),
        "{body}"
    );
    let (code, body) = h
        .req(
            reqwest::Method::GET,
            &alice.1,
            &format!(
                "/plugins/com.mattermost.calls/bot/calls/{}/filename",
                s.channel
            ),
            None,
        )
        .await;
    assert_eq!((code, body.as_str()), (403, "Forbidden\n"));
    drop(h);

    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let s = h
        .setup(&["alice", "bob"], json!({"DefaultEnabled": true}))
        .await;
    let (alice, bob) = (&s.users[0], &s.users[1]);
    let start = |token: &str| {
        let (h, path, token) = (&h, rec_path(&s.channel, "start"), token.to_string());
        async move { h.post(&token, &path, json!({})).await }
    };
    // Recordings off.
    let (code, body) = start(&alice.1).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (403, Some("Recordings are not enabled"))
    );
    // On, with a job service nobody runs.
    let dead = format!("http://127.0.0.1:{}", free_port_on("127.0.0.1"));
    let (code, _) = h
        .set_plugin_settings(
            &s.admin.1,
            json!({"DefaultEnabled": true, "EnableRecordings": true, "JobServiceURL": dead}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, body) = start(&alice.1).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (403, Some("Job service is not initialized"))
    );
    // A running service: no call yet.
    let (code, _) = h
        .set_plugin_settings(
            &s.admin.1,
            json!({"DefaultEnabled": true, "EnableRecordings": true, "JobServiceURL": jobs.url("")}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, body) = start(&alice.1).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (403, Some("no call ongoing")),
        "{body}"
    );
    let mut wa = Ws::connect(&h, &alice.1).await;
    wa.join(&s.channel).await;
    wa.expect("join").await;
    let mut wb = Ws::connect(&h, &bob.1).await;
    wb.join(&s.channel).await;
    wb.expect("join").await;
    // Not the host; an action that is neither start nor stop; nothing to stop.
    let (code, body) = start(&bob.1).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (403, Some("no permissions to record"))
    );
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "pause"), json!({}))
        .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (400, Some("unsupported recording action"))
    );
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "stop"), json!({}))
        .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (403, Some("no recording in progress"))
    );
    // A user is not the bot, whatever the route.
    let (code, _) = h
        .req(
            reqwest::Method::POST,
            &alice.1,
            "/plugins/com.mattermost.calls/bot/uploads",
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_service_answers_in_calls_offloaders_shapes() {
    let jobs = JobsProc::start(&[]).await;
    let http = reqwest::Client::new();
    let key = "k".repeat(32);
    let call = |m: reqwest::Method, path: &str, user: Option<(&str, &str)>, body: Option<&str>| {
        let mut r = http.request(m, jobs.url(path));
        if let Some((u, k)) = user {
            r = r.basic_auth(u, Some(k));
        }
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        async move {
            let resp = r.send().await.unwrap();
            let code = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                code,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            )
        }
    };
    let me = Some(("client1", key.as_str()));
    let runner = "mattermost/calls-recorder:v0.8.13";
    // Registers itself on its first request; a wrong key later is refused.
    let (code, _) = call(
        reqwest::Method::POST,
        "/jobs/init",
        me,
        Some(&json!({"Runners": [runner]}).to_string()),
    )
    .await;
    assert_eq!(code, 200);
    let wrong = Some(("client1", "x".repeat(32).leak() as &str));
    let (code, body) = call(reqwest::Method::POST, "/jobs", wrong, Some("{}")).await;
    assert_eq!(
        (code, body),
        (
            401,
            json!({"code": "401", "error": "authentication failed"})
        )
    );
    let (code, body) = call(reqwest::Method::GET, "/jobs/aaaaaaaaaaaa", None, None).await;
    assert_eq!(
        (code, body),
        (
            401,
            json!({"code": "401", "error": "authentication failed: invalid auth header"})
        )
    );
    let short = Some(("client2", "short"));
    let (code, body) = call(reqwest::Method::POST, "/jobs/init", short, Some("{}")).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (401, Some("authentication failed: unauthorized"))
    );
    // Malformed and invalid jobs.
    let (code, body) = call(reqwest::Method::POST, "/jobs", me, Some("{nope")).await;
    assert_eq!(code, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("failed to decode request body: "),
        "{body}"
    );
    assert_eq!(body["code"], "400");
    let bad = json!({"type": "recording", "runner": "evil/calls-recorder:v0.8.13", "max_duration_sec": 60});
    let (code, body) = call(reqwest::Method::POST, "/jobs", me, Some(&bad.to_string())).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["error"],
        "invalid Runner value: failed to validate runner \"evil/calls-recorder:v0.8.13\""
    );
    let bad = json!({"type": "recording", "runner": runner, "max_duration_sec": 0});
    let (_, body) = call(reqwest::Method::POST, "/jobs", me, Some(&bad.to_string())).await;
    assert_eq!(
        body["error"],
        "invalid MaxDurationSec value: should be positive"
    );
    let tr = json!({"type": "transcribing", "runner": "mattermost/calls-transcriber:v0.7.2", "max_duration_sec": 60});
    let (code, body) = call(reqwest::Method::POST, "/jobs", me, Some(&tr.to_string())).await;
    assert_eq!(code, 500);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no local runner for calls-transcriber"),
        "{body}"
    );
    // Unknown jobs.
    let (code, body) = call(
        reqwest::Method::GET,
        "/jobs/aaaaaaaaaaaaaaaaaaaaaaaaaa",
        me,
        None,
    )
    .await;
    assert_eq!(
        (code, body),
        (
            404,
            json!({"code": "404", "error": "failed to get job failed to get job: error: not found"})
        )
    );
    let (code, _) = call(reqwest::Method::GET, "/jobs/NOT-AN-ID", me, None).await;
    assert_eq!(code, 404);
    let (code, body) = call(
        reqwest::Method::GET,
        "/jobs/aaaaaaaaaaaaaaaaaaaaaaaaaa/logs",
        me,
        None,
    )
    .await;
    assert_eq!(code, 403);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("failed to get recording job logs: "));
    let (code, _) = call(reqwest::Method::PUT, "/jobs", me, None).await;
    assert_eq!(code, 405);
    let (code, body) = call(reqwest::Method::GET, "/version", None, None).await;
    assert_eq!(code, 200);
    assert_eq!(body["buildVersion"], "v0.9.5");
    // A job is its client's: another client does not see it (its input holds tokens).
    let job = json!({"type": "recording", "runner": runner, "max_duration_sec": 60,
                     "input_data": {"call_id": "x", "LD_PRELOAD": "/tmp/evil.so"}});
    let (code, body) = call(reqwest::Method::POST, "/jobs", me, Some(&job.to_string())).await;
    assert_eq!(code, 200, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let other_key = "o".repeat(32);
    let other = Some(("client3", other_key.as_str()));
    let (code, _) = call(reqwest::Method::GET, &format!("/jobs/{id}"), other, None).await;
    assert_eq!(code, 404);
    // Its recorder refused the bad input and failed; the failure is kept with its log,
    // which shows that the client's LD_PRELOAD never reached it.
    until("the job's failure", 10, async || {
        let (_, j) = call(reqwest::Method::GET, &format!("/jobs/{id}"), me, None).await;
        j["stop_at"].as_i64().unwrap_or(0) > 0
    })
    .await;
    let (code, log) = call(reqwest::Method::GET, &format!("/jobs/{id}/logs"), me, None).await;
    assert_eq!(code, 200);
    let log = log.as_str().unwrap_or_default().to_string();
    assert!(log.contains("SITE_URL"), "{log}");
    let jobs_log = std::fs::read_to_string(jobs.dir.path().join("jobs.log")).unwrap();
    assert!(
        jobs_log.contains("input not passed to the job"),
        "{jobs_log}"
    );
    // Login gives a bearer token that works as the key does.
    let (code, body) = call(
        reqwest::Method::POST,
        "/login",
        None,
        Some(&json!({"clientID": "client1", "authKey": key}).to_string()),
    )
    .await;
    assert_eq!(code, 200);
    let token = body["bearerToken"].as_str().unwrap();
    let resp = http
        .get(jobs.url("/jobs/aaaaaaaaaaaaaaaaaaaaaaaaaa"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = http
        .get(jobs.url("/jobs/aaaaaaaaaaaaaaaaaaaaaaaaaa"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_recorder_fails_its_job_and_the_call_goes_on() {
    let (jobs, h, s) = recording_host(&[], &["alice", "bob"]).await;
    let alice = &s.users[0];
    let mut ws = Ws::connect(&h, &alice.1).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (totals, parts) = listeners(&h, &s, 2, &stop).await;
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    job_state(&mut ws, 45, started).await;
    let pid = jobs.recorder_pid().expect("the recorder runs");
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    // The job service tells the plugin at once; the participants learn it.
    let failed = job_state(&mut ws, 15, |j| j["end_at"].as_i64().unwrap_or(0) > 0).await;
    let err = failed["jobState"]["err"].as_str().unwrap();
    assert!(err.contains("killed by signal 9"), "{failed}");
    // The call goes on: both listeners in it, still receiving.
    let before = totals.received.load(std::sync::atomic::Ordering::SeqCst);
    let call = call_state(&h, &alice.1, &s.channel).await;
    assert_eq!(call["sessions"].as_array().map(Vec::len), Some(2), "{call}");
    assert!(call.get("recording").is_none(), "no recording left: {call}");
    // Nothing is left half-started: a new recording starts.
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    job_state(&mut ws, 45, started).await;
    let (code, _) = h
        .post(&alice.1, &rec_path(&s.channel, "stop"), json!({}))
        .await;
    assert_eq!(code, 200);
    recording_post(&h, &alice.1, &s.channel, 60).await;
    let _ = before;
    let _ = stop_tx.send(true);
    for p in parts {
        let o = p.await.unwrap();
        assert!(o.ok, "{o:?}");
    }
    // The failed job's log is kept for the admin; the good one is gone.
    let logs = job_logs(jobs.dir.path());
    assert_eq!(logs.len(), 1, "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_service_gone_at_start_leaves_nothing_started() {
    let (jobs, h, s) = recording_host(&[], &["alice"]).await;
    let alice = &s.users[0];
    let mut ws = Ws::connect(&h, &alice.1).await;
    ws.join(&s.channel).await;
    ws.expect("join").await;
    // The plugin reached the service; then it goes away.
    until("the job service initialized", 10, async || {
        h.log().contains("job service initialized")
    })
    .await;
    drop(jobs);
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(code, 500, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("failed to create recording job: http request failed: "),
        "{msg}"
    );
    let ev = job_state(&mut ws, 10, |j| j["end_at"].as_i64().unwrap_or(0) > 0).await;
    assert_eq!(ev["jobState"]["err"], msg);
    let call = call_state(&h, &alice.1, &s.channel).await;
    assert!(call.get("recording").is_none(), "{call}");
    // The service back (elsewhere): the next start is taken.
    let jobs = JobsProc::start(&[]).await;
    let (code, _) = h
        .set_plugin_settings(
            &s.admin.1,
            json!({"DefaultEnabled": true, "EnableRecordings": true, "JobServiceURL": jobs.url("")}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recording_stops_by_itself_at_its_maximum_duration() {
    // The job service caps every job at one minute (the plugin's own minimum is 15).
    let (_jobs, h, s) =
        recording_host(&[("CALLS_JOBS_JOBS_MAXDURATIONSEC", "60")], &["alice"]).await;
    let alice = &s.users[0];
    let mut ws = Ws::connect(&h, &alice.1).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (_totals, parts) = listeners(&h, &s, 1, &stop).await;
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    let began = job_state(&mut ws, 45, started).await;
    // Nobody stops it: the recorder's time runs out, it leaves, the job ends well.
    let ended = job_state(&mut ws, 90, |j| j["end_at"].as_i64().unwrap_or(0) > 0).await;
    assert_eq!(ended["jobState"]["err"], "", "{ended}");
    let took = ended["jobState"]["end_at"].as_i64().unwrap()
        - began["jobState"]["start_at"].as_i64().unwrap();
    assert!((55_000..70_000).contains(&took), "ended after {took} ms");
    let (_, file) = recording_post(&h, &alice.1, &s.channel, 60).await;
    let (_, info) = h.get(&alice.1, &format!("/api/v4/files/{file}/info")).await;
    assert!(info["size"].as_i64().unwrap() > 0, "{info}");
    let call = call_state(&h, &alice.1, &s.channel).await;
    assert_eq!(call["sessions"].as_array().map(Vec::len), Some(1), "{call}");
    let _ = stop_tx.send(true);
    for p in parts {
        assert!(p.await.unwrap().ok);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recording_ends_with_its_call() {
    let (_jobs, h, s) = recording_host(&[], &["alice", "bob"]).await;
    let alice = &s.users[0];
    let mut ws = Ws::connect(&h, &alice.1).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (_totals, parts) = listeners(&h, &s, 2, &stop).await;
    let (code, body) = h
        .post(&alice.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    job_state(&mut ws, 45, started).await;
    // Everybody leaves: the recorder is told to stop, uploads, and the call ends.
    let _ = stop_tx.send(true);
    for p in parts {
        assert!(p.await.unwrap().ok);
    }
    recording_post(&h, &alice.1, &s.channel, 60).await;
    until("the call's end", 30, async || {
        call_state(&h, &alice.1, &s.channel).await.is_null()
    })
    .await;
}

/// CPU seconds (user + system) and peak resident memory (MiB) of a process so far.
fn usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) closes with ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    // USER_HZ is 100 on Linux.
    Some((ticks / 100.0, hwm_kb / 1024.0))
}

/// The recorder's cost in the seed's shape: a 10-person call, 2 speakers and a
/// 1.6 Mbit/s screen share, recorded for `RECORDING_COST_SECONDS` (default 120).
/// A measurement, not a test: `scripts/recording-cost.sh` runs it on release builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: scripts/recording-cost.sh"]
async fn recording_cost() {
    let secs: u64 = std::env::var("RECORDING_COST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let jobs = JobsProc::start(&[]).await;
    let h = HostProc::start(Backend::Sqlite, "enterprise").await;
    let names: Vec<String> = (0..10).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let s = h
        .setup(
            &names,
            json!({"DefaultEnabled": true, "EnableRecordings": true, "JobServiceURL": jobs.url("")}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (tone_a, tone_b, _) = make_media(dir.path());
    let screen = dir.path().join("screen-1600k.ivf");
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=15,noise=alls=30:allf=t",
            "-t",
            "30",
            "-c:v",
            "libvpx",
            "-b:v",
            "1600k",
            "-minrate",
            "1600k",
            "-maxrate",
            "1600k",
            "-bufsize",
            "800k",
            "-g",
            "30",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-f",
            "ivf",
        ])
        .arg(&screen)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let screen = calls_lt::media_files::ivf_frames(&screen).unwrap();
    let screen_kbps = screen.frames.iter().map(|f| f.1.len()).sum::<usize>() as f64 * 8.0
        / (screen.frames.len() as f64 / f64::from(screen.fps))
        / 1000.0;
    let totals = Arc::new(Totals::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut parts = Vec::new();
    let mut screen = Some(screen);
    for (i, u) in s.users.iter().enumerate() {
        let media = match i {
            0 => Media {
                opus: tone_a.clone(),
                vp8: screen.take(),
            },
            1 => Media {
                opus: tone_b.clone(),
                vp8: None,
            },
            _ => Media {
                opus: vec![vec![0xf8, 0xff, 0xfe]],
                vp8: None,
            },
        };
        let role = Role {
            speaker: i < 2,
            sharer: i == 0,
        };
        parts.push(join(&h, &u.1, &s.channel, role, media, &totals, &stop));
        let want = i as u64 + 1;
        until("a participant in the call", 30, async || {
            totals.connected.load(std::sync::atomic::Ordering::SeqCst) >= want
        })
        .await;
    }
    let host = &s.users[0];
    let mut ws = Ws::connect(&h, &host.1).await;
    let (code, body) = h
        .post(&host.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    job_state(&mut ws, 45, started).await;
    let pid = jobs.recorder_pid().expect("the recorder runs");
    let (cpu0, _) = usage(pid).unwrap();
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu1, rss) = usage(pid).unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let (code, _) = h
        .post(&host.1, &rec_path(&s.channel, "stop"), json!({}))
        .await;
    assert_eq!(code, 200);
    // The stop: finishing the file and uploading it.
    let mut last = (cpu1, rss);
    while let Some(u) = usage(pid) {
        last = u;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, file) = recording_post(&h, &host.1, &s.channel, 120).await;
    let (_, info) = h.get(&host.1, &format!("/api/v4/files/{file}/info")).await;
    let size_mb = info["size"].as_f64().unwrap() / 1e6;
    let minutes = wall / 60.0;
    let cpu_per_min = (cpu1 - cpu0) / minutes;
    let offloader_cores = 8.0 * 0.66 / 6.0;
    println!("recording cost: {wall:.0} s of a 10-person call, 2 speakers, screen {screen_kbps:.0} kbit/s");
    println!("  recorder CPU while recording: {cpu_per_min:.2} CPU-s per recorded minute = {:.1}% of one core", 100.0 * cpu_per_min / 60.0);
    println!(
        "  recorder CPU to finish and upload: {:.2} CPU-s",
        last.0 - cpu1
    );
    println!("  recorder peak memory: {:.1} MiB", last.1);
    println!(
        "  file: {size_mb:.1} MB = {:.0} MB per hour",
        size_mb / minutes * 60.0
    );
    println!("  upstream (calls-offloader docs/performance.md, medium, c6i.2xlarge): 6 recordings at 66% of 8 vCPU, 4 GB => {:.2} cores = {:.0} CPU-s per minute and {:.0} MiB each, 0.7 GB per hour", offloader_cores, offloader_cores * 60.0, 4096.0 / 6.0);
    let _ = stop_tx.send(true);
    for p in parts {
        let _ = p.await;
    }
}

/// The call hosted on node A, one participant on each node, the recording asked for
/// through node B (so its recorder joins through B and its media comes from A over
/// cluster messages), stopped through A; the file, uploaded through B into the shared
/// file store, is read through A.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recording_in_a_cluster() {
    let jobs = JobsProc::start(&[]).await;
    let files = tempfile::tempdir().unwrap();
    let files_dir = files.path().to_str().unwrap().to_string();
    let c = crate::cluster::Cluster::start_with(2, &[], &["--files-dir", &files_dir]).await;
    let s = c
        .setup(
            &["alice", "bob"],
            json!({"DefaultEnabled": true, "EnableRecordings": true, "JobServiceURL": jobs.url("")}),
        )
        .await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let (alice, bob) = (&s.users[0], &s.users[1]);
    let media_dir = tempfile::tempdir().unwrap();
    let (tone_a, tone_b, _) = make_media(media_dir.path());
    let mut alice_ws = Ws::connect(a, &alice.1).await;
    let totals = Arc::new(Totals::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let role = Role {
        speaker: true,
        sharer: false,
    };
    let pa = join_connected(
        a,
        &alice.1,
        &s.channel,
        role.clone(),
        Media {
            opus: tone_a,
            vp8: None,
        },
        &totals,
        &stop,
        1,
    )
    .await;
    let pb = join_connected(
        b,
        &bob.1,
        &s.channel,
        role,
        Media {
            opus: tone_b,
            vp8: None,
        },
        &totals,
        &stop,
        2,
    )
    .await;
    let (code, body) = b
        .post(&alice.1, &rec_path(&s.channel, "start"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    job_state(&mut alice_ws, 45, started).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (code, body) = a
        .post(&alice.1, &rec_path(&s.channel, "stop"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, file_id) = recording_post(a, &bob.1, &s.channel, 90).await;
    let resp = reqwest::Client::new()
        .get(a.url(&format!("/api/v4/files/{file_id}")))
        .bearer_auth(&alice.1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let file = media_dir.path().join("cluster.webm");
    std::fs::write(&file, resp.bytes().await.unwrap()).unwrap();
    let pcm = audio_of(&file);
    let noise = power(&pcm, 700.0).max(power(&pcm, 2500.0));
    // Both voices: the one from the call's node and the one relayed from the other.
    assert!(power(&pcm, 440.0) > 50.0 * noise, "440 Hz missing");
    assert!(power(&pcm, 1000.0) > 50.0 * noise, "1000 Hz missing");
    let _ = stop_tx.send(true);
    for p in [pa, pb] {
        assert!(p.await.unwrap().ok);
    }
}
