//! A call whose media runs on another node of the cluster (the integrated SFU of the
//! node where it started): every media operation of a session whose websocket is
//! here becomes a cluster message to that node, as upstream v1 relays them. The
//! answers come back as `signal` events the call's node publishes to the session's
//! connection, which the host's cluster delivers here.

use super::backend::{CallMedia, JoinOptions, MediaError, MediaSession, StreamKind};
use crate::client_message::{ClientIce, ClientSdp};
use crate::cluster_message::{ClusterMessage, ClusterMessageType, RelayedMessage, SessionProps};
use crate::host_api::HostApi;

/// Sends the plugin's cluster messages from this node.
#[derive(Clone)]
pub struct Relay {
    pub host: HostApi,
    /// This node's id.
    pub node_id: String,
}

impl Relay {
    /// Sends `m` (with this node as its sender) to `target`, or to every other node.
    pub async fn send(
        &self,
        t: ClusterMessageType,
        mut m: ClusterMessage,
        target: &str,
    ) -> Result<(), MediaError> {
        m.sender_id = self.node_id.clone();
        let data = serde_json::to_vec(&m).unwrap_or_default();
        self.host
            .publish_cluster_event(t.id(), data, target)
            .await
            .map_err(|e| MediaError::Cluster(e.to_string()))
    }

    fn about(s: &MediaSession) -> ClusterMessage {
        ClusterMessage {
            conn_id: s.session_id.clone(),
            user_id: s.user_id.clone(),
            channel_id: s.channel_id.clone(),
            call_id: s.call_id.clone(),
            ..Default::default()
        }
    }
}

pub(super) struct RemoteNode {
    pub(super) relay: Relay,
    /// The call's node.
    pub(super) node_id: String,
}

impl RemoteNode {
    async fn relay(
        &self,
        t: ClusterMessageType,
        s: &MediaSession,
        kind: &str,
        data: Option<&str>,
    ) -> Result<(), MediaError> {
        let m = ClusterMessage {
            client_message: Some(RelayedMessage::new(kind, data)),
            ..Relay::about(s)
        };
        self.relay.send(t, m, &self.node_id).await
    }
}

#[async_trait::async_trait]
impl CallMedia for RemoteNode {
    async fn add_session(&self, s: &MediaSession, opts: JoinOptions) -> Result<(), MediaError> {
        let m = ClusterMessage {
            session_props: Some(SessionProps {
                channel_id: s.channel_id.clone(),
                av1_support: opts.av1,
                dc_signaling: opts.dc_signaling,
            }),
            ..Relay::about(s)
        };
        self.relay
            .send(ClusterMessageType::Connect, m, &self.node_id)
            .await
    }

    async fn reconnected(&self, _: &MediaSession) -> Result<(), MediaError> {
        // The `reconnect` every node is told of moves the call node's route too.
        Ok(())
    }

    async fn remove_session(&self, session_id: &str) -> Result<(), MediaError> {
        let m = ClusterMessage {
            conn_id: session_id.to_string(),
            ..Default::default()
        };
        self.relay
            .send(ClusterMessageType::Disconnect, m, &self.node_id)
            .await
    }

    async fn sdp(&self, s: &MediaSession, sdp: ClientSdp) -> Result<Option<String>, MediaError> {
        let json = String::from_utf8_lossy(&sdp.raw);
        self.relay(ClusterMessageType::Signaling, s, "sdp", Some(&json))
            .await?;
        Ok(None)
    }

    async fn candidate(&self, s: &MediaSession, ice: ClientIce) -> Result<(), MediaError> {
        self.relay(ClusterMessageType::Signaling, s, "ice", Some(&ice.json))
            .await
    }

    async fn set_muted(&self, s: &MediaSession, muted: bool) -> Result<(), MediaError> {
        let kind = if muted { "mute" } else { "unmute" };
        self.relay(ClusterMessageType::UserState, s, kind, None)
            .await
    }

    async fn set_stream(
        &self,
        s: &MediaSession,
        kind: StreamKind,
        stream_id: Option<String>,
    ) -> Result<(), MediaError> {
        let (on, off, key) = match kind {
            StreamKind::Screen => ("screen_on", "screen_off", "screenStreamID"),
            StreamKind::Video => ("video_on", "video_off", "videoStreamID"),
        };
        match stream_id {
            Some(id) => {
                let data = serde_json::json!({ key: id }).to_string();
                self.relay(ClusterMessageType::UserState, s, on, Some(&data))
                    .await
            }
            None => {
                self.relay(ClusterMessageType::UserState, s, off, None)
                    .await
            }
        }
    }
}
