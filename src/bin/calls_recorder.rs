//! `calls-recorder`: the recording job a job service runs (`calls-jobs` or, through
//! a compatible runner, calls-offloader); its inputs are environment variables.

fn main() -> std::process::ExitCode {
    calls_service::logging::init();
    let cfg = match calls_recorder::config::Config::from_env(|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calls-recorder: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calls-recorder: failed to start runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let res = rt.block_on(async {
        // SIGTERM (the job's time is up) or SIGINT: stop, upload, post.
        let stop = Box::pin(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        });
        calls_recorder::run(cfg, stop).await
    });
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "recording failed");
            std::process::ExitCode::from(1)
        }
    }
}
