//! The plugin's bot API as the recorder uses it (reference calls-plugin.md §1.3):
//! the file name, the job's status, the upload in parts, the recording post.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::config::Config;

/// The part of the file sent in one request (the host takes at most its
/// `MaxFileSize` per request; an incomplete upload answers 204 and is resumed).
const PART: u64 = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error("{0}: {1}")]
    Http(&'static str, String),
    #[error("{0}: status {1}: {2}")]
    Status(&'static str, u16, String),
    #[error("reading the recording: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Bot {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Bot {
    pub fn new(cfg: &Config) -> Bot {
        Bot {
            base: format!("{}/plugins/com.mattermost.calls/bot", cfg.site_url),
            token: cfg.auth_token.clone(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(300))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn send(
        &self,
        what: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), BotError> {
        let r = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| BotError::Http(what, e.to_string()))?;
        let status = r.status().as_u16();
        let body = r
            .bytes()
            .await
            .map_err(|e| BotError::Http(what, e.to_string()))?
            .to_vec();
        if (200..300).contains(&status) {
            Ok((status, body))
        } else {
            Err(BotError::Status(
                what,
                status,
                String::from_utf8_lossy(&body).trim().to_string(),
            ))
        }
    }

    async fn json(
        &self,
        what: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<Value, BotError> {
        let (_, body) = self.send(what, req).await?;
        serde_json::from_slice(&body).map_err(|e| BotError::Http(what, e.to_string()))
    }

    /// `Call_<name>_<date>`, from the plugin.
    pub async fn filename(&self, call_id: &str) -> Result<String, BotError> {
        let v = self
            .json(
                "file name",
                self.http
                    .get(format!("{}/calls/{call_id}/filename", self.base)),
            )
            .await?;
        Ok(v["filename"].as_str().unwrap_or("recording").to_string())
    }

    /// `started` or `failed` (the error under the key `omitempty`, as upstream).
    pub async fn status(&self, cfg: &Config, status: &str, error: &str) -> Result<(), BotError> {
        let url = format!(
            "{}/calls/{}/jobs/{}/status",
            self.base, cfg.call_id, cfg.recording_id
        );
        let mut body = json!({"JobType": "recording", "Status": status});
        if !error.is_empty() {
            body["omitempty"] = json!(error);
        }
        let mut last = None;
        for attempt in 0..3 {
            match self
                .send("job status", self.http.post(&url).json(&body))
                .await
            {
                Ok(_) => return Ok(()),
                // A refusal will not change on a retry.
                Err(e @ BotError::Status(_, 400..=499, _)) => return Err(e),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_secs(2 * (attempt + 1))).await;
        }
        Err(last.unwrap_or(BotError::Http("job status", "not sent".into())))
    }

    /// Uploads the file in parts; its file id.
    pub async fn upload(&self, cfg: &Config, path: &Path, name: &str) -> Result<String, BotError> {
        let size = std::fs::metadata(path)?.len();
        let us = self
            .json(
                "upload session",
                self.http
                    .post(format!("{}/uploads", self.base))
                    .json(&json!({
                        "channel_id": cfg.call_id, "filename": name, "file_size": size,
                    })),
            )
            .await?;
        let id = us["id"].as_str().unwrap_or_default().to_string();
        let mut file = std::fs::File::open(path)?;
        let mut offset = 0u64;
        let mut failures = 0;
        loop {
            let len = PART.min(size - offset);
            let mut part = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut part)?;
            let req = self
                .http
                .post(format!("{}/uploads/{id}", self.base))
                .body(part);
            match self.send("upload", req).await {
                Ok((200, body)) => {
                    let info: Value = serde_json::from_slice(&body)
                        .map_err(|e| BotError::Http("upload", e.to_string()))?;
                    return Ok(info["id"].as_str().unwrap_or_default().to_string());
                }
                Ok(_) => {}
                Err(e) => {
                    failures += 1;
                    if failures > 5 {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "upload part failed: resuming");
                    tokio::time::sleep(Duration::from_secs(2 * failures)).await;
                }
            }
            // Where the host stands decides what comes next; a part that moved nothing
            // forward counts as a failure.
            let us = self
                .json(
                    "upload session",
                    self.http.get(format!("{}/uploads/{id}", self.base)),
                )
                .await?;
            let now = us["file_offset"].as_u64().unwrap_or(offset).min(size);
            if now > offset {
                failures = 0;
            } else {
                failures += 1;
                if failures > 5 {
                    return Err(BotError::Http("upload", "no progress".into()));
                }
            }
            offset = now;
        }
    }

    /// The recording post in the call's thread.
    pub async fn post_recording(&self, cfg: &Config, file_id: &str) -> Result<(), BotError> {
        let body = json!({"JobID": cfg.recording_id, "PostID": cfg.post_id, "FileIDs": [file_id]});
        self.send(
            "recording post",
            self.http
                .post(format!("{}/calls/{}/recordings", self.base, cfg.call_id))
                .json(&body),
        )
        .await
        .map(drop)
    }
}
