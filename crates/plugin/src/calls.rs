//! Pure call rules (reference calls-plugin.md §3.2–3.4): who may start a call, limits,
//! host election. No I/O here so that every rule is unit-tested.

use std::collections::BTreeMap;

use super::model::{CallProps, CallState, Session};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StartDenied {
    #[error("unlicensed servers only allow calls in DMs")]
    Unlicensed,
    #[error("calls are disabled in the channel")]
    Disabled,
    #[error("insufficient permissions")]
    InsufficientPermissions,
}

/// What decides whether a user may start a call in a channel.
#[derive(Debug, Clone, Copy)]
pub struct StartContext<'a> {
    pub channel_type: &'a str,
    pub group_calls_allowed: bool,
    /// `calls_channels.enabled`; `None` when the channel has no row.
    pub explicitly_enabled: Option<bool>,
    pub default_enabled: bool,
    pub is_system_admin: bool,
}

pub fn may_start(ctx: StartContext) -> Result<(), StartDenied> {
    if ctx.channel_type != "D" && !ctx.group_calls_allowed {
        return Err(StartDenied::Unlicensed);
    }
    match ctx.explicitly_enabled {
        Some(false) => Err(StartDenied::Disabled),
        Some(true) => Ok(()),
        None if ctx.default_enabled || ctx.is_system_admin => Ok(()),
        None => Err(StartDenied::InsufficientPermissions),
    }
}

/// Join is refused when the session count has reached a non-zero limit (bot included).
pub fn at_capacity(max_participants: i64, current_sessions: usize) -> bool {
    max_participants > 0 && current_sessions as i64 >= max_participants
}

/// The host after a join or a leave: the locked user if present, else the current host
/// if still present, else the earliest non-bot joiner, else nobody.
pub fn elect_host(props: &CallProps, sessions: &BTreeMap<String, Session>, bot_id: &str) -> String {
    let present = |uid: &str| !uid.is_empty() && sessions.values().any(|s| s.user_id == uid);
    if present(&props.host_locked_user_id) {
        return props.host_locked_user_id.clone();
    }
    if let Some(current) = props.hosts.first() {
        if present(current) {
            return current.clone();
        }
    }
    sessions
        .values()
        .filter(|s| bot_id.is_empty() || s.user_id != bot_id)
        .min_by(|a, b| a.join_at.cmp(&b.join_at).then_with(|| a.id.cmp(&b.id)))
        .map(|s| s.user_id.clone())
        .unwrap_or_default()
}

/// License tiers as the plugin needs them.
pub fn sku_at_least_professional(is_licensed: bool, sku: &str) -> bool {
    is_licensed && matches!(sku, "professional" | "enterprise" | "advanced" | "entry")
}

pub fn sku_enterprise(is_licensed: bool, sku: &str) -> bool {
    is_licensed && matches!(sku, "enterprise" | "advanced" | "entry")
}

/// Recomputes the host; true (and `props.hosts` updated) when it changed.
pub fn reelect_host(state: &mut CallState, bot_id: &str) -> bool {
    let new_host = elect_host(&state.call.props, &state.sessions, bot_id);
    if new_host == state.call.host_id() {
        return false;
    }
    state.call.props.hosts = if new_host.is_empty() {
        vec![]
    } else {
        vec![new_host]
    };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sess(id: &str, user: &str, join_at: i64) -> (String, Session) {
        (
            id.to_string(),
            Session {
                id: id.into(),
                call_id: "c".into(),
                user_id: user.into(),
                join_at,
                unmuted: false,
                raised_hand: 0,
                video: false,
            },
        )
    }

    fn ctx(
        t: &str,
        licensed: bool,
        explicit: Option<bool>,
        default: bool,
        admin: bool,
    ) -> StartContext<'_> {
        StartContext {
            channel_type: t,
            group_calls_allowed: licensed,
            explicitly_enabled: explicit,
            default_enabled: default,
            is_system_admin: admin,
        }
    }

    #[test]
    fn start_rules() {
        assert_eq!(
            may_start(ctx("O", false, None, true, true)),
            Err(StartDenied::Unlicensed)
        );
        assert_eq!(may_start(ctx("D", false, None, true, false)), Ok(()));
        assert_eq!(
            may_start(ctx("O", true, Some(false), true, true)),
            Err(StartDenied::Disabled)
        );
        assert_eq!(may_start(ctx("O", true, Some(true), false, false)), Ok(()));
        assert_eq!(
            may_start(ctx("O", true, None, false, false)),
            Err(StartDenied::InsufficientPermissions)
        );
        assert_eq!(may_start(ctx("O", true, None, false, true)), Ok(()));
        assert_eq!(may_start(ctx("P", true, None, true, false)), Ok(()));
    }

    #[test]
    fn capacity() {
        assert!(!at_capacity(0, 1000));
        assert!(!at_capacity(2, 1));
        assert!(at_capacity(2, 2));
    }

    #[test]
    fn host_election() {
        let mut props = CallProps::default();
        let mut sessions: BTreeMap<_, _> = [
            sess("s1", "u1", 10),
            sess("s2", "u2", 5),
            sess("s3", "bot", 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(elect_host(&props, &sessions, "bot"), "u2");
        props.hosts = vec!["u1".into()];
        assert_eq!(elect_host(&props, &sessions, "bot"), "u1");
        props.host_locked_user_id = "u2".into();
        assert_eq!(elect_host(&props, &sessions, "bot"), "u2");
        sessions.remove("s2");
        assert_eq!(elect_host(&props, &sessions, "bot"), "u1");
        sessions.remove("s1");
        assert_eq!(elect_host(&props, &sessions, "bot"), "");
    }
}
