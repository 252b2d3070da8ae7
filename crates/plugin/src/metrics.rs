//! The plugin's Prometheus registry, with upstream's metric names
//! (namespace `mattermost_plugin_calls`, reference calls-plugin.md §7).

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

const NS: &str = "mattermost_plugin_calls";

#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

pub struct Inner {
    pub registry: Registry,
    pub websocket_connections: IntGauge,
    pub websocket_events: IntCounterVec,
    pub cluster_events: IntCounterVec,
    pub mutex_grab_time: HistogramVec,
    pub mutex_locked_time: HistogramVec,
    pub mutex_lock_retries: IntCounterVec,
    pub app_handlers_time: HistogramVec,
    pub store_ops: IntCounterVec,
    pub store_methods_time: HistogramVec,
    pub live_captions_new_audio_len: HistogramVec,
    pub live_captions_window_dropped: IntCounter,
    pub live_captions_transcriber_buf_full: IntCounter,
    pub live_captions_pkt_payload_ch_buf_full: IntCounter,
    pub client_ice_candidate_pairs: IntCounterVec,
    pub daily_calls: GaugeVec,
    pub monthly_calls: GaugeVec,
    pub calls_by_channel_type: GaugeVec,
    pub aggregate_stats: GaugeVec,
    /// The integrated SFU's `rtc_*` family.
    pub rtc: calls_rtc::metrics::RtcMetrics,
    _keep: Vec<Gauge>,
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NS)
}

fn hopts(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).namespace(NS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        // Names and labels are constants of this file: registration cannot fail except
        // on a duplicate, which would be a programming error caught by the unit test.
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definition");
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric registration");
                m
            }};
        }
        let inner = Inner {
            websocket_connections: reg!(IntGauge::with_opts(opts(
                "websocket_connections_total",
                "The total number of active WebSocket connections."
            ))),
            websocket_events: reg!(IntCounterVec::new(
                opts(
                    "websocket_events_total",
                    "The total number of WebSocket events."
                ),
                &["direction", "type"]
            )),
            cluster_events: reg!(IntCounterVec::new(
                opts(
                    "cluster_events_total",
                    "The total number of cluster events."
                ),
                &["type"]
            )),
            mutex_grab_time: reg!(HistogramVec::new(
                hopts("cluster_mutex_grab_time", "Time to grab the cluster mutex."),
                &["group"]
            )),
            mutex_locked_time: reg!(HistogramVec::new(
                hopts(
                    "cluster_mutex_locked_time",
                    "Time the cluster mutex was held."
                ),
                &["group"]
            )),
            mutex_lock_retries: reg!(IntCounterVec::new(
                opts(
                    "cluster_mutex_lock_retries_total",
                    "Cluster mutex lock retries."
                ),
                &["group"]
            )),
            app_handlers_time: reg!(HistogramVec::new(
                hopts("app_handlers_time", "Time spent in app handlers."),
                &["handler"]
            )),
            store_ops: reg!(IntCounterVec::new(
                opts("store_ops_total", "The total number of store operations."),
                &["type"]
            )),
            store_methods_time: reg!(HistogramVec::new(
                hopts("store_methods_time", "Time spent in store methods."),
                &["method"]
            )),
            live_captions_new_audio_len: reg!(HistogramVec::new(
                hopts(
                    "jobs_live_captions_new_audio_len_ms",
                    "Length of new audio per live captions window."
                )
                .buckets(vec![2000.0, 4000.0, 6000.0, 8000.0]),
                &[]
            )),
            live_captions_window_dropped: reg!(IntCounter::with_opts(opts(
                "jobs_live_captions_window_dropped",
                "Live captions windows dropped."
            ))),
            live_captions_transcriber_buf_full: reg!(IntCounter::with_opts(opts(
                "jobs_live_captions_transcriber_buf_full",
                "Live captions transcriber buffer full."
            ))),
            live_captions_pkt_payload_ch_buf_full: reg!(IntCounter::with_opts(opts(
                "jobs_live_captions_pktPayloadCh_buf_full",
                "Live captions packet payload channel full."
            ))),
            client_ice_candidate_pairs: reg!(IntCounterVec::new(
                opts(
                    "client_ice_candidate_pairs_total",
                    "ICE candidate pairs reported by clients."
                ),
                &[
                    "state",
                    "local_type",
                    "local_protocol",
                    "remote_type",
                    "remote_protocol"
                ]
            )),
            daily_calls: reg!(GaugeVec::new(
                opts("daily_calls_total", "Calls per day."),
                &["date"]
            )),
            monthly_calls: reg!(GaugeVec::new(
                opts("monthly_calls_total", "Calls per month."),
                &["month"]
            )),
            calls_by_channel_type: reg!(GaugeVec::new(
                opts("calls_by_channel_type", "Calls by channel type."),
                &["type"]
            )),
            aggregate_stats: reg!(GaugeVec::new(
                opts("aggregate_stats", "Aggregate call statistics."),
                &["stat"]
            )),
            rtc: calls_rtc::metrics::RtcMetrics::register(&registry, NS)
                .expect("rtc metric registration"),
            _keep: Vec::new(),
            registry: registry.clone(),
        };
        #[cfg(target_os = "linux")]
        {
            let pc =
                prometheus::process_collector::ProcessCollector::new(std::process::id() as i32, NS);
            let _ = registry.register(Box::new(pc));
        }
        Metrics(Arc::new(inner))
    }

    pub fn store_op(&self, method: &str, took: Duration) {
        self.store_ops.with_label_values(&[method]).inc();
        self.store_methods_time
            .with_label_values(&[method])
            .observe(took.as_secs_f64());
    }

    pub fn ws_event(&self, direction: &str, event_type: &str) {
        self.websocket_events
            .with_label_values(&[direction, event_type])
            .inc();
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> (String, Vec<u8>) {
        let enc = TextEncoder::new();
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which we never build.
        let _ = enc.encode(&self.registry.gather(), &mut buf);
        (enc.format_type().to_string(), buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_upstream_names() {
        let m = Metrics::new();
        m.websocket_connections.set(2);
        m.ws_event("in", "join");
        m.store_op("GetCall", Duration::from_millis(1));
        m.mutex_grab_time
            .with_label_values(&["mutex_call"])
            .observe(0.01);
        m.app_handlers_time
            .with_label_values(&["addUserSession"])
            .observe(0.01);
        let (_, body) = m.render();
        let text = String::from_utf8(body).unwrap();
        for name in [
            "mattermost_plugin_calls_websocket_connections_total 2",
            "mattermost_plugin_calls_websocket_events_total{direction=\"in\",type=\"join\"} 1",
            "mattermost_plugin_calls_store_ops_total{type=\"GetCall\"} 1",
            "mattermost_plugin_calls_cluster_mutex_grab_time_bucket",
            "mattermost_plugin_calls_app_handlers_time_bucket",
            "mattermost_plugin_calls_process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }
}
