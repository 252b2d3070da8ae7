//! The SFU's I/O shell: everything between the sans-IO core (`calls-sfu`) and the
//! operating system. The core never sees a socket or a clock; this crate owns both.
//!
//! - [`addrs`]: bind and advertised addresses from the settings (plugin and rtcd).
//! - [`shell`]: [`shell::RtcServer`], the handle the plugin and rtcd hold (commands
//!   in, notes out), the UDP socket layer and the core's thread and loop.
//! - [`tcp`]: ICE-TCP (RFC 4571 framing) on the TCP fallback port.
//! - [`stun_discovery`]: the public address through a STUN server.
//! - [`metrics`]: the core's observations as Prometheus metrics.

pub mod addrs;
pub mod metrics;
pub mod shell;
pub mod stun_discovery;
pub mod tcp;
