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

pub struct Conn {
    pub id: String,
    pub user_id: String,
    pub session_id: String,
    state: Mutex<ConnState>,
}

struct ConnState {
    next_seq: i64,
    sender: Option<mpsc::UnboundedSender<String>>,
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
        if let Some(tx) = &st.sender {
            let _ = tx.send(frame.clone());
        }
        st.sent.push_back((seq, frame));
        if st.sent.len() > REPLAY_BUFFER {
            st.sent.pop_front();
        }
    }

    /// A reply to a client action (no `seq` of its own, as Mattermost does).
    pub fn send_reply(&self, reply: &Value) {
        if let Some(tx) = &self.state.lock().sender {
            let _ = tx.send(reply.to_string());
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
        tx: mpsc::UnboundedSender<String>,
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
                            let _ = tx.send(frame.clone());
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
        });
        let _ = tx.send(hello_frame(&id, server_version, 0));
        conns.insert(id, c.clone());
        Attach::New(c)
    }

    pub fn detach(&self, conn: &Conn) {
        let mut st = conn.state.lock();
        st.sender = None;
        st.dropped_at = Some(Instant::now());
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
        let (tx, mut rx) = mpsc::unbounded_channel();
        let Attach::New(c) = hub.attach("u", "s", None, tx, "11.0.0") else {
            panic!("expected new")
        };
        let hello: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(hello["seq"], 0);
        c.send_event("e1", &json!({}), &json!({}));
        hub.detach(&c);
        c.send_event("e2", &json!({}), &json!({}));
        let (tx2, mut rx2) = mpsc::unbounded_channel();
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
        let (tx3, _rx3) = mpsc::unbounded_channel();
        assert!(matches!(
            hub.attach("other", "s", Some((&c.id, 3)), tx3, "v"),
            Attach::New(_)
        ));
    }
}
