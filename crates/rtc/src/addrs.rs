//! Where the RTC server binds and what it advertises, from the settings both the
//! plugin (`UDPServerAddress`, `ICEHostOverride`, …) and rtcd (`rtc.ice_address_udp`,
//! `rtc.ice_host_override`, …) express the same way upstream: one resolution for both.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::shell::{default_host_ip, RtcAddrs};

/// How long a hostname in the ICE host override may take to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// The address settings of an RTC server, already parsed.
#[derive(Debug, Clone, Default)]
pub struct AddrSettings<'a> {
    /// The UDP address to bind; unspecified for every interface.
    pub udp_ip: Option<IpAddr>,
    pub udp_port: u16,
    /// The ICE-TCP listener, if any (an unspecified IP: every interface).
    pub tcp: Option<(Option<IpAddr>, u16)>,
    /// The ICE host override: empty, an IP, a hostname, or `external/internal` pairs
    /// separated by commas (the external address of whichever internal one is ours).
    pub host_override: &'a str,
    /// Advertised ports instead of the bound one: for every address (`None`) or for
    /// one local address.
    pub port_overrides: &'a [(Option<IpAddr>, u16)],
    /// The configured ICE servers' URLs, entry by entry: the STUN server to learn the
    /// public address from when there is no override.
    pub ice_server_urls: Vec<&'a [String]>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AddrError {
    #[error("the ICE host override {0:?} does not resolve to an IPv4 address")]
    HostOverride(String),
}

/// The first IP of a comma-separated list (rtcd's `ice_address_udp`), if any.
pub fn first_ip(list: &str) -> Option<IpAddr> {
    list.split(',').map(str::trim).find_map(|a| a.parse().ok())
}

/// Resolves the settings: the bind addresses, the advertised address (the override,
/// else the bound IP, else the host's own address), the advertised port and the STUN
/// server to ask (only without an override: the admin said where clients reach us).
pub async fn resolve(s: &AddrSettings<'_>) -> Result<RtcAddrs, AddrError> {
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let udp_ip = s.udp_ip.unwrap_or(any);
    let local = if udp_ip.is_unspecified() {
        default_host_ip()
    } else {
        udp_ip
    };
    let o = s.host_override.trim();
    let advertised = if o.is_empty() {
        local
    } else if o.contains('/') {
        o.split(',')
            .filter_map(|p| p.split_once('/'))
            .find(|(_, int)| int.trim().parse::<IpAddr>().ok() == Some(local))
            .and_then(|(ext, _)| ext.trim().parse().ok())
            .unwrap_or(local)
    } else if let Ok(ip) = o.parse() {
        ip
    } else {
        tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((o, 0)))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|mut a| a.find(SocketAddr::is_ipv4))
            .map(|a| a.ip())
            .ok_or_else(|| AddrError::HostOverride(o.to_string()))?
    };
    let advertised_udp_port = s
        .port_overrides
        .iter()
        .find(|(ip, _)| ip.is_none() || *ip == Some(local))
        .map(|(_, p)| *p);
    let stun_server = if o.is_empty() {
        crate::stun_discovery::stun_server(s.ice_server_urls.iter().copied())
    } else {
        None
    };
    Ok(RtcAddrs {
        udp: SocketAddr::new(udp_ip, s.udp_port),
        tcp: s
            .tcp
            .map(|(ip, port)| SocketAddr::new(ip.unwrap_or(any), port)),
        advertised_ip: advertised,
        advertised_udp_port,
        stun_server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_bound_ip_is_advertised_unless_overridden() {
        let s = AddrSettings {
            udp_ip: Some(ip("127.0.0.2")),
            udp_port: 8443,
            ..Default::default()
        };
        let a = resolve(&s).await.unwrap();
        assert_eq!(a.udp, "127.0.0.2:8443".parse().unwrap());
        assert_eq!(a.advertised_ip, ip("127.0.0.2"));
        assert_eq!(a.tcp, None);
        let a = resolve(&AddrSettings {
            host_override: "203.0.113.7",
            ..s
        })
        .await
        .unwrap();
        assert_eq!(a.advertised_ip, ip("203.0.113.7"));
    }

    #[tokio::test]
    async fn a_pair_override_advertises_the_external_address_of_ours() {
        let s = AddrSettings {
            udp_ip: Some(ip("127.0.0.3")),
            udp_port: 8443,
            host_override: "198.51.100.1/127.0.0.2, 198.51.100.2/127.0.0.3",
            ..Default::default()
        };
        assert_eq!(resolve(&s).await.unwrap().advertised_ip, ip("198.51.100.2"));
        let s = AddrSettings {
            host_override: "198.51.100.1/127.0.0.9",
            ..s
        };
        // No pair for our address: ours as it is.
        assert_eq!(resolve(&s).await.unwrap().advertised_ip, ip("127.0.0.3"));
    }

    #[tokio::test]
    async fn a_hostname_override_resolves_or_is_an_error() {
        let s = AddrSettings {
            udp_ip: Some(ip("127.0.0.2")),
            host_override: "localhost",
            ..Default::default()
        };
        assert!(resolve(&s).await.unwrap().advertised_ip.is_loopback());
        let s = AddrSettings {
            host_override: "no-such-host.invalid",
            ..s
        };
        assert_eq!(
            resolve(&s).await.unwrap_err(),
            AddrError::HostOverride("no-such-host.invalid".into())
        );
    }

    #[tokio::test]
    async fn port_overrides_apply_to_every_address_or_to_ours_only() {
        let ours = ip("127.0.0.2");
        let s = AddrSettings {
            udp_ip: Some(ours),
            udp_port: 8443,
            tcp: Some((None, 8443)),
            port_overrides: &[(Some(ip("127.0.0.9")), 3000), (Some(ours), 3001)],
            ..Default::default()
        };
        let a = resolve(&s).await.unwrap();
        assert_eq!(a.advertised_udp_port, Some(3001));
        assert_eq!(a.tcp, Some("0.0.0.0:8443".parse().unwrap()));
        let a = resolve(&AddrSettings {
            port_overrides: &[(None, 3002)],
            ..s
        })
        .await
        .unwrap();
        assert_eq!(a.advertised_udp_port, Some(3002));
    }

    #[tokio::test]
    async fn stun_is_asked_only_without_an_override() {
        let urls = vec!["stun:127.0.0.1:3478".to_string()];
        let s = AddrSettings {
            udp_ip: Some(ip("127.0.0.2")),
            ice_server_urls: vec![urls.as_slice()],
            ..Default::default()
        };
        assert!(resolve(&s).await.unwrap().stun_server.is_some());
        let s = AddrSettings {
            host_override: "127.0.0.2",
            ..s
        };
        assert_eq!(resolve(&s).await.unwrap().stun_server, None);
    }
}
