//! `calls-ctl`: what the System Console does, from a script, as Mattermost's `mmctl`
//! does it: over the server's API with a session token. [`cli`] is the command line,
//! [`client`] the API calls, [`config_path`] the `Section.Key` paths into the
//! config, [`credentials`] where `auth login` keeps the server and token.

pub mod cli;
pub mod client;
pub mod config_path;
pub mod credentials;

/// Why a command failed; printed as `Error: ...`, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The server refused, in its own words (`{"id", "message"}` of the API).
    #[error("{message} ({status}{})", if id.is_empty() { String::new() } else { format!(", {id}") })]
    Api {
        status: u16,
        id: String,
        message: String,
    },
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
