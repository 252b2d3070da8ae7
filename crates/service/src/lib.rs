//! What every server process of the project shares, none of it Calls-specific:
//!
//! - [`logging`]: the tracing subscriber (text or JSON, `RUST_LOG`).
//! - [`log_limit`]: one log line per kind of bad input, not one per frame.
//! - [`rate`]: token buckets for request and login limits.
//! - [`nodelay`]: TCP_NODELAY on every accepted connection.

pub mod log_limit;
pub mod logging;
pub mod nodelay;
pub mod rate;
