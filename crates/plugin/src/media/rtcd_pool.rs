//! The rtcd fleet behind `RTCDServiceURL` (reference rtcd.md §6): the URL's host name
//! resolved to all its IPv4 addresses, one authenticated client per address,
//! re-resolved every 10 s (vanished addresses are flagged: no new calls; new ones
//! are added), and the choice of a host for a new call (connected, not flagged,
//! fewest calls from us, then lowest `cpu_load`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use parking_lot::RwLock;

use super::rtcd_client::{Inbound, RtcdClient, RtcdClientError};
use calls_wire::rtcd::Envelope;

/// How often the service name is resolved again.
pub const REFRESH: Duration = Duration::from_secs(10);
/// The resolver to use instead of the system's (`ip:port`), e.g. a service-discovery
/// DNS server.
pub const DNS_SERVER_ENV: &str = "MM_CALLS_RTCD_DNS_SERVER";

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("invalid RTCDServiceURL: {0}")]
    Url(String),
    #[error("failed to resolve {0}: {1}")]
    Resolve(String, String),
    #[error("no host available")]
    NoHost,
    #[error("no rtcd credentials: {0}")]
    Credentials(String),
    #[error(transparent)]
    Client(#[from] RtcdClientError),
}

/// The parts of `RTCDServiceURL` the pool needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<(String, String)>,
}

/// `http://[clientID:authKey@]host:port` (a port is mandatory, as upstream).
pub fn parse_url(url: &str) -> Result<ServiceUrl, PoolError> {
    let bad = |m: &str| PoolError::Url(format!("{url}: {m}"));
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("the scheme must be http or https"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => {
            let (id, key) = u.split_once(':').unwrap_or((u, ""));
            (Some((id.to_string(), key.to_string())), h)
        }
        None => (None, authority),
    };
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| bad("missing port in address"))?;
    let port: u16 = port.parse().map_err(|_| bad("invalid port"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    Ok(ServiceUrl {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        user,
    })
}

struct Host {
    client: Arc<RtcdClient>,
    /// Gone from DNS: no new calls (existing ones stay).
    flagged: bool,
}

pub struct RtcdPool {
    pub url: ServiceUrl,
    client_id: String,
    auth_key: String,
    resolver: TokioResolver,
    hosts: RwLock<HashMap<String, Host>>,
    /// Calls this plugin placed per host (fewest first when choosing).
    calls: RwLock<HashMap<String, usize>>,
    inbound: Inbound,
}

fn resolver() -> TokioResolver {
    let mut opts = ResolverOpts::default();
    // Every refresh must see the current records.
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    let custom = std::env::var(DNS_SERVER_ENV)
        .ok()
        .and_then(|s| s.parse::<std::net::SocketAddr>().ok());
    let builder = match custom {
        Some(addr) => TokioResolver::builder_with_config(
            ResolverConfig::from_parts(
                None,
                vec![],
                NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
            ),
            TokioConnectionProvider::default(),
        ),
        None => TokioResolver::builder_tokio().unwrap_or_else(|_| {
            TokioResolver::builder_with_config(
                ResolverConfig::default(),
                TokioConnectionProvider::default(),
            )
        }),
    };
    builder.with_options(opts).build()
}

impl RtcdPool {
    /// Resolves the service and connects to every address; at activation each must
    /// work (as upstream). The clients' messages arrive on `inbound`.
    pub async fn start(
        url: &str,
        client_id: String,
        auth_key: String,
        inbound: Inbound,
    ) -> Result<Arc<RtcdPool>, PoolError> {
        let url = parse_url(url)?;
        let pool = Arc::new(RtcdPool {
            url,
            client_id,
            auth_key,
            resolver: resolver(),
            hosts: RwLock::new(HashMap::new()),
            calls: RwLock::new(HashMap::new()),
            inbound,
        });
        for ip in pool.resolve().await? {
            pool.add_host(&ip).await?;
        }
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(pool) = weak.upgrade() else { return };
                pool.refresh().await;
            }
        });
        Ok(pool)
    }

    async fn resolve(&self) -> Result<Vec<String>, PoolError> {
        if let Ok(ip) = self.url.host.parse::<IpAddr>() {
            return Ok(vec![ip.to_string()]);
        }
        let err = |e: String| PoolError::Resolve(self.url.host.clone(), e);
        let name = format!("{}.", self.url.host.trim_end_matches('.'));
        let lookup = self
            .resolver
            .ipv4_lookup(name)
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut ips: Vec<String> = lookup.iter().map(|a| a.0.to_string()).collect();
        ips.sort();
        ips.dedup();
        Ok(ips)
    }

    async fn add_host(&self, ip: &str) -> Result<(), PoolError> {
        let client = RtcdClient::new(
            ip,
            self.url.port,
            &self.url.host,
            &self.client_id,
            &self.auth_key,
        );
        client.start(self.inbound.clone()).await?;
        tracing::info!(host = ip, version = %client.version.lock(), "rtcd host added");
        self.hosts.write().insert(
            ip.to_string(),
            Host {
                client,
                flagged: false,
            },
        );
        Ok(())
    }

    /// One refresh: flag what left DNS, unflag what came back, add what is new.
    pub async fn refresh(&self) {
        let ips = match self.resolve().await {
            Ok(ips) => ips,
            Err(e) => {
                tracing::warn!(error = %e, "rtcd refresh skipped");
                return;
            }
        };
        let new: Vec<String> = {
            let mut hosts = self.hosts.write();
            for (ip, h) in hosts.iter_mut() {
                let listed = ips.contains(ip);
                if h.flagged == listed {
                    tracing::info!(
                        host = ip,
                        listed,
                        "rtcd host {}",
                        if listed {
                            "back in DNS"
                        } else {
                            "gone from DNS: no new calls"
                        }
                    );
                }
                h.flagged = !listed;
            }
            ips.iter()
                .filter(|ip| !hosts.contains_key(*ip))
                .cloned()
                .collect()
        };
        for ip in new {
            // Herd avoidance when many plugins see the same new host.
            let jitter = Duration::from_millis(rand::random::<u64>() % 5000);
            tokio::time::sleep(jitter).await;
            if let Err(e) = self.add_host(&ip).await {
                tracing::warn!(host = ip, error = %e, "rtcd host not added, retrying next refresh");
            }
        }
    }

    /// The host for a new call.
    pub async fn host_for_new_call(&self) -> Result<String, PoolError> {
        let candidates: Vec<Arc<RtcdClient>> = self
            .hosts
            .read()
            .values()
            .filter(|h| !h.flagged && h.client.connected())
            .map(|h| h.client.clone())
            .collect();
        if candidates.is_empty() {
            return Err(PoolError::NoHost);
        }
        let mut best: Option<((usize, f64), String)> = None;
        for c in &candidates {
            let load = match c.cpu_load().await {
                Ok(l) if l.is_finite() => l,
                Ok(_) => f64::MAX,
                Err(e) => {
                    tracing::warn!(host = c.ip, error = %e, "rtcd load unknown");
                    continue;
                }
            };
            let calls = self.calls.read().get(&c.ip).copied().unwrap_or(0);
            let key = (calls, load);
            if best.as_ref().is_none_or(|(b, _)| key < *b) {
                best = Some((key, c.ip.clone()));
            }
        }
        let ip = match best {
            Some((_, ip)) => ip,
            // Every load request failed: any candidate, as upstream.
            None => candidates[rand::random::<u64>() as usize % candidates.len()]
                .ip
                .clone(),
        };
        Ok(ip)
    }

    /// A call on `host` ended.
    pub fn call_ended(&self, host: &str) {
        if let Some(n) = self.calls.write().get_mut(host) {
            *n = n.saturating_sub(1);
        }
    }

    /// A call runs on `host` (placed now, or found again after a restart).
    pub fn call_placed(&self, host: &str) {
        *self.calls.write().entry(host.to_string()).or_default() += 1;
    }

    fn client(&self, host: &str) -> Option<Arc<RtcdClient>> {
        self.hosts.read().get(host).map(|h| h.client.clone())
    }

    /// A message for a call pinned to `host` (a host that left DNS still carries
    /// its calls; one that was never known gets a client on demand).
    pub async fn send(&self, host: &str, e: &Envelope) -> Result<(), PoolError> {
        if let Some(c) = self.client(host) {
            c.send(e);
            return Ok(());
        }
        self.add_host(host).await?;
        if let Some(c) = self.client(host) {
            c.send(e);
        }
        Ok(())
    }

    /// Whether rtcd still has sessions of `call_id` (for recovery after a restart).
    pub async fn call_alive(&self, host: &str, call_id: &str) -> Option<bool> {
        if self.client(host).is_none() && self.add_host(host).await.is_err() {
            return Some(false);
        }
        self.client(host)?.call_alive(call_id).await
    }

    pub fn hosts(&self) -> Vec<(String, bool, bool)> {
        let mut v: Vec<_> = self
            .hosts
            .read()
            .iter()
            .map(|(ip, h)| (ip.clone(), h.flagged, h.client.connected()))
            .collect();
        v.sort();
        v
    }

    pub fn version(&self) -> Option<String> {
        self.hosts
            .read()
            .values()
            .next()
            .map(|h| h.client.version.lock().clone())
    }

    pub fn close(&self) {
        for h in self.hosts.read().values() {
            h.client.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_upstream() {
        let u = parse_url("http://rtcd.example.com:8045").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user),
            ("rtcd.example.com", 8045, None)
        );
        let u = parse_url("https://id:key@10.0.0.1:8045/").unwrap();
        assert_eq!(u.user, Some(("id".into(), "key".into())));
        assert!(parse_url("http://rtcd.example.com")
            .unwrap_err()
            .to_string()
            .contains("missing port"));
        assert!(parse_url("ftp://x:1").is_err());
    }
}
