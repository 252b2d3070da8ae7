//! The Calls plugin backend (the `calls-plugin` binary's logic): what Mattermost's
//! Calls plugin does on the server, behind the host's gRPC API.
//!
//! Layout, from the edge inwards:
//! - [`hooks`]: the `Plugin` gRPC service the host calls (HTTP, websocket events,
//!   configuration changes, activation).
//! - [`api`]: the `/plugins/com.mattermost.calls` REST routes, [`bot_api`] the ones
//!   the recorder calls as the bot, [`responses`] their shapes; [`host_controls`]
//!   what a call's host does to others' sessions.
//! - Recordings: [`recording`] (jobs, their states and posts), [`job_service`] (the
//!   calls-offloader API client).
//! - [`signaling`]: websocket actions as they come in; [`client_message`] parses them,
//!   once, into typed actions.
//! - The session lifecycle: [`join`] (join, reconnect), [`session_task`] (one task
//!   per session runs its [`actions`] in order), [`leave`] (leave, end, forced
//!   cleanup), [`media_events`] (what the media side reports, acted on).
//! - [`media`]: where calls' media runs (the integrated SFU, another node's, or
//!   rtcd) and its lifecycle, behind one interface.
//! - The cluster: [`cluster_message`] (upstream's messages between nodes),
//!   [`cluster_events`] (those received, acted on), [`peers`] (sessions whose media
//!   is here and whose websocket is on another node), [`node_failure`] (the calls of
//!   a node that died, ended).
//! - State and rules: [`app`] (the shared state and publishing), [`calls`] (pure call
//!   rules), [`model`], [`store`] (the database), [`sessions`] (this node's
//!   sessions), [`call_lock`] over the cluster [`mutex`], [`rate_limit`].
//! - The host and the process: [`host_api`] (the host's gRPC API), [`activate`],
//!   [`config`], [`metrics`], [`stats`].
//!
//! Dependencies between these modules go one way (`scripts/module-cycles.py` checks
//! it): the media component knows nothing of sessions' lifecycle, and the session
//! flows name no media backend.

pub mod actions;
pub mod activate;
pub mod api;
pub mod app;
pub mod bot_api;
pub mod call_lock;
pub mod calls;
pub mod client_message;
pub mod cluster_events;
pub mod cluster_message;
pub mod config;
pub mod hooks;
pub mod host_api;
pub mod host_controls;
pub mod job_service;
pub mod join;
pub mod leave;
pub mod media;
pub mod media_events;
pub mod metrics;
pub mod model;
pub mod mutex;
pub mod node_failure;
pub mod peers;
pub mod rate_limit;
pub mod recording;
pub mod responses;
pub mod session_task;
pub mod sessions;
pub mod signaling;
pub mod stats;
pub mod store;

#[cfg(test)]
mod manifest_tests;
