//! Users, a team and one channel per call on the host, through its `/api/v4` like any
//! client; calls enabled in each channel (`POST /plugins/com.mattermost.calls/{id}`).

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}: {1}")]
    Http(String, String),
}

pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Result<(u16, Value, Option<String>), SetupError> {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Requested-With", "XMLHttpRequest")
            .json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r
            .send()
            .await
            .map_err(|e| SetupError::Http(path.into(), e.to_string()))?;
        let status = resp.status().as_u16();
        let token = resp
            .headers()
            .get("Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let v = resp.json().await.unwrap_or(Value::Null);
        Ok((status, v, token))
    }

    /// A session token for `user` (created with `password` if it does not exist).
    pub async fn user_token(
        &self,
        admin: Option<&str>,
        user: &str,
        password: &str,
    ) -> Result<(String, String), SetupError> {
        let body = json!({"username": user, "email": format!("{user}@lt.example.com"), "password": password});
        // An existing user (an earlier run) is fine: log in below.
        let _ = self
            .call(reqwest::Method::POST, "/api/v4/users", admin, body)
            .await?;
        let (s, v, token) = self
            .call(
                reqwest::Method::POST,
                "/api/v4/users/login",
                None,
                json!({"login_id": user, "password": password}),
            )
            .await?;
        match (s, token) {
            (200, Some(t)) => Ok((v["id"].as_str().unwrap_or_default().to_string(), t)),
            _ => Err(SetupError::Http(
                "/api/v4/users/login".into(),
                format!("{user}: {s} {v}"),
            )),
        }
    }

    pub async fn team(&self, admin: &str, name: &str) -> Result<String, SetupError> {
        let (s, v, _) = self
            .call(
                reqwest::Method::POST,
                "/api/v4/teams",
                Some(admin),
                json!({"name": name, "display_name": name, "type": "O"}),
            )
            .await?;
        if s != 201 {
            return Err(SetupError::Http("/api/v4/teams".into(), format!("{s} {v}")));
        }
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    /// Whether calls are enabled by default (no per-channel enabling needed).
    pub async fn calls_default_enabled(&self, admin: &str) -> bool {
        let r = self
            .call(
                reqwest::Method::GET,
                "/plugins/com.mattermost.calls/config",
                Some(admin),
                Value::Null,
            )
            .await;
        match r {
            Ok((200, v, _)) => v["DefaultEnabled"].as_bool().unwrap_or(false),
            _ => false,
        }
    }

    /// An open channel with `members`, calls enabled in it unless `enabled_by_default`.
    pub async fn call_channel(
        &self,
        admin: &str,
        team: &str,
        name: &str,
        members: &[String],
        enabled_by_default: bool,
    ) -> Result<String, SetupError> {
        for m in members {
            self.call(
                reqwest::Method::POST,
                &format!("/api/v4/teams/{team}/members"),
                Some(admin),
                json!({"team_id": team, "user_id": m}),
            )
            .await?;
        }
        let (s, v, _) = self
            .call(
                reqwest::Method::POST,
                "/api/v4/channels",
                Some(admin),
                json!({"team_id": team, "name": name, "display_name": name, "type": "O"}),
            )
            .await?;
        if s != 201 {
            return Err(SetupError::Http(
                "/api/v4/channels".into(),
                format!("{s} {v}"),
            ));
        }
        let ch = v["id"].as_str().unwrap_or_default().to_string();
        for m in members {
            self.call(
                reqwest::Method::POST,
                &format!("/api/v4/channels/{ch}/members"),
                Some(admin),
                json!({"user_id": m}),
            )
            .await?;
        }
        if enabled_by_default {
            return Ok(ch);
        }
        // The plugin API is rate limited per user (1/s, burst 10): wait and retry.
        for _ in 0..30 {
            let (s, v, _) = self
                .call(
                    reqwest::Method::POST,
                    &format!("/plugins/com.mattermost.calls/{ch}"),
                    Some(admin),
                    json!({"enabled": true}),
                )
                .await?;
            match s {
                200 => return Ok(ch),
                429 => tokio::time::sleep(std::time::Duration::from_millis(1100)).await,
                _ => return Err(SetupError::Http("enable calls".into(), format!("{s} {v}"))),
            }
        }
        Err(SetupError::Http(
            "enable calls".into(),
            "still rate limited".into(),
        ))
    }
}
