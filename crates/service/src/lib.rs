//! What every server process of the project shares, none of it Calls-specific:
//!
//! - [`logging`]: the tracing subscriber (text or JSON, `RUST_LOG`); [`logger`] the
//!   `[logger]` settings of rtcd and the job service.
//! - [`log_limit`]: one log line per kind of bad input, not one per frame.
//! - [`rate`]: token buckets for request and login limits.
//! - [`nodelay`]: TCP_NODELAY on every accepted connection.
//! - [`service_main`]: a standalone service's start (config, logger, runtime, exit codes).
//! - [`client_auth`]: registered API clients, admin key and bearer tokens (rtcd's
//!   and the job service's); [`client_api`] their `/register`, `/unregister`,
//!   `/login` routes.

pub mod client_api;
pub mod client_auth;
pub mod log_limit;
pub mod logger;
pub mod logging;
pub mod nodelay;
pub mod rate;
pub mod service_main;
