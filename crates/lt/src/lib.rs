//! `calls-lt`, the load-test tool: simulated participants joining calls through the
//! host's websocket (the plugin decides integrated SFU or rtcd), speaking Opus and
//! sharing VP8 from files, counting what they receive; a report at the end.
//!
//! Layout: [`setup`] (users, team and channels through `/api/v4`), [`participant`]
//! (one simulated participant: Calls websocket and str0m peer), [`media_files`] (Ogg
//! and IVF readers), [`report`] (join milestones, CPU, the table and the plot).

pub mod media_files;
pub mod participant;
pub mod report;
pub mod setup;
