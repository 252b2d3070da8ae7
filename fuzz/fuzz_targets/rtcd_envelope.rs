//! rtcd's plugin-connection envelopes (msgpack): one that decodes re-encodes to the
//! same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use calls_wire::rtcd::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Envelope::decode(data) {
        assert_eq!(Envelope::decode(&e.encode()).expect("re-decodes"), e);
    }
});
