//! `cpu_load` for `GET /system` (reference rtcd.md §1.2): every second, the idle
//! CPU-seconds since the last sample from /proc/stat; `cpu_load = elapsed / idle`
//! (about 1 / idle cores: lower is less loaded), 0 until two samples exist.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The kernel's USER_HZ: /proc/stat counts in 1/100 s on Linux.
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Clone, Default)]
pub struct CpuLoad(Arc<AtomicU64>);

impl CpuLoad {
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed)
    }

    /// Samples /proc/stat every second for as long as the runtime lives.
    pub fn spawn_sampler(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut last: Option<(Instant, f64)> = None;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(idle) = idle_seconds() else { continue };
                let now = Instant::now();
                if let Some((t, i)) = last {
                    me.set(load(now.duration_since(t).as_secs_f64(), idle - i));
                }
                last = Some((now, idle));
            }
        });
    }
}

/// 1 / (idle seconds per elapsed second); +Inf when nothing was idle.
pub fn load(elapsed: f64, idle_delta: f64) -> f64 {
    if idle_delta <= 0.0 {
        return f64::INFINITY;
    }
    1.0 / (idle_delta / elapsed)
}

/// Aggregate idle + iowait seconds of all CPUs.
fn idle_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some((f.get(3)? + f.get(4).copied().unwrap_or(0.0)) / TICKS_PER_SEC)
}

#[cfg(test)]
mod tests {
    #[test]
    fn load_is_one_over_idle_cores() {
        assert_eq!(super::load(1.0, 2.0), 0.5);
        assert_eq!(super::load(1.0, 0.5), 2.0);
        assert!(super::load(1.0, 0.0).is_infinite());
        assert!(super::idle_seconds().is_some());
    }
}
