//! The server's API as the commands use it: `/api/v4` of the host and the Calls
//! plugin's `/plugins/com.mattermost.calls` routes, with a bearer token.

use std::time::Duration;

use serde_json::{json, Value};

use super::CtlError;

pub const CALLS_PLUGIN_ID: &str = "com.mattermost.calls";

pub struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    pub fn new(url: &str, token: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap_or_default(),
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// Logs in with a username (or email) and password; returns the session token and
    /// the user.
    pub async fn login(
        url: &str,
        login_id: &str,
        password: &str,
    ) -> Result<(String, Value), CtlError> {
        let c = Client::new(url, "");
        let resp = c
            .http
            .post(c.at("/api/v4/users/login"))
            .json(&json!({"login_id": login_id, "password": password}))
            .send()
            .await
            .map_err(|e| c.unreachable(e))?;
        let token = resp
            .headers()
            .get("Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let user = c.answer(resp).await?;
        let token = token.ok_or_else(|| CtlError::Usage(format!("{url} gave no token")))?;
        Ok((token, user))
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn unreachable(&self, e: reqwest::Error) -> CtlError {
        CtlError::Connect {
            url: self.url.clone(),
            source: e,
        }
    }

    /// The body of a 2xx answer (JSON, or the text as a string), or the server's error.
    async fn answer(&self, resp: reqwest::Response) -> Result<Value, CtlError> {
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(e))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if status.is_success() {
            return Ok(body);
        }
        // Mattermost's {"id", "message"}; the plugin's own routes answer
        // {"err", "code"} or plain text.
        let message = body["message"]
            .as_str()
            .or_else(|| body["err"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| text.trim().to_string());
        Err(CtlError::Api {
            status: status.as_u16(),
            id: body["id"].as_str().unwrap_or_default().to_string(),
            message: if message.is_empty() {
                status.to_string()
            } else {
                message
            },
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, CtlError> {
        let resp = req
            .bearer_auth(&self.token)
            .header("X-Requested-With", "XMLHttpRequest")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.answer(resp).await
    }

    pub async fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.send(self.http.get(self.at(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CtlError> {
        self.send(self.http.post(self.at(path)).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, CtlError> {
        self.send(self.http.put(self.at(path)).json(body)).await
    }

    pub async fn me(&self) -> Result<Value, CtlError> {
        self.get("/api/v4/users/me").await
    }

    pub async fn config(&self) -> Result<Value, CtlError> {
        self.get("/api/v4/config").await
    }

    /// Saves the whole config; the server (and the plugin) validate it and keep the
    /// old one when they refuse.
    pub async fn put_config(&self, cfg: &Value) -> Result<Value, CtlError> {
        self.put("/api/v4/config", cfg).await
    }

    /// Installs (or replaces) a plugin from its bundle.
    pub async fn upload_plugin(&self, name: &str, bundle: Vec<u8>) -> Result<Value, CtlError> {
        let form = reqwest::multipart::Form::new().part(
            "plugin",
            reqwest::multipart::Part::bytes(bundle).file_name(name.to_string()),
        );
        self.send(self.http.post(self.at("/api/v4/plugins")).multipart(form))
            .await
    }

    pub async fn plugins(&self) -> Result<Value, CtlError> {
        self.get("/api/v4/plugins").await
    }

    pub async fn set_plugin_enabled(&self, id: &str, enable: bool) -> Result<Value, CtlError> {
        let verb = if enable { "enable" } else { "disable" };
        self.post(&format!("/api/v4/plugins/{id}/{verb}"), &json!({}))
            .await
    }

    /// A channel by id, or by `team:channel` names (as mmctl takes them).
    pub async fn channel(&self, spec: &str) -> Result<Value, CtlError> {
        match spec.split_once(':') {
            Some((team, name)) if !team.is_empty() && !name.is_empty() => {
                self.get(&format!(
                    "/api/v4/teams/name/{}/channels/name/{}",
                    segment(team),
                    segment(name)
                ))
                .await
            }
            Some(_) => Err(CtlError::Usage(format!(
                "{spec:?}: give a channel as team:channel or as its id"
            ))),
            None => {
                self.get(&format!("/api/v4/channels/{}", segment(spec)))
                    .await
            }
        }
    }

    /// Calls in a channel: its state as the plugin keeps it.
    pub async fn calls_channel(&self, channel_id: &str) -> Result<Value, CtlError> {
        self.get(&format!(
            "/plugins/{CALLS_PLUGIN_ID}/{}",
            segment(channel_id)
        ))
        .await
    }

    pub async fn set_calls_enabled(
        &self,
        channel_id: &str,
        enabled: bool,
    ) -> Result<Value, CtlError> {
        self.post(
            &format!("/plugins/{CALLS_PLUGIN_ID}/{}", segment(channel_id)),
            &json!({"enabled": enabled}),
        )
        .await
    }
}

/// A name or id as one path segment: nothing in it can reach another route.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        // Dots too: "." and ".." would be resolved away by the URL.
        if b.is_ascii_alphanumeric() || b"-_~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(super::segment("town-square"), "town-square");
        assert_eq!(super::segment("../config"), "%2E%2E%2Fconfig");
        assert_eq!(super::segment("a b?c#"), "a%20b%3Fc%23");
    }
}
