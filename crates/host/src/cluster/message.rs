//! What nodes tell each other, as JSON: an envelope naming the sender and the target
//! (empty: every other node) around one message.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use calls_wire::proto;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending node.
    pub from: String,
    /// The node it is for; empty for every node but the sender.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(flatten)]
    pub msg: Message,
}

impl Envelope {
    /// Whether `node` should act on it: not its own, and for it or for all.
    pub fn is_for(&self, node: &str) -> bool {
        self.from != node && (self.to.is_empty() || self.to == node)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// A websocket event published on the sender, for the receiver's connections
    /// (Mattermost's cluster broadcast of websocket events).
    WsEvent {
        event: String,
        data: Value,
        broadcast: Broadcast,
    },
    /// A plugin's `PublishPluginClusterEvent`, for its `OnPluginClusterEvent`.
    PluginEvent {
        plugin_id: String,
        id: String,
        /// The event's bytes, base64.
        data: String,
    },
    /// The configuration in the database changed: reload and apply it.
    ConfigChanged,
    /// A plugin's bundle in the database changed: install it.
    BundleChanged { plugin_id: String },
    /// A login session was revoked: its websockets close on every node.
    LoginRevoked { session_id: String },
}

impl Message {
    /// The kind's name, for logs and counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::WsEvent { .. } => "ws_event",
            Message::PluginEvent { .. } => "plugin_event",
            Message::ConfigChanged => "config_changed",
            Message::BundleChanged { .. } => "bundle_changed",
            Message::LoginRevoked { .. } => "login_revoked",
        }
    }
}

/// A websocket broadcast's selection, as the proto's `WebSocketBroadcast`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub connection_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omit_users: Vec<String>,
    #[serde(default)]
    pub reliable: bool,
}

impl From<&proto::WebSocketBroadcast> for Broadcast {
    fn from(b: &proto::WebSocketBroadcast) -> Self {
        Broadcast {
            user_id: b.user_id.clone(),
            channel_id: b.channel_id.clone(),
            connection_id: b.connection_id.clone(),
            omit_users: b.omit_users.clone(),
            reliable: b.reliable_cluster_send,
        }
    }
}

impl From<Broadcast> for proto::WebSocketBroadcast {
    fn from(b: Broadcast) -> Self {
        proto::WebSocketBroadcast {
            user_id: b.user_id,
            channel_id: b.channel_id,
            connection_id: b.connection_id,
            omit_users: b.omit_users,
            reliable_cluster_send: b.reliable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_round_trip_and_name_their_receivers() {
        let e = Envelope {
            from: "a".into(),
            to: String::new(),
            msg: Message::WsEvent {
                event: "custom_x".into(),
                data: json!({"n": 1}),
                broadcast: Broadcast {
                    channel_id: "ch".into(),
                    omit_users: vec!["bot".into()],
                    ..Default::default()
                },
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), e);
        assert!(!e.is_for("a"), "a node acted on its own message");
        assert!(e.is_for("b") && e.is_for("c"));
        let targeted = Envelope {
            to: "c".into(),
            ..e
        };
        assert!(targeted.is_for("c") && !targeted.is_for("b"));
    }

    #[test]
    fn a_message_of_an_unknown_kind_does_not_decode() {
        assert!(serde_json::from_str::<Envelope>(r#"{"from":"a","kind":"nope"}"#).is_err());
        assert!(
            serde_json::from_str::<Envelope>(r#"{"from":"a","kind":"config_changed"}"#).is_ok()
        );
    }
}
