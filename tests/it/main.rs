//! End-to-end tests, one binary: the four executables as real processes on loopback
//! (or in network namespaces the tests create), real SQLite and PostgreSQL, real
//! Chromium, real coturn. Tests of one crate's logic live in that crate.

#[macro_use]
mod common;

mod browser;
mod cluster;
mod control_plane;
mod ctl;
mod host_protocol;
mod lt;
mod media;
mod recording;
mod rtcd;
mod rtcd_mode;
mod stun;
