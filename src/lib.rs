//! Mattermost Calls server side: the plugin backend, a Mattermost-style host that
//! runs it, and what they share.

pub mod proto {
    tonic::include_proto!("mattermost.calls.v1");
}

pub mod db;
pub mod handshake;
pub mod host;
pub mod ids;
pub mod log_limit;
pub mod logging;
pub mod lt;
pub mod nodelay;
pub mod plugin;
pub mod rate;
pub mod rtc_metrics;
pub mod rtcd;
pub mod sfu;
