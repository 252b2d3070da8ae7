//! The Calls websocket actions' data as the plugin parses it, for every action: join,
//! reconnect and call_state data, and every queued action (sdp with zlib, ice, react,
//! screen, video, metric). The first byte picks the action.
#![no_main]

use calls_plugin::client_message::{ActionKind, ClientAction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let kind = ActionKind::ALL[kind as usize % ActionKind::ALL.len()];
    let _ = ClientAction::parse(kind, rest);
});
