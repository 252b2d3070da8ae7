//! Client websocket actions (`custom_com.mattermost.calls_<name>`, reference
//! calls-plugin.md §2.2), parsed once where they come in: the action's name into an
//! [`ActionKind`] (what budgets and routing look at), then its MessagePack data into
//! a [`ClientAction`]. Parsing is pure (no state, no I/O): bad data is refused before
//! anything is loaded or locked, and it is fuzzed on its own
//! (`fuzz/fuzz_targets/calls_message.rs`).

use serde::Deserialize;
use serde_json::Value;

use calls_sfu::datachannel::{inflate_sdp, SessionDescription, SDP_MAX};

pub const ACTION_PREFIX: &str = "custom_com.mattermost.calls_";

/// Data the plugin cannot use. The text is what the log line says.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct MessageError(String);

fn bad(msg: impl Into<String>) -> MessageError {
    MessageError(msg.into())
}

/// Defines `ActionKind` from one list of variants and their names on the wire, so
/// that the enum, `ALL` and `name` cannot disagree.
macro_rules! action_kinds {
    ($($kind:ident => $name:literal,)*) => {
        /// Every action a client may send, by its name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ActionKind {
            $($kind,)*
        }

        impl ActionKind {
            pub const ALL: &'static [ActionKind] = &[$(ActionKind::$kind,)*];

            /// The action's name on the wire, without the prefix.
            pub fn name(self) -> &'static str {
                match self {
                    $(ActionKind::$kind => $name,)*
                }
            }
        }
    };
}

action_kinds! {
    Join => "join",
    Reconnect => "reconnect",
    Leave => "leave",
    CallState => "call_state",
    Ping => "ping",
    Caption => "caption",
    Sdp => "sdp",
    Ice => "ice",
    Mute => "mute",
    Unmute => "unmute",
    ScreenOn => "screen_on",
    ScreenOff => "screen_off",
    VideoOn => "video_on",
    VideoOff => "video_off",
    RaiseHand => "raise_hand",
    UnraiseHand => "unraise_hand",
    React => "react",
    Metric => "metric",
}

impl ActionKind {
    pub fn from_name(name: &str) -> Option<ActionKind> {
        ActionKind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// The actions that make the plugin load a call, take its lock or ask the host
    /// for permissions: they also draw on a connection's control budget.
    pub fn is_control(self) -> bool {
        matches!(
            self,
            ActionKind::Join | ActionKind::Reconnect | ActionKind::Leave | ActionKind::CallState
        )
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct JoinData {
    #[serde(rename = "channelID", default)]
    pub channel_id: String,
    #[serde(default)]
    pub title: String,
    #[serde(rename = "threadID", default)]
    pub thread_id: String,
    #[serde(rename = "jobID", default)]
    pub job_id: String,
    #[serde(rename = "av1Support", default)]
    pub av1_support: bool,
    #[serde(rename = "dcSignaling", default)]
    pub dc_signaling: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct ReconnectData {
    #[serde(rename = "channelID", default)]
    pub channel_id: String,
    #[serde(rename = "originalConnID", default)]
    pub original_conn_id: String,
    #[serde(rename = "prevConnID", default)]
    pub prev_conn_id: String,
}

#[derive(Debug, Default, Deserialize)]
struct CallStateData {
    #[serde(rename = "channelID", default)]
    channel_id: String,
}

/// `data` of string-payload actions (`react`, `screen_on`, `video_on`): a JSON string.
#[derive(Debug, Default, Deserialize)]
struct StringData {
    #[serde(default)]
    data: String,
}

#[derive(Debug, Deserialize)]
pub struct Emoji {
    pub name: String,
    #[serde(default)]
    pub skin: Option<String>,
    pub unified: String,
    #[serde(default)]
    pub literal: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MetricData {
    #[serde(default)]
    metric_name: String,
    #[serde(default)]
    data: String,
}

#[derive(Debug, Deserialize)]
pub struct CandidatePair {
    pub state: String,
    pub local: CandidateInfo,
    pub remote: CandidateInfo,
}

#[derive(Debug, Deserialize)]
pub struct CandidateInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub protocol: String,
}

#[derive(Deserialize, Default)]
struct SdpData {
    #[serde(with = "serde_bytes", default)]
    data: Vec<u8>,
}

#[derive(Deserialize, Default)]
struct IceData {
    #[serde(default)]
    data: String,
}

/// A client's `sdp` message: the description, and its inflated JSON (what rtcd takes).
#[derive(Debug)]
pub struct ClientSdp {
    pub desc: SessionDescription,
    pub raw: Vec<u8>,
}

/// A client's trickled candidate: its `candidate:` line and the JSON it came in (what
/// rtcd takes).
#[derive(Debug)]
pub struct ClientIce {
    pub candidate: String,
    pub json: String,
}

/// A client action, parsed.
#[derive(Debug)]
pub enum ClientAction {
    Join(JoinData),
    Reconnect(ReconnectData),
    Leave,
    CallState {
        channel_id: String,
    },
    /// Keepalive from clients (the host answers plain `ping` itself).
    Ping,
    /// Bot-only live captions: there is no transcriber job on this server.
    Caption,
    /// An action on the sender's session, run in order by the session's task.
    Queued(Queued),
}

/// An action on a session, in the order the client sent it.
#[derive(Debug)]
pub enum Queued {
    Mute(bool),
    Hand(bool),
    React(Emoji),
    ScreenOn {
        stream_id: Option<String>,
    },
    ScreenOff,
    Video {
        on: bool,
        stream_id: Option<String>,
    },
    CandidatePairMetric(CandidatePair),
    Sdp(ClientSdp),
    /// A trickled candidate; `None` for the end of candidates.
    Ice(Option<ClientIce>),
}

impl Queued {
    /// The action's name (metrics and logs).
    pub fn name(&self) -> &'static str {
        match self {
            Queued::Mute(true) => "mute",
            Queued::Mute(false) => "unmute",
            Queued::Hand(true) => "raise_hand",
            Queued::Hand(false) => "unraise_hand",
            Queued::React(_) => "react",
            Queued::ScreenOn { .. } => "screen_on",
            Queued::ScreenOff => "screen_off",
            Queued::Video { on: true, .. } => "video_on",
            Queued::Video { on: false, .. } => "video_off",
            Queued::CandidatePairMetric(_) => "metric",
            Queued::Sdp(_) => "sdp",
            Queued::Ice(_) => "ice",
        }
    }
}

fn decode<T: for<'de> Deserialize<'de> + Default>(data: &[u8]) -> Result<T, MessageError> {
    if data.is_empty() {
        return Ok(T::default());
    }
    rmp_serde::from_slice(data).map_err(|e| bad(format!("invalid message data: {e}")))
}

impl ClientAction {
    /// Parses an action's MessagePack data.
    pub fn parse(kind: ActionKind, data: &[u8]) -> Result<ClientAction, MessageError> {
        use ActionKind as K;
        let queued = match kind {
            K::Join => return Ok(ClientAction::Join(decode(data)?)),
            K::Reconnect => return Ok(ClientAction::Reconnect(decode(data)?)),
            K::Leave => return Ok(ClientAction::Leave),
            K::CallState => {
                let d: CallStateData = decode(data)?;
                return Ok(ClientAction::CallState {
                    channel_id: d.channel_id,
                });
            }
            K::Ping => return Ok(ClientAction::Ping),
            K::Caption => return Ok(ClientAction::Caption),
            K::Mute | K::Unmute => Queued::Mute(kind == K::Mute),
            K::RaiseHand | K::UnraiseHand => Queued::Hand(kind == K::RaiseHand),
            K::React => {
                let d: StringData = decode(data)?;
                Queued::React(
                    serde_json::from_str(&d.data)
                        .map_err(|e| bad(format!("invalid emoji: {e}")))?,
                )
            }
            K::ScreenOn => {
                let d: StringData = decode(data)?;
                let v: Value = serde_json::from_str(&d.data)
                    .map_err(|e| bad(format!("invalid screen_on data: {e}")))?;
                Queued::ScreenOn {
                    stream_id: v
                        .get("screenStreamID")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                }
            }
            K::ScreenOff => Queued::ScreenOff,
            K::VideoOn => {
                // `{"videoStreamID": ...}` as a JSON string; older clients send nothing.
                let d: StringData = decode(data).unwrap_or_default();
                Queued::Video {
                    on: true,
                    stream_id: serde_json::from_str::<Value>(&d.data)
                        .ok()
                        .and_then(|v| v.get("videoStreamID")?.as_str().map(str::to_string)),
                }
            }
            K::VideoOff => Queued::Video {
                on: false,
                stream_id: None,
            },
            K::Metric => Queued::CandidatePairMetric(parse_metric(data)?),
            K::Sdp => Queued::Sdp(parse_sdp(data)?),
            K::Ice => Queued::Ice(parse_ice(data)?),
        };
        Ok(ClientAction::Queued(queued))
    }
}

/// An `sdp` message: msgpack `{data: bytes}`, the bytes zlib JSON of at most
/// `SDP_MAX` inflated, an offer or an answer.
fn parse_sdp(data: &[u8]) -> Result<ClientSdp, MessageError> {
    let d: SdpData =
        rmp_serde::from_slice(data).map_err(|e| bad(format!("invalid sdp message: {e}")))?;
    let raw = inflate_sdp(&d.data).map_err(|e| bad(e.to_string()))?;
    ClientSdp::from_json(raw)
}

impl ClientSdp {
    /// A description from its JSON (inflated), an offer or an answer.
    pub fn from_json(raw: Vec<u8>) -> Result<ClientSdp, MessageError> {
        if raw.len() > SDP_MAX {
            return Err(bad("session description too large"));
        }
        let desc = SessionDescription::from_json(&raw)
            .map_err(|e| bad(format!("invalid session description: {e}")))?;
        if desc.kind != "offer" && desc.kind != "answer" {
            return Err(bad(format!("invalid sdp type {:?}", desc.kind)));
        }
        Ok(ClientSdp { desc, raw })
    }
}

/// An `ice` message: msgpack `{data: "<candidate JSON>"}`; `None` for the end of
/// candidates (an empty candidate).
fn parse_ice(data: &[u8]) -> Result<Option<ClientIce>, MessageError> {
    let d: IceData =
        rmp_serde::from_slice(data).map_err(|e| bad(format!("invalid ice message: {e}")))?;
    ClientIce::from_json(d.data)
}

impl ClientIce {
    /// A candidate from its JSON; `None` for the end of candidates.
    pub fn from_json(json: String) -> Result<Option<ClientIce>, MessageError> {
        let v: Value =
            serde_json::from_str(&json).map_err(|e| bad(format!("invalid ice candidate: {e}")))?;
        let candidate = v
            .get("candidate")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("ice candidate without candidate"))?;
        if candidate.is_empty() {
            return Ok(None);
        }
        Ok(Some(ClientIce {
            candidate: candidate.to_string(),
            json,
        }))
    }
}

/// The stream id in a `screen_on` / `video_on` message's JSON (`key`: `screenStreamID`
/// or `videoStreamID`).
pub fn stream_id(json: &str, key: &str) -> Result<Option<String>, MessageError> {
    let v: Value =
        serde_json::from_str(json).map_err(|e| bad(format!("invalid stream data: {e}")))?;
    Ok(v.get(key).and_then(Value::as_str).map(str::to_string))
}

/// A client metric: only the candidate pair one is taken (its label values checked,
/// so that clients cannot grow the metric's label set).
fn parse_metric(data: &[u8]) -> Result<CandidatePair, MessageError> {
    let d: MetricData =
        rmp_serde::from_slice(data).map_err(|e| bad(format!("invalid metric: {e}")))?;
    match d.metric_name.as_str() {
        "client_ice_candidate_pair" => {
            let p: CandidatePair = serde_json::from_str(&d.data)
                .map_err(|e| bad(format!("invalid metric data: {e}")))?;
            let states = ["succeeded", "waiting", "in-progress", "froze", "failed"];
            let types = ["host", "srflx", "prflx", "relay"];
            let protos = ["udp", "tcp"];
            if !states.contains(&p.state.as_str())
                || !types.contains(&p.local.kind.as_str())
                || !types.contains(&p.remote.kind.as_str())
                || !protos.contains(&p.local.protocol.as_str())
                || !protos.contains(&p.remote.protocol.as_str())
            {
                return Err(bad("invalid candidate pair metric"));
            }
            Ok(p)
        }
        // Live-captions metrics are bot-only; the bot has no live captions job here.
        other => Err(bad(format!("invalid metric name {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgpack(v: &serde_json::Value) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    #[test]
    fn every_name_maps_back_to_its_kind() {
        for &k in ActionKind::ALL {
            assert_eq!(ActionKind::from_name(k.name()), Some(k));
        }
        assert_eq!(ActionKind::from_name("unknown"), None);
        assert_eq!(ActionKind::from_name(""), None);
    }

    #[test]
    fn queued_actions_keep_the_name_they_came_as() {
        for &k in ActionKind::ALL {
            let data = match k {
                ActionKind::React => {
                    msgpack(&serde_json::json!({"data": r#"{"name":"x","unified":"1f44d"}"#}))
                }
                ActionKind::ScreenOn => {
                    msgpack(&serde_json::json!({"data": r#"{"screenStreamID":"s"}"#}))
                }
                ActionKind::Metric => msgpack(
                    &serde_json::json!({"metric_name": "client_ice_candidate_pair", "data": r#"{"state":"succeeded","local":{"type":"host","protocol":"udp"},"remote":{"type":"relay","protocol":"tcp"}}"#}),
                ),
                ActionKind::Ice => msgpack(&serde_json::json!({"data": r#"{"candidate":""}"#})),
                ActionKind::Sdp => continue,
                _ => vec![],
            };
            match ClientAction::parse(k, &data) {
                Ok(ClientAction::Queued(q)) => assert_eq!(q.name(), k.name()),
                Ok(_) => assert!(
                    matches!(
                        k,
                        ActionKind::Join
                            | ActionKind::Reconnect
                            | ActionKind::Leave
                            | ActionKind::CallState
                            | ActionKind::Ping
                            | ActionKind::Caption
                    ),
                    "{k:?}"
                ),
                Err(e) => panic!("{k:?}: {e}"),
            }
        }
    }

    #[test]
    fn bad_data_is_refused_with_what_was_wrong() {
        let e = ClientAction::parse(ActionKind::Join, &[0xc1]).unwrap_err();
        assert!(e.to_string().starts_with("invalid message data"), "{e}");
        let e = ClientAction::parse(ActionKind::Sdp, &msgpack(&serde_json::json!({"data": 7})))
            .unwrap_err();
        assert!(e.to_string().starts_with("invalid sdp message"), "{e}");
        let bad_metric = msgpack(
            &serde_json::json!({"metric_name": "client_ice_candidate_pair", "data": r#"{"state":"made-up","local":{"type":"host","protocol":"udp"},"remote":{"type":"host","protocol":"udp"}}"#}),
        );
        let e = ClientAction::parse(ActionKind::Metric, &bad_metric).unwrap_err();
        assert_eq!(e.to_string(), "invalid candidate pair metric");
    }
}
