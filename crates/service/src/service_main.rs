//! The start of a standalone service (rtcd, calls-jobs): its configuration loaded
//! (a refusal exits 2 with the key named), its `[logger]` set up, then it runs on a
//! tokio runtime until it returns (an error exits 1).

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use super::logger::LoggerConfig;

pub fn service_main<C, LE, RE, Fut>(
    name: &str,
    load: impl FnOnce(&[(String, String)]) -> Result<C, LE>,
    logger: impl Fn(&C) -> &LoggerConfig,
    run: impl FnOnce(C) -> Fut,
) -> ExitCode
where
    LE: Display,
    RE: Display,
    Fut: Future<Output = Result<(), RE>>,
{
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match load(&env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let log = logger(&config);
    if let Err(e) = super::logger::init(log) {
        eprintln!(
            "{name}: cannot open the log file {}: {e}",
            log.file_location
        );
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: failed to start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} failed");
            eprintln!("{name}: {e}");
            ExitCode::from(1)
        }
    }
}
