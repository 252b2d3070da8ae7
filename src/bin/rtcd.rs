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
    calls_service::service_main::service_main(
        "rtcd",
        |env| Config::load(Some(&args.config), env),
        |c| &c.logger,
        calls_rtcd::run,
    )
}
