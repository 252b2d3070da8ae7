//! rtcd's logger settings (reference rtcd.md §4 `logger.*`): a console target and a
//! file target, each with its own level and text or JSON format.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use super::config::LoggerConfig;

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
