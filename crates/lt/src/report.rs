//! What a load run measured: samples over time (SFU CPU and RSS from /proc, received
//! packet rate), per-participant outcomes, a JSON report, a table and a PNG plot.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::participant::Outcome;

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    /// CPU of the sampled process (user + system), % of one core.
    pub cpu_pct: Option<f64>,
    /// The user-space part of `cpu_pct`.
    pub cpu_user_pct: Option<f64>,
    pub rss_mb: Option<f64>,
    pub rx_packets_per_s: f64,
    pub rx_mbit_per_s: f64,
    /// What the load tool's participants sent to the SFU and received from it, on
    /// the wire (UDP payloads): the SFU's bandwidth in and out.
    pub sfu_in_mbit_per_s: f64,
    pub sfu_out_mbit_per_s: f64,
    pub joined: u64,
    /// CPU of the load tool itself (user + system), % of one core: near 100 % with
    /// one core for it, its own delays show in the latencies.
    pub lt_cpu_pct: Option<f64>,
    /// The machine's CPU time a hypervisor gave to other guests (steal), % of all of
    /// its CPU time: where it is high, the run's CPU and latency figures are suspect.
    pub steal_pct: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub calls: usize,
    pub participants_per_call: usize,
    pub unmuted_per_call: usize,
    pub sharers_per_call: usize,
    pub duration_s: f64,
    pub joins_ok: usize,
    pub joins_failed: usize,
    pub errors: Vec<String>,
    pub first_media_p50_ms: Option<f64>,
    pub first_media_p99_ms: Option<f64>,
    /// The join's milestones (see `participant::Stages`), p50 and p99 each.
    pub join_stages: Vec<StageLatency>,
    pub sent_audio: u64,
    pub sent_video: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub sfu_cpu_avg_pct: Option<f64>,
    pub sfu_rss_max_mb: Option<f64>,
    /// The SFU's bandwidth in / out over the last half of the run (steady state).
    pub sfu_in_mbit_per_s: Option<f64>,
    pub sfu_out_mbit_per_s: Option<f64>,
    pub lt_cpu_avg_pct: Option<f64>,
    pub steal_avg_pct: Option<f64>,
    pub steal_max_pct: Option<f64>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct StageLatency {
    pub stage: &'static str,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// p50 and p99 of one milestone over the participants that reached it.
fn stage(
    ok: &[&Outcome],
    stage: &'static str,
    f: impl Fn(&Outcome) -> Option<f64>,
) -> StageLatency {
    let mut v: Vec<f64> = ok.iter().filter_map(|o| f(o)).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    StageLatency {
        stage,
        p50_ms: percentile(&v, 0.5),
        p99_ms: percentile(&v, 0.99),
    }
}

/// What /proc says about a process at one instant.
#[derive(Debug, Clone, Copy)]
pub struct ProcUsage {
    /// CPU seconds spent in user space.
    pub user_s: f64,
    /// CPU seconds spent in the kernel on the process's behalf.
    pub sys_s: f64,
    pub rss_mb: f64,
}

/// CPU seconds (user, system) and RSS of a process, from /proc.
pub fn proc_usage(pid: u32) -> Option<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime = f.get(11)?.parse::<f64>().ok()?;
    let stime = f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    // USER_HZ is 100 on Linux.
    Some(ProcUsage {
        user_s: utime / 100.0,
        sys_s: stime / 100.0,
        rss_mb: rss_kb / 1024.0,
    })
}

/// The machine's CPU time so far (`/proc/stat`, all CPUs, in ticks): all of it and
/// the part stolen by the hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineTicks {
    pub total: u64,
    pub steal: u64,
}

impl MachineTicks {
    pub fn read() -> Option<MachineTicks> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The aggregate `cpu` line: user nice system idle iowait irq softirq steal, then
    /// guest times, which are already counted in user and nice.
    fn parse(stat: &str) -> Option<MachineTicks> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        Some(MachineTicks {
            total: f.iter().sum(),
            steal: *f.get(7)?,
        })
    }

    /// Steal between two readings, % of the machine's CPU time in between.
    pub fn steal_pct_since(&self, before: &MachineTicks) -> Option<f64> {
        let total = self.total.checked_sub(before.total).filter(|&t| t > 0)?;
        let steal = self.steal.checked_sub(before.steal)?;
        Some(steal as f64 * 100.0 / total as f64)
    }
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = v.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    (n > 0).then(|| sum / n as f64)
}

/// The last half of the run's samples: the steady state, after the joins.
fn steady(samples: &[Sample]) -> &[Sample] {
    &samples[samples.len() / 2..]
}

pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

impl Report {
    pub fn build(
        shape: (usize, usize, usize, usize),
        duration: Duration,
        outcomes: &[Outcome],
        sent: (u64, u64),
        samples: Vec<Sample>,
    ) -> Report {
        let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.ok).collect();
        let first_media = stage(&ok, "first media", |o| o.first_media_ms);
        let join_stages = vec![
            stage(&ok, "join event", |o| o.stages.joined_ms),
            stage(&ok, "SDP answer", |o| o.stages.answered_ms),
            stage(&ok, "ICE + DTLS up", |o| o.stages.connected_ms),
            stage(&ok, "server offer", |o| o.stages.server_offer_ms),
        ];
        let received: u64 = ok.iter().map(|o| o.received).sum();
        let lost: u64 = ok.iter().map(|o| o.lost).sum();
        let expected: u64 = ok.iter().map(|o| o.expected).sum();
        let mut errors: Vec<String> = outcomes.iter().filter_map(|o| o.error.clone()).collect();
        errors.sort();
        errors.dedup();
        Report {
            calls: shape.0,
            participants_per_call: shape.1,
            unmuted_per_call: shape.2,
            sharers_per_call: shape.3,
            duration_s: duration.as_secs_f64(),
            joins_ok: ok.len(),
            joins_failed: outcomes.len() - ok.len(),
            errors,
            first_media_p50_ms: first_media.p50_ms,
            first_media_p99_ms: first_media.p99_ms,
            join_stages,
            sent_audio: sent.0,
            sent_video: sent.1,
            received,
            lost,
            loss_pct: if expected > 0 {
                lost as f64 * 100.0 / expected as f64
            } else {
                0.0
            },
            sfu_cpu_avg_pct: mean(samples.iter().filter_map(|s| s.cpu_pct)),
            sfu_rss_max_mb: samples.iter().filter_map(|s| s.rss_mb).reduce(f64::max),
            sfu_in_mbit_per_s: mean(steady(&samples).iter().map(|s| s.sfu_in_mbit_per_s)),
            sfu_out_mbit_per_s: mean(steady(&samples).iter().map(|s| s.sfu_out_mbit_per_s)),
            lt_cpu_avg_pct: mean(samples.iter().filter_map(|s| s.lt_cpu_pct)),
            steal_avg_pct: mean(samples.iter().filter_map(|s| s.steal_pct)),
            steal_max_pct: samples.iter().filter_map(|s| s.steal_pct).reduce(f64::max),
            samples,
        }
    }

    pub fn table(&self) -> String {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |v| format!("{v:.1}{unit}"));
        let ms = |p50: Option<f64>, p99: Option<f64>| {
            format!("{} / {}", opt(p50, " ms"), opt(p99, " ms"))
        };
        let mut rows: Vec<(String, String)> = vec![
            (
                "shape".into(),
                format!(
                    "{} calls x {} participants, {} unmuted, {} sharing",
                    self.calls,
                    self.participants_per_call,
                    self.unmuted_per_call,
                    self.sharers_per_call
                ),
            ),
            ("duration".into(), format!("{:.0} s", self.duration_s)),
            (
                "joins ok / failed".into(),
                format!("{} / {}", self.joins_ok, self.joins_failed),
            ),
            (
                "join -> first media p50 / p99".into(),
                ms(self.first_media_p50_ms, self.first_media_p99_ms),
            ),
        ];
        // The join's milestones, right after the total they lead up to.
        for s in &self.join_stages {
            rows.push((format!("  {}", s.stage), ms(s.p50_ms, s.p99_ms)));
        }
        rows.extend([
            (
                "packets sent (audio / video frames)".into(),
                format!("{} / {}", self.sent_audio, self.sent_video),
            ),
            ("packets received".into(), self.received.to_string()),
            (
                "lost".into(),
                format!("{} ({:.2} %)", self.lost, self.loss_pct),
            ),
            (
                "SFU CPU avg".into(),
                opt(self.sfu_cpu_avg_pct, " % of a core"),
            ),
            ("SFU RSS max".into(), opt(self.sfu_rss_max_mb, " MB")),
            (
                "SFU bandwidth in / out (steady)".into(),
                format!(
                    "{} / {}",
                    opt(self.sfu_in_mbit_per_s, " Mbit/s"),
                    opt(self.sfu_out_mbit_per_s, " Mbit/s")
                ),
            ),
            (
                "load tool CPU avg".into(),
                opt(self.lt_cpu_avg_pct, " % of a core"),
            ),
            (
                "VM steal avg / max".into(),
                format!(
                    "{} / {} of the machine's CPU time",
                    opt(self.steal_avg_pct, " %"),
                    opt(self.steal_max_pct, " %")
                ),
            ),
        ]);
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:<w$}  {v}\n"));
        }
        for e in &self.errors {
            out.push_str(&format!("error: {e}\n"));
        }
        out
    }

    /// CPU % and received Mbit/s over time, two panels, as PNG. Text needs a TrueType
    /// font (Debian's fonts-dejavu-core); without one the panels have no labels.
    pub fn plot(&self, path: &Path) -> Result<(), String> {
        use plotters::prelude::*;
        let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").ok();
        let text = match font {
            Some(f) => {
                // plotters keeps the font for the process: leaked once.
                let f: &'static [u8] = Box::leak(f.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, f).is_ok()
            }
            None => false,
        };
        let root = BitMapBackend::new(path, (1000, 700)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(350);
        let t_max = self.samples.last().map_or(1.0, |s| s.t_s.max(1.0));
        let series = [
            (
                top,
                "SFU CPU (% of one core)",
                self.samples
                    .iter()
                    .map(|s| (s.t_s, s.cpu_pct.unwrap_or(0.0)))
                    .collect::<Vec<_>>(),
                RED,
            ),
            (
                bottom,
                "received (Mbit/s)",
                self.samples
                    .iter()
                    .map(|s| (s.t_s, s.rx_mbit_per_s))
                    .collect::<Vec<_>>(),
                BLUE,
            ),
        ];
        for (area, title, points, color) in series {
            let y_max = points.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
            let mut b = ChartBuilder::on(&area);
            b.margin(10);
            if text {
                b.caption(title, ("sans-serif", 20))
                    .x_label_area_size(30)
                    .y_label_area_size(50);
            }
            let mut chart = b
                .build_cartesian_2d(0.0..t_max, 0.0..y_max)
                .map_err(|e| e.to_string())?;
            let mut mesh = chart.configure_mesh();
            if text {
                mesh.x_desc("seconds");
            } else {
                mesh.x_labels(0).y_labels(0);
            }
            mesh.draw().map_err(|e| e.to_string())?;
            chart
                .draw_series(LineSeries::new(points, &color))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::MachineTicks;

    #[test]
    fn steal_is_the_eighth_field_of_the_cpu_line_over_all_eight() {
        let at = |user, idle, steal| {
            MachineTicks::parse(&format!(
                "cpu  {user} 0 50 {idle} 5 0 5 {steal} 400 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\n"
            ))
            .expect("parses")
        };
        let t0 = at(1000, 2000, 40);
        assert_eq!(
            t0,
            MachineTicks {
                total: 3100,
                steal: 40
            }
        );
        // 100 ticks go by: 60 user, 15 idle, 25 stolen (guest time is not added twice).
        let t1 = at(1060, 2015, 65);
        assert_eq!(t1.steal_pct_since(&t0), Some(25.0));
        // No time between the readings, or a counter that went back: no figure.
        assert_eq!(t0.steal_pct_since(&t0), None);
        assert_eq!(t0.steal_pct_since(&t1), None);
        assert!(MachineTicks::parse("cpu  1 2 x 4 5 6 7 8\n").is_none());
        assert!(MachineTicks::parse("cpu  1 2 3\n").is_none());
    }
}
