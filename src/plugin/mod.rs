//! The Calls plugin backend (the `calls-plugin` binary's logic).

pub mod actions;
pub mod activate;
pub mod api;
pub mod app;
pub mod calls;
pub mod config;
pub mod hooks;
pub mod host_api;
pub mod join;
pub mod media;
pub mod metrics;
pub mod model;
pub mod mutex;
pub mod rtcd_client;
pub mod rtcd_pool;
pub mod sessions;
pub mod signaling;
pub mod stats;
pub mod store;
