//! The plugin's settings JSON as an admin saves it (and as activation loads it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use calls_plugin::config::Config;

fuzz_target!(|data: &[u8]| {
    let _ = Config::check_saved(data);
    if let Ok(c) = Config::load(data, &|_| None) {
        let _ = c.client_ice_servers();
    }
});
