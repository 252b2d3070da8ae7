//! The plugin's cluster messages, as upstream v1 sends them between nodes
//! (`PublishPluginClusterEvent` with the type as the event id and this JSON as its
//! data), so that our nodes and upstream's read each other: a participant whose
//! websocket is on one node and whose call's media is on another is served by both
//! through these (reference calls-plugin.md §6.2).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The event ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMessageType {
    /// To the call's node: start the media of a session joined elsewhere.
    Connect,
    /// To the call's node: end a session's media.
    Disconnect,
    /// To all: a session left (its websocket's node ends it).
    Leave,
    /// To all: a session's websocket moved to `new_conn_id`.
    Reconnect,
    /// To the call's node: a client's SDP or ICE candidate.
    Signaling,
    /// To the call's node: mute, unmute, screen or video on or off.
    UserState,
}

impl ClusterMessageType {
    pub const ALL: [ClusterMessageType; 6] = [
        ClusterMessageType::Connect,
        ClusterMessageType::Disconnect,
        ClusterMessageType::Leave,
        ClusterMessageType::Reconnect,
        ClusterMessageType::Signaling,
        ClusterMessageType::UserState,
    ];

    pub fn id(self) -> &'static str {
        match self {
            ClusterMessageType::Connect => "connect",
            ClusterMessageType::Disconnect => "disconnect",
            ClusterMessageType::Leave => "leave",
            ClusterMessageType::Reconnect => "reconnect",
            ClusterMessageType::Signaling => "signaling",
            ClusterMessageType::UserState => "user_state",
        }
    }

    pub fn from_id(id: &str) -> Option<ClusterMessageType> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }
}

/// The session properties a `connect` carries for the media side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionProps {
    #[serde(rename = "channelID", default)]
    pub channel_id: String,
    #[serde(rename = "av1Support", default)]
    pub av1_support: bool,
    #[serde(rename = "dcSignaling", default)]
    pub dc_signaling: bool,
}

/// A client message relayed as is: its type (the action's name) and its data (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayedMessage {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

impl PartialEq for RelayedMessage {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind
            && self.data.as_ref().map(|d| d.get()) == o.data.as_ref().map(|d| d.get())
    }
}

impl RelayedMessage {
    /// A message whose data is `json` (which must be JSON; anything else is sent
    /// as a JSON string).
    pub fn new(kind: &str, json: Option<&str>) -> RelayedMessage {
        let data = json.map(|j| {
            RawValue::from_string(j.to_string()).unwrap_or_else(|_| {
                RawValue::from_string(serde_json::Value::String(j.to_string()).to_string())
                    .expect("a JSON string is JSON")
            })
        });
        RelayedMessage {
            kind: kind.to_string(),
            data,
        }
    }

    pub fn data(&self) -> Option<&str> {
        self.data.as_ref().map(|d| d.get())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMessage {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub conn_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub new_conn_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub call_id: String,
    /// The sending node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sender_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_props: Option<SessionProps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message: Option<RelayedMessage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_use_upstreams_field_names_and_leave_out_empty_ones() {
        let m = ClusterMessage {
            conn_id: "c".into(),
            user_id: "u".into(),
            sender_id: "n".into(),
            session_props: Some(SessionProps {
                channel_id: "ch".into(),
                av1_support: true,
                dc_signaling: false,
            }),
            client_message: Some(RelayedMessage::new(
                "sdp",
                Some(r#"{"type":"offer","sdp":"v=0"}"#),
            )),
            ..Default::default()
        };
        let text = serde_json::to_string(&m).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "conn_id": "c", "user_id": "u", "sender_id": "n",
                "session_props": {"channelID": "ch", "av1Support": true, "dcSignaling": false},
                "client_message": {"type": "sdp", "data": {"type": "offer", "sdp": "v=0"}},
            })
        );
        let back: ClusterMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.client_message.unwrap().data(),
            Some(r#"{"type":"offer","sdp":"v=0"}"#)
        );
    }

    #[test]
    fn every_type_has_its_upstream_id() {
        for t in ClusterMessageType::ALL {
            assert_eq!(ClusterMessageType::from_id(t.id()), Some(t));
        }
        assert_eq!(
            ClusterMessageType::from_id("user_state"),
            Some(ClusterMessageType::UserState)
        );
        assert_eq!(ClusterMessageType::from_id("nope"), None);
    }
}
