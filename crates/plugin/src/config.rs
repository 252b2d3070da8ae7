//! Plugin settings (reference calls-plugin.md §5): defaults, `MM_CALLS_*` environment
//! overrides and validation. A configuration that fails validation is refused and the
//! previous one stays in force (the caller keeps it).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid configuration json: {0}")]
    Json(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("invalid value {value:?} for environment variable {var}")]
    Env { var: String, value: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct IceServerConfig {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

/// The plugin settings, with upstream's exact keys.
#[allow(non_snake_case)]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    pub DefaultEnabled: bool,
    pub MaxCallParticipants: i64,
    pub AllowScreenSharing: bool,
    pub EnableSimulcast: bool,
    pub EnableRinging: bool,
    pub EnableAV1: bool,
    pub EnableDCSignaling: bool,
    pub EnableVideo: bool,
    pub RTCDServiceURL: String,
    pub UDPServerAddress: String,
    pub TCPServerAddress: String,
    pub UDPServerPort: i64,
    pub TCPServerPort: i64,
    pub EnableIPv6: bool,
    pub ICEHostOverride: String,
    pub ICEHostPortOverride: Option<i64>,
    pub ICEServersConfigs: Vec<IceServerConfig>,
    #[serde(default)]
    pub ICEServers: Vec<String>,
    pub TURNStaticAuthSecret: String,
    pub TURNCredentialsExpirationMinutes: i64,
    pub ServerSideTURN: bool,
    pub EnableRecordings: bool,
    pub JobServiceURL: String,
    pub MaxRecordingDuration: i64,
    pub RecordingQuality: String,
    pub EnableTranscriptions: bool,
    pub TranscribeAPI: String,
    pub TranscriberModelSize: String,
    pub TranscriberNumThreads: i64,
    pub TranscribeAPIAzureSpeechKey: String,
    pub TranscribeAPIAzureSpeechRegion: String,
    pub EnableLiveCaptions: bool,
    pub LiveCaptionsModelSize: String,
    pub LiveCaptionsNumTranscribers: i64,
    pub LiveCaptionsNumThreadsPerTranscriber: i64,
    pub LiveCaptionsLanguage: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Bool,
    Int,
    OptInt,
    Str,
    IceConfigs,
    StrList,
}

/// Every setting with its kind, in upstream's order.
const FIELDS: &[(&str, Kind)] = &[
    ("DefaultEnabled", Kind::Bool),
    ("MaxCallParticipants", Kind::Int),
    ("AllowScreenSharing", Kind::Bool),
    ("EnableSimulcast", Kind::Bool),
    ("EnableRinging", Kind::Bool),
    ("EnableAV1", Kind::Bool),
    ("EnableDCSignaling", Kind::Bool),
    ("EnableVideo", Kind::Bool),
    ("RTCDServiceURL", Kind::Str),
    ("UDPServerAddress", Kind::Str),
    ("TCPServerAddress", Kind::Str),
    ("UDPServerPort", Kind::Int),
    ("TCPServerPort", Kind::Int),
    ("EnableIPv6", Kind::Bool),
    ("ICEHostOverride", Kind::Str),
    ("ICEHostPortOverride", Kind::OptInt),
    ("ICEServersConfigs", Kind::IceConfigs),
    ("ICEServers", Kind::StrList),
    ("TURNStaticAuthSecret", Kind::Str),
    ("TURNCredentialsExpirationMinutes", Kind::Int),
    ("ServerSideTURN", Kind::Bool),
    ("EnableRecordings", Kind::Bool),
    ("JobServiceURL", Kind::Str),
    ("MaxRecordingDuration", Kind::Int),
    ("RecordingQuality", Kind::Str),
    ("EnableTranscriptions", Kind::Bool),
    ("TranscribeAPI", Kind::Str),
    ("TranscriberModelSize", Kind::Str),
    ("TranscriberNumThreads", Kind::Int),
    ("TranscribeAPIAzureSpeechKey", Kind::Str),
    ("TranscribeAPIAzureSpeechRegion", Kind::Str),
    ("EnableLiveCaptions", Kind::Bool),
    ("LiveCaptionsModelSize", Kind::Str),
    ("LiveCaptionsNumTranscribers", Kind::Int),
    ("LiveCaptionsNumThreadsPerTranscriber", Kind::Int),
    ("LiveCaptionsLanguage", Kind::Str),
];

pub const DEFAULT_ICE_SERVERS: &str =
    r#"[{"urls":["stun:stun.global.calls.mattermost.com:3478"]}]"#;

impl Default for Config {
    fn default() -> Self {
        Config {
            DefaultEnabled: false,
            MaxCallParticipants: 0,
            AllowScreenSharing: true,
            EnableSimulcast: false,
            EnableRinging: false,
            EnableAV1: false,
            EnableDCSignaling: false,
            EnableVideo: false,
            RTCDServiceURL: String::new(),
            UDPServerAddress: String::new(),
            TCPServerAddress: String::new(),
            UDPServerPort: 8443,
            TCPServerPort: 8443,
            EnableIPv6: false,
            ICEHostOverride: String::new(),
            ICEHostPortOverride: None,
            ICEServersConfigs: serde_json::from_str(DEFAULT_ICE_SERVERS).unwrap_or_default(),
            ICEServers: Vec::new(),
            TURNStaticAuthSecret: String::new(),
            TURNCredentialsExpirationMinutes: 240,
            ServerSideTURN: false,
            EnableRecordings: false,
            JobServiceURL: String::new(),
            MaxRecordingDuration: 60,
            RecordingQuality: "medium".into(),
            EnableTranscriptions: false,
            TranscribeAPI: "whisper.cpp".into(),
            TranscriberModelSize: "base".into(),
            TranscriberNumThreads: 2,
            TranscribeAPIAzureSpeechKey: String::new(),
            TranscribeAPIAzureSpeechRegion: String::new(),
            EnableLiveCaptions: false,
            LiveCaptionsModelSize: "tiny".into(),
            LiveCaptionsNumTranscribers: 1,
            LiveCaptionsNumThreadsPerTranscriber: 2,
            LiveCaptionsLanguage: "en".into(),
        }
    }
}

/// Upstream's field → env var rule: `_` between a lower/digit and an upper letter, and
/// between two uppers when the second is followed by a lower one; then upper-case.
/// `EnableIPv6` → `MM_CALLS_ENABLE_I_PV6`.
pub fn env_var_name(field: &str) -> String {
    let chars: Vec<char> = field.chars().collect();
    let mut out = String::from("MM_CALLS_");
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Reads the environment through a function so tests need not touch the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Legacy env names upstream still honours.
fn legacy_env_var(field: &str) -> Option<&'static str> {
    match field {
        "MaxCallParticipants" => Some("MM_CALLS_MAX_PARTICIPANTS"),
        "RTCDServiceURL" => Some("MM_CALLS_RTCD_URL"),
        _ => None,
    }
}

/// The settings whose values are secrets (the manifest marks them `"secret": true`):
/// never shown in clear, not even to admins.
pub const SECRET_FIELDS: &[&str] = &[
    "ICEServersConfigs",
    "TURNStaticAuthSecret",
    "TranscribeAPIAzureSpeechKey",
];

/// What Mattermost shows in place of a secret (`model.FakeSetting`).
pub const FAKE_SETTING: &str = "********************************";

/// The env overrides in force: field name → raw value (what `GET /env` reports), a
/// secret's value masked (upstream shows it in clear; the console only needs to know
/// that the variable is set).
pub fn env_overrides(env: EnvLookup) -> Vec<(String, String)> {
    FIELDS
        .iter()
        .filter_map(|(field, _)| {
            env(&env_var_name(field))
                .or_else(|| legacy_env_var(field).and_then(env))
                .map(|v| {
                    let shown = if SECRET_FIELDS.contains(field) {
                        FAKE_SETTING.to_string()
                    } else {
                        v
                    };
                    (field.to_string(), shown)
                })
        })
        .collect()
}

fn parse_env_value(kind: Kind, var: &str, raw: &str) -> Result<Value, ConfigError> {
    let bad = || ConfigError::Env {
        var: var.to_string(),
        value: raw.to_string(),
    };
    Ok(match kind {
        Kind::Bool => Value::Bool(parse_go_bool(raw).ok_or_else(bad)?),
        Kind::Int | Kind::OptInt => Value::from(raw.trim().parse::<i64>().map_err(|_| bad())?),
        Kind::Str => Value::String(raw.to_string()),
        Kind::IceConfigs => serde_json::from_str::<Value>(raw).map_err(|_| bad())?,
        Kind::StrList => Value::Array(
            raw.split(',')
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
    })
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// An rtcd service URL as the plugin can use it: `http(s)://[id:key@]host:port[/...]`
/// (upstream refuses other schemes and a missing port when it connects; here the
/// admin hears it when saving).
fn check_rtcd_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL"));
    };
    if !matches!(scheme, "http" | "https") {
        return Err(format!("invalid url scheme: {scheme:?} is not valid"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, p),
        _ => return Err(format!("missing port in address {host_port:?}")),
    };
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .is_empty()
    {
        return Err("invalid url host: should not be empty".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("invalid port {port:?}")),
    }
}

impl Config {
    /// Builds the effective configuration: defaults, then the stored settings, then the
    /// env overrides; then validates it.
    pub fn load(stored: &[u8], env: EnvLookup) -> Result<Config, ConfigError> {
        let mut merged = match serde_json::to_value(Config::default()) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let stored: Value = if stored.iter().all(|b| b.is_ascii_whitespace()) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(stored).map_err(|e| ConfigError::Json(e.to_string()))?
        };
        let Value::Object(stored) = stored else {
            return Err(ConfigError::Json("settings must be a JSON object".into()));
        };
        // Settings pages store keys case-insensitively (Mattermost lowercases them).
        for (field, kind) in FIELDS {
            if let Some((_, v)) = stored.iter().find(|(k, _)| k.eq_ignore_ascii_case(field)) {
                merged.insert(field.to_string(), normalize_stored(*kind, field, v)?);
            }
        }
        for (field, raw) in env_overrides(env) {
            let kind = FIELDS
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, k)| *k)
                .unwrap_or(Kind::Str);
            merged.insert(
                field.clone(),
                parse_env_value(kind, &env_var_name(&field), &raw)?,
            );
        }
        let mut cfg: Config = serde_json::from_value(Value::Object(merged))
            .map_err(|e| ConfigError::Json(e.to_string()))?;
        cfg.RTCDServiceURL = cfg.RTCDServiceURL.trim().to_string();
        cfg.ICEHostOverride = cfg.ICEHostOverride.trim().to_string();
        cfg.JobServiceURL = cfg.JobServiceURL.trim().to_string();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Settings an admin is saving: they must be valid on their own, not only once the
    /// `MM_CALLS_*` overrides in force hide their faults (the stored values take
    /// effect as soon as an override is removed).
    pub fn check_saved(stored: &[u8]) -> Result<(), ConfigError> {
        Config::load(stored, &|_| None).map(|_| ())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.RTCDServiceURL.is_empty() {
            check_rtcd_url(&self.RTCDServiceURL).map_err(|why| invalid("RTCDServiceURL", why))?;
        }
        if self.MaxCallParticipants < 0 {
            return Err(invalid("MaxCallParticipants", "should not be negative"));
        }
        for (field, addr) in [
            ("UDPServerAddress", &self.UDPServerAddress),
            ("TCPServerAddress", &self.TCPServerAddress),
        ] {
            if !addr.is_empty() && addr.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(field, "must be a valid IP address"));
            }
        }
        for (field, port) in [
            ("UDPServerPort", self.UDPServerPort),
            ("TCPServerPort", self.TCPServerPort),
        ] {
            if !(80..=49151).contains(&port) {
                return Err(invalid(field, "must be in the range [80, 49151]"));
            }
        }
        if let Some(p) = self.ICEHostPortOverride {
            if p != 0 && !(80..=49151).contains(&p) {
                return Err(invalid(
                    "ICEHostPortOverride",
                    "must be 0 or in the range [80, 49151]",
                ));
            }
        }
        if self.TURNCredentialsExpirationMinutes < 0 {
            return Err(invalid(
                "TURNCredentialsExpirationMinutes",
                "should not be negative",
            ));
        }
        if !(15..=180).contains(&self.MaxRecordingDuration) {
            return Err(invalid(
                "MaxRecordingDuration",
                "must be in the range [15, 180]",
            ));
        }
        if !["low", "medium", "high"].contains(&self.RecordingQuality.as_str()) {
            return Err(invalid("RecordingQuality", "must be low, medium or high"));
        }
        for s in &self.ICEServersConfigs {
            if s.urls.is_empty() {
                return Err(invalid("ICEServersConfigs", "every entry needs urls"));
            }
        }
        let sizes = ["tiny", "base", "small", "medium", "large"];
        if self.EnableRecordings && self.EnableTranscriptions {
            if !["whisper.cpp", "azure", "openai/whisper"].contains(&self.TranscribeAPI.as_str()) {
                return Err(invalid("TranscribeAPI", "unsupported transcription API"));
            }
            if !sizes.contains(&self.TranscriberModelSize.as_str()) {
                return Err(invalid("TranscriberModelSize", "unsupported model size"));
            }
            if self.TranscriberNumThreads <= 0 {
                return Err(invalid("TranscriberNumThreads", "should be greater than 0"));
            }
            if self.EnableLiveCaptions {
                if !sizes.contains(&self.LiveCaptionsModelSize.as_str()) {
                    return Err(invalid("LiveCaptionsModelSize", "unsupported model size"));
                }
                if self.LiveCaptionsNumTranscribers <= 0 {
                    return Err(invalid(
                        "LiveCaptionsNumTranscribers",
                        "should be greater than 0",
                    ));
                }
                if self.LiveCaptionsNumThreadsPerTranscriber <= 0 {
                    return Err(invalid(
                        "LiveCaptionsNumThreadsPerTranscriber",
                        "should be greater than 0",
                    ));
                }
                if !(self.LiveCaptionsLanguage.is_empty() || self.LiveCaptionsLanguage.len() == 2) {
                    return Err(invalid(
                        "LiveCaptionsLanguage",
                        "must be empty or a 2-letter code",
                    ));
                }
            }
        }
        Ok(())
    }

    /// ICE servers handed to clients: TURN entries that need generated credentials are
    /// removed, the deprecated `ICEServers` list is appended as one entry.
    pub fn client_ice_servers(&self) -> Vec<IceServerConfig> {
        let mut out: Vec<IceServerConfig> = self
            .ICEServersConfigs
            .iter()
            .filter(|s| !(is_turn(s) && s.username.is_empty() && s.credential.is_empty()))
            .cloned()
            .collect();
        if !self.ICEServers.is_empty() {
            out.push(IceServerConfig {
                urls: self.ICEServers.clone(),
                ..Default::default()
            });
        }
        out
    }

    /// TURN entries without credentials: these get generated ones from the secret.
    pub fn turn_servers_needing_credentials(&self) -> Vec<&IceServerConfig> {
        self.ICEServersConfigs
            .iter()
            .filter(|s| is_turn(s) && s.username.is_empty() && s.credential.is_empty())
            .collect()
    }

    pub fn needs_turn_credentials(&self) -> bool {
        !self.TURNStaticAuthSecret.is_empty() && !self.turn_servers_needing_credentials().is_empty()
    }
}

fn is_turn(s: &IceServerConfig) -> bool {
    !s.urls.is_empty()
        && s.urls
            .iter()
            .all(|u| u.starts_with("turn:") || u.starts_with("turns:"))
}

/// Stored values arrive as the System Console writes them: `ICEServersConfigs` is a JSON
/// array serialised inside a string, numbers may be strings.
fn normalize_stored(kind: Kind, field: &'static str, v: &Value) -> Result<Value, ConfigError> {
    Ok(match (kind, v) {
        (Kind::IceConfigs, Value::String(s)) if s.trim().is_empty() => Value::Array(vec![]),
        (Kind::IceConfigs, Value::String(s)) => serde_json::from_str(s)
            .map_err(|e| invalid(field, format!("not a JSON array of ICE servers: {e}")))?,
        (Kind::StrList, Value::String(s)) => Value::Array(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| Value::String(x.into()))
                .collect(),
        ),
        (Kind::Int | Kind::OptInt, Value::String(s)) if s.trim().is_empty() => {
            if kind == Kind::OptInt {
                Value::Null
            } else {
                return Err(invalid(field, "must be a number"));
            }
        }
        (Kind::Int | Kind::OptInt, Value::String(s)) => Value::from(
            s.trim()
                .parse::<i64>()
                .map_err(|_| invalid(field, "must be a number"))?,
        ),
        (Kind::Int, Value::Number(n)) => Value::from(
            n.as_i64()
                .ok_or_else(|| invalid(field, "must be an integer"))?,
        ),
        (Kind::Int, _) => return Err(invalid(field, "must be a number")),
        (Kind::Bool, Value::String(s)) => {
            Value::Bool(parse_go_bool(s).ok_or_else(|| invalid(field, "must be a boolean"))?)
        }
        (Kind::Bool, Value::Bool(_)) => v.clone(),
        (Kind::Bool, _) => return Err(invalid(field, "must be a boolean")),
        (Kind::Str, Value::String(_)) => v.clone(),
        (Kind::Str, Value::Null) => Value::String(String::new()),
        (Kind::Str, _) => return Err(invalid(field, "must be a string")),
        _ => v.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn env_overrides_name_secrets_without_their_values() {
        let env = |k: &str| match k {
            "MM_CALLS_TURN_STATIC_AUTH_SECRET" => Some("hunter2-turn".to_string()),
            "MM_CALLS_ICE_HOST_OVERRIDE" => Some("10.0.0.1".to_string()),
            _ => None,
        };
        let mut got = env_overrides(&env);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("ICEHostOverride".to_string(), "10.0.0.1".to_string()),
                ("TURNStaticAuthSecret".to_string(), FAKE_SETTING.to_string()),
            ]
        );
    }

    #[test]
    fn env_names_follow_upstream_rule() {
        assert_eq!(env_var_name("EnableIPv6"), "MM_CALLS_ENABLE_I_PV6");
        assert_eq!(
            env_var_name("ICEHostOverride"),
            "MM_CALLS_ICE_HOST_OVERRIDE"
        );
        assert_eq!(env_var_name("RTCDServiceURL"), "MM_CALLS_RTCD_SERVICE_URL");
        assert_eq!(
            env_var_name("TURNStaticAuthSecret"),
            "MM_CALLS_TURN_STATIC_AUTH_SECRET"
        );
        assert_eq!(env_var_name("EnableAV1"), "MM_CALLS_ENABLE_AV1");
        assert_eq!(
            env_var_name("EnableDCSignaling"),
            "MM_CALLS_ENABLE_DC_SIGNALING"
        );
        assert_eq!(env_var_name("UDPServerPort"), "MM_CALLS_UDP_SERVER_PORT");
    }

    #[test]
    fn defaults_apply_to_empty_settings() {
        let c = Config::load(b"{}", &no_env).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.UDPServerPort, 8443);
        assert!(!c.DefaultEnabled);
        assert_eq!(c.ICEServersConfigs.len(), 1);
    }

    #[test]
    fn stored_values_are_normalised() {
        let c = Config::load(
            br#"{"defaultenabled":true,"ICEServersConfigs":"[{\"urls\":[\"turn:a:3478\"]}]","MaxCallParticipants":"5","ICEHostPortOverride":""}"#,
            &no_env,
        )
        .unwrap();
        assert!(c.DefaultEnabled);
        assert_eq!(c.MaxCallParticipants, 5);
        assert_eq!(c.ICEServersConfigs[0].urls, vec!["turn:a:3478"]);
        assert_eq!(c.ICEHostPortOverride, None);
    }

    #[test]
    fn env_overrides_win_and_bad_env_is_refused() {
        let env = |k: &str| match k {
            "MM_CALLS_UDP_SERVER_PORT" => Some("9000".to_string()),
            "MM_CALLS_ENABLE_I_PV6" => Some("t".to_string()),
            "MM_CALLS_RTCD_URL" => Some(" http://rtcd:8045 ".to_string()),
            _ => None,
        };
        let c = Config::load(br#"{"UDPServerPort":8443}"#, &env).unwrap();
        assert_eq!(c.UDPServerPort, 9000);
        assert!(c.EnableIPv6);
        assert_eq!(c.RTCDServiceURL, "http://rtcd:8045");
        let bad = |k: &str| (k == "MM_CALLS_DEFAULT_ENABLED").then(|| "maybe".to_string());
        assert!(matches!(
            Config::load(b"{}", &bad),
            Err(ConfigError::Env { .. })
        ));
    }

    #[test]
    fn validation_refuses_out_of_range_values() {
        for bad in [
            r#"{"UDPServerPort":79}"#,
            r#"{"TCPServerPort":49152}"#,
            r#"{"UDPServerAddress":"not-an-ip"}"#,
            r#"{"MaxCallParticipants":-1}"#,
            r#"{"ICEHostPortOverride":42}"#,
            r#"{"MaxRecordingDuration":10}"#,
            r#"{"RecordingQuality":"ultra"}"#,
            r#"{"DefaultEnabled":"perhaps"}"#,
            r#"{"ICEServersConfigs":"not json"}"#,
            r#"[1,2]"#,
            r#"{"#,
        ] {
            assert!(
                Config::load(bad.as_bytes(), &no_env).is_err(),
                "{bad} accepted"
            );
        }
        assert!(Config::load(br#"{"ICEHostPortOverride":0}"#, &no_env).is_ok());
    }

    #[test]
    fn rtcd_urls_need_an_http_scheme_and_a_port() {
        for bad in [
            "rtcd:8045",
            "ftp://rtcd:8045",
            "ws://rtcd:8045",
            "http://rtcd",
            "http://rtcd:",
            "http://rtcd:http",
            "http://:8045",
            "http://id:key@rtcd",
            "http://[::1]",
        ] {
            let stored = json!({ "RTCDServiceURL": bad }).to_string();
            assert!(
                Config::load(stored.as_bytes(), &no_env).is_err(),
                "{bad} accepted"
            );
        }
        for good in [
            "http://rtcd:8045",
            "https://id:key@rtcd.example.com:8045/",
            "http://[::1]:8045",
        ] {
            let stored = json!({ "RTCDServiceURL": good }).to_string();
            assert!(Config::load(stored.as_bytes(), &no_env).is_ok(), "{good}");
        }
    }

    #[test]
    fn saved_settings_are_checked_without_the_overrides_that_hide_them() {
        let env = |k: &str| (k == "MM_CALLS_UDP_SERVER_PORT").then(|| "9000".to_string());
        let stored = br#"{"UDPServerPort":70000}"#;
        // In force, the override wins; but saving the bad value is refused.
        assert_eq!(Config::load(stored, &env).unwrap().UDPServerPort, 9000);
        assert!(Config::check_saved(stored).is_err());
        assert!(Config::check_saved(br#"{"UDPServerPort":8443}"#).is_ok());
    }

    #[test]
    fn turn_entries_without_credentials_are_hidden_from_clients() {
        let c = Config::load(
            br#"{"TURNStaticAuthSecret":"s","ICEServersConfigs":[{"urls":["stun:x:3478"]},{"urls":["turn:t:3478"]}],"ICEServers":"stun:legacy:1"}"#,
            &no_env,
        )
        .unwrap();
        let client = c.client_ice_servers();
        assert_eq!(client.len(), 2);
        assert_eq!(client[0].urls, vec!["stun:x:3478"]);
        assert_eq!(client[1].urls, vec!["stun:legacy:1"]);
        assert!(c.needs_turn_credentials());
    }
}
