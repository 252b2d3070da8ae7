//! rtcd's configuration (reference rtcd.md §4): built-in defaults, then the TOML file,
//! then `RTCD_*` environment overrides named after upstream's Go fields
//! (`RTCD_API_HTTP_LISTENADDRESS`, ...), then validation.

use std::net::IpAddr;

use serde::Deserialize;

pub use calls_service::logger::LoggerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("invalid config file: {0}")]
    Parse(String),
    #[error("invalid value for {0}: {1}")]
    Env(String, String),
    #[error("config validation failed: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub api: ApiConfig,
    pub rtc: RtcConfig,
    pub store: StoreConfig,
    pub logger: LoggerConfig,
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api: Default::default(),
            rtc: Default::default(),
            store: Default::default(),
            logger: LoggerConfig::writing_to("rtcd.log"),
            metrics: Default::default(),
        }
    }
}

/// `[metrics]` of the deployment guide: Prometheus metrics on a port of their own.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enable_prom: bool,
    pub prom_port: i64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enable_prom: false,
            prom_port: 9090,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub http: HttpConfig,
    pub security: SecurityConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen_address: String,
    pub tls: TlsConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen_address: ":8045".into(),
            tls: TlsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub enable: bool,
    pub cert_file: String,
    pub cert_key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    pub enable_admin: bool,
    pub admin_secret_key: String,
    pub allow_self_registration: bool,
    pub session_cache: SessionCacheConfig,
    /// Browser origins allowed to call the API (CORS) and open the websocket.
    pub allowed_origins: Vec<String>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            enable_admin: false,
            admin_secret_key: String::new(),
            allow_self_registration: false,
            session_cache: SessionCacheConfig {
                expiration_minutes: 1440,
            },
            allowed_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionCacheConfig {
    pub expiration_minutes: i64,
}

impl Default for SessionCacheConfig {
    fn default() -> Self {
        SessionCacheConfig {
            expiration_minutes: 1440,
        }
    }
}

/// An ICE server as the TOML file may give it: a URL string or a table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum IceServerEntry {
    Url(String),
    Full {
        urls: Vec<String>,
        #[serde(default)]
        username: String,
        #[serde(default)]
        credential: String,
    },
}

impl IceServerEntry {
    pub fn urls(&self) -> Vec<String> {
        match self {
            IceServerEntry::Url(u) => vec![u.clone()],
            IceServerEntry::Full { urls, .. } => urls.clone(),
        }
    }
}

/// `rtc.ice_host_port_override`: a TOML int or string.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(untagged)]
pub enum PortOverride {
    #[default]
    None,
    Port(i64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    pub ice_address_udp: String,
    pub ice_port_udp: i64,
    pub ice_address_tcp: String,
    pub ice_port_tcp: i64,
    pub ice_host_override: String,
    pub ice_host_port_override: PortOverride,
    pub ice_servers: Vec<IceServerEntry>,
    pub turn: TurnConfig,
    pub enable_ipv6: bool,
    pub udp_sockets_count: i64,
    pub nack_buffer_size: i64,
    pub nack_disable_copy: bool,
}

impl Default for RtcConfig {
    fn default() -> Self {
        RtcConfig {
            ice_address_udp: String::new(),
            ice_port_udp: 8443,
            ice_address_tcp: String::new(),
            ice_port_tcp: 8443,
            ice_host_override: String::new(),
            ice_host_port_override: PortOverride::None,
            ice_servers: Vec::new(),
            turn: TurnConfig::default(),
            enable_ipv6: false,
            udp_sockets_count: 0,
            nack_buffer_size: 256,
            nack_disable_copy: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    pub static_auth_secret: String,
    pub credentials_expiration_minutes: i64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            static_auth_secret: String::new(),
            credentials_expiration_minutes: 1440,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub data_source: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_source: "/tmp/rtcd_db".into(),
        }
    }
}

impl Config {
    /// Defaults, then `path` if it exists (a missing file is only logged, as
    /// upstream), then the environment; validated.
    pub fn load(path: Option<&str>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut cfg = match path {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => Config::from_toml(&text)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(
                        path = p,
                        "config file not found, using defaults and environment"
                    );
                    Config::default()
                }
                Err(e) => return Err(ConfigError::Read(p.into(), e)),
            },
            None => Config::default(),
        };
        cfg.apply_env(env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// `RTCD_*` overrides; unknown `RTCD_*` names are ignored (as envconfig does).
    pub fn apply_env(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        for (k, v) in env {
            let Some(name) = k.strip_prefix("RTCD_") else {
                continue;
            };
            let bad = |why: &str| ConfigError::Env(k.clone(), why.to_string());
            let b = || parse_bool(v).ok_or_else(|| bad("not a boolean"));
            let i = || v.trim().parse::<i64>().map_err(|_| bad("not an integer"));
            let s = || v.clone();
            match name {
                "API_HTTP_LISTENADDRESS" => self.api.http.listen_address = s(),
                "API_HTTP_TLS_ENABLE" => self.api.http.tls.enable = b()?,
                "API_HTTP_TLS_CERTFILE" => self.api.http.tls.cert_file = s(),
                "API_HTTP_TLS_CERTKEY" => self.api.http.tls.cert_key = s(),
                "API_SECURITY_ENABLEADMIN" => self.api.security.enable_admin = b()?,
                "API_SECURITY_ADMINSECRETKEY" => self.api.security.admin_secret_key = s(),
                "API_SECURITY_ALLOWSELFREGISTRATION" => {
                    self.api.security.allow_self_registration = b()?
                }
                "API_SECURITY_SESSIONCACHE_EXPIRATIONMINUTES" => {
                    self.api.security.session_cache.expiration_minutes = i()?
                }
                "RTC_ICEADDRESSUDP" => self.rtc.ice_address_udp = s(),
                "RTC_ICEPORTUDP" => self.rtc.ice_port_udp = i()?,
                "RTC_ICEADDRESSTCP" => self.rtc.ice_address_tcp = s(),
                "RTC_ICEPORTTCP" => self.rtc.ice_port_tcp = i()?,
                "RTC_ICEHOSTOVERRIDE" => self.rtc.ice_host_override = s(),
                "RTC_ICEHOSTPORTOVERRIDE" => {
                    self.rtc.ice_host_port_override = match v.trim().parse::<i64>() {
                        Ok(p) => PortOverride::Port(p),
                        Err(_) if v.trim().is_empty() => PortOverride::None,
                        Err(_) => PortOverride::Text(v.trim().to_string()),
                    }
                }
                "RTC_ICESERVERS" => {
                    self.rtc.ice_servers = parse_env_ice_servers(v).map_err(|e| bad(&e))?
                }
                "RTC_TURNCONFIG_STATICAUTHSECRET" => self.rtc.turn.static_auth_secret = s(),
                "RTC_TURNCONFIG_CREDENTIALSEXPIRATIONMINUTES" => {
                    self.rtc.turn.credentials_expiration_minutes = i()?
                }
                "RTC_ENABLEIPV6" => self.rtc.enable_ipv6 = b()?,
                "RTC_UDPSOCKETSCOUNT" => self.rtc.udp_sockets_count = i()?,
                "RTC_NACKBUFFERSIZE" => self.rtc.nack_buffer_size = i()?,
                "RTC_NACKDISABLECOPY" => self.rtc.nack_disable_copy = b()?,
                "STORE_DATASOURCE" => self.store.data_source = s(),
                l if l.starts_with("LOGGER_") => self
                    .logger
                    .apply_env(&l["LOGGER_".len()..], v)
                    .map_err(|e| bad(&e))?,
                "METRICS_ENABLEPROM" => self.metrics.enable_prom = b()?,
                "METRICS_PROMPORT" => self.metrics.prom_port = i()?,
                "API_SECURITY_ALLOWEDORIGINS" => {
                    self.api.security.allowed_origins = v
                        .split(',')
                        .map(|o| o.trim().to_string())
                        .filter(|o| !o.is_empty())
                        .collect()
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.api.http.listen_address.trim().is_empty() {
            return bad("api.http.listen_address: value should not be empty".into());
        }
        if self.api.http.tls.enable {
            // Said plainly rather than half-done: put a TLS proxy in front.
            return bad("api.http.tls.enable: TLS is not built into this rtcd; terminate TLS in a reverse proxy in front of it".into());
        }
        if self.api.security.enable_admin && self.api.security.admin_secret_key.is_empty() {
            return bad("api.security.admin_secret_key: value should not be empty when enable_admin is true".into());
        }
        if self.api.security.session_cache.expiration_minutes <= 0 {
            return bad(
                "api.security.session_cache.expiration_minutes: value should be positive".into(),
            );
        }
        for (key, list) in [
            ("rtc.ice_address_udp", &self.rtc.ice_address_udp),
            ("rtc.ice_address_tcp", &self.rtc.ice_address_tcp),
        ] {
            for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                if a.parse::<IpAddr>().is_err() {
                    return bad(format!("{key}: invalid IP address {a:?}"));
                }
            }
        }
        for (key, port) in [
            ("rtc.ice_port_udp", self.rtc.ice_port_udp),
            ("rtc.ice_port_tcp", self.rtc.ice_port_tcp),
        ] {
            if !(80..=49151).contains(&port) {
                return bad(format!("{key}: value must be in the range [80, 49151]"));
            }
        }
        self.port_override_map()?;
        for e in &self.rtc.ice_servers {
            let urls = e.urls();
            if urls.is_empty() || urls.iter().any(|u| u.is_empty()) {
                return bad("rtc.ice_servers: every entry needs non-empty urls".into());
            }
            let stun = urls
                .iter()
                .all(|u| u.starts_with("stun:") || u.starts_with("stuns:"));
            let turn = urls
                .iter()
                .all(|u| u.starts_with("turn:") || u.starts_with("turns:"));
            if !stun && !turn {
                return bad(
                    "rtc.ice_servers: an entry's urls must be all stun: or all turn:".into(),
                );
            }
        }
        let t = &self.rtc.turn;
        let minutes_ok = (1..10080).contains(&t.credentials_expiration_minutes);
        if !t.static_auth_secret.is_empty() && !minutes_ok {
            return bad(
                "rtc.turn.credentials_expiration_minutes: value must be in (0, 10080)".into(),
            );
        }
        if self.rtc.udp_sockets_count < 0 {
            return bad("rtc.udp_sockets_count: value should be positive".into());
        }
        let n = self.rtc.nack_buffer_size;
        if n != 0 && !((32..=8192).contains(&n) && (n as u64).is_power_of_two()) {
            return bad(
                "rtc.nack_buffer_size: value must be 0 or a power of two in [32, 8192]".into(),
            );
        }
        if self.store.data_source.trim().is_empty() {
            return bad("store.data_source: value should not be empty".into());
        }
        self.logger.validate().map_err(ConfigError::Invalid)?;
        if self.metrics.enable_prom && !(1..=65535).contains(&self.metrics.prom_port) {
            return bad("metrics.prom_port: value must be a TCP port".into());
        }
        Ok(())
    }

    /// The host-port override as (local IP → port) pairs, or one port for all.
    pub fn port_override_map(&self) -> Result<Vec<(Option<IpAddr>, u16)>, ConfigError> {
        let bad = |m: &str| ConfigError::Invalid(format!("rtc.ice_host_port_override: {m}"));
        let port = |p: i64| {
            u16::try_from(p)
                .ok()
                .filter(|p| (80..=49151).contains(p))
                .ok_or_else(|| bad("port must be in the range [80, 49151]"))
        };
        match &self.rtc.ice_host_port_override {
            PortOverride::None => Ok(vec![]),
            PortOverride::Port(p) => Ok(vec![(None, port(*p)?)]),
            PortOverride::Text(t) if t.trim().is_empty() => Ok(vec![]),
            PortOverride::Text(t) => {
                if let Ok(p) = t.trim().parse::<i64>() {
                    return Ok(vec![(None, port(p)?)]);
                }
                let mut out: Vec<(Option<IpAddr>, u16)> = Vec::new();
                for pair in t.split(',').map(str::trim) {
                    let (ip, p) = pair
                        .split_once('/')
                        .ok_or_else(|| bad("expected ip/port pairs"))?;
                    let ip: IpAddr = ip.trim().parse().map_err(|_| bad("invalid IP address"))?;
                    let p = port(p.trim().parse().map_err(|_| bad("invalid port"))?)?;
                    if out.iter().any(|(i, q)| *i == Some(ip) || *q == p) {
                        return Err(bad("duplicate IP or port"));
                    }
                    out.push((Some(ip), p));
                }
                Ok(out)
            }
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

/// `RTCD_RTC_ICESERVERS`: a JSON array of URL strings (one entry) or of
/// `{"urls", "username", "credential"}` objects.
fn parse_env_ice_servers(v: &str) -> Result<Vec<IceServerEntry>, String> {
    if v.trim().is_empty() {
        return Ok(vec![]);
    }
    if let Ok(urls) = serde_json::from_str::<Vec<String>>(v) {
        return Ok(vec![IceServerEntry::Full {
            urls,
            username: String::new(),
            credential: String::new(),
        }]);
    }
    #[derive(Deserialize)]
    struct E {
        urls: Vec<String>,
        #[serde(default)]
        username: String,
        #[serde(default)]
        credential: String,
    }
    let list: Vec<E> =
        serde_json::from_str(v).map_err(|e| format!("not a JSON list of ICE servers: {e}"))?;
    Ok(list
        .into_iter()
        .map(|e| IceServerEntry::Full {
            urls: e.urls,
            username: e.username,
            credential: e.credential,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[api]
http.listen_address = ":8045"
http.tls.enable = false
http.tls.cert_file = ""
http.tls.cert_key = ""
security.enable_admin = true
security.admin_secret_key = "admin-secret"
security.allow_self_registration = true
security.session_cache.expiration_minutes = 1440

[rtc]
ice_address_udp = ""
ice_port_udp = 8443
ice_address_tcp = ""
ice_port_tcp = 8443
ice_host_override = ""
ice_servers = ["stun:stun.example.com:3478", { urls = ["turn:turn.example.com:3478"], username = "u", credential = "c" }]

[store]
data_source = "/tmp/rtcd_db"

[logger]
enable_console = true
console_json = false
console_level = "INFO"
enable_file = true
file_json = true
file_level = "DEBUG"
file_location = "rtcd.log"
enable_color = true
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sample_file_then_env_overrides() {
        let mut c = Config::from_toml(SAMPLE).unwrap();
        c.validate().unwrap();
        assert_eq!(c.api.http.listen_address, ":8045");
        assert!(c.api.security.allow_self_registration);
        assert_eq!(c.rtc.ice_servers.len(), 2);
        c.apply_env(&env(&[
            ("RTCD_API_HTTP_LISTENADDRESS", "127.0.0.2:9000"),
            ("RTCD_RTC_ICEPORTUDP", "9443"),
            (
                "RTCD_RTC_ICEHOSTPORTOVERRIDE",
                "10.0.0.1/30000,10.0.0.2/30001",
            ),
            ("RTCD_RTC_ICESERVERS", r#"["stun:a:1","stun:b:2"]"#),
            ("RTCD_LOGGER_ENABLEFILE", "false"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.api.http.listen_address, "127.0.0.2:9000");
        assert_eq!(c.rtc.ice_port_udp, 9443);
        assert_eq!(c.port_override_map().unwrap().len(), 2);
        assert_eq!(c.rtc.ice_servers[0].urls(), vec!["stun:a:1", "stun:b:2"]);
        assert!(!c.logger.enable_file);
    }

    #[test]
    fn the_shipped_sample_config_is_valid() {
        let text = include_str!("../../../deploy/rtcd.toml");
        let c = Config::from_toml(text).unwrap();
        c.validate().unwrap();
        assert!(c.metrics.enable_prom);
        assert_eq!(c.metrics.prom_port, 9090);
        assert_eq!(
            c.api.security.allowed_origins,
            vec!["https://mattermost.example.com"]
        );
    }

    #[test]
    fn refusals_name_the_key() {
        let check = |pairs: &[(&str, &str)], key: &str| {
            let mut c = Config::default();
            let err = match c.apply_env(&env(pairs)) {
                Err(e) => e,
                Ok(()) => c.validate().unwrap_err(),
            };
            assert!(err.to_string().contains(key), "{err} lacks {key}");
        };
        check(&[("RTCD_RTC_ICEPORTUDP", "70000")], "rtc.ice_port_udp");
        check(&[("RTCD_RTC_ICEPORTUDP", "x")], "RTCD_RTC_ICEPORTUDP");
        check(
            &[("RTCD_API_SECURITY_ENABLEADMIN", "true")],
            "admin_secret_key",
        );
        check(
            &[("RTCD_RTC_ICEADDRESSUDP", "1.2.3.4, nope")],
            "rtc.ice_address_udp",
        );
        check(
            &[(
                "RTCD_RTC_ICEHOSTPORTOVERRIDE",
                "10.0.0.1/30000,10.0.0.2/30000",
            )],
            "ice_host_port_override",
        );
        check(&[("RTCD_RTC_NACKBUFFERSIZE", "100")], "nack_buffer_size");
        check(&[("RTCD_LOGGER_CONSOLELEVEL", "loud")], "console_level");
        check(
            &[(
                "RTCD_RTC_ICESERVERS",
                r#"[{"urls":["stun:a:1","turn:b:2"]}]"#,
            )],
            "ice_servers",
        );
        assert!(matches!(
            Config::from_toml("[api]\nnope = 1"),
            Err(ConfigError::Parse(_))
        ));
    }
}
