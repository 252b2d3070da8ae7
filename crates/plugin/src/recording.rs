//! Call recordings (reference calls-plugin.md §3.7): the host starts one, the job
//! service runs a recorder that joins the call as the plugin's bot, reports that it
//! started (or failed), and on stop uploads the file that becomes the recording post.
//! Every change to a job happens under the call lock; `call_job_state` goes out after
//! the write, to the bot and the call's participants.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use sqlx::types::Json;

use super::app::{App, AppError};
use super::host_api::Broadcast;
use super::job_service::{recorder_runner, JobService, RecordingInput};
use super::model::{CallState, Job, JobProps, JobStateClient};
use calls_wire::ids::{new_id, now_ms};

pub const RECORDING: &str = "recording";
/// How long the recorder has to report that it started (upstream's 1 minute).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
pub const START_TIMEOUT_ERR: &str =
    "failed to start recording job: timed out waiting for bot to join call";

/// A refusal or failure of a recording request, in upstream's status and words.
#[derive(Debug)]
pub struct RecError {
    pub status: StatusCode,
    pub message: String,
}

fn rec_err(status: StatusCode, message: impl Into<String>) -> RecError {
    RecError {
        status,
        message: message.into(),
    }
}

impl From<super::store::StoreError> for RecError {
    fn from(e: super::store::StoreError) -> RecError {
        rec_err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<AppError> for RecError {
    fn from(e: AppError) -> RecError {
        let status = match e {
            AppError::NoCallOngoing => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        rec_err(status, e.to_string())
    }
}

pub fn job_state(j: &Job) -> JobStateClient {
    JobStateClient {
        job_type: j.job_type.clone(),
        init_at: j.init_at,
        start_at: j.start_at,
        end_at: j.end_at,
        err: j.props.err.clone(),
    }
}

/// The `call_job_state` payload (`callID` is the channel id, as upstream).
pub fn job_state_event(channel_id: &str, j: &Job) -> Value {
    json!({
        "callID": channel_id,
        "jobState": {
            "type": j.job_type, "init_at": j.init_at, "start_at": j.start_at,
            "end_at": j.end_at, "err": j.props.err,
        },
    })
}

/// `call_job_state`: the bot's copy first, then every participant (upstream's CH+P);
/// `err` is always there in this event.
pub async fn publish_job_state(app: &App, state: &CallState, j: &Job) {
    let data = job_state_event(&state.call.channel_id, j);
    if !app.bot_id.is_empty() {
        let mut copy = data.clone();
        copy["channelID"] = json!(state.call.channel_id);
        app.publish("call_job_state", copy, Broadcast::user(&app.bot_id))
            .await;
    }
    app.publish_to_participants("call_job_state", data, state)
        .await;
}

/// `job_stop` to the bot: the recorder of `job_id` stops and uploads.
pub async fn send_job_stop(app: &App, job_id: &str) {
    if app.bot_id.is_empty() {
        return;
    }
    app.publish(
        "job_stop",
        json!({"job_id": job_id}),
        Broadcast::user(&app.bot_id),
    )
    .await;
}

/// The checks upstream makes before looking at the call: the license, the setting,
/// a job service to run the recorder.
pub fn job_service(app: &App) -> Result<Arc<JobService>, RecError> {
    if !app.license().enterprise() {
        return Err(rec_err(
            StatusCode::FORBIDDEN,
            "Recordings are not allowed by your license",
        ));
    }
    if !app.config().EnableRecordings {
        return Err(rec_err(StatusCode::FORBIDDEN, "Recordings are not enabled"));
    }
    app.job_service
        .read()
        .clone()
        .ok_or_else(|| rec_err(StatusCode::FORBIDDEN, "Job service is not initialized"))
}

/// The job service for a request: reached again first when the settings name
/// another one than the client holds (a change not applied yet) or none was reached
/// (the service may be up by now).
pub async fn current_job_service(app: &App) -> Result<Arc<JobService>, RecError> {
    let held = job_service(app);
    let wanted = configured_url(&app.config().JobServiceURL);
    if matches!(&held, Ok(s) if s.url() == wanted) || !app.config().EnableRecordings {
        return held;
    }
    {
        let last = app.job_service_refresh.lock().await;
        let recent = last
            .as_ref()
            .is_some_and(|(u, t)| *u == wanted && t.elapsed() < RETRY_AFTER);
        if recent {
            return job_service(app);
        }
    }
    refresh_job_service(app).await;
    job_service(app)
}

/// A job service that could not be reached is tried again by a request after this.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The URL the client of `raw` talks to (credentials in it stripped).
fn configured_url(raw: &str) -> String {
    let url = raw.trim().trim_end_matches('/');
    reqwest::Url::parse(url)
        .map(|mut u| {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.as_str().trim_end_matches('/').to_string()
        })
        .unwrap_or_default()
}

/// Reaches the job service the settings name (when the license and the settings
/// allow recordings), or forgets it when they no longer do. A service that cannot be
/// reached is logged once per attempt; recordings answer "Job service is not
/// initialized" until a later configuration change reaches it.
pub async fn refresh_job_service(app: &App) {
    let cfg = app.config();
    let wanted = app.license().enterprise() && cfg.EnableRecordings;
    let url = cfg.JobServiceURL.trim().trim_end_matches('/').to_string();
    if !wanted || url.is_empty() {
        if app.job_service.write().take().is_some() {
            tracing::info!("job service released: recordings are off");
        }
        if wanted {
            tracing::error!("failed to initialize job service: URL is missing");
        }
        return;
    }
    // One attempt at a time; one that waited finds the service reached.
    let mut last = app.job_service_refresh.lock().await;
    let current = app.job_service.read().clone();
    if current
        .as_ref()
        .is_some_and(|s| s.url() == configured_url(&url))
    {
        return;
    }
    let env = |k: &str| std::env::var(k).ok();
    match JobService::connect(
        &app.host,
        app.call_locks.mutexes(),
        &url,
        &app.server.diagnostic_id,
        &env,
    )
    .await
    {
        Ok(svc) => {
            tracing::info!(url = svc.url(), "job service initialized");
            *app.job_service.write() = Some(Arc::new(svc));
            *last = None;
        }
        Err(e) => {
            // A client of another service than the one named now goes.
            {
                let mut held = app.job_service.write();
                if held
                    .as_ref()
                    .is_some_and(|s| s.url() != configured_url(&url))
                {
                    *held = None;
                }
            }
            *last = Some((configured_url(&url), std::time::Instant::now()));
            tracing::error!(error = %e, "failed to initialize job service");
        }
    }
}

/// The call's state when `user_id` is its host (sysadmins are not exempt, as upstream).
fn hosted(state: Option<CallState>, user_id: &str) -> Result<CallState, RecError> {
    let state = state.ok_or_else(|| rec_err(StatusCode::FORBIDDEN, "no call ongoing"))?;
    if state.call.host_id() != user_id {
        return Err(rec_err(StatusCode::FORBIDDEN, "no permissions to record"));
    }
    Ok(state)
}

fn active_recording(state: &CallState) -> Option<Job> {
    state.jobs.get(RECORDING).filter(|j| j.end_at == 0).cloned()
}

/// Starts a recording of `channel_id`'s call for its host.
pub async fn start(
    app: &App,
    svc: &JobService,
    channel_id: &str,
    user_id: &str,
) -> Result<JobStateClient, RecError> {
    let guard = app.call_locks.lock(channel_id).await.map_err(lock_err)?;
    let mut state = hosted(app.load_state(channel_id).await?, user_id)?;
    if active_recording(&state).is_some() {
        return Err(rec_err(
            StatusCode::FORBIDDEN,
            "recording already in progress",
        ));
    }
    let mut job = Job {
        id: new_id(),
        call_id: state.call.id.clone(),
        job_type: RECORDING.into(),
        creator_id: user_id.into(),
        init_at: now_ms(),
        start_at: 0,
        end_at: 0,
        props: Json(JobProps::default()),
    };
    app.store.create_job(&job).await.map_err(|e| {
        rec_err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to create call job: {e}"),
        )
    })?;
    publish_job_state(app, &state, &job).await;
    drop(guard);

    // The job service is asked without the lock held, as upstream: it may take a while.
    let cfg = app.config();
    let input = RecordingInput {
        site_url: std::env::var("MM_CALLS_RECORDER_SITE_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| app.server.site_url.clone()),
        call_id: channel_id.into(),
        post_id: state.call.post_id.clone(),
        recording_id: job.id.clone(),
        auth_token: app.bot_token.clone(),
        quality: cfg.RecordingQuality.clone(),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let runner = recorder_runner(&|k| std::env::var(k).ok());
    let created = match input.validate() {
        Ok(()) => svc
            .create_recording(
                &runner,
                cfg.MaxRecordingDuration * 60,
                input.input_data(&env),
            )
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("recorder config is not valid: {e}")),
    };

    let _guard = app.call_locks.lock(channel_id).await.map_err(lock_err)?;
    job = app.store.get_job(&job.id).await?.ok_or_else(|| {
        rec_err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to get recording state: not found",
        )
    })?;
    match app.load_state(channel_id).await? {
        Some(s) if s.call.id == job.call_id => state = s,
        // The call ended while the service was asked: so did the recording.
        _ => {
            if job.end_at == 0 {
                job.end_at = now_ms();
                app.store.update_job(&job).await?;
            }
        }
    }
    if job.end_at != 0 {
        // Stopped (or its call ended) while the service was asked: upstream's answer;
        // the recorder finds no job to join.
        return Err(rec_err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to get recording state: the recording has ended",
        ));
    }
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("failed to create recording job: {e}");
            tracing::error!(channel_id, error = e, "recording job not created");
            job.end_at = now_ms();
            job.props.err = msg.clone();
            app.store.update_job(&job).await?;
            publish_job_state(app, &state, &job).await;
            return Err(rec_err(StatusCode::INTERNAL_SERVER_ERROR, msg));
        }
    };
    if !job.props.job_id.is_empty() {
        return Err(rec_err(
            StatusCode::FORBIDDEN,
            "recording job already in progress",
        ));
    }
    job.props.job_id = created.id.clone();
    app.store.update_job(&job).await?;
    if let Err(e) = save_recording_metadata(app, &state.call.post_id, &job.id).await {
        tracing::error!(channel_id, error = %e, "failed to save recording metadata");
    }
    publish_job_state(app, &state, &job).await;
    spawn_start_timeout(app, channel_id, &job.id, &created.id);
    Ok(job_state(&job))
}

/// Any other action: refused after the host check, as upstream orders them.
pub async fn unsupported(
    app: &App,
    channel_id: &str,
    user_id: &str,
) -> Result<JobStateClient, RecError> {
    let _guard = app.call_locks.lock(channel_id).await.map_err(lock_err)?;
    hosted(app.load_state(channel_id).await?, user_id)?;
    Err(rec_err(
        StatusCode::BAD_REQUEST,
        "unsupported recording action",
    ))
}

/// Stops the call's recording for its host: ended now, the recorder told to stop.
pub async fn stop(app: &App, channel_id: &str, user_id: &str) -> Result<JobStateClient, RecError> {
    let _guard = app.call_locks.lock(channel_id).await.map_err(lock_err)?;
    let state = hosted(app.load_state(channel_id).await?, user_id)?;
    let mut job = active_recording(&state)
        .ok_or_else(|| rec_err(StatusCode::FORBIDDEN, "no recording in progress"))?;
    job.end_at = now_ms();
    app.store.update_job(&job).await.map_err(|e| {
        rec_err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to update call job: {e}"),
        )
    })?;
    send_job_stop(app, &job.id).await;
    publish_job_state(app, &state, &job).await;
    Ok(job_state(&job))
}

fn lock_err(e: super::mutex::LockError) -> RecError {
    rec_err(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("failed to lock call: {e}"),
    )
}

/// A recorder that has not reported within a minute: its job fails.
fn spawn_start_timeout(app: &App, channel_id: &str, job_id: &str, service_job_id: &str) {
    let (app, channel_id, job_id, service_job_id) = (
        app.clone(),
        channel_id.to_string(),
        job_id.to_string(),
        service_job_id.to_string(),
    );
    tokio::spawn(async move {
        tokio::time::sleep(START_TIMEOUT).await;
        let res: super::app::Result<()> = async {
            let guard = app.call_locks.lock(&channel_id).await?;
            let Some(mut job) = app.store.get_job(&job_id).await? else {
                return Ok(());
            };
            if job.end_at != 0 || job.start_at != 0 || job.props.job_id != service_job_id {
                return Ok(());
            }
            job.end_at = now_ms();
            job.props.err = START_TIMEOUT_ERR.into();
            app.store.update_job(&job).await?;
            let state = app.load_state(&channel_id).await?;
            drop(guard);
            tracing::warn!(channel_id, job_id, "recorder did not start in time");
            if let Some(state) = state {
                publish_job_state(&app, &state, &job).await;
            }
            Ok(())
        }
        .await;
        if let Err(e) = res {
            tracing::error!(job_id, error = %e, "recording start timeout check failed");
        }
    });
}

/// The call post's `recordings` prop gets the job (filled in when its file is posted).
async fn save_recording_metadata(app: &App, post_id: &str, job_id: &str) -> super::app::Result<()> {
    update_recordings_prop(app, post_id, job_id, json!({})).await
}

/// Merges `entry` into the call post's `recordings[job_id]`.
pub async fn update_recordings_prop(
    app: &App,
    post_id: &str,
    job_id: &str,
    entry: Value,
) -> super::app::Result<()> {
    if post_id.is_empty() {
        return Ok(());
    }
    let Some(mut post) = app.host.post(post_id).await? else {
        return Ok(());
    };
    let mut props: serde_json::Map<String, Value> =
        serde_json::from_slice(&post.props_json).unwrap_or_default();
    let recs = props.entry("recordings").or_insert_with(|| json!({}));
    if !recs.is_object() {
        tracing::warn!(post_id, "call post recordings prop is not an object");
        return Ok(());
    }
    let slot = &mut recs[job_id];
    if !slot.is_object() {
        *slot = json!({});
    }
    if let (Value::Object(dst), Value::Object(src)) = (slot, entry) {
        dst.extend(src);
    }
    post.props_json = serde_json::to_vec(&props).unwrap_or_default();
    app.host.update_post(post).await?;
    Ok(())
}

// ------------------------------------------------------------------ the bot's side

/// The bot joining with `job_id`: only the recording waiting for its recorder takes
/// it; the job remembers the bot's connection.
pub async fn bot_joins(
    app: &App,
    state: &mut CallState,
    job_id: &str,
    conn_id: &str,
) -> super::app::Result<()> {
    let Some(job) = active_recording(state) else {
        return Err(super::app::refused("no job in progress"));
    };
    if job.id != job_id || job.start_at != 0 {
        return Err(super::app::refused(
            "job not in progress or already started",
        ));
    }
    let mut job = job;
    job.props.bot_conn_id = conn_id.into();
    app.store.update_job(&job).await?;
    state.jobs.insert(RECORDING.into(), job);
    Ok(())
}

/// A session left under the lock: if it was the recorder of the running recording,
/// the recording ended with it (max duration, a stop, a crash). Returns the job to
/// announce once the lock is released.
pub async fn session_left(
    app: &App,
    state: &mut CallState,
    session_id: &str,
) -> super::app::Result<Option<Job>> {
    let Some(mut job) = active_recording(state) else {
        return Ok(None);
    };
    if job.props.bot_conn_id != session_id {
        return Ok(None);
    }
    job.end_at = now_ms();
    app.store.update_job(&job).await?;
    state.jobs.insert(RECORDING.into(), job.clone());
    Ok(Some(job))
}

/// The last person left and only the recorder remains: it is told to stop (the job
/// ends when it leaves).
pub async fn only_bot_left(app: &App, state: &CallState) {
    if state.sessions.is_empty() || state.sessions.values().any(|s| s.user_id != app.bot_id) {
        return;
    }
    if let Some(job) = active_recording(state) {
        send_job_stop(app, &job.id).await;
    }
}

/// The recorder's report (`started` / `failed`) on its job.
pub async fn job_status(
    app: &App,
    channel_id: &str,
    job_id: &str,
    job_type: &str,
    status: &str,
    error: &str,
) -> Result<(), RecError> {
    let bad = |m: &str| rec_err(StatusCode::BAD_REQUEST, m);
    let guard = app.call_locks.lock(channel_id).await.map_err(lock_err)?;
    let state = app
        .load_state(channel_id)
        .await?
        .ok_or_else(|| bad("no call ongoing"))?;
    if job_type != RECORDING && job_type != "transcribing" {
        return Err(bad("invalid job type"));
    }
    let mut job = state
        .jobs
        .get(job_type)
        .cloned()
        .ok_or_else(|| bad("no job ongoing"))?;
    if job.id != job_id {
        return Err(bad("invalid job ID"));
    }
    if status != "failed" && job.end_at > 0 {
        return Err(bad("job has ended"));
    }
    match status {
        "failed" => {
            job.end_at = now_ms();
            job.props.err = error.to_string();
            tracing::warn!(channel_id, job_id, error, "recorder reported a failure");
        }
        "started" => {
            if job.start_at > 0 {
                return Err(bad("job has already started"));
            }
            job.start_at = now_ms();
        }
        _ => return Err(bad("unsupported status type")),
    }
    app.store.update_job(&job).await.map_err(|e| {
        rec_err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to update call job: {e}"),
        )
    })?;
    drop(guard);
    publish_job_state(app, &state, &job).await;
    Ok(())
}

/// The message of a recording post (upstream's, in English).
pub fn recording_post_message(title: &str, start_at_ms: i64) -> String {
    let base = "Here's the call recording";
    if title.is_empty() {
        return base.into();
    }
    let t = chrono::DateTime::from_timestamp_millis(start_at_ms).unwrap_or_default();
    format!("{base} of {title} at {} UTC", t.format("%-I:%M%p"))
}

/// `POST /bot/calls/{ch}/recordings`: the uploaded file becomes a post in the call's
/// thread, and the call post's `recordings` entry points at it.
pub async fn post_recording(
    app: &App,
    channel_id: &str,
    job_id: &str,
    call_post_id: &str,
    file_id: &str,
) -> Result<(), RecError> {
    let fail = |m: String| rec_err(StatusCode::INTERNAL_SERVER_ERROR, m);
    let bad = |m: &str| rec_err(StatusCode::BAD_REQUEST, m);
    let _guard = app.call_locks.lock(channel_id).await.map_err(lock_err)?;
    // The job must be a recording of a call of this channel, posted once, to its post.
    let job = app
        .store
        .get_job(job_id)
        .await?
        .filter(|j| j.job_type == RECORDING)
        .ok_or_else(|| bad("invalid JobID"))?;
    let call = app
        .store
        .get_call(&job.call_id)
        .await?
        .filter(|c| c.channel_id == channel_id)
        .ok_or_else(|| bad("invalid JobID"))?;
    if call.post_id != call_post_id {
        return Err(bad("invalid PostID"));
    }
    let call_post = app
        .host
        .post(call_post_id)
        .await
        .map_err(|e| fail(format!("failed to get call post: {e}")))?
        .ok_or_else(|| fail("failed to get call post: not found".into()))?;
    let root = if call_post.root_id.is_empty() {
        call_post.id.clone()
    } else {
        call_post.root_id.clone()
    };
    let props: Value = serde_json::from_slice(&call_post.props_json).unwrap_or_default();
    if props["recordings"][job_id]["post_id"].is_string() {
        return Err(bad("recording already posted"));
    }
    let title = props["title"].as_str().unwrap_or_default();
    let start_at = props["start_at"].as_i64().unwrap_or_default();
    let post = calls_wire::proto::Post {
        channel_id: channel_id.into(),
        user_id: app.bot_id.clone(),
        root_id: root,
        message: recording_post_message(title, start_at),
        r#type: "custom_calls_recording".into(),
        props_json: serde_json::to_vec(
            &json!({"recording_id": job_id, "call_post_id": call_post_id}),
        )
        .unwrap_or_default(),
        file_ids: vec![file_id.to_string()],
        ..Default::default()
    };
    let created = app
        .host
        .create_post(post)
        .await
        .map_err(|e| fail(format!("failed to create post: {e}")))?;
    update_recordings_prop(
        app,
        call_post_id,
        job_id,
        json!({"file_id": file_id, "post_id": created.id}),
    )
    .await
    .map_err(|e| fail(format!("failed to update call thread: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn post_messages_name_the_title_and_time() {
        assert_eq!(
            super::recording_post_message("", 0),
            "Here's the call recording"
        );
        assert_eq!(
            super::recording_post_message("Standup", 1_700_000_000_000),
            "Here's the call recording of Standup at 10:13PM UTC"
        );
    }
}
