//! STUN discovery against a real STUN server (Debian's coturn in STUN-only mode).

mod common;

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mmcalls::sfu::stun_discovery::{discover, DiscoveryError};

struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn coturn(port: u16) -> Coturn {
    assert!(
        std::path::Path::new("/usr/bin/turnserver").exists(),
        "coturn is required (apt-get install coturn; .ci/run installs it)"
    );
    let child = Command::new("/usr/bin/turnserver")
        .args([
            "--stun-only",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--simple-log",
        ])
        .args(["--listening-ip", "127.0.0.1", "--listening-port"])
        .arg(port.to_string())
        .args(["--log-file", "stdout"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver");
    Coturn(child)
}

#[tokio::test]
async fn the_rtc_socket_learns_its_mapped_address_from_coturn() {
    let port = common::free_port_on("127.0.0.1");
    let _server = coturn(port);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // coturn needs a moment to bind; discovery retries within its limit.
    let mut result = Err(DiscoveryError::Io(std::io::Error::other("not tried")));
    for _ in 0..10 {
        result = discover(
            &sock,
            &format!("127.0.0.1:{port}"),
            Duration::from_millis(600),
        )
        .await;
        if result.is_ok() {
            break;
        }
    }
    assert_eq!(result.unwrap(), "127.0.0.1".parse::<IpAddr>().unwrap());
}
