//! Header names shared by the host and the plugin.

/// The acting user on a request the host forwards to the plugin. The host sets it
/// from its own session and strips any copy a client sent; the plugin trusts it only
/// because requests reach it from the host alone.
pub const USER_HEADER: &str = "Mattermost-User-Id";
