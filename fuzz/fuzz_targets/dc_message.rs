//! Data-channel messages (flat msgpack) and the zlib SDP they carry: a message that
//! decodes re-encodes to one that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use calls_sfu::datachannel::{inflate_sdp, DcMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = DcMessage::decode(data) {
        let again = DcMessage::decode(&m.encode()).expect("an encoded message decodes");
        assert_eq!(format!("{m:?}"), format!("{again:?}"));
    }
    let _ = inflate_sdp(data);
});
