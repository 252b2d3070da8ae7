//! What the processes of a Calls deployment say to each other, shared by the plugin,
//! the host and rtcd so that each side encodes and decodes it in one place.
//!
//! - [`proto`]: the gRPC contract between host and plugin (`proto/`, compiled at
//!   build time by protox, no system `protoc`).
//! - [`handshake`]: the go-plugin style line the plugin prints when it starts.
//! - [`http`]: header names the host and the plugin agree on.
//! - [`rtcd`]: the plugin ↔ rtcd websocket envelopes (msgpack).
//! - [`ids`]: Mattermost-style ids, tokens and the clock in milliseconds.
//! - [`client`]: the Calls websocket actions as a client sends them (the load tool's
//!   and the recorder's).
//!
//! Nothing here does I/O.

pub mod proto {
    tonic::include_proto!("mattermost.calls.v1");
}

pub mod client;
pub mod handshake;
pub mod http;
pub mod ids;
pub mod rtcd;
