//! `calls-lt`: load test for the Calls server side. See `calls-lt --help`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calls_lt::media_files::{ivf_frames, opus_packets};
use calls_lt::participant::{self, Media, Role, Totals};
use calls_lt::report::{proc_usage, MachineTicks, ProcUsage, Report, Sample};
use calls_lt::setup::Api;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "calls-lt",
    version,
    about = "Load test for Mattermost Calls: C calls x P participants through the host's websocket",
    long_about = "Creates users, a team and one channel per call on the host (as the admin), then \
        starts simulated participants at the join rate. In each call the first --unmuted participants \
        speak (Opus packets from --audio, 20 ms each) and the next --sharers share a screen (VP8 frames \
        from --video); everyone else listens, finishing ICE/DTLS and counting packets. A progress line \
        shows every second; at the end a table is printed and report.json and report.png are written \
        to --out. Whether calls use the integrated SFU or rtcd is the plugin's setting."
)]
struct Args {
    /// Base URL of the host (calls-host or Mattermost).
    #[arg(long, default_value = "http://127.0.0.1:8065")]
    url: String,
    /// Admin account used to create the users, team and channels.
    #[arg(long, default_value = "admin")]
    admin_user: String,
    /// Password of the admin account (the demo's by default).
    #[arg(long, default_value = "admin-password")]
    admin_password: String,
    /// Number of calls.
    #[arg(long, short = 'c', default_value_t = 1)]
    calls: usize,
    /// Participants per call.
    #[arg(long, short = 'p', default_value_t = 2)]
    participants: usize,
    /// Unmuted speakers per call.
    #[arg(long, short = 'u', default_value_t = 1)]
    unmuted: usize,
    /// Screen sharers per call (0 or 1: one sharer per call, as the clients allow).
    #[arg(long, short = 's', default_value_t = 0)]
    sharers: usize,
    /// Joins per second.
    #[arg(long, default_value_t = 20.0)]
    join_rate: f64,
    /// How long to keep the calls going after the last join, in seconds.
    #[arg(long, short = 'd', default_value_t = 30)]
    duration: u64,
    /// Ogg Opus file the speakers send (scripts/lt-media.sh makes one).
    #[arg(long, default_value = "lt-media/speech.ogg")]
    audio: PathBuf,
    /// VP8 IVF file the sharers send (scripts/lt-media.sh makes one).
    #[arg(long, default_value = "lt-media/screen.ivf")]
    video: PathBuf,
    /// Process to sample for CPU and memory (the SFU: calls-plugin or rtcd).
    #[arg(long)]
    pid: Option<u32>,
    /// Local address for the participants' UDP sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: IpAddr,
    /// Prefix of the user names (users are reused across runs).
    #[arg(long, default_value = "lt")]
    user_prefix: String,
    /// Password of the load-test users.
    #[arg(long, default_value = "lt-password-1")]
    password: String,
    /// Directory for report.json and report.png.
    #[arg(long, default_value = "lt-report")]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    calls_service::logging::init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calls-lt: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::from(3),
        Err(e) => {
            eprintln!("calls-lt: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(a: Args) -> Result<usize, String> {
    if a.unmuted + a.sharers > a.participants {
        return Err("--unmuted + --sharers must not exceed --participants".into());
    }
    if a.sharers > 1 {
        return Err("--sharers: one screen sharer per call at most".into());
    }
    let opus = opus_packets(&a.audio).map_err(|e| e.to_string())?;
    let vp8 = if a.sharers > 0 {
        Some(ivf_frames(&a.video).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let media = Arc::new(Media { opus, vp8 });
    let api = Api::new(&a.url);
    let (_, admin) = api
        .user_token(None, &a.admin_user, &a.admin_password)
        .await
        .map_err(|e| format!("admin login: {e}"))?;
    let run_id = &calls_wire::ids::new_id()[..8];
    let team = api
        .team(&admin, &format!("lt-{run_id}"))
        .await
        .map_err(|e| e.to_string())?;
    let enabled = api.calls_default_enabled(&admin).await;
    eprintln!(
        "setting up {} users in {} calls...",
        a.calls * a.participants,
        a.calls
    );
    let mut plan = Vec::new();
    for c in 0..a.calls {
        let mut members = Vec::new();
        for p in 0..a.participants {
            let name = format!("{}-{c}-{p}", a.user_prefix);
            let (id, token) = api
                .user_token(Some(&admin), &name, &a.password)
                .await
                .map_err(|e| e.to_string())?;
            members.push((id, token, p));
        }
        let ids: Vec<String> = members.iter().map(|m| m.0.clone()).collect();
        let ch = api
            .call_channel(&admin, &team, &format!("lt-{run_id}-{c}"), &ids, enabled)
            .await
            .map_err(|e| e.to_string())?;
        for (_, token, p) in members {
            let role = Role {
                speaker: p < a.unmuted,
                sharer: p >= a.unmuted && p < a.unmuted + a.sharers,
            };
            plan.push((token, ch.clone(), role));
        }
    }

    let totals = Arc::new(Totals::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let sampler = spawn_sampler(a.pid, totals.clone(), plan.len() as u64, start);
    let mut tasks = Vec::new();
    let gap = Duration::from_secs_f64(1.0 / a.join_rate.max(0.1));
    for (token, ch, role) in plan {
        let spec = participant::Spec {
            base: a.url.clone(),
            token,
            channel_id: ch,
            role,
            bind_ip: a.bind_ip,
        };
        tasks.push(tokio::spawn(participant::run(
            spec,
            media.clone(),
            totals.clone(),
            stop_rx.clone(),
        )));
        tokio::time::sleep(gap).await;
    }
    tokio::time::sleep(Duration::from_secs(a.duration)).await;
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap_or_default());
    }
    let samples = sampler.stop().await;
    let report = Report::build(
        (a.calls, a.participants, a.unmuted, a.sharers),
        start.elapsed(),
        &outcomes,
        (
            totals.sent_audio.load(Ordering::Relaxed),
            totals.sent_video.load(Ordering::Relaxed),
        ),
        samples,
    );
    eprintln!();
    print!("{}", report.table());
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(a.out.join("report.json"), json).map_err(|e| e.to_string())?;
    report.plot(&a.out.join("report.png"))?;
    println!(
        "report: {} and {}",
        a.out.join("report.json").display(),
        a.out.join("report.png").display()
    );
    Ok(report.joins_failed)
}

struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    async fn stop(self) -> Vec<Sample> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// What the sampler reads each second; a sample is the difference of two.
struct Reading {
    at: Instant,
    sfu: Option<ProcUsage>,
    /// The load tool itself.
    own: Option<ProcUsage>,
    machine: Option<MachineTicks>,
    rx: u64,
    rx_bytes: u64,
    wire_tx: u64,
    wire_rx: u64,
}

impl Reading {
    fn take(pid: Option<u32>, totals: &Totals) -> Reading {
        Reading {
            at: Instant::now(),
            sfu: pid.and_then(proc_usage),
            own: proc_usage(std::process::id()),
            machine: MachineTicks::read(),
            rx: totals.received.load(Ordering::Relaxed),
            rx_bytes: totals.received_bytes.load(Ordering::Relaxed),
            wire_tx: totals.wire_sent_bytes.load(Ordering::Relaxed),
            wire_rx: totals.wire_received_bytes.load(Ordering::Relaxed),
        }
    }
}

/// CPU % of one core between two /proc readings, `f` picking which seconds count.
fn cpu_pct(
    now: &Option<ProcUsage>,
    before: &Option<ProcUsage>,
    dt: f64,
    f: fn(&ProcUsage) -> f64,
) -> Option<f64> {
    match (now, before) {
        (Some(u1), Some(u0)) => Some((f(u1) - f(u0)) / dt * 100.0),
        _ => None,
    }
}

/// One sample a second, and the progress line.
fn spawn_sampler(pid: Option<u32>, totals: Arc<Totals>, planned: u64, start: Instant) -> Sampler {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last = Reading::take(pid, &totals);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => return samples,
            }
            let r = Reading::take(pid, &totals);
            let dt = r.at.duration_since(last.at).as_secs_f64().max(1e-3);
            let s = Sample {
                t_s: r.at.duration_since(start).as_secs_f64(),
                cpu_pct: cpu_pct(&r.sfu, &last.sfu, dt, |u| u.user_s + u.sys_s),
                cpu_user_pct: cpu_pct(&r.sfu, &last.sfu, dt, |u| u.user_s),
                rss_mb: r.sfu.map(|u| u.rss_mb),
                rx_packets_per_s: (r.rx - last.rx) as f64 / dt,
                rx_mbit_per_s: (r.rx_bytes - last.rx_bytes) as f64 * 8.0 / dt / 1e6,
                sfu_in_mbit_per_s: (r.wire_tx - last.wire_tx) as f64 * 8.0 / dt / 1e6,
                sfu_out_mbit_per_s: (r.wire_rx - last.wire_rx) as f64 * 8.0 / dt / 1e6,
                joined: totals.joined.load(Ordering::Relaxed),
                lt_cpu_pct: cpu_pct(&r.own, &last.own, dt, |u| u.user_s + u.sys_s),
                steal_pct: r
                    .machine
                    .zip(last.machine)
                    .and_then(|(m1, m0)| m1.steal_pct_since(&m0)),
            };
            eprint!(
                "\r{:>5.0}s  joined {}/{} failed {} connected {}  rx {:.0} pkt/s {:.2} Mbit/s  cpu {}  rss {}  steal {}   ",
                s.t_s,
                s.joined,
                planned,
                totals.failed.load(Ordering::Relaxed),
                totals.connected.load(Ordering::Relaxed),
                s.rx_packets_per_s,
                s.rx_mbit_per_s,
                s.cpu_pct.map_or("n/a".into(), |c| format!("{c:.0}%")),
                s.rss_mb.map_or("n/a".into(), |r| format!("{r:.0} MB")),
                s.steal_pct.map_or("n/a".into(), |p| format!("{p:.0}%")),
            );
            last = r;
            samples.push(s);
        }
    });
    Sampler { stop, task }
}
