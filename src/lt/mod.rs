//! `calls-lt`, the load-test tool: simulated participants joining calls through the
//! host's websocket (the plugin decides integrated SFU or rtcd), speaking Opus and
//! sharing VP8 from files, counting what they receive; a report at the end.

pub mod media_files;
pub mod participant;
pub mod report;
pub mod setup;
