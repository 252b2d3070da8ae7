//! Debian's coturn as a real third-party server: STUN-only for address discovery, or
//! a TURN relay with coturn's REST credentials (`use-auth-secret`), as the seeds
//! recommend for clients behind strict firewalls.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Coturn {
    child: Child,
    pub ip: String,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coturn {
    /// STUN only: answers Binding Requests, allocates nothing.
    pub fn stun_only(ip: &str, port: u16) -> Coturn {
        Coturn::start(ip, port, &["--stun-only"])
    }

    /// A TURN relay on `ip` whose credentials are minted from `secret` (username
    /// `<expiry>:<name>`, password HMAC-SHA1 of it): coturn refuses an expired one.
    /// Relaying to loopback peers is off by default in coturn; the SFU here is one.
    pub fn relay(ip: &str, port: u16, secret: &str) -> Coturn {
        let relay = Coturn::start(
            ip,
            port,
            &[
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=calls.test",
                &format!("--relay-ip={ip}"),
                "--allow-loopback-peers",
                "--fingerprint",
            ],
        );
        relay.wait_listening();
        relay
    }

    fn start(ip: &str, port: u16, mode: &[&str]) -> Coturn {
        assert!(
            std::path::Path::new("/usr/bin/turnserver").exists(),
            "coturn is required (apt-get install coturn; .ci/run installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("/usr/bin/turnserver")
            .args(mode)
            .args(["--no-cli", "--no-tls", "--no-dtls", "--simple-log"])
            .args(["--listening-ip", ip, "--listening-port"])
            .arg(port.to_string())
            .arg("--pidfile")
            .arg(dir.path().join("turnserver.pid"))
            .arg("--log-file")
            .arg(dir.path().join("turnserver.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver");
        Coturn {
            child,
            ip: ip.to_string(),
            port,
            _dir: dir,
        }
    }

    /// Until coturn's UDP listener is bound (binding the port ourselves fails then).
    fn wait_listening(&self) {
        for _ in 0..100 {
            if std::net::UdpSocket::bind((self.ip.as_str(), self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("coturn did not listen on port {}", self.port);
    }
}
