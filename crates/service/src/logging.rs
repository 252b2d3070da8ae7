//! Logging set-up shared by the binaries: plain text on stderr (the host forwards a
//! plugin's stderr into its own log), filtered by `RUST_LOG` (default `info`).

pub fn init() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}
