//! rtcd's sessions (reference rtcd.md §2.4, §3.1): who joined over which plugin
//! connection, where each session's signaling goes now (`conn_map`), and the glue
//! between plugin messages and the SFU. Calls are keyed by group (client id) and
//! call id, so two installations never share a call.
//!
//! Tenant isolation: every message that names a session acts only on a session of
//! the sender's own group. Another group's session is refused as "not found" (and
//! logged), so a client can neither close, move, nor signal it, and no reply tells it
//! the session exists. Upstream checks no group here.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use tokio::sync::mpsc;

use calls_rtc::shell::{Command, Note, RtcServer};
use calls_sfu::datachannel::SessionDescription;
use calls_wire::rtcd::{rtc_type, Envelope, Join, RtcMessage};

/// A joined session.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    pub group: String,
    pub call: String,
    pub user: String,
    pub channel: String,
    pub av1: bool,
    pub dc_signaling: bool,
    /// The connection the join came over: `close` goes there (as upstream).
    pub join_conn: String,
}

struct Conn {
    client_id: String,
    tx: mpsc::Sender<Vec<u8>>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, SessionEntry>,
    conn_map: HashMap<String, String>,
    conns: HashMap<String, Conn>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SessionError {
    #[error("invalid session config: {0} should not be empty")]
    Invalid(&'static str),
    #[error("user session already exists")]
    Exists,
    #[error("session not found")]
    NotFound,
    /// No such session in any group (internal: told to the client as `NotFound`).
    #[error("session not found")]
    Gone,
    #[error("invalid rtc message: {0}")]
    BadMessage(String),
}

impl SessionError {
    /// What the sender is told: `Gone` and another group's session look the same.
    fn visible(self) -> SessionError {
        match self {
            SessionError::Gone => SessionError::NotFound,
            e => e,
        }
    }
}

impl State {
    /// The session if it is one of `group`'s. `NotFound` for another group's session,
    /// `Gone` for one that exists in no group.
    fn owned<'a>(
        st: &'a State,
        group: &str,
        session_id: &str,
    ) -> Result<&'a SessionEntry, SessionError> {
        match st.sessions.get(session_id) {
            Some(e) if e.group == group => Ok(e),
            Some(_) => Err(SessionError::NotFound),
            None => Err(SessionError::Gone),
        }
    }
}

pub struct Sessions {
    state: Mutex<State>,
    rtc: RtcServer,
    /// `ws_messages_total{clientID, type, direction="out"}` (only rtc/vad, as upstream).
    sent: prometheus::IntCounterVec,
}

impl Sessions {
    pub fn new(rtc: RtcServer, sent: prometheus::IntCounterVec) -> Sessions {
        Sessions {
            state: Mutex::new(State::default()),
            rtc,
            sent,
        }
    }

    pub fn add_conn(&self, conn_id: &str, client_id: &str, tx: mpsc::Sender<Vec<u8>>) {
        self.state.lock().conns.insert(
            conn_id.to_string(),
            Conn {
                client_id: client_id.to_string(),
                tx,
            },
        );
    }

    /// A plugin connection went away: its sessions stay (the plugin reconnects them).
    pub fn remove_conn(&self, conn_id: &str) {
        self.state.lock().conns.remove(conn_id);
    }

    /// The SFU's call key: group and call id.
    fn call_key(group: &str, call: &str) -> String {
        format!("{group}/{call}")
    }

    /// One message from plugin connection `conn_id` authenticated as `group`.
    pub fn handle(
        self: &Arc<Self>,
        conn_id: &str,
        group: &str,
        env: Envelope,
    ) -> Result<(), SessionError> {
        match env {
            Envelope::Join(j) => self.join(conn_id, group, j),
            Envelope::Leave { session_id } => {
                match State::owned(&self.state.lock(), group, &session_id) {
                    // A session rtcd already closed: nothing left to do.
                    Err(SessionError::Gone) => return Ok(()),
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
                self.close(&session_id, true);
                Ok(())
            }
            Envelope::Reconnect { session_id } => {
                let mut st = self.state.lock();
                State::owned(&st, group, &session_id).map_err(SessionError::visible)?;
                st.conn_map.insert(session_id, conn_id.to_string());
                Ok(())
            }
            Envelope::Rtc(m) => {
                State::owned(&self.state.lock(), group, &m.session_id)
                    .map_err(SessionError::visible)?;
                self.rtc_in(m)
            }
            other => Err(SessionError::BadMessage(format!(
                "unexpected client message type {:?}",
                other.type_name()
            ))),
        }
    }

    fn join(&self, conn_id: &str, group: &str, j: Join) -> Result<(), SessionError> {
        for (name, v) in [
            ("GroupID", group),
            ("CallID", j.call_id.as_str()),
            ("UserID", j.user_id.as_str()),
            ("SessionID", j.session_id.as_str()),
        ] {
            if v.is_empty() {
                return Err(SessionError::Invalid(name));
            }
        }
        {
            let mut st = self.state.lock();
            if st.sessions.contains_key(&j.session_id) {
                return Err(SessionError::Exists);
            }
            st.sessions.insert(
                j.session_id.clone(),
                SessionEntry {
                    group: group.to_string(),
                    call: j.call_id.clone(),
                    user: j.user_id.clone(),
                    channel: j.channel_id.clone(),
                    av1: j.av1_support,
                    dc_signaling: j.dc_signaling,
                    join_conn: conn_id.to_string(),
                },
            );
            st.conn_map
                .insert(j.session_id.clone(), conn_id.to_string());
        }
        self.rtc.send(Command::AddSession {
            group: group.to_string(),
            call_id: Self::call_key(group, &j.call_id),
            session_id: j.session_id,
            dc_signaling: j.dc_signaling,
            av1: j.av1_support,
        });
        Ok(())
    }

    /// An `rtc` message for a session of the sender's group (checked by `handle`).
    fn rtc_in(self: &Arc<Self>, m: RtcMessage) -> Result<(), SessionError> {
        let sid = m.session_id.clone();
        let bad = |e: String| SessionError::BadMessage(e);
        let data = m.data.unwrap_or_default();
        let json = || serde_json::from_slice::<Value>(&data).map_err(|e| bad(e.to_string()));
        match m.msg_type {
            rtc_type::ICE => {
                let v = json()?;
                let c = v
                    .get("candidate")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !c.is_empty() {
                    self.rtc.send(Command::Candidate {
                        session_id: sid,
                        candidate: c.to_string(),
                    });
                }
            }
            rtc_type::SDP => {
                let SessionDescription { kind, sdp } =
                    SessionDescription::from_json(&data).map_err(|e| bad(e.to_string()))?;
                match kind.as_str() {
                    "offer" => {
                        let me = self.clone();
                        tokio::spawn(async move {
                            match me.rtc.offer(&sid, sdp).await {
                                Ok(answer) => {
                                    let json = SessionDescription::answer(answer).to_json();
                                    me.send_env(
                                        &sid,
                                        false,
                                        rtc_type::SDP,
                                        Some(json.into_bytes()),
                                    );
                                }
                                Err(e) => {
                                    tracing::warn!(session_id = sid, error = %e, "client offer refused")
                                }
                            }
                        });
                    }
                    "answer" => self.rtc.send(Command::Answer {
                        session_id: sid,
                        sdp,
                    }),
                    other => return Err(bad(format!("unexpected sdp type {other:?}"))),
                }
            }
            rtc_type::MUTE | rtc_type::UNMUTE => self.rtc.send(Command::Mute {
                session_id: sid,
                muted: m.msg_type == rtc_type::MUTE,
            }),
            rtc_type::SCREEN_ON | rtc_type::VIDEO_ON => {
                let v = json()?;
                let key = if m.msg_type == rtc_type::SCREEN_ON {
                    "screenStreamID"
                } else {
                    "videoStreamID"
                };
                let stream_id = v.get(key).and_then(Value::as_str).map(str::to_string);
                let cmd = if m.msg_type == rtc_type::SCREEN_ON {
                    Command::ScreenStream {
                        session_id: sid,
                        stream_id,
                    }
                } else {
                    Command::VideoStream {
                        session_id: sid,
                        stream_id,
                    }
                };
                self.rtc.send(cmd);
            }
            rtc_type::SCREEN_OFF => self.rtc.send(Command::ScreenStream {
                session_id: sid,
                stream_id: None,
            }),
            // Upstream does nothing with VideoOff either.
            rtc_type::VIDEO_OFF => {}
            other => return Err(bad(format!("unexpected rtc message type {other}"))),
        }
        Ok(())
    }

    /// Ends a session: SFU removal, `close` to the connection that joined it.
    pub fn close(&self, session_id: &str, remove_from_sfu: bool) {
        let (entry, tx) = {
            let mut st = self.state.lock();
            let Some(entry) = st.sessions.remove(session_id) else {
                return;
            };
            st.conn_map.remove(session_id);
            let tx = st
                .conns
                .get(&entry.join_conn)
                .map(|c| (c.client_id.clone(), c.tx.clone()));
            (entry, tx)
        };
        if remove_from_sfu {
            self.rtc.send(Command::RemoveSession {
                session_id: session_id.to_string(),
            });
        }
        let Some((_, tx)) = tx else {
            tracing::debug!(session_id, "joining connection gone, close not sent");
            return;
        };
        let frame = Envelope::Close {
            session_id: session_id.to_string(),
        }
        .encode();
        if tx.try_send(frame).is_err() {
            tracing::warn!(session_id, group = entry.group, "close message dropped");
        }
    }

    /// An `rtc` (or `vad`) message to where the session's signaling goes now.
    fn send_env(&self, session_id: &str, vad: bool, msg_type: i64, data: Option<Vec<u8>>) {
        let st = self.state.lock();
        let Some(entry) = st.sessions.get(session_id) else {
            return;
        };
        let Some(conn) = st.conn_map.get(session_id).and_then(|c| st.conns.get(c)) else {
            tracing::debug!(session_id, "no connection for outbound message");
            return;
        };
        let m = RtcMessage {
            group_id: entry.group.clone(),
            user_id: entry.user.clone(),
            session_id: session_id.to_string(),
            call_id: entry.call.clone(),
            msg_type,
            data,
        };
        let env = if vad {
            Envelope::Vad(m)
        } else {
            Envelope::Rtc(m)
        };
        if conn.tx.try_send(env.encode()).is_err() {
            tracing::warn!(session_id, "outbound queue full, message dropped");
            return;
        }
        self.sent
            .with_label_values(&[conn.client_id.as_str(), env.type_name(), "out"])
            .inc();
    }

    /// What the SFU reports, turned into messages to the plugins.
    pub fn on_note(&self, note: Note) {
        match note {
            Note::Offer { session_id, json } => {
                self.send_env(&session_id, false, rtc_type::SDP, Some(json.into_bytes()))
            }
            Note::Voice { session_id, on } => {
                let t = if on {
                    rtc_type::VOICE_ON
                } else {
                    rtc_type::VOICE_OFF
                };
                self.send_env(&session_id, true, t, None)
            }
            Note::Closed { session_id } => self.close(&session_id, false),
        }
    }

    /// The sessions of a group's call (`/calls/{callID}/sessions`).
    pub fn of_call(
        &self,
        group: &str,
        call: &str,
    ) -> Result<Vec<(String, SessionEntry)>, &'static str> {
        let st = self.state.lock();
        let in_group: Vec<_> = st
            .sessions
            .iter()
            .filter(|(_, e)| e.group == group)
            .collect();
        if in_group.is_empty() {
            return Err("group not found");
        }
        let in_call: Vec<_> = in_group
            .into_iter()
            .filter(|(_, e)| e.call == call)
            .map(|(s, e)| (s.clone(), e.clone()))
            .collect();
        if in_call.is_empty() {
            return Err("call not found");
        }
        Ok(in_call)
    }

    pub fn session_count(&self) -> usize {
        self.state.lock().sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> (Arc<Sessions>, mpsc::UnboundedReceiver<Command>) {
        let (rtc, commands) = RtcServer::detached();
        let sent = prometheus::IntCounterVec::new(
            prometheus::Opts::new("sent", "sent"),
            &["clientID", "type", "direction"],
        )
        .unwrap();
        (Arc::new(Sessions::new(rtc, sent)), commands)
    }

    fn rtc(session: &str, msg_type: i64, data: &[u8]) -> Envelope {
        Envelope::Rtc(RtcMessage {
            session_id: session.into(),
            msg_type,
            data: Some(data.to_vec()),
            ..Default::default()
        })
    }

    /// Another group's session is out of reach: leave, reconnect and every rtc
    /// message naming it are refused as "not found" and change nothing.
    #[tokio::test]
    async fn a_client_cannot_touch_another_groups_session() {
        let (s, mut commands) = sessions();
        let (victim_tx, mut victim_rx) = mpsc::channel(10);
        let (attacker_tx, mut attacker_rx) = mpsc::channel(10);
        s.add_conn("conn-v", "victim", victim_tx);
        s.add_conn("conn-a", "attacker", attacker_tx);
        let sid = "s".repeat(26);
        s.handle(
            "conn-v",
            "victim",
            Envelope::Join(Join {
                call_id: "call".into(),
                user_id: "user".into(),
                session_id: sid.clone(),
                channel_id: "chan".into(),
                ..Default::default()
            }),
        )
        .unwrap();
        assert!(matches!(
            commands.try_recv(),
            Ok(Command::AddSession { session_id, .. }) if session_id == sid
        ));

        let offer = br#"{"type":"offer","sdp":"v=0"}"#;
        for env in [
            Envelope::Leave {
                session_id: sid.clone(),
            },
            Envelope::Reconnect {
                session_id: sid.clone(),
            },
            rtc(&sid, rtc_type::SDP, offer),
            rtc(
                &sid,
                rtc_type::ICE,
                br#"{"candidate":"candidate:1 1 udp 1 1.2.3.4 9 typ host"}"#,
            ),
            rtc(&sid, rtc_type::UNMUTE, b""),
            rtc(&sid, rtc_type::SCREEN_ON, br#"{"screenStreamID":"x"}"#),
        ] {
            let what = env.type_name();
            assert_eq!(
                s.handle("conn-a", "attacker", env),
                Err(SessionError::NotFound),
                "{what}"
            );
        }
        tokio::task::yield_now().await;
        assert!(commands.try_recv().is_err(), "a command reached the SFU");
        assert!(victim_rx.try_recv().is_err() && attacker_rx.try_recv().is_err());
        {
            let st = s.state.lock();
            assert_eq!(st.sessions[&sid].group, "victim");
            assert_eq!(st.conn_map[&sid], "conn-v", "the session was moved");
        }
        // A session id that exists nowhere looks the same to the sender.
        assert_eq!(
            s.handle(
                "conn-a",
                "attacker",
                rtc(&"z".repeat(26), rtc_type::MUTE, b"")
            ),
            Err(SessionError::NotFound)
        );

        // The owner still can: its leave closes the session and tells its connection.
        s.handle(
            "conn-v",
            "victim",
            Envelope::Leave {
                session_id: sid.clone(),
            },
        )
        .unwrap();
        assert!(matches!(
            commands.try_recv(),
            Ok(Command::RemoveSession { session_id }) if session_id == sid
        ));
        assert_eq!(
            Envelope::decode(&victim_rx.try_recv().unwrap()).unwrap(),
            Envelope::Close { session_id: sid }
        );
        assert_eq!(s.session_count(), 0);
    }
}
