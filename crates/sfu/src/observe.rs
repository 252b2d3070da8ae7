//! What the SFU core reports for metrics, without knowing Prometheus: the shell's
//! owner plugs in an implementation (the plugin's `rtc_*` family, rtcd's `rtcd_rtc_*`).
//! Every method has a no-op default, which is what tests and the benchmark use.

use std::time::Instant;

/// Labels follow upstream: `group` is the rtcd client id ("default" in the plugin),
/// `direction` "in" or "out"; track gauges are typed by MIME type, write times and
/// RTP counts by track type.
pub trait RtcObserver: Send {
    /// Sessions of a group went up (+1) or down (-1).
    fn session(&self, _group: &str, _delta: i64) {}
    /// A peer-connection state change ("connected", "disconnected", "closed", "failed").
    fn conn_state(&self, _state: &str) {}
    /// An error of a kind ("signaling", "ice", "rtp", "track", "signaling_lock_timeout").
    fn error(&self, _group: &str, _kind: &str) {}
    fn tracks(&self, _group: &str, _direction: &str, _kind: &str, _delta: i64) {}
    /// RTP packets and bytes since the last report.
    fn rtp(&self, _group: &str, _direction: &str, _kind: &str, _packets: u64, _bytes: u64) {}
    /// Time one sampled forwarded write took, in seconds.
    fn track_write_time(&self, _group: &str, _kind: &str, _secs: f64) {}
    /// From session start to a connected peer connection, in seconds.
    fn connection_time(&self, _group: &str, _secs: f64) {}
    fn dc_open_time(&self, _group: &str, _secs: f64) {}
    /// Client-reported stats over the data channel ("loss_rate", "rtt", "jitter").
    fn client_stat(&self, _group: &str, _stat: &str, _value: f64) {}
    /// A clock for timing samples; None (the default) measures nothing, so the core
    /// stays deterministic under simulated time.
    fn clock(&self) -> Option<Instant> {
        None
    }
}

/// Reports nothing.
pub struct NoObserver;

impl RtcObserver for NoObserver {}

/// Per-session RTP counts by direction and track type, flushed periodically so the
/// per-packet path only adds integers.
#[derive(Default)]
pub struct RtpCounts {
    /// [direction][type]: (packets, bytes).
    counts: [[(u64, u64); 4]; 2],
}

pub const DIR_IN: usize = 0;
pub const DIR_OUT: usize = 1;

impl RtpCounts {
    pub fn add(&mut self, dir: usize, kind: usize, bytes: usize) {
        let c = &mut self.counts[dir][kind];
        c.0 += 1;
        c.1 += bytes as u64;
    }

    pub fn flush(&mut self, group: &str, obs: &dyn RtcObserver, kinds: [&str; 4]) {
        for (d, dir) in ["in", "out"].iter().enumerate() {
            for (k, kind) in kinds.iter().enumerate() {
                let (p, b) = std::mem::take(&mut self.counts[d][k]);
                if p > 0 {
                    obs.rtp(group, dir, kind, p, b);
                }
            }
        }
    }
}
