//! rtcd's TOML configuration, parsed and validated as at start.
#![no_main]

use libfuzzer_sys::fuzz_target;
use calls_rtcd::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Config::from_toml(text) {
        let _ = c.validate();
        let _ = c.port_override_map();
    }
});
