//! Public-address discovery for the RTC port (seed: "STUN discovery of the public
//! address"): one STUN Binding request from the RTC socket itself to the configured
//! STUN server, so the mapped address is the one clients must reach. Only used when
//! no ICE host override is set and a STUN server is configured; an air-gapped setup
//! (no `stun:` server) sends nothing at all.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

/// RFC 5389 magic cookie.
const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const MAPPED_ADDRESS: u16 = 0x0001;

// Only a Binding request and its XOR-MAPPED-ADDRESS are needed. str0m's STUN code
// is for ICE: it rejects replies without MESSAGE-INTEGRITY, which public STUN
// servers do not send; so this small part of RFC 5389 is written out here.

/// A Binding request with no attributes.
pub fn binding_request(trans: [u8; 12]) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[..2].copy_from_slice(&BINDING_REQUEST);
    m[4..8].copy_from_slice(&COOKIE);
    m[8..].copy_from_slice(&trans);
    m
}

/// The mapped address of a Binding success response for `trans`, if it is one.
pub fn mapped_address(msg: &[u8], trans: [u8; 12]) -> Option<SocketAddr> {
    if msg.len() < 20 || msg[..2] != BINDING_SUCCESS || msg[4..8] != COOKIE || msg[8..20] != trans {
        return None;
    }
    let len = u16::from_be_bytes([msg[2], msg[3]]) as usize;
    let mut attrs = msg.get(20..20 + len)?;
    let mut plain = None;
    while attrs.len() >= 4 {
        let typ = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = u16::from_be_bytes([attrs[2], attrs[3]]) as usize;
        let value = attrs.get(4..4 + alen)?;
        match typ {
            XOR_MAPPED_ADDRESS => return address(value, Some(&msg[4..20])),
            MAPPED_ADDRESS => plain = address(value, None),
            _ => {}
        }
        // Attributes are padded to 4 bytes.
        attrs = attrs.get(4 + alen.div_ceil(4) * 4..).unwrap_or_default();
    }
    plain
}

/// An (XOR-)MAPPED-ADDRESS value; `xor` is the cookie + transaction id.
fn address(v: &[u8], xor: Option<&[u8]>) -> Option<SocketAddr> {
    let x = |i: usize| xor.map(|k| k[i]).unwrap_or(0);
    let port = u16::from_be_bytes([v.get(2)? ^ x(0), v.get(3)? ^ x(1)]);
    match v.get(1)? {
        0x01 => {
            let b = v.get(4..8)?;
            let ip = std::net::Ipv4Addr::new(b[0] ^ x(0), b[1] ^ x(1), b[2] ^ x(2), b[3] ^ x(3));
            Some(SocketAddr::new(ip.into(), port))
        }
        0x02 => {
            let b = v.get(4..20)?;
            let mut o = [0u8; 16];
            for (i, byte) in o.iter_mut().enumerate() {
                *byte = b[i] ^ x(i);
            }
            Some(SocketAddr::new(std::net::Ipv6Addr::from(o).into(), port))
        }
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot resolve STUN server {0}: {1}")]
    Resolve(String, String),
    #[error("no answer from STUN server {0}")]
    Timeout(SocketAddr),
    #[error("STUN: {0}")]
    Io(#[from] std::io::Error),
}

/// The STUN server to ask, as rtcd picks it: the first ICE server entry whose URLs are
/// all `stun:` / `stuns:`, its first URL without the scheme (so `host:port`).
pub fn stun_server<'a>(entries: impl IntoIterator<Item = &'a [String]>) -> Option<String> {
    entries
        .into_iter()
        .find(|urls| {
            !urls.is_empty()
                && urls
                    .iter()
                    .all(|u| u.starts_with("stun:") || u.starts_with("stuns:"))
        })
        .and_then(|urls| urls.first())
        .and_then(|u| u.split_once(':'))
        .map(|(_, rest)| rest.to_string())
        .filter(|hostport| {
            hostport
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        })
}

/// Asks `server` (`host:port`) for the public address of `socket`; three tries within
/// `limit`.
pub async fn discover(
    socket: &UdpSocket,
    server: &str,
    limit: Duration,
) -> Result<IpAddr, DiscoveryError> {
    let target = tokio::time::timeout(limit, tokio::net::lookup_host(server))
        .await
        .map_err(|_| DiscoveryError::Resolve(server.into(), "timed out".into()))?
        .map_err(|e| DiscoveryError::Resolve(server.into(), e.to_string()))?
        .find(|a| a.is_ipv4() == socket.local_addr().map(|l| l.is_ipv4()).unwrap_or(true))
        .ok_or_else(|| DiscoveryError::Resolve(server.into(), "no address".into()))?;
    let trans: [u8; 12] = rand::random();
    let req = binding_request(trans);
    let mut buf = [0u8; 1280];
    for _ in 0..3 {
        socket.send_to(&req, target).await?;
        let wait = tokio::time::sleep(limit / 3);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                r = socket.recv_from(&mut buf) => {
                    let (n, from) = r?;
                    if from != target {
                        continue;
                    }
                    if let Some(mapped) = mapped_address(&buf[..n], trans) {
                        return Ok(mapped.ip());
                    }
                }
            }
        }
    }
    Err(DiscoveryError::Timeout(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_the_first_stun_only_entry_with_a_port() {
        let turn = urls(&["turn:turn.example.com:3478"]);
        let mixed = urls(&["stun:a.example.com:3478", "turn:b.example.com:3478"]);
        let stun = urls(&["stun:stun.example.com:3478", "stun:other:1"]);
        let all = [turn.as_slice(), mixed.as_slice(), stun.as_slice()];
        assert_eq!(stun_server(all), Some("stun.example.com:3478".into()));
        assert_eq!(
            stun_server([turn.as_slice()]),
            None,
            "TURN only: no STUN traffic"
        );
        assert_eq!(
            stun_server(std::iter::empty::<&[String]>()),
            None,
            "air-gapped"
        );
        let no_port = urls(&["stun:stun.example.com"]);
        assert_eq!(stun_server([no_port.as_slice()]), None);
    }

    #[tokio::test]
    async fn learns_the_mapped_address_from_a_stun_server() {
        // A STUN responder on loopback that maps everyone to a documentation address.
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(n, 20);
            assert_eq!(buf[..2], BINDING_REQUEST);
            // Success with an unknown attribute first, then XOR-MAPPED-ADDRESS of
            // 203.0.113.7:40000.
            let mut out = vec![0x01, 0x01, 0, 20];
            out.extend_from_slice(&buf[4..20]);
            out.extend_from_slice(&[0x80, 0x22, 0, 3, b'x', b'y', b'z', 0]);
            let port = 40000u16 ^ 0x2112;
            let ip: Vec<u8> = [203u8, 0, 113, 7]
                .iter()
                .zip(COOKIE)
                .map(|(a, k)| a ^ k)
                .collect();
            out.extend_from_slice(&[0, 0x20, 0, 8, 0, 1]);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&ip);
            server.send_to(&out, from).await.unwrap();
        });
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ip = discover(&sock, &addr.to_string(), Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        // Nobody answering: a clear error within the limit.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let err = discover(
            &sock,
            &silent.local_addr().unwrap().to_string(),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DiscoveryError::Timeout(_)), "{err}");
    }
}
