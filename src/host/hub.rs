//! Websocket connections of the host, Mattermost style: `hello` first, a per-connection
//! `seq`, resumption by `connection_id` + `sequence_number` while the connection is
//! kept after a drop, and event fan-out by user / channel / connection.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// How long a dropped connection can be resumed, and how many events it keeps.
pub const RESUME_WINDOW: Duration = Duration::from_secs(60);
const REPLAY_BUFFER: usize = 256;
/// Frames a connection may have waiting for its socket. A client that lets more pile
/// up is not reading: it is disconnected (it may resume) instead of growing the host's
/// memory without bound. Room for a whole replay and then some.
pub const OUTBOUND_QUEUE: usize = 2 * REPLAY_BUFFER;

pub type Outbound = mpsc::Sender<String>;

pub struct Conn {
    pub id: String,
    pub user_id: String,
    pub session_id: String,
    state: Mutex<ConnState>,
    /// Told when the host ends the connection (its login session was revoked, or it
    /// stopped reading): the socket's reader stops.
    pub ended: tokio::sync::Notify,
}

struct ConnState {
    next_seq: i64,
    sender: Option<Outbound>,
    sent: VecDeque<(i64, String)>,
    dropped_at: Option<Instant>,
}

impl Conn {
    pub fn is_active(&self) -> bool {
        self.state.lock().sender.is_some()
    }

    /// Sends an event with the next sequence number (kept for replay).
    pub fn send_event(&self, event: &str, data: &Value, broadcast: &Value) {
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let frame =
            json!({"event": event, "data": data, "broadcast": broadcast, "seq": seq}).to_string();
        st.sent.push_back((seq, frame.clone()));
        if st.sent.len() > REPLAY_BUFFER {
            st.sent.pop_front();
        }
        self.deliver(&mut st, frame);
    }

    /// A reply to a client action (no `seq` of its own, as Mattermost does).
    pub fn send_reply(&self, reply: &Value) {
        let mut st = self.state.lock();
        self.deliver(&mut st, reply.to_string());
    }

    fn deliver(&self, st: &mut ConnState, frame: String) {
        let Some(tx) = &st.sender else { return };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(frame) {
            // Events stay in the replay buffer: the client can resume.
            tracing::warn!(
                conn_id = self.id,
                user_id = self.user_id,
                queued = OUTBOUND_QUEUE,
                "websocket client is not reading, disconnecting it"
            );
            st.sender = None;
            self.ended.notify_one();
        }
    }
}

#[derive(Default, Clone)]
pub struct Hub {
    conns: Arc<Mutex<HashMap<String, Arc<Conn>>>>,
}

pub enum Attach {
    New(Arc<Conn>),
    Resumed(Arc<Conn>),
}

impl Hub {
    /// Attaches a socket: resumes `(conn_id, seq)` when that connection is dropped,
    /// belongs to the user and still holds every event from `seq`; otherwise a new
    /// connection, which starts with `hello`.
    pub fn attach(
        &self,
        user_id: &str,
        session_id: &str,
        resume: Option<(&str, i64)>,
        tx: Outbound,
        server_version: &str,
    ) -> Attach {
        let mut conns = self.conns.lock();
        conns.retain(|_, c| {
            let st = c.state.lock();
            st.dropped_at.is_none_or(|t| t.elapsed() < RESUME_WINDOW)
        });
        if let Some((id, seq)) = resume {
            if let Some(c) = conns.get(id) {
                let mut st = c.state.lock();
                let resumable = c.user_id == user_id
                    && st.sender.is_none()
                    && seq <= st.next_seq
                    && (seq == st.next_seq || st.sent.front().is_some_and(|(s, _)| *s <= seq));
                if resumable {
                    // No `hello` on a resumed connection (Mattermost sends it only to new
                    // ones): the client expects the missed events to continue its count.
                    for (s, frame) in &st.sent {
                        if *s >= seq {
                            // Fits: the queue holds more than the replay buffer.
                            let _ = tx.try_send(frame.clone());
                        }
                    }
                    st.sender = Some(tx);
                    st.dropped_at = None;
                    drop(st);
                    return Attach::Resumed(c.clone());
                }
            }
        }
        let id = crate::ids::new_id();
        let c = Arc::new(Conn {
            id: id.clone(),
            user_id: user_id.to_string(),
            session_id: session_id.to_string(),
            state: Mutex::new(ConnState {
                next_seq: 1,
                sender: Some(tx.clone()),
                sent: VecDeque::new(),
                dropped_at: None,
            }),
            ended: tokio::sync::Notify::new(),
        });
        let _ = tx.try_send(hello_frame(&id, server_version, 0));
        conns.insert(id, c.clone());
        Attach::New(c)
    }

    pub fn detach(&self, conn: &Conn) {
        let mut st = conn.state.lock();
        st.sender = None;
        st.dropped_at = Some(Instant::now());
    }

    /// A login session was revoked (logout, session revoked): its connections are
    /// closed and forgotten (nothing to resume), as Mattermost does.
    pub fn end_session(&self, session_id: &str) -> usize {
        let mut conns = self.conns.lock();
        let ended: Vec<Arc<Conn>> = conns
            .values()
            .filter(|c| c.session_id == session_id)
            .cloned()
            .collect();
        for c in &ended {
            conns.remove(&c.id);
            c.state.lock().sender = None;
            c.ended.notify_one();
        }
        ended.len()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Conn>> {
        self.conns.lock().get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.conns.lock().values().cloned().collect()
    }

    pub fn for_user(&self, user_id: &str) -> Vec<Arc<Conn>> {
        self.conns
            .lock()
            .values()
            .filter(|c| c.user_id == user_id)
            .cloned()
            .collect()
    }
}

fn hello_frame(conn_id: &str, server_version: &str, seq: i64) -> String {
    json!({
        "event": "hello",
        "data": {"connection_id": conn_id, "server_version": server_version, "server_hostname": "calls-host"},
        "broadcast": {"omit_users": null, "user_id": "", "channel_id": "", "team_id": ""},
        "seq": seq,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_replays_missed_events_and_keeps_numbering() {
        let hub = Hub::default();
        let (tx, mut rx) = mpsc::channel(OUTBOUND_QUEUE);
        let Attach::New(c) = hub.attach("u", "s", None, tx, "11.0.0") else {
            panic!("expected new")
        };
        let hello: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(hello["seq"], 0);
        c.send_event("e1", &json!({}), &json!({}));
        hub.detach(&c);
        c.send_event("e2", &json!({}), &json!({}));
        let (tx2, mut rx2) = mpsc::channel(OUTBOUND_QUEUE);
        let Attach::Resumed(c2) = hub.attach("u", "s", Some((&c.id, 2)), tx2, "11.0.0") else {
            panic!("expected resume")
        };
        assert_eq!(c2.id, c.id);
        let frames: Vec<Value> = std::iter::from_fn(|| rx2.try_recv().ok())
            .map(|f| serde_json::from_str(&f).unwrap())
            .collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["event"], "e2");
        assert_eq!(frames[0]["seq"], 2);
        // Another user cannot take the connection over.
        hub.detach(&c2);
        let (tx3, _rx3) = mpsc::channel(OUTBOUND_QUEUE);
        assert!(matches!(
            hub.attach("other", "s", Some((&c.id, 3)), tx3, "v"),
            Attach::New(_)
        ));
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_disconnected_and_can_resume() {
        let hub = Hub::default();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let Attach::New(c) = hub.attach("u", "s", None, tx, "v") else {
            panic!("expected new")
        };
        // hello + OUTBOUND_QUEUE - 1 events fill the queue; the next one overflows it.
        for _ in 0..OUTBOUND_QUEUE {
            c.send_event("e", &json!({}), &json!({}));
        }
        assert!(!c.is_active(), "a full queue kept the connection");
        tokio::time::timeout(std::time::Duration::from_secs(1), c.ended.notified())
            .await
            .expect("the reader was not told");
        drop(rx);
        hub.detach(&c);
        let (tx2, mut rx2) = mpsc::channel(OUTBOUND_QUEUE);
        let last = OUTBOUND_QUEUE as i64;
        assert!(matches!(
            hub.attach("u", "s", Some((&c.id, last)), tx2, "v"),
            Attach::Resumed(_)
        ));
        let v: Value = serde_json::from_str(&rx2.try_recv().unwrap()).unwrap();
        assert_eq!(v["seq"], last, "the overflowing event was lost");
    }

    #[tokio::test]
    async fn a_revoked_login_ends_its_connections_only() {
        let hub = Hub::default();
        let (tx, mut rx) = mpsc::channel(OUTBOUND_QUEUE);
        let Attach::New(gone) = hub.attach("u", "revoked", None, tx, "v") else {
            panic!("expected new")
        };
        let (tx2, _rx2) = mpsc::channel(OUTBOUND_QUEUE);
        let Attach::New(kept) = hub.attach("u", "other", None, tx2, "v") else {
            panic!("expected new")
        };
        rx.try_recv().unwrap();
        assert_eq!(hub.end_session("revoked"), 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), gone.ended.notified())
            .await
            .expect("the reader was not told");
        gone.send_event("e", &json!({}), &json!({}));
        assert!(rx.recv().await.is_none(), "the socket's queue stayed open");
        assert!(
            hub.get(&gone.id).is_none(),
            "a revoked connection can be resumed"
        );
        assert!(kept.is_active() && hub.get(&kept.id).is_some());
    }
}
