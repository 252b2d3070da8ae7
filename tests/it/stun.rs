//! STUN discovery against a real STUN server (Debian's coturn in STUN-only mode).

use std::net::IpAddr;
use std::time::Duration;

use calls_rtc::stun_discovery::{discover, DiscoveryError};

#[tokio::test]
async fn the_rtc_socket_learns_its_mapped_address_from_coturn() {
    let port = crate::common::free_port_on("127.0.0.1");
    let _server = crate::common::coturn::Coturn::stun_only("127.0.0.1", port);
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
