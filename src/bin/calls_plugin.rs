//! `calls-plugin`: the Calls plugin backend, started by a host from the plugin bundle.

use std::io::Write;

use calls_plugin::hooks::Hooks;
use calls_wire::handshake;
use calls_wire::proto::plugin_server::PluginServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

fn main() -> std::process::ExitCode {
    calls_service::logging::init();
    if std::env::var(handshake::MAGIC_COOKIE_KEY).ok().as_deref()
        != Some(handshake::MAGIC_COOKIE_VALUE)
    {
        eprintln!("This binary is a plugin. It is not meant to be executed directly: install its bundle into a host.");
        return std::process::ExitCode::from(1);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failed to start runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "plugin failed");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("calls-plugin-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("plugin.sock");
    let listener = UnixListener::bind(&path)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", handshake::line(&path.to_string_lossy()))?;
        out.flush()?;
    }
    let hooks = Hooks::new();
    let shutdown = {
        let hooks = hooks.clone();
        async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot watch SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
                _ = hooks.shutdown.notified() => {}
            }
            hooks.stop().await;
        }
    };
    let res = tonic::transport::Server::builder()
        .add_service(PluginServer::new(hooks.clone()).max_decoding_message_size(64 << 20))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    res?;
    Ok(())
}
