//! Sessions whose media this node runs but whose websocket is on another node of the
//! cluster (they joined there, or moved there): where their `signal` events go (the
//! current connection, which the cluster delivers to its node) and who they are.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::media::MediaSession;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoute {
    pub media: MediaSession,
    /// The session's current connection.
    pub conn_id: String,
    /// The node holding that connection.
    pub node_id: String,
}

#[derive(Default, Clone)]
pub struct RemotePeers(Arc<RwLock<HashMap<String, PeerRoute>>>);

impl RemotePeers {
    /// Adds a route; false if the session has one already.
    pub fn insert(&self, r: PeerRoute) -> bool {
        let mut m = self.0.write();
        if m.contains_key(&r.media.session_id) {
            return false;
        }
        m.insert(r.media.session_id.clone(), r);
        true
    }

    pub fn get(&self, session_id: &str) -> Option<PeerRoute> {
        self.0.read().get(session_id).cloned()
    }

    pub fn remove(&self, session_id: &str) -> Option<PeerRoute> {
        self.0.write().remove(session_id)
    }

    /// User `user`'s session of call `call` whose connection was `prev` is on `new` at
    /// `node` now; its id, if it has a route here (another user's route on that
    /// connection id is not moved).
    pub fn moved(
        &self,
        prev: &str,
        user: &str,
        call: &str,
        new: &str,
        node: &str,
    ) -> Option<String> {
        let mut m = self.0.write();
        let r = m
            .values_mut()
            .find(|r| r.conn_id == prev && r.media.user_id == user && r.media.call_id == call)?;
        r.conn_id = new.to_string();
        r.node_id = node.to_string();
        Some(r.media.session_id.clone())
    }

    /// The routes of a call.
    pub fn of_call(&self, call_id: &str) -> Vec<PeerRoute> {
        self.0
            .read()
            .values()
            .filter(|r| r.media.call_id == call_id)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<PeerRoute> {
        self.0.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.0.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(session: &str, conn: &str) -> PeerRoute {
        PeerRoute {
            media: MediaSession {
                session_id: session.into(),
                call_id: "call".into(),
                user_id: "u".into(),
                channel_id: "ch".into(),
            },
            conn_id: conn.into(),
            node_id: "b".into(),
        }
    }

    #[test]
    fn a_route_follows_its_session_to_its_new_connection() {
        let p = RemotePeers::default();
        assert!(p.insert(route("s1", "s1")));
        assert!(
            !p.insert(route("s1", "other")),
            "a second route replaced the first"
        );
        assert_eq!(
            p.moved("s1", "mallory", "call", "c2", "c"),
            None,
            "another user moved it"
        );
        assert_eq!(
            p.moved("s1", "u", "call", "c2", "c"),
            Some("s1".to_string())
        );
        let r = p.get("s1").unwrap();
        assert_eq!((r.conn_id.as_str(), r.node_id.as_str()), ("c2", "c"));
        // The next move starts from the current connection, not the session id.
        assert_eq!(p.moved("s1", "u", "call", "c3", "b"), None);
        assert_eq!(
            p.moved("c2", "u", "call", "c3", "b"),
            Some("s1".to_string())
        );
        assert_eq!(p.of_call("call").len(), 1);
        assert!(p.remove("s1").is_some() && p.is_empty());
    }
}
