//! go-plugin style start-up handshake shared by the host and the plugin.
//!
//! The host execs the plugin with `MAGIC_COOKIE_KEY=MAGIC_COOKIE_VALUE`; the plugin
//! serves gRPC on a fresh Unix socket and prints `1|1|unix|<path>|grpc` on stdout.

pub const MAGIC_COOKIE_KEY: &str = "MATTERMOST_CALLS_PLUGIN";
pub const MAGIC_COOKIE_VALUE: &str = "3f3ad8f1d7d94c8b9a6a0fa7b5b7f5d2";
pub const CORE_PROTOCOL_VERSION: u32 = 1;
pub const APP_PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HandshakeError {
    #[error("malformed handshake line {0:?}")]
    Malformed(String),
    #[error("unsupported protocol versions core={core} app={app}")]
    Version { core: String, app: String },
    #[error("unsupported transport {0:?} (want unix + grpc)")]
    Transport(String),
}

pub fn line(socket_path: &str) -> String {
    format!("{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|unix|{socket_path}|grpc")
}

/// Parses the plugin's handshake line into the socket path.
pub fn parse(line: &str) -> Result<String, HandshakeError> {
    let parts: Vec<&str> = line.trim().split('|').collect();
    let [core, app, net, addr, proto] = parts[..] else {
        return Err(HandshakeError::Malformed(line.to_string()));
    };
    if core != CORE_PROTOCOL_VERSION.to_string() || app != APP_PROTOCOL_VERSION.to_string() {
        return Err(HandshakeError::Version {
            core: core.into(),
            app: app.into(),
        });
    }
    if net != "unix" || proto != "grpc" || addr.is_empty() {
        return Err(HandshakeError::Transport(format!("{net}|{proto}")));
    }
    Ok(addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        assert_eq!(parse(&line("/tmp/x.sock")).unwrap(), "/tmp/x.sock");
        assert!(matches!(
            parse("garbage"),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            parse("2|1|unix|/x|grpc"),
            Err(HandshakeError::Version { .. })
        ));
        assert!(matches!(
            parse("1|1|tcp|127.0.0.1:1|grpc"),
            Err(HandshakeError::Transport(_))
        ));
    }
}
