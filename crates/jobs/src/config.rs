//! calls-jobs' configuration: calls-offloader's TOML layout (`[api]`, `[store]`,
//! `[jobs]`, `[logger]`), built-in defaults under the file (unlike upstream, a file
//! need not name every key), `CALLS_JOBS_*` environment overrides named after
//! upstream's Go fields (`CALLS_JOBS_API_HTTP_LISTENADDRESS`, ...), then validation.
//! Our own keys: `jobs.recorder_path` (the program that runs a recording) and
//! `jobs.max_duration_sec` (a cap over what a job asks for).

use std::path::PathBuf;
use std::time::Duration;

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
    pub store: StoreConfig,
    pub jobs: JobsConfig,
    pub logger: LoggerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api: Default::default(),
            store: Default::default(),
            jobs: Default::default(),
            logger: LoggerConfig::writing_to("calls-jobs.log"),
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
            listen_address: ":4545".into(),
            tls: Default::default(),
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

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    pub allow_self_registration: bool,
    pub enable_admin: bool,
    pub admin_secret_key: String,
    pub session_cache: SessionCacheConfig,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A directory: registered clients, and each job's record, logs and files.
    pub data_source: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_source: "/tmp/calls-jobs-db".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// `local` (jobs as processes of this machine); upstream's `docker` and
    /// `kubernetes` are refused with a clear error.
    pub api_type: String,
    pub max_concurrent_jobs: i64,
    /// How long a failed job's record and logs are kept: `<n>m`, `<n>h`, `<n>d`;
    /// "0" keeps them.
    pub failed_jobs_retention_time: String,
    pub image_registry: String,
    /// The program a recording job runs (default: `calls-recorder` beside this
    /// executable, else on `PATH`).
    pub recorder_path: String,
    /// The longest any job runs, whatever it asks for (0: as the job asks).
    pub max_duration_sec: i64,
    /// After a job's time is up it gets SIGTERM, then this long to finish (upload).
    pub stop_grace_sec: i64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            api_type: "local".into(),
            max_concurrent_jobs: 2,
            failed_jobs_retention_time: "30d".into(),
            image_registry: "mattermost".into(),
            recorder_path: String::new(),
            max_duration_sec: 0,
            // Upstream's container stop timeout.
            stop_grace_sec: 300,
        }
    }
}

impl JobsConfig {
    /// The retention of failed jobs (None: kept).
    pub fn retention(&self) -> Result<Option<Duration>, String> {
        let v = self.failed_jobs_retention_time.trim();
        if v.is_empty() || v == "0" {
            return Ok(None);
        }
        let (n, unit) = v.split_at(v.len() - 1);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("invalid FailedJobsRetentionTime value: {v:?}"))?;
        let secs = match unit {
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(format!("invalid FailedJobsRetentionTime value: {v:?}")),
        };
        if secs < 60 {
            return Err(
                "invalid FailedJobsRetentionTime value: should be at least one minute".into(),
            );
        }
        Ok(Some(Duration::from_secs(secs)))
    }

    /// The recorder program: as configured, else beside this executable.
    pub fn recorder(&self) -> PathBuf {
        if !self.recorder_path.is_empty() {
            return PathBuf::from(&self.recorder_path);
        }
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("calls-recorder")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("calls-recorder"))
    }
}

impl Config {
    /// Defaults, then `path` if it exists (a missing file is logged), then the
    /// environment; validated.
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

    /// `CALLS_JOBS_*` overrides; unknown names are ignored (as envconfig does).
    pub fn apply_env(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        for (k, v) in env {
            let Some(name) = k.strip_prefix("CALLS_JOBS_") else {
                continue;
            };
            let bad = |why: &str| ConfigError::Env(k.clone(), why.to_string());
            let b = || match v.trim().to_ascii_lowercase().as_str() {
                "1" | "t" | "true" => Ok(true),
                "0" | "f" | "false" => Ok(false),
                _ => Err(bad("not a boolean")),
            };
            let i = || v.trim().parse::<i64>().map_err(|_| bad("not an integer"));
            let s = || v.clone();
            let sec = &mut self.api.security;
            match name {
                "API_HTTP_LISTENADDRESS" => self.api.http.listen_address = s(),
                "API_HTTP_TLS_ENABLE" => self.api.http.tls.enable = b()?,
                "API_HTTP_TLS_CERTFILE" => self.api.http.tls.cert_file = s(),
                "API_HTTP_TLS_CERTKEY" => self.api.http.tls.cert_key = s(),
                "API_SECURITY_ALLOWSELFREGISTRATION" => sec.allow_self_registration = b()?,
                "API_SECURITY_ENABLEADMIN" => sec.enable_admin = b()?,
                "API_SECURITY_ADMINSECRETKEY" => sec.admin_secret_key = s(),
                "API_SECURITY_SESSIONCACHE_EXPIRATIONMINUTES" => {
                    sec.session_cache.expiration_minutes = i()?
                }
                "STORE_DATASOURCE" => self.store.data_source = s(),
                "JOBS_APITYPE" => self.jobs.api_type = s(),
                "JOBS_MAXCONCURRENTJOBS" => self.jobs.max_concurrent_jobs = i()?,
                "JOBS_FAILEDJOBSRETENTIONTIME" => self.jobs.failed_jobs_retention_time = s(),
                "JOBS_IMAGEREGISTRY" => self.jobs.image_registry = s(),
                "JOBS_RECORDERPATH" => self.jobs.recorder_path = s(),
                "JOBS_MAXDURATIONSEC" => self.jobs.max_duration_sec = i()?,
                "JOBS_STOPGRACESEC" => self.jobs.stop_grace_sec = i()?,
                l if l.starts_with("LOGGER_") => self
                    .logger
                    .apply_env(&l["LOGGER_".len()..], v)
                    .map_err(|e| bad(&e))?,
                _ => {}
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.api.http.listen_address.trim().is_empty() {
            return bad("invalid ListenAddress value: should not be empty".into());
        }
        if self.api.http.tls.enable {
            return bad("api.http.tls.enable: TLS is not built into calls-jobs; terminate TLS in a reverse proxy in front of it".into());
        }
        let sec = &self.api.security;
        if sec.enable_admin && sec.admin_secret_key.is_empty() {
            return bad("invalid AdminSecretKey value: should not be empty".into());
        }
        if sec.session_cache.expiration_minutes <= 0 {
            return bad("invalid ExpirationMinutes value: should be greater than zero".into());
        }
        if self.store.data_source.trim().is_empty() {
            return bad("invalid DataSource value: should not be empty".into());
        }
        match self.jobs.api_type.as_str() {
            "local" => {}
            "docker" | "kubernetes" => {
                return bad(format!(
                    "invalid APIType value: {} (calls-jobs runs jobs as local processes: use \"local\", or upstream's calls-offloader for {})",
                    self.jobs.api_type, self.jobs.api_type
                ))
            }
            other => return bad(format!("invalid APIType value: {other}")),
        }
        if self.jobs.max_concurrent_jobs <= 0 {
            return bad("invalid MaxConcurrentJobs value: should be greater than zero".into());
        }
        if self.jobs.image_registry.trim().is_empty() {
            return bad("invalid ImageRegistry value: should not be empty".into());
        }
        if self.jobs.max_duration_sec < 0 || self.jobs.stop_grace_sec < 0 {
            return bad(
                "jobs.max_duration_sec and jobs.stop_grace_sec: should not be negative".into(),
            );
        }
        self.jobs.retention().map_err(ConfigError::Invalid)?;
        self.logger.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_then_file_then_environment() {
        let mut c = Config::from_toml("[jobs]\nmax_concurrent_jobs = 4\n").unwrap();
        assert_eq!(c.api.http.listen_address, ":4545");
        assert_eq!(c.jobs.max_concurrent_jobs, 4);
        c.apply_env(&env(&[
            ("CALLS_JOBS_API_HTTP_LISTENADDRESS", "127.0.0.1:9999"),
            ("CALLS_JOBS_API_SECURITY_ALLOWSELFREGISTRATION", "true"),
            ("CALLS_JOBS_JOBS_MAXDURATIONSEC", "60"),
            ("CALLS_JOBS_LOGGER_ENABLEFILE", "false"),
            ("RTCD_API_HTTP_LISTENADDRESS", "ignored"),
        ]))
        .unwrap();
        assert_eq!(c.api.http.listen_address, "127.0.0.1:9999");
        assert!(c.api.security.allow_self_registration);
        assert_eq!(c.jobs.max_duration_sec, 60);
        assert!(!c.logger.enable_file);
        c.validate().unwrap();
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            (
                "[jobs]\napi_type = \"docker\"\n",
                "calls-jobs runs jobs as local processes",
            ),
            ("[jobs]\nmax_concurrent_jobs = 0\n", "MaxConcurrentJobs"),
            (
                "[jobs]\nfailed_jobs_retention_time = \"10s\"\n",
                "FailedJobsRetentionTime",
            ),
            ("[api.security]\nenable_admin = true\n", "AdminSecretKey"),
            ("[store]\ndata_source = \"\"\n", "DataSource"),
        ];
        for (toml, want) in cases {
            let e = Config::from_toml(toml).unwrap().validate().unwrap_err();
            assert!(e.to_string().contains(want), "{toml}: {e}");
        }
        assert!(Config::from_toml("[jobs]\nunknown = 1\n").is_err());
        let mut c = Config::default();
        let e = c
            .apply_env(&env(&[("CALLS_JOBS_JOBS_MAXCONCURRENTJOBS", "many")]))
            .unwrap_err();
        assert!(e.to_string().contains("CALLS_JOBS_JOBS_MAXCONCURRENTJOBS"));
    }

    #[test]
    fn the_shipped_sample_config_is_valid() {
        let c = Config::from_toml(include_str!("../../../deploy/calls-jobs.toml")).unwrap();
        c.validate().unwrap();
        assert!(c.api.security.allow_self_registration);
        assert_eq!(c.store.data_source, "/var/lib/calls-jobs");
    }

    #[test]
    fn retention_units() {
        let mut j = JobsConfig::default();
        assert_eq!(
            j.retention().unwrap(),
            Some(Duration::from_secs(30 * 86_400))
        );
        j.failed_jobs_retention_time = "90m".into();
        assert_eq!(j.retention().unwrap(), Some(Duration::from_secs(5400)));
        j.failed_jobs_retention_time = "0".into();
        assert_eq!(j.retention().unwrap(), None);
    }
}
