//! Plugin bundle upload: tar/gzip unpacking and the manifest, as the host installs
//! it. Refused or not, nothing may land outside the plugins dir, and a refused bundle
//! leaves nothing at all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use calls_host::plugins::{install_bundle, BundleLimits};

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let limits = BundleLimits {
        max_bytes: 1 << 20,
        max_entries: 64,
    };
    let installed = install_bundle(&plugins, data, limits);
    let outside: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n != "plugins")
        .collect();
    assert!(outside.is_empty(), "written outside: {outside:?}");
    let left = std::fs::read_dir(&plugins).unwrap().count();
    match installed {
        Ok(m) => assert!(plugins.join(&m.id).join("plugin.json").is_file()),
        Err(_) => assert_eq!(left, 0, "a refused bundle left files"),
    }
});
