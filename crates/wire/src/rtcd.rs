//! The plugin ↔ rtcd websocket protocol (reference rtcd.md §2): each binary frame is
//! two concatenated msgpack values, the message type (str) and its data. Shared by
//! the rtcd server and the plugin's rtcd client; pure encoding and decoding.

use rmpv::Value;

/// `rtc.Message` types.
pub mod rtc_type {
    pub const ICE: i64 = 1;
    pub const SDP: i64 = 2;
    pub const MUTE: i64 = 3;
    pub const UNMUTE: i64 = 4;
    pub const SCREEN_ON: i64 = 5;
    pub const SCREEN_OFF: i64 = 6;
    pub const VOICE_ON: i64 = 7;
    pub const VOICE_OFF: i64 = 8;
    pub const VIDEO_ON: i64 = 9;
    pub const VIDEO_OFF: i64 = 10;
}

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RtcMessage {
    pub group_id: String,
    pub user_id: String,
    pub session_id: String,
    pub call_id: String,
    pub msg_type: i64,
    pub data: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Join {
    pub call_id: String,
    pub user_id: String,
    pub session_id: String,
    pub channel_id: String,
    pub av1_support: bool,
    pub dc_signaling: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    Hello { client_id: String, conn_id: String },
    Join(Join),
    Leave { session_id: String },
    Reconnect { session_id: String },
    Rtc(RtcMessage),
    Vad(RtcMessage),
    Close { session_id: String },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtoError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unexpected client message type {0:?}")]
    UnknownType(String),
    #[error("invalid message data: {0}")]
    Data(String),
    #[error("invalid SessionID value")]
    EmptySession,
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
}

fn str_map(pairs: &[(&str, &str)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), Value::from(*v)))
            .collect(),
    )
}

/// A string field (str or bin accepted, as upstream).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => s.as_str().map(str::to_string),
        Value::Binary(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

fn field<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

impl RtcMessage {
    fn to_value(&self) -> Value {
        let mut m = vec![
            (Value::from("group_id"), Value::from(self.group_id.as_str())),
            (Value::from("user_id"), Value::from(self.user_id.as_str())),
            (
                Value::from("session_id"),
                Value::from(self.session_id.as_str()),
            ),
            (Value::from("call_id"), Value::from(self.call_id.as_str())),
            (Value::from("type"), Value::from(self.msg_type)),
        ];
        if let Some(d) = &self.data {
            m.push((Value::from("data"), Value::Binary(d.clone())));
        }
        Value::Map(m)
    }

    fn from_value(v: &Value) -> Result<RtcMessage, ProtoError> {
        let bad = |m: &str| ProtoError::Data(m.to_string());
        let map = v.as_map().ok_or_else(|| bad("rtc message is not a map"))?;
        let s = |k: &str| field(map, k).and_then(text).unwrap_or_default();
        let msg = RtcMessage {
            group_id: s("group_id"),
            user_id: s("user_id"),
            session_id: s("session_id"),
            call_id: s("call_id"),
            msg_type: field(map, "type")
                .and_then(Value::as_i64)
                .ok_or_else(|| bad("rtc message without an integer type"))?,
            data: match field(map, "data") {
                None | Some(Value::Nil) => None,
                Some(Value::Binary(b)) => Some(b.clone()),
                Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
                Some(_) => return Err(bad("rtc message data is neither bin nor str")),
            },
        };
        if msg.session_id.is_empty() {
            return Err(ProtoError::EmptySession);
        }
        if msg.msg_type <= 0 {
            return Err(bad("rtc message type 0"));
        }
        Ok(msg)
    }
}

impl Envelope {
    pub fn type_name(&self) -> &'static str {
        match self {
            Envelope::Hello { .. } => "hello",
            Envelope::Join(_) => "join",
            Envelope::Leave { .. } => "leave",
            Envelope::Reconnect { .. } => "reconnect",
            Envelope::Rtc(_) => "rtc",
            Envelope::Vad(_) => "vad",
            Envelope::Close { .. } => "close",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let data = match self {
            Envelope::Hello { client_id, conn_id } => {
                str_map(&[("clientID", client_id), ("connID", conn_id)])
            }
            Envelope::Join(j) => Value::Map(vec![
                (Value::from("callID"), Value::from(j.call_id.as_str())),
                (Value::from("userID"), Value::from(j.user_id.as_str())),
                (Value::from("sessionID"), Value::from(j.session_id.as_str())),
                (Value::from("channelID"), Value::from(j.channel_id.as_str())),
                (Value::from("av1Support"), Value::from(j.av1_support)),
                (Value::from("dcSignaling"), Value::from(j.dc_signaling)),
            ]),
            Envelope::Leave { session_id }
            | Envelope::Reconnect { session_id }
            | Envelope::Close { session_id } => str_map(&[("sessionID", session_id)]),
            Envelope::Rtc(m) | Envelope::Vad(m) => m.to_value(),
        };
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut out, &Value::from(self.type_name()));
        let _ = rmpv::encode::write_value(&mut out, &data);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Envelope, ProtoError> {
        if buf.len() > MAX_FRAME {
            return Err(ProtoError::TooLarge(buf.len()));
        }
        let mut rd = buf;
        let malformed = |e: rmpv::decode::Error| ProtoError::Malformed(e.to_string());
        let kind = rmpv::decode::read_value(&mut rd).map_err(malformed)?;
        let kind =
            text(&kind).ok_or_else(|| ProtoError::Malformed("type is not a string".into()))?;
        let data = if rd.is_empty() {
            Value::Nil
        } else {
            rmpv::decode::read_value(&mut rd).map_err(malformed)?
        };
        let bad = |m: &str| ProtoError::Data(format!("{kind}: {m}"));
        let map = || {
            data.as_map()
                .map(Vec::as_slice)
                .ok_or_else(|| bad("data is not a map"))
        };
        // hello/leave/reconnect/close carry str→str maps.
        let str_field = |k: &str| -> Result<String, ProtoError> {
            match field(map()?, k) {
                Some(v) => text(v).ok_or_else(|| bad(&format!("{k} is not a string"))),
                None => Ok(String::new()),
            }
        };
        let session = || -> Result<String, ProtoError> {
            let s = str_field("sessionID")?;
            if s.is_empty() {
                return Err(ProtoError::EmptySession);
            }
            Ok(s)
        };
        Ok(match kind.as_str() {
            "hello" => Envelope::Hello {
                client_id: str_field("clientID")?,
                conn_id: str_field("connID")?,
            },
            "join" => {
                let m = map()?;
                let s = |k: &str| field(m, k).and_then(text).unwrap_or_default();
                let b = |k: &str| field(m, k).and_then(Value::as_bool).unwrap_or(false);
                Envelope::Join(Join {
                    call_id: s("callID"),
                    user_id: s("userID"),
                    session_id: s("sessionID"),
                    channel_id: s("channelID"),
                    av1_support: b("av1Support"),
                    dc_signaling: b("dcSignaling"),
                })
            }
            "leave" => Envelope::Leave {
                session_id: session()?,
            },
            "reconnect" => Envelope::Reconnect {
                session_id: session()?,
            },
            "close" => Envelope::Close {
                session_id: session()?,
            },
            "rtc" => Envelope::Rtc(RtcMessage::from_value(&data)?),
            "vad" => Envelope::Vad(RtcMessage::from_value(&data)?),
            _ => return Err(ProtoError::UnknownType(kind)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let rtc = RtcMessage {
            session_id: "s".repeat(26),
            msg_type: rtc_type::SDP,
            data: Some(br#"{"type":"offer","sdp":"v=0"}"#.to_vec()),
            ..Default::default()
        };
        for e in [
            Envelope::Hello {
                client_id: "c".into(),
                conn_id: "k".into(),
            },
            Envelope::Join(Join {
                call_id: "call".into(),
                user_id: "u".into(),
                session_id: "s".into(),
                channel_id: "ch".into(),
                av1_support: true,
                dc_signaling: false,
            }),
            Envelope::Leave {
                session_id: "s".into(),
            },
            Envelope::Reconnect {
                session_id: "s".into(),
            },
            Envelope::Close {
                session_id: "s".into(),
            },
            Envelope::Rtc(rtc.clone()),
            Envelope::Vad(RtcMessage {
                data: None,
                msg_type: rtc_type::VOICE_ON,
                ..rtc
            }),
        ] {
            assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        }
    }

    #[test]
    fn leave_bytes_match_upstream() {
        let sid = "abcdefghijklmnopqrstuvwxyz";
        let bytes = Envelope::Leave {
            session_id: sid.into(),
        }
        .encode();
        let mut want = vec![0xa5];
        want.extend_from_slice(b"leave");
        want.push(0x81);
        want.push(0xa9);
        want.extend_from_slice(b"sessionID");
        want.push(0xba);
        want.extend_from_slice(sid.as_bytes());
        assert_eq!(bytes, want);
    }

    #[test]
    fn refuses_bad_frames() {
        assert!(matches!(
            Envelope::decode(&[0xc1]),
            Err(ProtoError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode(&[0x01, 0x02]),
            Err(ProtoError::Malformed(_))
        ));
        let mut unknown = vec![0xa4];
        unknown.extend_from_slice(b"nope");
        unknown.push(0xc0);
        assert_eq!(
            Envelope::decode(&unknown),
            Err(ProtoError::UnknownType("nope".into()))
        );
        let empty = Envelope::Leave {
            session_id: String::new(),
        }
        .encode();
        assert_eq!(Envelope::decode(&empty), Err(ProtoError::EmptySession));
        let no_type = Envelope::Rtc(RtcMessage {
            session_id: "s".into(),
            msg_type: 0,
            ..Default::default()
        })
        .encode();
        assert!(matches!(
            Envelope::decode(&no_type),
            Err(ProtoError::Data(_))
        ));
        assert!(matches!(
            Envelope::decode(&vec![0u8; MAX_FRAME + 1]),
            Err(ProtoError::TooLarge(_))
        ));
    }
}
