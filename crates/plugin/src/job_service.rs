//! The job service client (calls-offloader's API, reference calls-plugin.md §3.7):
//! the plugin asks it to run a recorder for a call. It speaks to upstream's
//! calls-offloader or to our `calls-jobs` alike: Basic auth with a client id and key
//! on every request (the service registers a client it does not know when it allows
//! self-registration), `GET /version`, `POST /jobs/init`, `POST /jobs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::host_api::HostApi;
use super::mutex::{LockConfig, Mutexes};

/// Upstream's manifest `min_offloader_version`.
pub const MIN_VERSION: (u64, u64, u64) = (0, 9, 0);
/// Upstream's manifest `calls_recorder_version`: the runner every job names.
pub const RECORDER_VERSION: &str = "v0.8.13";
const KV_KEY: &str = "jobservice_config";
/// Upstream's cluster mutex around the credentials (10 s to get it).
const REGISTRATION_LOCK: LockConfig = LockConfig {
    ttl: Duration::from_secs(4),
    refresh: Duration::from_secs(1),
    poll: Duration::from_millis(50),
    timeout: Duration::from_secs(10),
};

#[derive(Debug, thiserror::Error)]
pub enum JobServiceError {
    #[error("URL is missing")]
    NoUrl,
    #[error("client id is missing")]
    NoClientId,
    #[error("unauthorized")]
    Unauthorized,
    #[error("request failed: {0}")]
    Failed(String),
    #[error("request failed with status {0}")]
    Status(u16),
    #[error("http request failed: {0}")]
    Http(String),
    #[error("minimum version check failed: current version ({0}) is lower than minimum supported version (v0.9.0)")]
    TooOld(String),
    #[error("failed to store job service credentials: {0}")]
    Kv(String),
}

/// The credentials upstream keeps in KV `jobservice_config`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[allow(non_snake_case)]
struct StoredCredentials {
    ClientID: String,
    AuthKey: String,
    URL: String,
}

/// A job as the service returns it (only the fields the plugin reads).
#[derive(Debug, Clone, Deserialize)]
pub struct CreatedJob {
    pub id: String,
}

/// One recording's inputs to the recorder (upstream's recorder config `ToMap`).
#[derive(Debug, Clone)]
pub struct RecordingInput {
    pub site_url: String,
    pub call_id: String,
    pub post_id: String,
    pub recording_id: String,
    pub auth_token: String,
    pub quality: String,
}

impl RecordingInput {
    /// What upstream checks before asking for a job (a recorder would refuse it).
    pub fn validate(&self) -> Result<(), String> {
        let id = |name: &str, v: &str| {
            if calls_wire::ids::is_valid_id(v) {
                Ok(())
            } else {
                Err(format!("invalid {name}: {v:?}"))
            }
        };
        id("CallID", &self.call_id)?;
        id("PostID", &self.post_id)?;
        id("RecordingID", &self.recording_id)?;
        id("AuthToken", &self.auth_token)?;
        let url = reqwest::Url::parse(&self.site_url)
            .map_err(|e| format!("SiteURL parsing failed: {e}"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!(
                "SiteURL parsing failed: invalid scheme {:?}",
                url.scheme()
            ));
        }
        if !url.path().is_empty() && url.path() != "/" {
            return Err(format!(
                "SiteURL parsing failed: invalid path {:?}",
                url.path()
            ));
        }
        Ok(())
    }

    /// `input_data`: the quality preset as numbers, then every `MM_CALLS_RECORDER_<X>`
    /// environment variable as `x` (strings, as upstream).
    pub fn input_data(&self, env: &[(String, String)]) -> serde_json::Map<String, Value> {
        let (w, h, video, fps, preset) = match self.quality.as_str() {
            "low" => (1280, 720, 1000, 15, "ultrafast"),
            "high" => (1920, 1080, 2500, 20, "veryfast"),
            _ => (1280, 720, 1500, 20, "veryfast"),
        };
        let mut m = serde_json::Map::new();
        m.insert("site_url".into(), json!(self.site_url));
        m.insert("call_id".into(), json!(self.call_id));
        m.insert("post_id".into(), json!(self.post_id));
        m.insert("recording_id".into(), json!(self.recording_id));
        m.insert("auth_token".into(), json!(self.auth_token));
        m.insert("width".into(), json!(w));
        m.insert("height".into(), json!(h));
        m.insert("video_rate".into(), json!(video));
        m.insert("audio_rate".into(), json!(64));
        m.insert("frame_rate".into(), json!(fps));
        m.insert("video_preset".into(), json!(preset));
        m.insert("output_format".into(), json!("mp4"));
        for (k, v) in env {
            if let Some(x) = k.strip_prefix("MM_CALLS_RECORDER_") {
                if !x.is_empty() {
                    m.insert(x.to_ascii_lowercase(), json!(v));
                }
            }
        }
        m
    }
}

/// A client of one job service.
pub struct JobService {
    url: String,
    client_id: String,
    auth_key: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for JobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log.
        f.debug_struct("JobService")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The runner every recording job names: `<registry>/calls-recorder:<version>`
/// (registry `MM_CALLS_JOB_SERVICE_IMAGE_REGISTRY`, default `mattermost`).
pub fn recorder_runner(env: &(dyn Fn(&str) -> Option<String> + Sync)) -> String {
    let registry = env("MM_CALLS_JOB_SERVICE_IMAGE_REGISTRY")
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "mattermost".into());
    format!("{registry}/calls-recorder:{RECORDER_VERSION}")
}

/// `vX.Y.Z...` at least [`MIN_VERSION`]; development builds ("", "master", "dev…")
/// pass, as upstream.
fn version_ok(v: &str) -> bool {
    if v.is_empty() || v == "master" || v.starts_with("dev") {
        return true;
    }
    let core = v.trim_start_matches('v');
    let core = core.split(['-', '+']).next().unwrap_or_default();
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c))) => (a, b, c) >= MIN_VERSION,
        _ => false,
    }
}

impl JobService {
    /// Resolves the URL and credentials as upstream (env, the URL's userinfo, the
    /// diagnostic id and a stored or new key), under the cluster mutex, then checks
    /// the service's version and prefetches the runner.
    pub async fn connect(
        host: &HostApi,
        mutexes: &Mutexes,
        raw_url: &str,
        diagnostic_id: &str,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<JobService, JobServiceError> {
        let raw = raw_url.trim().trim_end_matches('/');
        if raw.is_empty() {
            return Err(JobServiceError::NoUrl);
        }
        let mut parsed =
            reqwest::Url::parse(raw).map_err(|e| JobServiceError::Http(e.to_string()))?;
        let mut client_id = env("MM_CALLS_JOB_SERVICE_CLIENT_ID").unwrap_or_default();
        let mut auth_key = env("MM_CALLS_JOB_SERVICE_AUTH_KEY").unwrap_or_default();
        if client_id.is_empty() && !parsed.username().is_empty() {
            client_id = parsed.username().to_string();
            auth_key = parsed.password().unwrap_or_default().to_string();
        }
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        let url = parsed.as_str().trim_end_matches('/').to_string();
        if client_id.is_empty() {
            client_id = diagnostic_id.to_string();
        }
        if client_id.is_empty() {
            return Err(JobServiceError::NoClientId);
        }
        if auth_key.is_empty() {
            let _guard = mutexes
                .lock("job_service_registration", "job_service", REGISTRATION_LOCK)
                .await
                .map_err(|e| JobServiceError::Kv(e.to_string()))?;
            auth_key = stored_key(host, &url, &client_id).await?;
        }
        let svc = JobService {
            url,
            client_id,
            auth_key,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(120))
                .build()
                .map_err(|e| JobServiceError::Http(e.to_string()))?,
        };
        let v = svc.version().await?;
        if !version_ok(&v) {
            return Err(JobServiceError::TooOld(v));
        }
        svc.init(&[recorder_runner(env)]).await?;
        Ok(svc)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn version(&self) -> Result<String, JobServiceError> {
        let r = self
            .http
            .get(format!("{}/version", self.url))
            .send()
            .await
            .map_err(|e| JobServiceError::Http(e.to_string()))?;
        let v: Value = checked(r).await?;
        Ok(v["buildVersion"].as_str().unwrap_or_default().to_string())
    }

    async fn init(&self, runners: &[String]) -> Result<(), JobServiceError> {
        let r = self
            .post("/jobs/init")
            .json(&json!({ "Runners": runners }))
            .send()
            .await
            .map_err(|e| JobServiceError::Http(e.to_string()))?;
        checked_empty(r).await
    }

    /// Starts a recording job; returns the service's job id.
    pub async fn create_recording(
        &self,
        runner: &str,
        max_duration_sec: i64,
        input: serde_json::Map<String, Value>,
    ) -> Result<CreatedJob, JobServiceError> {
        let body = json!({
            "type": "recording",
            "max_duration_sec": max_duration_sec,
            "runner": runner,
            "input_data": input,
        });
        let r = self
            .post("/jobs")
            .json(&body)
            .send()
            .await
            .map_err(|e| JobServiceError::Http(e.to_string()))?;
        checked(r).await
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .basic_auth(&self.client_id, Some(&self.auth_key))
    }
}

/// The key stored for this service and client, or a new one stored for next time.
async fn stored_key(host: &HostApi, url: &str, client_id: &str) -> Result<String, JobServiceError> {
    let kv_err = |e: super::host_api::HostError| JobServiceError::Kv(e.to_string());
    let stored: Option<StoredCredentials> = host
        .kv_get(KV_KEY)
        .await
        .map_err(kv_err)?
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(c) = &stored {
        if c.URL == url && c.ClientID == client_id && !c.AuthKey.is_empty() {
            return Ok(c.AuthKey.clone());
        }
    }
    let key = match stored {
        Some(c) if !c.AuthKey.is_empty() => c.AuthKey,
        _ => calls_wire::ids::random_token(),
    };
    let creds = StoredCredentials {
        ClientID: client_id.into(),
        AuthKey: key.clone(),
        URL: url.into(),
    };
    let bytes = serde_json::to_vec(&creds).map_err(|e| JobServiceError::Kv(e.to_string()))?;
    host.kv_set(calls_wire::proto::KvSetRequest {
        key: KV_KEY.into(),
        value: bytes,
        ..Default::default()
    })
    .await
    .map_err(kv_err)?;
    Ok(key)
}

/// A service answer: its JSON on success, else the error upstream's client makes of it.
async fn checked<T: for<'de> Deserialize<'de>>(r: reqwest::Response) -> Result<T, JobServiceError> {
    let status = r.status();
    let body = r
        .bytes()
        .await
        .map_err(|e| JobServiceError::Http(e.to_string()))?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| JobServiceError::Http(e.to_string()));
    }
    Err(status_error(status.as_u16(), &body))
}

async fn checked_empty(r: reqwest::Response) -> Result<(), JobServiceError> {
    let status = r.status();
    let body = r
        .bytes()
        .await
        .map_err(|e| JobServiceError::Http(e.to_string()))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(status_error(status.as_u16(), &body))
    }
}

fn status_error(status: u16, body: &[u8]) -> JobServiceError {
    if status == 401 {
        return JobServiceError::Unauthorized;
    }
    match serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
    {
        Some(e) if !e.is_empty() => JobServiceError::Failed(e),
        _ => JobServiceError::Status(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked_as_upstream() {
        assert!(version_ok("v0.9.0"));
        assert!(version_ok("v1.2.3-rc1"));
        assert!(version_ok("master"));
        assert!(version_ok("dev-abc"));
        assert!(version_ok(""));
        assert!(!version_ok("v0.8.9"));
        assert!(!version_ok("banana"));
    }

    #[test]
    fn input_data_has_the_preset_and_the_env_overrides() {
        let i = RecordingInput {
            site_url: "http://h".into(),
            call_id: "c".into(),
            post_id: "p".into(),
            recording_id: "r".into(),
            auth_token: "t".into(),
            quality: "high".into(),
        };
        let env = vec![
            ("MM_CALLS_RECORDER_WIDTH".to_string(), "2000".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let m = i.input_data(&env);
        assert_eq!(m["height"], json!(1080));
        assert_eq!(m["width"], json!("2000"));
        assert_eq!(m["output_format"], json!("mp4"));
        assert!(!m.contains_key("other"));
    }

    #[test]
    fn errors_read_the_service_body() {
        let e = status_error(
            500,
            br#"{"code":"500","error":"max concurrent jobs reached"}"#,
        );
        assert_eq!(e.to_string(), "request failed: max concurrent jobs reached");
        assert_eq!(status_error(401, b"").to_string(), "unauthorized");
        assert_eq!(
            status_error(502, b"nope").to_string(),
            "request failed with status 502"
        );
    }
}
