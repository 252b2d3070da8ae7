//! The `[logger]` settings of rtcd and the job service (reference rtcd.md §4
//! `logger.*`; calls-offloader has the same): a console target and a file target,
//! each with its own level and text or JSON format.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggerConfig {
    pub enable_console: bool,
    pub console_json: bool,
    pub console_level: String,
    pub enable_file: bool,
    pub file_json: bool,
    pub file_level: String,
    pub file_location: String,
    pub enable_color: bool,
}

impl Default for LoggerConfig {
    fn default() -> Self {
        LoggerConfig::writing_to("")
    }
}

const LEVELS: [&str; 8] = [
    "panic", "fatal", "error", "warn", "info", "debug", "trace", "stdlog",
];

impl LoggerConfig {
    /// Upstream's defaults, the file target at `file_location`.
    pub fn writing_to(file_location: &str) -> LoggerConfig {
        LoggerConfig {
            enable_console: true,
            console_json: false,
            console_level: "INFO".into(),
            enable_file: true,
            file_json: true,
            file_level: "DEBUG".into(),
            file_location: file_location.into(),
            enable_color: false,
        }
    }

    /// One `<PREFIX>_LOGGER_<name>` environment override (`name` without the prefix).
    pub fn apply_env(&mut self, name: &str, v: &str) -> Result<(), String> {
        let b = || match v.trim().to_ascii_lowercase().as_str() {
            "1" | "t" | "true" => Ok(true),
            "0" | "f" | "false" => Ok(false),
            _ => Err("not a boolean".to_string()),
        };
        match name {
            "ENABLECONSOLE" => self.enable_console = b()?,
            "CONSOLEJSON" => self.console_json = b()?,
            "CONSOLELEVEL" => self.console_level = v.into(),
            "ENABLEFILE" => self.enable_file = b()?,
            "FILEJSON" => self.file_json = b()?,
            "FILELEVEL" => self.file_level = v.into(),
            "FILELOCATION" => self.file_location = v.into(),
            "ENABLECOLOR" => self.enable_color = b()?,
            _ => {}
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.enable_console && !self.enable_file {
            return Err(
                "logger: at least one of enable_console and enable_file must be true".into(),
            );
        }
        for (key, level) in [
            ("logger.console_level", &self.console_level),
            ("logger.file_level", &self.file_level),
        ] {
            if !LEVELS.contains(&level.to_lowercase().as_str()) {
                return Err(format!("{key}: invalid level {level:?}"));
            }
        }
        if self.enable_file && self.file_location.trim().is_empty() {
            return Err("logger.file_location: value should not be empty".into());
        }
        Ok(())
    }
}

/// Upstream's level names mapped onto tracing's (panic/fatal → error, stdlog → info).
fn level(name: &str) -> &'static str {
    match name.to_lowercase().as_str() {
        "panic" | "fatal" | "error" => "error",
        "warn" => "warn",
        "debug" => "debug",
        "trace" => "trace",
        _ => "info",
    }
}

pub fn init(cfg: &LoggerConfig) -> std::io::Result<()> {
    let console = cfg.enable_console.then(|| {
        let f = EnvFilter::new(level(&cfg.console_level));
        let l = fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(cfg.enable_color);
        if cfg.console_json {
            l.json().with_filter(f).boxed()
        } else {
            l.with_filter(f).boxed()
        }
    });
    let file = if cfg.enable_file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.file_location)?;
        let f = EnvFilter::new(level(&cfg.file_level));
        let l = fmt::layer()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false);
        Some(if cfg.file_json {
            l.json().with_filter(f).boxed()
        } else {
            l.with_filter(f).boxed()
        })
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(console)
        .with(file)
        .init();
    Ok(())
}
