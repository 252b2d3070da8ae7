//! Jobs as local processes: one process per job, its `input_data` as environment
//! variables (as calls-offloader gives a container), its output in the job's log,
//! its time bounded (SIGTERM when it is up, SIGKILL after the grace), at most
//! `max_concurrent_jobs` at once. A job that ends well is forgotten (as upstream);
//! a failed one is kept, with its logs, for `failed_jobs_retention_time`.
//!
//! On top of upstream: when a recording job fails (its process dies or exits with an
//! error), the plugin is told through the bot API with the job's own credentials, so
//! that the call's participants learn at once instead of after the reconnect grace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::config::JobsConfig;
use super::runner::{self, Kind};
use calls_wire::ids::{new_id, now_ms};

/// upstream `job.Config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobConfig {
    #[serde(rename = "type", default)]
    pub job_type: String,
    #[serde(default)]
    pub max_duration_sec: i64,
    #[serde(default)]
    pub runner: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub input_data: Map<String, Value>,
}

/// upstream `job.Job`: the config's fields, its id and times (no status: a job
/// without `stop_at` runs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    #[serde(flatten)]
    pub config: JobConfig,
    pub id: String,
    pub start_at: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stop_at: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A job as kept: with the client that made it (only that client, or the admin,
/// sees it: its `input_data` holds the token the job acts with).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    job: Job,
    #[serde(default)]
    owner: String,
}

/// The `input_data` a recorder reads (upstream's recorder config keys). A job's
/// other keys are not passed on: its environment is the job service's to decide
/// (`LD_PRELOAD`, `PATH`, ... must not come from a client).
const RECORDER_INPUTS: &[&str] = &[
    "site_url",
    "call_id",
    "post_id",
    "recording_id",
    "auth_token",
    "width",
    "height",
    "video_rate",
    "audio_rate",
    "frame_rate",
    "video_preset",
    "output_format",
];

impl JobConfig {
    /// upstream `Config.IsValid`, in its order and words.
    pub fn validate(&self, registry: &str, dev_mode: bool) -> Result<Kind, String> {
        if self.job_type.is_empty() {
            return Err("invalid Type value: should not be empty".into());
        }
        let kind = runner::validate(&self.runner, registry, dev_mode)
            .map_err(|e| format!("invalid Runner value: {e}"))?;
        if self.max_duration_sec <= 0 {
            return Err("invalid MaxDurationSec value: should be positive".into());
        }
        if self.job_type != "recording" && self.job_type != "transcribing" {
            return Err(format!("invalid Type value: {:?}", self.job_type));
        }
        Ok(kind)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Service(String),
    #[error("error: not found")]
    NotFound,
    #[error("job is running")]
    Running,
    #[error("store: {0}")]
    Store(#[from] std::io::Error),
}

/// An `input_data` value as the job's environment shows it (Go's `%v`).
fn env_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

pub struct Jobs {
    dir: PathBuf,
    cfg: JobsConfig,
    dev_mode: bool,
    records: Mutex<HashMap<String, Stored>>,
    running: Mutex<HashMap<String, u32>>,
    http: reqwest::Client,
}

impl Jobs {
    /// Opens the job records under `data_source/jobs`; jobs that were running when the
    /// service stopped are recorded as failed (their processes went with it).
    pub fn open(data_source: &Path, cfg: JobsConfig, dev_mode: bool) -> std::io::Result<Arc<Jobs>> {
        let dir = data_source.join("jobs");
        std::fs::create_dir_all(&dir)?;
        let mut records = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path().join("job.json");
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(mut rec) = serde_json::from_slice::<Stored>(&bytes) else {
                tracing::warn!(path = %path.display(), "unreadable job record skipped");
                continue;
            };
            if rec.job.stop_at == 0 {
                rec.job.stop_at = now_ms();
                tracing::warn!(
                    job_id = rec.job.id,
                    "job was running when the service stopped: failed"
                );
                let _ = std::fs::write(&path, serde_json::to_vec(&rec).unwrap_or_default());
            }
            records.insert(rec.job.id.clone(), rec);
        }
        Ok(Arc::new(Jobs {
            dir,
            cfg,
            dev_mode,
            records: Mutex::new(records),
            running: Default::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }))
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn save(&self, rec: &Stored) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        std::fs::write(self.job_dir(&rec.job.id).join("job.json"), bytes)
    }

    /// Checks every runner and that this service has a program for it (`/jobs/init`).
    pub fn init(&self, runners: &[String]) -> Result<(), JobError> {
        if runners.is_empty() {
            return Err(JobError::Invalid(
                "invalid job service config: invalid empty Runners".into(),
            ));
        }
        for r in runners {
            let kind = runner::validate(r, &self.cfg.image_registry, self.dev_mode)
                .map_err(|e| JobError::Invalid(format!("invalid job service config: {e}")))?;
            let program = runner::program(kind, &self.cfg.recorder())
                .map_err(|e| JobError::Service(format!("failed to update job runner: {e}")))?;
            if which(&program).is_none() {
                return Err(JobError::Service(format!(
                    "failed to update job runner: {} not found",
                    program.display()
                )));
            }
        }
        Ok(())
    }

    /// The job, if `client` may see it (its own; any for the admin: None).
    pub fn get(&self, id: &str, client: Option<&str>) -> Option<Job> {
        self.records
            .lock()
            .get(id)
            .filter(|r| client.is_none_or(|c| c == r.owner))
            .map(|r| r.job.clone())
    }

    /// Starts a job's process.
    /// Starts a job's process for `owner`.
    pub fn create(self: &Arc<Self>, config: JobConfig, owner: &str) -> Result<Job, JobError> {
        let kind = config
            .validate(&self.cfg.image_registry, self.dev_mode)
            .map_err(JobError::Invalid)?;
        let fail = |m: String| JobError::Service(format!("failed to create recording job: {m}"));
        let program = runner::program(kind, &self.cfg.recorder()).map_err(fail)?;
        let program =
            which(&program).ok_or_else(|| fail(format!("{} not found", program.display())))?;
        let mut running = self.running.lock();
        if running.len() as i64 >= self.cfg.max_concurrent_jobs {
            return Err(fail("max concurrent jobs reached".into()));
        }
        let id = new_id();
        let dir = self.job_dir(&id);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("job.log"))?;
        let mut cmd = tokio::process::Command::new(&program);
        // Only what the job is given: no secrets of this service leak into it.
        cmd.env_clear();
        for k in ["PATH", "HOME", "LANG", "RUST_LOG", "TZ"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in &config.input_data {
            if RECORDER_INPUTS.contains(&k.as_str()) {
                cmd.env(k.to_ascii_uppercase(), env_value(v));
            } else {
                tracing::warn!(key = k, "input not passed to the job: not a recorder input");
            }
        }
        cmd.env("DATA_DIR", &dir)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
        let pid = child.id().unwrap_or_default();
        let job = Job {
            config,
            id: id.clone(),
            start_at: now_ms(),
            stop_at: 0,
        };
        let rec = Stored {
            job: job.clone(),
            owner: owner.to_string(),
        };
        if let Err(e) = self.save(&rec) {
            // Not left running unsupervised.
            let _ = child.start_kill();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        self.records.lock().insert(id.clone(), rec);
        running.insert(id.clone(), pid);
        drop(running);
        tracing::info!(job_id = id, pid, runner = job.config.runner, "job started");
        let me = self.clone();
        let j = job.clone();
        tokio::spawn(async move { me.supervise(j, child).await });
        Ok(job)
    }

    /// Waits for the job's end, stopping it when its time is up.
    async fn supervise(self: Arc<Self>, job: Job, mut child: tokio::process::Child) {
        let mut limit = job.config.max_duration_sec.max(1);
        if self.cfg.max_duration_sec > 0 {
            limit = limit.min(self.cfg.max_duration_sec);
        }
        let status =
            match tokio::time::timeout(Duration::from_secs(limit as u64), child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    tracing::info!(job_id = job.id, limit, "job's time is up: stopping it");
                    if let Some(pid) = child.id() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    let grace = Duration::from_secs(self.cfg.stop_grace_sec as u64);
                    match tokio::time::timeout(grace, child.wait()).await {
                        Ok(s) => s,
                        Err(_) => {
                            tracing::warn!(job_id = job.id, "job ignored SIGTERM: killed");
                            let _ = child.kill().await;
                            child.wait().await
                        }
                    }
                }
            };
        self.running.lock().remove(&job.id);
        let ok = matches!(&status, Ok(s) if s.success());
        let what = match &status {
            Ok(s) => describe(s),
            Err(e) => format!("could not be waited for: {e}"),
        };
        if ok {
            tracing::info!(job_id = job.id, "job done");
            self.records.lock().remove(&job.id);
            let _ = std::fs::remove_dir_all(self.job_dir(&job.id));
            return;
        }
        tracing::warn!(job_id = job.id, status = what, "job failed");
        let mut job = job;
        job.stop_at = now_ms();
        let rec = self.records.lock().get_mut(&job.id).map(|r| {
            r.job.stop_at = job.stop_at;
            r.clone()
        });
        if let Some(rec) = rec {
            if let Err(e) = self.save(&rec) {
                tracing::error!(job_id = job.id, error = %e, "job record not saved");
            }
        }
        if job.config.job_type == "recording" {
            self.report_failure(&job, &format!("recorder {what}")).await;
        }
    }

    /// Tells the plugin that the recording failed, as the recorder would have.
    async fn report_failure(&self, job: &Job, error: &str) {
        let input = &job.config.input_data;
        let s = |k: &str| input.get(k).map(env_value).unwrap_or_default();
        let (site, call, rec, token) = (
            s("site_url"),
            s("call_id"),
            s("recording_id"),
            s("auth_token"),
        );
        if site.is_empty() || call.is_empty() || rec.is_empty() || token.is_empty() {
            return;
        }
        let url = format!(
            "{}/plugins/com.mattermost.calls/bot/calls/{call}/jobs/{rec}/status",
            site.trim_end_matches('/')
        );
        let body = json!({"JobType": "recording", "Status": "failed", "omitempty": error});
        for attempt in 0..3 {
            match self
                .http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return,
                // The plugin already knows (the job ended): nothing to retry.
                Ok(r) if r.status().is_client_error() => {
                    tracing::info!(job_id = job.id, status = %r.status(), "failure report not taken");
                    return;
                }
                Ok(r) => {
                    tracing::warn!(job_id = job.id, status = %r.status(), "failure report refused")
                }
                Err(e) => tracing::warn!(job_id = job.id, error = %e, "failure report not sent"),
            }
            tokio::time::sleep(Duration::from_secs(2 * (attempt + 1))).await;
        }
    }

    /// The service stops: every running job gets SIGTERM (a recorder finishes and
    /// uploads) and up to the stop grace to end.
    pub async fn shutdown(&self) {
        let pids: Vec<u32> = self.running.lock().values().copied().collect();
        if pids.is_empty() {
            return;
        }
        tracing::info!(
            jobs = pids.len(),
            "stopping: letting the running jobs finish"
        );
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.cfg.stop_grace_sec as u64);
        while !self.running.lock().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes a stopped job's files (`DELETE /jobs/{id}`).
    pub fn delete(&self, id: &str, client: Option<&str>) -> Result<(), JobError> {
        let job = self.get(id, client).ok_or(JobError::NotFound)?;
        if job.stop_at == 0 {
            return Err(JobError::Running);
        }
        self.records.lock().remove(id);
        std::fs::remove_dir_all(self.job_dir(id))?;
        Ok(())
    }

    pub fn logs(&self, id: &str, client: Option<&str>) -> Result<Vec<u8>, JobError> {
        self.get(id, client).ok_or(JobError::NotFound)?;
        Ok(std::fs::read(self.job_dir(id).join("job.log"))?)
    }

    /// Every minute: failed jobs older than the retention go.
    pub async fn expire_failed(self: Arc<Self>) {
        let Ok(Some(keep)) = self.cfg.retention() else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let cutoff = now_ms() - keep.as_millis() as i64;
            let old: Vec<String> = self
                .records
                .lock()
                .values()
                .filter(|r| r.job.stop_at != 0 && r.job.stop_at < cutoff)
                .map(|r| r.job.id.clone())
                .collect();
            for id in old {
                tracing::info!(job_id = id, "failed job expired");
                let _ = self.delete(&id, None);
            }
        }
    }
}

fn describe(s: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".into(),
    }
}

/// The program as it would run: a path as given, a bare name looked up on `PATH`.
fn which(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(t: &str, runner: &str, secs: i64) -> JobConfig {
        JobConfig {
            job_type: t.into(),
            max_duration_sec: secs,
            runner: runner.into(),
            input_data: Map::new(),
        }
    }

    #[test]
    fn configs_are_validated_in_upstream_order() {
        let r = "mattermost/calls-recorder:v0.8.13";
        let v = |c: JobConfig| c.validate("mattermost", false);
        assert_eq!(
            v(cfg("", r, 1)).unwrap_err(),
            "invalid Type value: should not be empty"
        );
        assert!(v(cfg("recording", "x", 1))
            .unwrap_err()
            .starts_with("invalid Runner value"));
        assert_eq!(
            v(cfg("recording", r, 0)).unwrap_err(),
            "invalid MaxDurationSec value: should be positive"
        );
        assert_eq!(
            v(cfg("xyz", r, 1)).unwrap_err(),
            "invalid Type value: \"xyz\""
        );
        assert_eq!(v(cfg("recording", r, 60)), Ok(Kind::Recorder));
    }

    #[test]
    fn input_values_read_as_go_prints_them() {
        assert_eq!(env_value(&json!(1280)), "1280");
        assert_eq!(env_value(&json!(1280.0)), "1280");
        assert_eq!(env_value(&json!("x")), "x");
        assert_eq!(env_value(&json!(true)), "true");
        assert_eq!(env_value(&json!(0.5)), "0.5");
    }

    #[test]
    fn jobs_json_has_upstreams_fields() {
        let j = Job {
            config: cfg("recording", "mattermost/calls-recorder:v0.8.13", 60),
            id: "abc".into(),
            start_at: 5,
            stop_at: 0,
        };
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(
            v,
            json!({"type": "recording", "max_duration_sec": 60,
                   "runner": "mattermost/calls-recorder:v0.8.13", "id": "abc", "start_at": 5})
        );
    }
}
