//! The Calls data-channel messages (reference client-protocol.md §7): "flat" msgpack,
//! the type as an integer optionally followed by one payload value, plus the legacy
//! text "ping"/"pong". Pure encoding and decoding; the SFU core decides what to do.

use std::io::{Read, Write};

use rmpv::Value;

/// Largest inflated session description accepted (upstream `sdpDataMaxSize`).
pub const SDP_MAX: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq)]
pub enum DcMessage {
    Ping,
    Pong,
    /// zlib-compressed JSON session description.
    Sdp(Vec<u8>),
    LossRate(f64),
    RoundTripTime(f64),
    Jitter(f64),
    /// Client request (no payload).
    Lock,
    /// Server response to `Lock`.
    LockResponse(bool),
    Unlock,
    /// mid → (track type, sender session id), sent before every server offer.
    MediaMap(Vec<(String, String, String)>),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DcError {
    #[error("malformed data channel message: {0}")]
    Malformed(String),
    #[error("unknown data channel message type {0}")]
    UnknownType(u64),
    #[error("data channel message type {0} without its payload")]
    MissingPayload(u64),
    #[error("invalid sdp data: {0}")]
    Sdp(String),
}

const PING: u64 = 1;
const PONG: u64 = 2;
const SDP: u64 = 3;
const LOSS_RATE: u64 = 4;
const RTT: u64 = 5;
const JITTER: u64 = 6;
const LOCK: u64 = 7;
const UNLOCK: u64 = 8;
const MEDIA_MAP: u64 = 9;

impl DcMessage {
    /// Decodes a binary message. A `Lock` with a boolean payload is a server response.
    pub fn decode(mut buf: &[u8]) -> Result<DcMessage, DcError> {
        let bad = |e: rmpv::decode::Error| DcError::Malformed(e.to_string());
        let kind = rmpv::decode::read_value(&mut buf).map_err(bad)?;
        let kind = kind
            .as_u64()
            .ok_or_else(|| DcError::Malformed(format!("type is not an integer: {kind}")))?;
        let payload = if buf.is_empty() {
            None
        } else {
            Some(rmpv::decode::read_value(&mut buf).map_err(bad)?)
        };
        let float = |p: Option<Value>| {
            p.as_ref()
                .and_then(Value::as_f64)
                .ok_or(DcError::MissingPayload(kind))
        };
        Ok(match kind {
            PING => DcMessage::Ping,
            PONG => DcMessage::Pong,
            SDP => match payload {
                Some(Value::Binary(b)) => DcMessage::Sdp(b),
                _ => return Err(DcError::MissingPayload(kind)),
            },
            LOSS_RATE => DcMessage::LossRate(float(payload)?),
            RTT => DcMessage::RoundTripTime(float(payload)?),
            JITTER => DcMessage::Jitter(float(payload)?),
            LOCK => match payload {
                Some(Value::Boolean(b)) => DcMessage::LockResponse(b),
                _ => DcMessage::Lock,
            },
            UNLOCK => DcMessage::Unlock,
            MEDIA_MAP => {
                let Some(Value::Map(entries)) = payload else {
                    return Err(DcError::MissingPayload(kind));
                };
                let mut out = Vec::new();
                for (k, v) in entries {
                    let field = |name: &str| {
                        v.as_map()
                            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name)))
                            .and_then(|(_, v)| v.as_str())
                            .unwrap_or_default()
                            .to_string()
                    };
                    let mid = k.as_str().unwrap_or_default().to_string();
                    out.push((mid, field("type"), field("sender_id")));
                }
                DcMessage::MediaMap(out)
            }
            other => return Err(DcError::UnknownType(other)),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload) = match self {
            DcMessage::Ping => (PING, None),
            DcMessage::Pong => (PONG, None),
            DcMessage::Sdp(b) => (SDP, Some(Value::Binary(b.clone()))),
            DcMessage::LossRate(f) => (LOSS_RATE, Some(Value::F64(*f))),
            DcMessage::RoundTripTime(f) => (RTT, Some(Value::F64(*f))),
            DcMessage::Jitter(f) => (JITTER, Some(Value::F64(*f))),
            DcMessage::Lock => (LOCK, None),
            DcMessage::LockResponse(b) => (LOCK, Some(Value::Boolean(*b))),
            DcMessage::Unlock => (UNLOCK, None),
            DcMessage::MediaMap(entries) => {
                let map = entries
                    .iter()
                    .map(|(mid, kind, sender)| {
                        (
                            Value::from(mid.as_str()),
                            Value::Map(vec![
                                (Value::from("type"), Value::from(kind.as_str())),
                                (Value::from("sender_id"), Value::from(sender.as_str())),
                            ]),
                        )
                    })
                    .collect();
                (MEDIA_MAP, Some(Value::Map(map)))
            }
        };
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut out, &Value::from(kind));
        if let Some(p) = payload {
            let _ = rmpv::encode::write_value(&mut out, &p);
        }
        out
    }
}

/// A session description as the Calls protocol carries it everywhere (websocket
/// `sdp`/`signal`, data channel, rtcd `rtc` messages): a browser
/// `RTCSessionDescription` in JSON, `{"type": "offer"|"answer", "sdp": ...}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionDescription {
    #[serde(rename = "type")]
    pub kind: String,
    pub sdp: String,
}

impl SessionDescription {
    pub fn offer(sdp: impl Into<String>) -> SessionDescription {
        SessionDescription {
            kind: "offer".into(),
            sdp: sdp.into(),
        }
    }

    pub fn answer(sdp: impl Into<String>) -> SessionDescription {
        SessionDescription {
            kind: "answer".into(),
            sdp: sdp.into(),
        }
    }

    pub fn from_json(json: &[u8]) -> Result<SessionDescription, serde_json::Error> {
        serde_json::from_slice(json)
    }

    pub fn to_json(&self) -> String {
        // Two string fields: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// zlib-inflates a session description, refusing more than `SDP_MAX` bytes.
pub fn inflate_sdp(bytes: &[u8]) -> Result<Vec<u8>, DcError> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(bytes)
        .take(SDP_MAX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DcError::Sdp(e.to_string()))?;
    if out.len() > SDP_MAX {
        return Err(DcError::Sdp("sdp data too large".into()));
    }
    Ok(out)
}

/// zlib-compresses a session description JSON for the `Sdp` message.
pub fn deflate_sdp(json: &str) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = z.write_all(json.as_bytes());
    z.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        let all = [
            DcMessage::Ping,
            DcMessage::Pong,
            DcMessage::Sdp(deflate_sdp(r#"{"type":"offer","sdp":"v=0"}"#)),
            DcMessage::LossRate(0.25),
            DcMessage::RoundTripTime(0.04),
            DcMessage::Jitter(0.003),
            DcMessage::Lock,
            DcMessage::LockResponse(true),
            DcMessage::LockResponse(false),
            DcMessage::Unlock,
            DcMessage::MediaMap(vec![("1".into(), "voice".into(), "abc".into())]),
        ];
        for m in all {
            assert_eq!(DcMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn accepts_the_go_uint8_encoding_of_the_type() {
        // rtcd writes the type as uint8 (0xcc 0x01), the JS client as a fixint.
        assert_eq!(DcMessage::decode(&[0xcc, 0x01]).unwrap(), DcMessage::Ping);
        assert_eq!(DcMessage::decode(&[0x02]).unwrap(), DcMessage::Pong);
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(DcMessage::decode(&[]), Err(DcError::Malformed(_))));
        assert!(matches!(
            DcMessage::decode(&[0xa1, b'x']),
            Err(DcError::Malformed(_))
        ));
        assert_eq!(DcMessage::decode(&[42]), Err(DcError::UnknownType(42)));
        assert_eq!(DcMessage::decode(&[3]), Err(DcError::MissingPayload(3)));
        assert!(inflate_sdp(b"not zlib").is_err());
        let big = deflate_sdp(&"x".repeat(SDP_MAX + 1));
        assert!(inflate_sdp(&big).is_err());
    }
}
