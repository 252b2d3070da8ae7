//! The calls of a node that died: every node checks, every few seconds, for active
//! calls hosted on a node the host no longer counts as alive (silent past its
//! liveness window), and ends them as a host's "end call" does (`call_end`, then each
//! session's `user_left`, the call post updated, `end_at` set), once: the first node
//! to take the call's lock ends it, the others find it ended. This node's sessions in
//! such a call go too.

use std::collections::HashSet;
use std::time::Duration;

use super::app::{App, Result};
use super::leave::force_cleanup;
use super::model::Call;
use super::sessions::Signal;

/// How often the live nodes are compared with the calls' nodes.
pub const CHECK_EVERY: Duration = Duration::from_secs(3);

/// Checks until the plugin stops; nothing to do on a single host.
pub async fn run(app: App) {
    if app.node_id().is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if app.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Err(e) = check(&app).await {
            tracing::warn!(error = %e, "calls of gone nodes not checked");
        }
    }
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

async fn check(app: &App) -> Result<()> {
    let Some(live) = live_nodes(app).await else {
        return Ok(());
    };
    for call in app.store.get_all_active_calls().await? {
        if orphaned(&call, &live) {
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
    fn only_integrated_calls_of_gone_nodes_are_orphaned() {
        let live: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        assert!(orphaned(&call("c", ""), &live));
        assert!(!orphaned(&call("a", ""), &live));
        // A single host's calls and rtcd calls have no node to lose.
        assert!(!orphaned(&call("", ""), &live));
        assert!(!orphaned(&call("", "10.0.0.1"), &live));
    }
}
