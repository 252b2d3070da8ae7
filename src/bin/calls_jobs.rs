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
    calls_service::service_main::service_main(
        "calls-jobs",
        |env| Config::load(Some(&args.config), env),
        |c| &c.logger,
        calls_jobs::run,
    )
}
