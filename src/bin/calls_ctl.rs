//! `calls-ctl`: an mmctl-style admin CLI for calls-host and the Calls plugin.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = calls_ctl::cli::Cli::parse();
    match calls_ctl::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
