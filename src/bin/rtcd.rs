//! `rtcd`: an rtcd-compatible media service for Mattermost Calls.

use calls_rtcd::config::Config;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "rtcd",
    version,
    about = "rtcd-compatible media service for Mattermost Calls"
)]
struct Args {
    /// Path to the TOML config file (a missing file is allowed: defaults + RTCD_* env).
    #[arg(long, short = 'c', default_value = "config/config.toml")]
    config: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match Config::load(Some(&args.config), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rtcd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(e) = calls_rtcd::logging::init(&config.logger) {
        eprintln!(
            "rtcd: cannot open the log file {}: {e}",
            config.logger.file_location
        );
        return std::process::ExitCode::from(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rtcd: failed to start runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(calls_rtcd::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "rtcd failed");
            eprintln!("rtcd: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
