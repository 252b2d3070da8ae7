//! The recorder's inputs, as the job service gives them: environment variables named
//! after the plugin's `input_data` keys (`SITE_URL`, `CALL_ID`, `POST_ID`,
//! `RECORDING_ID`, `AUTH_TOKEN`, ...), plus `DATA_DIR` for its files. The video
//! settings (`WIDTH`, `VIDEO_RATE`, ...) are for recorders that re-encode a screen:
//! this one keeps the shared screen as it was sent and ignores them; `AUDIO_RATE`
//! (kbps) sets the mixed audio's bitrate.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Config {
    pub site_url: String,
    pub call_id: String,
    pub post_id: String,
    pub recording_id: String,
    pub auth_token: String,
    pub data_dir: PathBuf,
    pub audio_kbps: i32,
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches a log.
        write!(
            f,
            "site_url={} call_id={} post_id={} recording_id={} data_dir={}",
            self.site_url,
            self.call_id,
            self.post_id,
            self.recording_id,
            self.data_dir.display()
        )
    }
}

fn is_id(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl Config {
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let var = |k: &str| get(k).unwrap_or_default().trim().to_string();
        let site_url = var("SITE_URL").trim_end_matches('/').to_string();
        let (scheme, rest) = site_url.split_once("://").ok_or("SITE_URL: not a URL")?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("SITE_URL: invalid scheme {scheme:?}"));
        }
        if rest.is_empty() || rest.contains('/') {
            return Err("SITE_URL: a host without a path is expected".into());
        }
        let id = |k: &str| {
            let v = var(k);
            if is_id(&v) {
                Ok(v)
            } else {
                Err(format!("{k}: a 26-character id is expected"))
            }
        };
        let audio_kbps = match var("AUDIO_RATE").as_str() {
            "" | "0" => 64,
            v => v
                .parse::<i32>()
                .ok()
                .filter(|n| (32..=320).contains(n))
                .ok_or("AUDIO_RATE: kbps between 32 and 320 expected")?,
        };
        let data_dir = match var("DATA_DIR").as_str() {
            "" => std::env::temp_dir(),
            d => PathBuf::from(d),
        };
        Ok(Config {
            site_url,
            call_id: id("CALL_ID")?,
            post_id: id("POST_ID")?,
            recording_id: id("RECORDING_ID")?,
            auth_token: id("AUTH_TOKEN")?,
            data_dir,
            audio_kbps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_checked() {
        let id = "abcdefghijklmnopqrstuvwxyz";
        let base = |k: &str| match k {
            "SITE_URL" => Some("http://127.0.0.1:8065/".to_string()),
            "CALL_ID" | "POST_ID" | "RECORDING_ID" | "AUTH_TOKEN" => Some(id.into()),
            "AUDIO_RATE" => Some("96".into()),
            _ => None,
        };
        let c = Config::from_env(base).unwrap();
        assert_eq!(c.site_url, "http://127.0.0.1:8065");
        assert_eq!(c.audio_kbps, 96);
        assert!(!c.to_string().contains("AUTH"));
        let with = |key: &'static str, v: &'static str| {
            move |k: &str| {
                if k == key {
                    Some(v.to_string())
                } else {
                    base(k)
                }
            }
        };
        assert!(Config::from_env(with("SITE_URL", "ftp://x")).is_err());
        assert!(Config::from_env(with("SITE_URL", "http://x/sub")).is_err());
        assert!(Config::from_env(with("CALL_ID", "short")).is_err());
        assert!(Config::from_env(with("AUDIO_RATE", "1000")).is_err());
    }
}
