//! The plugin's cluster messages received (`OnPluginClusterEvent`), acted on in order
//! by one task behind a queue of 4096 (as upstream; more are dropped): the call's node
//! starts, feeds and ends the media of sessions whose websocket is on another node,
//! and a websocket's node lets its session go when it moved or left.

use tokio::sync::mpsc;

use super::app::App;
use super::client_message::{stream_id, ClientIce, ClientSdp};
use super::cluster_message::{ClusterMessage, ClusterMessageType};
use super::media::{JoinOptions, MediaError, MediaSession, StreamKind};
use super::peers::PeerRoute;
use super::sessions::Signal;
use calls_wire::proto;

const QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
enum EventError {
    #[error("unknown cluster event type")]
    UnknownType,
    #[error("cluster message does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("session doesn't exist")]
    NoSession,
    #[error("session already exists")]
    SessionExists,
    #[error("unexpected client message type {0:?}")]
    UnexpectedMessage(String),
    #[error("{0}")]
    BadData(String),
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// The queue the hook fills and the handler empties.
pub fn queue() -> (
    mpsc::Sender<proto::PluginClusterEvent>,
    mpsc::Receiver<proto::PluginClusterEvent>,
) {
    mpsc::channel(QUEUE)
}

/// Handles the queued events, in order, until the plugin stops.
pub fn spawn(app: App, mut rx: mpsc::Receiver<proto::PluginClusterEvent>) {
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if let Err(e) = handle(&app, &ev).await {
                // Peers' messages can be wrong at will (another version, a race with a
                // leave): once per window, with a count.
                if let Some(left_out) = app.repeats.admit("cluster event failed") {
                    tracing::warn!(id = ev.id, error = %e, left_out, "cluster event not handled");
                }
            }
        }
    });
}

async fn handle(app: &App, ev: &proto::PluginClusterEvent) -> Result<(), EventError> {
    let t = ClusterMessageType::from_id(&ev.id).ok_or(EventError::UnknownType)?;
    let m: ClusterMessage = serde_json::from_slice(&ev.data)?;
    match t {
        ClusterMessageType::Connect => connect(app, m).await,
        ClusterMessageType::Disconnect => disconnect(app, &m).await,
        ClusterMessageType::Leave => {
            leave(app, &m);
            Ok(())
        }
        ClusterMessageType::Reconnect => {
            reconnect(app, &m);
            Ok(())
        }
        ClusterMessageType::Signaling => signaling(app, m).await,
        ClusterMessageType::UserState => user_state(app, m).await,
    }
}

fn media_session(m: &ClusterMessage) -> MediaSession {
    MediaSession {
        session_id: m.conn_id.clone(),
        call_id: m.call_id.clone(),
        user_id: m.user_id.clone(),
        channel_id: m.channel_id.clone(),
    }
}

/// On the call's node: the media of a session joined on node `sender_id`.
async fn connect(app: &App, m: ClusterMessage) -> Result<(), EventError> {
    if app.sessions.get_by_session_id(&m.conn_id).is_some() {
        return Err(EventError::SessionExists);
    }
    let route = PeerRoute {
        media: media_session(&m),
        conn_id: m.conn_id.clone(),
        node_id: m.sender_id.clone(),
    };
    if !app.peers.insert(route.clone()) {
        return Err(EventError::SessionExists);
    }
    let props = m.session_props.clone().unwrap_or_default();
    let opts = JoinOptions {
        dc_signaling: props.dc_signaling,
        av1: props.av1_support,
    };
    let started = async { app.media.local_sfu()?.add_session(&route.media, opts).await };
    if let Err(e) = started.await {
        // The session cannot have media here: its websocket's node ends it.
        app.peers.remove(&m.conn_id);
        tell_left(app, &route).await;
        return Err(e.into());
    }
    Ok(())
}

/// On the call's node: a session's media ends (it left on its websocket's node).
async fn disconnect(app: &App, m: &ClusterMessage) -> Result<(), EventError> {
    if app.peers.remove(&m.conn_id).is_none() {
        match app.sessions.get_by_session_id(&m.conn_id) {
            // Removed on another node (a host removed it, a forced cleanup) while its
            // websocket is here: its entry goes too.
            Some(local) => {
                local.signal(Signal::Closed);
                app.sessions.remove_if_same(&local);
            }
            // Its media ended here first (and its node was told): nothing left to do.
            None => {
                tracing::debug!(
                    session_id = m.conn_id,
                    "disconnect for a session without media here"
                );
                return Ok(());
            }
        }
    }
    app.media.local_sfu()?.remove_session(&m.conn_id).await?;
    Ok(())
}

/// On the websocket's node: the session on connection `conn_id` left.
fn leave(app: &App, m: &ClusterMessage) {
    if let Some(s) = app
        .sessions
        .get(&m.conn_id)
        .or_else(|| app.sessions.get_by_session_id(&m.conn_id))
    {
        s.signal(Signal::Leave);
    }
}

/// Every node: the session on connection `conn_id` is on `new_conn_id` at node
/// `sender_id` now. Its old node lets it go; the call's node sends its signaling
/// there from now on.
fn reconnect(app: &App, m: &ClusterMessage) {
    // The sending node checked that the session is this user's; a session of someone
    // else on that connection id is not moved.
    if let Some(old) = app
        .sessions
        .get(&m.conn_id)
        .filter(|s| s.user_id == m.user_id && s.call_id == m.call_id)
    {
        if !old.mark_reconnected() {
            tracing::warn!(conn_id = m.conn_id, "session already reconnected");
            return;
        }
        old.signal(Signal::Reconnected);
        app.sessions.remove_if_same(&old);
        app.metrics
            .websocket_connections
            .set(app.sessions.len() as i64);
        if app.media.is_local(&old.call_id) {
            // Its media stays here: only its websocket went.
            app.peers.insert(PeerRoute {
                media: old.media(),
                conn_id: m.new_conn_id.clone(),
                node_id: m.sender_id.clone(),
            });
        }
        return;
    }
    app.peers.moved(
        &m.conn_id,
        &m.user_id,
        &m.call_id,
        &m.new_conn_id,
        &m.sender_id,
    );
}

/// The route of a session whose media is here, by session id.
fn route(app: &App, m: &ClusterMessage) -> Result<PeerRoute, EventError> {
    app.peers.get(&m.conn_id).ok_or(EventError::NoSession)
}

/// On the call's node: a client's SDP or ICE candidate relayed by its websocket's node.
async fn signaling(app: &App, m: ClusterMessage) -> Result<(), EventError> {
    let r = route(app, &m)?;
    let msg = m
        .client_message
        .unwrap_or_else(|| crate::cluster_message::RelayedMessage::new("", None));
    let data = msg.data().unwrap_or("").to_string();
    let bad = |e: crate::client_message::MessageError| EventError::BadData(e.to_string());
    let sfu = app.media.local_sfu()?;
    match msg.kind.as_str() {
        "sdp" => {
            let sdp = ClientSdp::from_json(data.into_bytes()).map_err(bad)?;
            if let Some(answer) = sfu.sdp(&r.media, sdp).await? {
                app.publish_signal(&r.media.session_id, answer).await;
            }
        }
        "ice" => {
            if let Some(ice) = ClientIce::from_json(data).map_err(bad)? {
                sfu.candidate(&r.media, ice).await?;
            }
        }
        other => return Err(EventError::UnexpectedMessage(other.to_string())),
    }
    Ok(())
}

/// On the call's node: mute, screen and video changes relayed by the websocket's node.
async fn user_state(app: &App, m: ClusterMessage) -> Result<(), EventError> {
    let r = route(app, &m)?;
    let msg = m
        .client_message
        .unwrap_or_else(|| crate::cluster_message::RelayedMessage::new("", None));
    let sfu = app.media.local_sfu()?;
    let id = |key: &str| -> Result<Option<String>, EventError> {
        match msg.data() {
            Some(d) => stream_id(d, key).map_err(|e| EventError::BadData(e.to_string())),
            None => Ok(None),
        }
    };
    match msg.kind.as_str() {
        "mute" => sfu.set_muted(&r.media, true).await?,
        "unmute" => sfu.set_muted(&r.media, false).await?,
        "screen_on" => {
            sfu.set_stream(&r.media, StreamKind::Screen, id("screenStreamID")?)
                .await?
        }
        "screen_off" => sfu.set_stream(&r.media, StreamKind::Screen, None).await?,
        "video_on" => {
            sfu.set_stream(&r.media, StreamKind::Video, id("videoStreamID")?)
                .await?
        }
        "video_off" => sfu.set_stream(&r.media, StreamKind::Video, None).await?,
        other => return Err(EventError::UnexpectedMessage(other.to_string())),
    }
    Ok(())
}

/// Tells a session's websocket node that the session left (its media ended here).
pub async fn tell_left(app: &App, r: &PeerRoute) {
    let m = ClusterMessage {
        conn_id: r.conn_id.clone(),
        user_id: r.media.user_id.clone(),
        channel_id: r.media.channel_id.clone(),
        call_id: r.media.call_id.clone(),
        ..Default::default()
    };
    if let Err(e) = app.media.relay.send(ClusterMessageType::Leave, m, "").await {
        tracing::warn!(session_id = r.media.session_id, error = %e, "leave not told to the cluster");
    }
}
