//! Websocket-side call sessions of this node (reference calls-plugin.md §2.4, §2.6).
//!
//! Each joined connection gets a [`LocalSession`] and one task that processes its
//! queued client messages in order and watches for the signals that end it: an
//! explicit leave, the socket closing (then a 10 s grace for a reconnect), or a
//! reconnect on another connection (then this entry just goes away).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use super::client_message::Queued;
use super::media::MediaSession;
use calls_service::rate::TokenBucket;

/// KV key remembering a session's current connection when it differs from the
/// session id, so that a restarted plugin can tell live sessions from gone ones.
pub fn conn_key(session_id: &str) -> String {
    format!("session_conn_{session_id}")
}

/// KV key naming the node that holds a session's websocket (a cluster only), so that
/// the other nodes can remove the sessions of a node that died.
pub fn node_key(session_id: &str) -> String {
    format!("session_node_{session_id}")
}

/// How long a session survives its websocket closing without a reconnect.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(10);
/// Per-session queue of client messages (excess is dropped).
pub const QUEUE_SIZE: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Leave,
    WsClosed,
    Reconnected,
    /// The session was already removed from the call elsewhere (host end, host
    /// remove, cleanup): only this node's entry has to go.
    Closed,
}

#[derive(Debug)]
pub struct LocalSession {
    pub user_id: String,
    pub channel_id: String,
    pub call_id: String,
    /// Current connection id (where `signal` events go).
    pub conn_id: String,
    /// The session id: the connection id of the join.
    pub original_conn_id: String,
    /// Auth session of the websocket (re-checked periodically).
    pub auth_session_id: String,
    signals: mpsc::UnboundedSender<Signal>,
    messages: mpsc::Sender<Queued>,
    limiter: Mutex<TokenBucket>,
    reconnected: std::sync::atomic::AtomicBool,
}

/// What a session's task receives.
pub struct SessionInbox {
    pub signals: mpsc::UnboundedReceiver<Signal>,
    pub messages: mpsc::Receiver<Queued>,
}

impl LocalSession {
    pub fn new(
        user_id: &str,
        channel_id: &str,
        call_id: &str,
        conn_id: &str,
        original_conn_id: &str,
        auth_session_id: &str,
    ) -> (Arc<LocalSession>, SessionInbox) {
        let (stx, srx) = mpsc::unbounded_channel();
        let (mtx, mrx) = mpsc::channel(QUEUE_SIZE);
        (
            Arc::new(LocalSession {
                user_id: user_id.into(),
                channel_id: channel_id.into(),
                call_id: call_id.into(),
                conn_id: conn_id.into(),
                original_conn_id: original_conn_id.into(),
                auth_session_id: auth_session_id.into(),
                signals: stx,
                messages: mtx,
                limiter: Mutex::new(TokenBucket::new(100.0)),
                reconnected: Default::default(),
            }),
            SessionInbox {
                signals: srx,
                messages: mrx,
            },
        )
    }

    /// Whom its media operations are for.
    pub fn media(&self) -> MediaSession {
        MediaSession {
            session_id: self.original_conn_id.clone(),
            call_id: self.call_id.clone(),
            user_id: self.user_id.clone(),
            channel_id: self.channel_id.clone(),
        }
    }

    pub fn signal(&self, s: Signal) {
        // The task may already be gone; then there is nobody left to tell.
        let _ = self.signals.send(s);
    }

    /// Marks the session as moved to another connection; false if it already was.
    pub fn mark_reconnected(&self) -> bool {
        !self
            .reconnected
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// Queues a client message; false when rate-limited (10/s, burst 100) or full.
    pub fn enqueue(&self, m: Queued) -> bool {
        if !self.limiter.lock().allow(10.0, 100.0) {
            return false;
        }
        self.messages.try_send(m).is_ok()
    }
}

#[derive(Default, Clone)]
pub struct Sessions {
    by_conn: Arc<RwLock<HashMap<String, Arc<LocalSession>>>>,
}

impl Sessions {
    pub fn get(&self, conn_id: &str) -> Option<Arc<LocalSession>> {
        self.by_conn.read().get(conn_id).cloned()
    }

    /// By session id: the entry keyed by it, or any whose original id matches.
    pub fn get_by_session_id(&self, session_id: &str) -> Option<Arc<LocalSession>> {
        let map = self.by_conn.read();
        map.get(session_id)
            .filter(|s| s.original_conn_id == session_id)
            .or_else(|| map.values().find(|s| s.original_conn_id == session_id))
            .cloned()
    }

    pub fn insert(&self, s: Arc<LocalSession>) {
        self.by_conn.write().insert(s.conn_id.clone(), s);
    }

    /// Removes the entry for `s.conn_id` only if it is still `s`.
    pub fn remove_if_same(&self, s: &Arc<LocalSession>) {
        let mut map = self.by_conn.write();
        if map.get(&s.conn_id).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
            map.remove(&s.conn_id);
        }
    }

    pub fn remove_key(&self, conn_id: &str) {
        self.by_conn.write().remove(conn_id);
    }

    pub fn len(&self) -> usize {
        self.by_conn.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<LocalSession>> {
        self.by_conn.read().values().cloned().collect()
    }
}

/// How a session's task ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Moved to another connection, or already removed from the call elsewhere: drop
    /// only the map entry.
    Reconnected,
    /// Left, or the socket stayed closed past the grace: remove from the call.
    Remove,
}

/// Runs a session's queue until a signal ends it; `handle` processes each message.
pub async fn run_session<F, Fut>(
    mut inbox: SessionInbox,
    start_closed: bool,
    grace: Duration,
    mut handle: F,
) -> Ending
where
    F: FnMut(Queued) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if !start_closed {
        loop {
            tokio::select! {
                biased;
                sig = inbox.signals.recv() => match sig {
                    Some(Signal::Leave) | None => return Ending::Remove,
                    Some(Signal::Reconnected | Signal::Closed) => return Ending::Reconnected,
                    Some(Signal::WsClosed) => break,
                },
                Some(m) = inbox.messages.recv() => handle(m).await,
            }
        }
    }
    let wait = async {
        loop {
            match inbox.signals.recv().await {
                Some(Signal::Reconnected | Signal::Closed) => return Ending::Reconnected,
                Some(Signal::Leave) | None => return Ending::Remove,
                Some(Signal::WsClosed) => continue,
            }
        }
    };
    tokio::time::timeout(grace, wait)
        .await
        .unwrap_or(Ending::Remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> (Arc<LocalSession>, SessionInbox) {
        LocalSession::new("u", "ch", "call", "conn", "conn", "auth")
    }

    #[tokio::test(start_paused = true)]
    async fn closed_socket_without_reconnect_is_removed_after_grace() {
        let (s, inbox) = session();
        s.signal(Signal::WsClosed);
        let start = tokio::time::Instant::now();
        let end = run_session(inbox, false, RECONNECT_GRACE, |_| async {}).await;
        assert_eq!(end, Ending::Remove);
        assert!(start.elapsed() >= RECONNECT_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_within_grace_keeps_session() {
        let (s, inbox) = session();
        let s2 = s.clone();
        tokio::spawn(async move {
            s2.signal(Signal::WsClosed);
            tokio::time::sleep(Duration::from_secs(5)).await;
            s2.signal(Signal::Reconnected);
        });
        assert_eq!(
            run_session(inbox, false, RECONNECT_GRACE, |_| async {}).await,
            Ending::Reconnected
        );
    }

    #[tokio::test(start_paused = true)]
    async fn messages_are_processed_in_order_until_leave() {
        let (s, inbox) = session();
        for t in ["mute", "unmute", "raise_hand"] {
            let q = match t {
                "mute" => Queued::Mute(true),
                "unmute" => Queued::Mute(false),
                _ => Queued::Hand(true),
            };
            assert!(s.enqueue(q));
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let s2 = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            s2.signal(Signal::Leave);
        });
        let end = run_session(inbox, false, RECONNECT_GRACE, |m| {
            seen2.lock().push(m.name());
            async {}
        })
        .await;
        assert_eq!(end, Ending::Remove);
        assert_eq!(*seen.lock(), vec!["mute", "unmute", "raise_hand"]);
    }

    #[test]
    fn queue_overflow_and_rate_limit_drop_messages() {
        let (s, _inbox) = session();
        let accepted = (0..150).filter(|_| s.enqueue(Queued::Mute(true))).count();
        assert_eq!(accepted, QUEUE_SIZE);
    }
}
