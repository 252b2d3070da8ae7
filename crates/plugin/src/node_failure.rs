//! The calls of a node that died: every node checks, every few seconds, for active
//! calls hosted on a node the host no longer counts as alive (silent past its
//! liveness window), and ends them as a host's "end call" does (`call_end`, then each
//! session's `user_left`, the call post updated, `end_at` set), once: the first node
//! to take the call's lock ends it, the others find it ended. This node's sessions in
//! such a call go too. And the sessions whose websocket was on a node that is gone,
//! and that did not reconnect elsewhere in the meantime (the liveness window), leave
//! their calls, whichever node hosts those.

use std::collections::HashSet;
use std::time::Duration;

use super::app::{App, Result};
use super::leave::{force_cleanup, remove_session};
use super::model::Call;
use super::sessions::{node_key, Signal, RECONNECT_GRACE};

/// How often the live nodes are compared with the calls' nodes.
pub const CHECK_EVERY: Duration = Duration::from_secs(3);

/// Checks until the plugin stops; nothing to do on a single host.
pub async fn run(app: App) {
    if app.node_id().is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = tokio::time::Instant::now();
    let mut sweep = GoneNodes::default();
    loop {
        tick.tick().await;
        if app.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Some(live) = live_nodes(&app).await else {
            continue;
        };
        if let Err(e) = check(&app, &live).await {
            tracing::warn!(error = %e, "calls of gone nodes not checked");
        }
        let now = tokio::time::Instant::now();
        if sweep.update(&live, now, now.duration_since(started)) {
            if let Err(e) = remove_gone_sessions(&app, &live, &sweep).await {
                tracing::warn!(error = %e, "sessions of gone nodes not checked");
            }
        }
    }
}

/// Which nodes' sessions may be removed: a node gone for the reconnect grace (a
/// node stopping cleanly leaves the live set at once, and its clients get the same
/// grace as anyone's), or never seen alive since this plugin started (checked once,
/// a grace after the start).
#[derive(Default)]
struct GoneNodes {
    seen: HashSet<String>,
    gone_since: std::collections::HashMap<String, tokio::time::Instant>,
    swept: HashSet<String>,
    startup_swept: bool,
}

impl GoneNodes {
    /// Takes the live set; true when a sweep is due now.
    fn update(
        &mut self,
        live: &HashSet<String>,
        now: tokio::time::Instant,
        since_start: Duration,
    ) -> bool {
        for n in self.seen.difference(live) {
            self.gone_since.entry(n.clone()).or_insert(now);
        }
        self.gone_since.retain(|n, _| !live.contains(n));
        self.swept.retain(|n| !live.contains(n));
        self.seen.extend(live.iter().cloned());
        let due: Vec<String> = self
            .gone_since
            .iter()
            .filter(|(n, t)| now.duration_since(**t) >= RECONNECT_GRACE && !self.swept.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        let startup = !self.startup_swept && since_start >= RECONNECT_GRACE;
        self.startup_swept |= startup;
        self.swept.extend(due.iter().cloned());
        startup || !due.is_empty()
    }

    /// Whether a session recorded on `node` is to be removed.
    fn removable(&self, node: &str, live: &HashSet<String>, now: tokio::time::Instant) -> bool {
        if live.contains(node) {
            return false;
        }
        match self.gone_since.get(node) {
            Some(t) => now.duration_since(*t) >= RECONNECT_GRACE,
            None => !self.seen.contains(node),
        }
    }
}

/// Removes the sessions whose websocket's node (as recorded) is gone.
async fn remove_gone_sessions(app: &App, live: &HashSet<String>, gone: &GoneNodes) -> Result<()> {
    let now = tokio::time::Instant::now();
    let mut channels = std::collections::HashMap::new();
    for s in app.store.get_sessions_of_active_calls().await? {
        let Some(node) = app.host.kv_get(&node_key(&s.id)).await? else {
            continue;
        };
        let node = String::from_utf8_lossy(&node).into_owned();
        if !gone.removable(&node, live, now) {
            continue;
        }
        if !channels.contains_key(&s.call_id) {
            if let Some(c) = app.store.get_call(&s.call_id).await? {
                channels.insert(s.call_id.clone(), c.channel_id);
            }
        }
        if let Some(channel_id) = channels.get(&s.call_id) {
            tracing::info!(
                session_id = s.id,
                node_id = node,
                "the session's node is gone: it leaves"
            );
            remove_session(app, channel_id, &s.id).await?;
        }
    }
    Ok(())
}

/// The live nodes' ids; `None` when the host cannot tell (then nobody is gone).
pub async fn live_nodes(app: &App) -> Option<HashSet<String>> {
    match app.host.cluster_nodes().await {
        Ok(n) if !n.is_empty() => Some(n.into_iter().map(|n| n.id).collect()),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cluster nodes not known");
            None
        }
    }
}

/// Whether a call's media was on a node that is gone.
pub fn orphaned(call: &Call, live: &HashSet<String>) -> bool {
    let node = &call.props.node_id;
    call.props.rtcd_host.is_empty() && !node.is_empty() && !live.contains(node)
}

async fn check(app: &App, live: &HashSet<String>) -> Result<()> {
    for call in app.store.get_all_active_calls().await? {
        if orphaned(&call, live) {
            end_orphaned(app, &call).await?;
        }
    }
    Ok(())
}

/// Ends a call whose node is gone (if no other node did it first) and lets this
/// node's sessions in it go.
pub async fn end_orphaned(app: &App, call: &Call) -> Result<()> {
    for s in app.sessions.all() {
        if s.call_id == call.id {
            s.signal(Signal::Closed);
            app.sessions.remove_if_same(&s);
        }
    }
    app.media.call_ended(&call.id);
    if force_cleanup(app, &call.channel_id, &call.id, true).await? {
        tracing::warn!(
            call_id = call.id,
            channel_id = call.channel_id,
            node_id = call.props.node_id,
            "the call's node is gone: call ended"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CallProps;
    use sqlx::types::Json;

    fn call(node: &str, rtcd: &str) -> Call {
        Call {
            id: "c".into(),
            channel_id: "ch".into(),
            start_at: 0,
            end_at: 0,
            create_at: 0,
            delete_at: 0,
            title: String::new(),
            post_id: String::new(),
            thread_id: String::new(),
            owner_id: String::new(),
            participants: Json(serde_json::Value::Null),
            stats: Json(Default::default()),
            props: Json(CallProps {
                node_id: node.into(),
                rtcd_host: rtcd.into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_gone_nodes_sessions_wait_for_the_reconnect_grace() {
        let set = |v: &[&str]| -> HashSet<String> { v.iter().map(|s| s.to_string()).collect() };
        let t0 = tokio::time::Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut g = GoneNodes::default();
        assert!(!g.update(&set(&["a", "b"]), s(0), Duration::ZERO));
        // b leaves: nothing before the grace, one sweep after it.
        assert!(!g.update(&set(&["a"]), s(3), Duration::from_secs(3)));
        assert!(!g.removable("b", &set(&["a"]), s(6)));
        // The first look a grace after the start also sweeps (nodes never seen).
        assert!(g.update(&set(&["a"]), s(10), Duration::from_secs(10)));
        assert!(!g.removable("b", &set(&["a"]), s(10)));
        assert!(
            g.removable("z", &set(&["a"]), s(10)),
            "a node never seen alive"
        );
        assert!(g.update(&set(&["a"]), s(13), Duration::from_secs(13)));
        assert!(g.removable("b", &set(&["a"]), s(13)));
        assert!(
            !g.update(&set(&["a"]), s(16), Duration::from_secs(16)),
            "swept twice"
        );
        // b restarted: its sessions are its own again.
        assert!(!g.update(&set(&["a", "b"]), s(19), Duration::from_secs(19)));
        assert!(!g.removable("b", &set(&["a", "b"]), s(19)));
    }

    #[test]
    fn only_integrated_calls_of_gone_nodes_are_orphaned() {
        let live: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        assert!(orphaned(&call("c", ""), &live));
        assert!(!orphaned(&call("a", ""), &live));
        // A single host's calls and rtcd calls have no node to lose.
        assert!(!orphaned(&call("", ""), &live));
        assert!(!orphaned(&call("", "10.0.0.1"), &live));
    }
}
