//! `calls-recorder`: records a Mattermost call without a browser. It joins as the
//! plugin's bot with the job's token (a hidden participant), receives what the SFU
//! forwards, and writes one WebM file: the shared screen's VP8 frames as they were
//! sent (no re-encoding; a keyframe is asked for at the start and after every gap)
//! and every speaker decoded, mixed and encoded into one Opus track, placed by RTP
//! time and RTCP sender reports. When it is stopped (`job_stop`, SIGTERM at the job's
//! time limit) it leaves, uploads the file through the bot API and the plugin posts
//! it in the call's thread.
//!
//! Layout: [`config`] (the job's environment), [`call`] (websocket and WebRTC),
//! [`timeline`] (where a frame goes), [`mixer`] (the sound), [`webm`] (the file),
//! [`bot`] (the plugin's bot API).

pub mod bot;
pub mod call;
pub mod config;
pub mod mixer;
pub mod timeline;
pub mod webm;

use bot::Bot;
use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error(transparent)]
    Bot(#[from] bot::BotError),
    #[error(transparent)]
    Call(#[from] call::CallError),
    #[error(transparent)]
    Mux(#[from] webm::MuxError),
}

/// A file name as the recorder keeps it: no path separators, no control or shell
/// characters.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() || c.is_whitespace() || "\\/:*?\"<>|".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Records the call until `stop` fires or the plugin stops the job; then uploads.
/// A recorder that cannot get into the call reports the failure to the plugin and
/// returns Ok (as upstream's, so that the job service does not keep the job).
pub async fn run(
    cfg: Config,
    mut stop: impl std::future::Future<Output = ()> + Unpin + Send,
) -> Result<(), RecorderError> {
    tracing::info!(%cfg, "recorder starting");
    let bot = Bot::new(&cfg);
    let name = match bot.filename(&cfg.call_id).await {
        Ok(n) => format!("{}.webm", file_safe(&n)),
        Err(e) => {
            tracing::warn!(error = %e, "no file name from the plugin");
            format!("Call_{}.webm", cfg.call_id)
        }
    };
    let mut session = match call::Session::join(&cfg).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "could not get into the call");
            let msg = format!("failed to start recording: {e}");
            if let Err(e) = bot.status(&cfg, "failed", &msg).await {
                tracing::error!(error = %e, "failure not reported");
            }
            return Ok(());
        }
    };
    if session.stop_requested {
        // Stopped before it began (the call emptied meanwhile): leaving ends the job.
        tracing::info!("stopped before the recording began");
        session.leave().await;
        return Ok(());
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(webm::MuxError::from)?;
    let out = cfg.data_dir.join(&name);
    let mut mux = webm::Muxer::create(&cfg.data_dir.join(format!("{name}.clusters")))?;
    bot.status(&cfg, "started", "").await?;
    tracing::info!(file = %out.display(), "recording");
    let (why, duration_ms) = session.record(&cfg, &mut mux, &mut stop).await?;
    tracing::info!(?why, duration_ms, "recording stopped");
    session.leave().await;
    let size = mux.finish(&out, duration_ms)?;
    tracing::info!(size, "uploading");
    let file_id = bot.upload(&cfg, &out, &name).await?;
    bot.post_recording(&cfg, &file_id).await?;
    let _ = std::fs::remove_file(&out);
    tracing::info!(file_id, "recording posted");
    Ok(())
}
