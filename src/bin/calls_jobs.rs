//! `calls-jobs`: a calls-offloader-compatible job service that runs Calls recordings
//! as local `calls-recorder` processes.

use calls_jobs::config::Config;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "calls-jobs",
    version,
    about = "Job service for Mattermost Calls recordings (calls-offloader's API, local processes)"
)]
struct Args {
    /// Path to the TOML config file (a missing file is allowed: defaults + CALLS_JOBS_* env).
    #[arg(long, short = 'c', default_value = "config/calls-jobs.toml")]
    config: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match Config::load(Some(&args.config), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calls-jobs: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(e) = calls_service::logger::init(&config.logger) {
        eprintln!(
            "calls-jobs: cannot open the log file {}: {e}",
            config.logger.file_location
        );
        return std::process::ExitCode::from(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calls-jobs: failed to start runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(calls_jobs::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "calls-jobs failed");
            eprintln!("calls-jobs: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
