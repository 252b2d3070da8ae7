//! The Calls websocket actions' data as the plugin parses it: join, reconnect and
//! call_state data, and every queued action (sdp with zlib, ice, react, screen,
//! video, metric). The first byte picks the action.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmcalls::plugin::actions::parse_queued;
use mmcalls::plugin::join::{JoinData, ReconnectData};
use mmcalls::plugin::signaling::QUEUED_TYPES as QUEUED;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind as usize % (QUEUED.len() + 2) {
        0 => {
            let _ = rmp_decode::<JoinData>(rest);
        }
        1 => {
            let _ = rmp_decode::<ReconnectData>(rest);
        }
        n => {
            let _ = parse_queued(QUEUED[n - 2], rest);
        }
    }
});

fn rmp_decode<T: for<'de> serde::Deserialize<'de>>(b: &[u8]) -> Option<T> {
    rmp_serde::from_slice(b).ok()
}
