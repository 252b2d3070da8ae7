//! rtcd's sessions (reference rtcd.md §2.4, §3.1): who joined over which plugin
//! connection, where each session's signaling goes now (`conn_map`), and the glue
//! between plugin messages and the SFU. Calls are keyed by group (client id) and
//! call id, so two installations never share a call.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use tokio::sync::mpsc;

use super::protocol::{rtc_type, Envelope, Join, RtcMessage};
use crate::sfu::datachannel::SessionDescription;
use crate::sfu::shell::{Command, Note, RtcServer};

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
    #[error("invalid rtc message: {0}")]
    BadMessage(String),
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
                self.close(&session_id, true);
                Ok(())
            }
            Envelope::Reconnect { session_id } => {
                let mut st = self.state.lock();
                if !st.sessions.contains_key(&session_id) {
                    return Err(SessionError::NotFound);
                }
                st.conn_map.insert(session_id, conn_id.to_string());
                Ok(())
            }
            Envelope::Rtc(m) => self.rtc_in(m),
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

    fn rtc_in(self: &Arc<Self>, m: RtcMessage) -> Result<(), SessionError> {
        let sid = m.session_id.clone();
        if !self.state.lock().sessions.contains_key(&sid) {
            return Err(SessionError::NotFound);
        }
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
