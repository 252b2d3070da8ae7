//! Where `auth login` keeps the server's URL and the session token: one JSON file,
//! readable by its owner only (`$XDG_CONFIG_HOME/calls-ctl/credentials.json`, else
//! `~/.config/calls-ctl/credentials.json`; `CALLS_CTL_CREDENTIALS` names another).

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::CtlError;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Credentials {
    pub url: String,
    pub token: String,
    /// Who logged in (shown by `auth current`).
    pub username: String,
}

pub fn path() -> Result<PathBuf, CtlError> {
    if let Some(p) = std::env::var_os("CALLS_CTL_CREDENTIALS") {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".config"),
            None => {
                return Err(CtlError::Usage(
                    "no HOME or XDG_CONFIG_HOME to keep the credentials in".into(),
                ))
            }
        },
    };
    Ok(base.join("calls-ctl").join("credentials.json"))
}

pub fn load() -> Result<Option<Credentials>, CtlError> {
    let p = path()?;
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            CtlError::Usage(format!(
                "{}: not a credentials file ({e}); run auth login again",
                p.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CtlError::File {
            path: p.display().to_string(),
            source: e,
        }),
    }
}

pub fn save(c: &Credentials) -> Result<PathBuf, CtlError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let p = path()?;
    let err = |e| CtlError::File {
        path: p.display().to_string(),
        source: e,
    };
    if let Some(dir) = p.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    // A token is a password: never readable by others, not even for a moment.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&p)
        .map_err(err)?;
    f.write_all(&serde_json::to_vec_pretty(c).unwrap_or_default())
        .map_err(err)?;
    Ok(p)
}

pub fn remove() -> Result<bool, CtlError> {
    let p = path()?;
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CtlError::File {
            path: p.display().to_string(),
            source: e,
        }),
    }
}
