//! The `<namespace>_rtc_*` Prometheus family (upstream names: the plugin's
//! `mattermost_plugin_calls_rtc_*`, rtcd's `rtcd_rtc_*`), fed by the SFU core through
//! its [`RtcObserver`] interface.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use calls_sfu::observe::RtcObserver;

/// Upstream's latency buckets (seconds).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
];
/// Upstream's loss-rate buckets (fraction).
pub const LOSS_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0,
];

#[derive(Clone)]
pub struct RtcMetrics {
    sessions: IntGaugeVec,
    conn_states: IntCounterVec,
    errors: IntCounterVec,
    tracks: IntGaugeVec,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    writes_time: HistogramVec,
    connection_time: HistogramVec,
    dc_open_time: HistogramVec,
    client_loss: HistogramVec,
    client_rtt: HistogramVec,
    client_jitter: HistogramVec,
}

impl RtcMetrics {
    /// Registers the family under `namespace` (names and labels are constants here, so
    /// only a second registration in the same registry can fail).
    pub fn register(registry: &Registry, namespace: &str) -> prometheus::Result<RtcMetrics> {
        let o =
            |name: &str, help: &str| Opts::new(name, help).namespace(namespace).subsystem("rtc");
        let h = |name: &str, help: &str, b: &[f64]| {
            HistogramOpts::new(name, help)
                .namespace(namespace)
                .subsystem("rtc")
                .buckets(b.to_vec())
        };
        let m = RtcMetrics {
            sessions: IntGaugeVec::new(
                o("sessions_total", "Total number of active RTC sessions."),
                &["groupID"],
            )?,
            conn_states: IntCounterVec::new(
                o(
                    "conn_states_total",
                    "Total number of RTC connection state changes.",
                ),
                &["type"],
            )?,
            errors: IntCounterVec::new(
                o("errors_total", "Total number of RTC errors."),
                &["groupID", "type"],
            )?,
            tracks: IntGaugeVec::new(
                o(
                    "rtp_tracks_total",
                    "Total number of incoming/outgoing RTP tracks.",
                ),
                &["groupID", "direction", "type"],
            )?,
            packets: IntCounterVec::new(
                o(
                    "rtp_packets_total",
                    "Total number of sent/received RTP packets.",
                ),
                &["groupID", "direction", "type"],
            )?,
            bytes: IntCounterVec::new(
                o(
                    "rtp_bytes_total",
                    "Total number of sent/received RTP packets in bytes.",
                ),
                &["groupID", "direction", "type"],
            )?,
            writes_time: HistogramVec::new(
                h(
                    "rtp_tracks_writes_time",
                    "Time taken to write to outgoing RTP tracks.",
                    &LATENCY_BUCKETS,
                ),
                &["groupID", "type"],
            )?,
            connection_time: HistogramVec::new(
                h(
                    "connection_time",
                    "Time taken to establish RTC connections.",
                    prometheus::DEFAULT_BUCKETS,
                ),
                &["groupID"],
            )?,
            dc_open_time: HistogramVec::new(
                h(
                    "dc_open_time",
                    "Time taken to open the data channel.",
                    prometheus::DEFAULT_BUCKETS,
                ),
                &["groupID"],
            )?,
            client_loss: HistogramVec::new(
                h(
                    "client_loss_rate",
                    "Client-reported packet loss rate.",
                    &LOSS_BUCKETS,
                ),
                &["groupID"],
            )?,
            client_rtt: HistogramVec::new(
                h(
                    "client_rtt",
                    "Client-reported round-trip time.",
                    &LATENCY_BUCKETS,
                ),
                &["groupID"],
            )?,
            client_jitter: HistogramVec::new(
                h("client_jitter", "Client-reported jitter.", &LATENCY_BUCKETS),
                &["groupID"],
            )?,
        };
        registry.register(Box::new(m.sessions.clone()))?;
        registry.register(Box::new(m.conn_states.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.tracks.clone()))?;
        registry.register(Box::new(m.packets.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.writes_time.clone()))?;
        registry.register(Box::new(m.connection_time.clone()))?;
        registry.register(Box::new(m.dc_open_time.clone()))?;
        registry.register(Box::new(m.client_loss.clone()))?;
        registry.register(Box::new(m.client_rtt.clone()))?;
        registry.register(Box::new(m.client_jitter.clone()))?;
        Ok(m)
    }
}

impl RtcObserver for RtcMetrics {
    fn session(&self, group: &str, delta: i64) {
        self.sessions.with_label_values(&[group]).add(delta);
    }
    fn conn_state(&self, state: &str) {
        self.conn_states.with_label_values(&[state]).inc();
    }
    fn error(&self, group: &str, kind: &str) {
        self.errors.with_label_values(&[group, kind]).inc();
    }
    fn tracks(&self, group: &str, direction: &str, kind: &str, delta: i64) {
        self.tracks
            .with_label_values(&[group, direction, kind])
            .add(delta);
    }
    fn rtp(&self, group: &str, direction: &str, kind: &str, packets: u64, bytes: u64) {
        let l = [group, direction, kind];
        self.packets.with_label_values(&l).inc_by(packets);
        self.bytes.with_label_values(&l).inc_by(bytes);
    }
    fn track_write_time(&self, group: &str, kind: &str, secs: f64) {
        self.writes_time
            .with_label_values(&[group, kind])
            .observe(secs);
    }
    fn connection_time(&self, group: &str, secs: f64) {
        self.connection_time
            .with_label_values(&[group])
            .observe(secs);
    }
    fn dc_open_time(&self, group: &str, secs: f64) {
        self.dc_open_time.with_label_values(&[group]).observe(secs);
    }
    fn client_stat(&self, group: &str, stat: &str, value: f64) {
        let h = match stat {
            "loss_rate" => &self.client_loss,
            "rtt" => &self.client_rtt,
            _ => &self.client_jitter,
        };
        h.with_label_values(&[group]).observe(value);
    }
    fn clock(&self) -> Option<std::time::Instant> {
        Some(std::time::Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_namespace() {
        let r = Registry::new();
        let m = RtcMetrics::register(&r, "rtcd").unwrap();
        m.session("default", 1);
        m.rtp("default", "in", "voice", 3, 300);
        m.tracks("default", "out", "video/VP8", 1);
        let text = String::from_utf8(
            prometheus::TextEncoder::new()
                .encode_to_string(&r.gather())
                .unwrap()
                .into_bytes(),
        )
        .unwrap();
        for want in [
            "rtcd_rtc_sessions_total{groupID=\"default\"} 1",
            "rtcd_rtc_rtp_packets_total{direction=\"in\",groupID=\"default\",type=\"voice\"} 3",
            "rtcd_rtc_rtp_bytes_total{direction=\"in\",groupID=\"default\",type=\"voice\"} 300",
            "rtcd_rtc_rtp_tracks_total{direction=\"out\",groupID=\"default\",type=\"video/VP8\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(
            RtcMetrics::register(&r, "rtcd").is_err(),
            "double registration"
        );
    }
}
