//! Websocket connections of the host, Mattermost style: `hello` first, a per-connection
//! `seq`, resumption by `connection_id` + `sequence_number` while the connection is
//! kept after a drop, and event fan-out by user / channel / connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use calls_wire::proto;

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
}

struct ConnState {
    next_seq: i64,
    sender: Option<Outbound>,
    /// The socket now attached (a resume attaches a new one to the same connection):
    /// only its reader may detach the connection.
    generation: u64,
    /// Told when the host ends the current socket (its login was revoked, or its
    /// client stopped reading): that socket's reader stops.
    ended: Arc<tokio::sync::Notify>,
    sent: VecDeque<(i64, String)>,
    dropped_at: Option<Instant>,
}

impl Conn {
    pub fn is_active(&self) -> bool {
        self.state.lock().sender.is_some()
    }

    /// The socket now attached (or last attached): each resume starts a new one.
    pub fn generation(&self) -> u64 {
        self.state.lock().generation
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
            Conn::end_socket(st);
        }
    }

    /// Ends the current socket (the connection stays resumable unless removed).
    fn end_socket(st: &mut ConnState) {
        st.sender = None;
        st.dropped_at.get_or_insert_with(Instant::now);
        st.ended.notify_one();
    }
}

/// A socket attached to a connection: what its reader needs.
pub struct Attached {
    pub conn: Arc<Conn>,
    pub resumed: bool,
    pub generation: u64,
    /// Notified when the host ends this socket.
    pub ended: Arc<tokio::sync::Notify>,
}

#[derive(Default, Clone)]
pub struct Hub {
    conns: Arc<Mutex<HashMap<String, Arc<Conn>>>>,
    /// What `hello` names as `server_hostname` ("calls-host" when empty).
    hostname: Arc<str>,
}

impl Hub {
    /// A hub whose `hello` names this server (a cluster node: its node id, so that a
    /// client behind a load balancer can tell which node it is on, as Mattermost's
    /// hostname does).
    pub fn named(hostname: &str) -> Hub {
        Hub {
            hostname: hostname.into(),
            ..Default::default()
        }
    }

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
    ) -> Attached {
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
                    && st.dropped_at.is_some()
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
                    st.generation += 1;
                    st.ended = Arc::new(tokio::sync::Notify::new());
                    let attached = Attached {
                        conn: c.clone(),
                        resumed: true,
                        generation: st.generation,
                        ended: st.ended.clone(),
                    };
                    drop(st);
                    return attached;
                }
            }
        }
        let id = calls_wire::ids::new_id();
        let ended = Arc::new(tokio::sync::Notify::new());
        let c = Arc::new(Conn {
            id: id.clone(),
            user_id: user_id.to_string(),
            session_id: session_id.to_string(),
            state: Mutex::new(ConnState {
                next_seq: 1,
                sender: Some(tx.clone()),
                sent: VecDeque::new(),
                dropped_at: None,
                generation: 0,
                ended: ended.clone(),
            }),
        });
        let hostname = if self.hostname.is_empty() {
            "calls-host"
        } else {
            &self.hostname
        };
        let _ = tx.try_send(hello_frame(&id, server_version, hostname, 0));
        conns.insert(id, c.clone());
        Attached {
            conn: c,
            resumed: false,
            generation: 0,
            ended,
        }
    }

    /// The socket `generation` of `conn` closed; false if another socket took the
    /// connection over meanwhile (a resume), which stays attached.
    pub fn detach(&self, conn: &Conn, generation: u64) -> bool {
        let mut st = conn.state.lock();
        if st.generation != generation {
            return false;
        }
        st.sender = None;
        st.dropped_at = Some(Instant::now());
        true
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
            Conn::end_socket(&mut c.state.lock());
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

    /// The connections a plugin's broadcast selects, in Mattermost's order of
    /// precedence (its `shouldSendEvent`): a connection id names that connection alone;
    /// else a user id names that user's connections; else every connection except the
    /// omitted users', limited to `channel_members` when the broadcast names a channel
    /// (`None` there selects nobody: membership unknown is not membership).
    pub fn select(
        &self,
        b: &proto::WebSocketBroadcast,
        channel_members: Option<&HashSet<String>>,
    ) -> Vec<Arc<Conn>> {
        if !b.connection_id.is_empty() {
            return self.get(&b.connection_id).into_iter().collect();
        }
        if !b.user_id.is_empty() {
            return self.for_user(&b.user_id);
        }
        self.conns
            .lock()
            .values()
            .filter(|c| !b.omit_users.contains(&c.user_id))
            .filter(|c| {
                b.channel_id.is_empty() || channel_members.is_some_and(|m| m.contains(&c.user_id))
            })
            .cloned()
            .collect()
    }
}

/// Whether a broadcast's reach depends on the members of its channel.
pub fn needs_channel_members(b: &proto::WebSocketBroadcast) -> bool {
    b.connection_id.is_empty() && b.user_id.is_empty() && !b.channel_id.is_empty()
}

/// The `broadcast` field of an event frame, as Mattermost writes it.
pub fn broadcast_field(b: &proto::WebSocketBroadcast) -> Value {
    let omit: serde_json::Map<String, Value> = b
        .omit_users
        .iter()
        .map(|u| (u.clone(), Value::Bool(true)))
        .collect();
    json!({
        "omit_users": if omit.is_empty() { Value::Null } else { Value::Object(omit) },
        "user_id": b.user_id,
        "channel_id": b.channel_id,
        "team_id": "",
        "connection_id": b.connection_id,
    })
}

fn hello_frame(conn_id: &str, server_version: &str, hostname: &str, seq: i64) -> String {
    json!({
        "event": "hello",
        "data": {"connection_id": conn_id, "server_version": server_version, "server_hostname": hostname},
        "broadcast": {"omit_users": null, "user_id": "", "channel_id": "", "team_id": ""},
        "seq": seq,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> (Outbound, mpsc::Receiver<String>) {
        mpsc::channel(OUTBOUND_QUEUE)
    }

    /// Found by the host_event_routing fuzz target: serde_json's default float
    /// parsing is approximate, so a large number the plugin published reached clients
    /// as another number.
    #[test]
    fn an_event_reaches_its_client_with_the_plugins_data_unchanged() {
        let hub = Hub::default();
        let (tx, mut rx) = queue();
        let a = hub.attach("alice", "s", None, tx, "v");
        let _hello = rx.try_recv().unwrap();
        for json in [
            "111111111110000000000248777112244074722",
            "0.30000000000000004",
        ] {
            let data: Value = serde_json::from_slice(json.as_bytes()).unwrap();
            a.conn.send_event("e", &data, &Value::Null);
            let frame: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
            assert_eq!(frame["data"], data, "{json}");
        }
    }

    #[test]
    fn broadcasts_select_as_mattermost_does() {
        let hub = Hub::default();
        let mut keep = Vec::new();
        let mut ids = HashMap::new();
        for user in ["alice", "bob", "carol"] {
            let (tx, rx) = queue();
            let a = hub.attach(user, "s", None, tx, "v");
            ids.insert(user, a.conn.id.clone());
            keep.push(rx);
        }
        let users = |b: proto::WebSocketBroadcast, members: Option<&HashSet<String>>| {
            let mut u: Vec<String> = hub
                .select(&b, members)
                .iter()
                .map(|c| c.user_id.clone())
                .collect();
            u.sort();
            u
        };
        let omit_bob = vec!["bob".to_string()];
        // A connection or a user named: the omitted list does not apply.
        let b = proto::WebSocketBroadcast {
            connection_id: ids["bob"].clone(),
            omit_users: omit_bob.clone(),
            ..Default::default()
        };
        assert_eq!(users(b, None), ["bob"]);
        let b = proto::WebSocketBroadcast {
            user_id: "bob".into(),
            omit_users: omit_bob.clone(),
            ..Default::default()
        };
        assert_eq!(users(b, None), ["bob"]);
        // A channel: its members, less the omitted; unknown members, nobody.
        let members: HashSet<String> = ["alice".to_string(), "bob".to_string()].into();
        let channel = proto::WebSocketBroadcast {
            channel_id: "ch".into(),
            omit_users: omit_bob,
            ..Default::default()
        };
        assert_eq!(users(channel.clone(), Some(&members)), ["alice"]);
        assert!(users(channel, None).is_empty());
        assert_eq!(
            users(proto::WebSocketBroadcast::default(), None),
            ["alice", "bob", "carol"]
        );
        assert!(needs_channel_members(&proto::WebSocketBroadcast {
            channel_id: "ch".into(),
            ..Default::default()
        }));
    }

    #[test]
    fn resume_replays_missed_events_and_keeps_numbering() {
        let hub = Hub::default();
        let (tx, mut rx) = queue();
        let a = hub.attach("u", "s", None, tx, "11.0.0");
        assert!(!a.resumed);
        let c = a.conn;
        let hello: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(hello["seq"], 0);
        c.send_event("e1", &json!({}), &json!({}));
        assert!(hub.detach(&c, a.generation));
        c.send_event("e2", &json!({}), &json!({}));
        let (tx2, mut rx2) = queue();
        let b = hub.attach("u", "s", Some((&c.id, 2)), tx2, "11.0.0");
        assert!(b.resumed);
        assert_eq!(b.conn.id, c.id);
        let frames: Vec<Value> = std::iter::from_fn(|| rx2.try_recv().ok())
            .map(|f| serde_json::from_str(&f).unwrap())
            .collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["event"], "e2");
        assert_eq!(frames[0]["seq"], 2);
        // Another user cannot take the connection over.
        assert!(hub.detach(&c, b.generation));
        let (tx3, _rx3) = queue();
        assert!(!hub.attach("other", "s", Some((&c.id, 3)), tx3, "v").resumed);
    }

    /// A client that lets its queue fill is cut (its reader told), may resume without
    /// losing an event, and the old socket's reader, when it finally stops, leaves the
    /// resumed socket alone.
    #[tokio::test]
    async fn a_client_that_does_not_read_is_disconnected_and_can_resume() {
        let hub = Hub::default();
        let (tx, rx) = queue();
        let a = hub.attach("u", "s", None, tx, "v");
        // hello + OUTBOUND_QUEUE - 1 events fill the queue; the next one overflows it.
        for _ in 0..OUTBOUND_QUEUE {
            a.conn.send_event("e", &json!({}), &json!({}));
        }
        assert!(!a.conn.is_active(), "a full queue kept the connection");
        tokio::time::timeout(std::time::Duration::from_secs(1), a.ended.notified())
            .await
            .expect("the reader was not told");
        drop(rx);
        // The client resumes before the old reader noticed.
        let (tx2, mut rx2) = queue();
        let last = OUTBOUND_QUEUE as i64;
        let b = hub.attach("u", "s", Some((&a.conn.id, last)), tx2, "v");
        assert!(b.resumed);
        let v: Value = serde_json::from_str(&rx2.try_recv().unwrap()).unwrap();
        assert_eq!(v["seq"], last, "the overflowing event was lost");
        assert!(
            !hub.detach(&a.conn, a.generation),
            "a stale reader detached"
        );
        assert!(b.conn.is_active());
        b.conn.send_event("after", &json!({}), &json!({}));
        assert!(rx2.try_recv().is_ok(), "the resumed socket lost its events");
    }

    #[tokio::test]
    async fn a_revoked_login_ends_its_connections_only() {
        let hub = Hub::default();
        let (tx, mut rx) = queue();
        let gone = hub.attach("u", "revoked", None, tx, "v");
        let (tx2, _rx2) = queue();
        let kept = hub.attach("u", "other", None, tx2, "v");
        rx.try_recv().unwrap();
        assert_eq!(hub.end_session("revoked"), 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), gone.ended.notified())
            .await
            .expect("the reader was not told");
        gone.conn.send_event("e", &json!({}), &json!({}));
        assert!(rx.recv().await.is_none(), "the socket's queue stayed open");
        assert!(
            hub.get(&gone.conn.id).is_none(),
            "a revoked connection can be resumed"
        );
        assert!(kept.conn.is_active() && hub.get(&kept.conn.id).is_some());
    }
}
