//! The host's websocket frames: JSON text or msgpack binary (the first byte picks
//! which), parsed as the host does, and a custom action's data re-encoded for the
//! plugin, which must decode it back to a map.
#![no_main]

use axum::extract::ws::Message;
use libfuzzer_sys::fuzz_target;
use calls_host::api::websocket::{parse_frame, plugin_action_data};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let msg = if kind & 1 == 0 {
        Message::Text(String::from_utf8_lossy(rest).into_owned().into())
    } else {
        Message::Binary(rest.to_vec().into())
    };
    if let Some(frame) = parse_frame(&msg) {
        let encoded = plugin_action_data(frame.data, "127.0.0.1:1", "")
            .expect("a parsed frame's data always re-encodes");
        let back = rmpv::decode::read_value(&mut &encoded[..]).expect("re-decodes");
        assert!(back.is_map());
    }
});
