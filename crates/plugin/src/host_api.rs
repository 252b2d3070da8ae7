//! Typed access to the host's `Host` gRPC service (the Mattermost plugin API subset).

use serde::Serialize;
use serde_json::Value;
use tonic::transport::Channel as GrpcChannel;

use calls_wire::proto::host_client::HostClient;
use calls_wire::proto::{self, Empty};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("host api: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("host api transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("not found")]
    NotFound,
}

pub type Result<T> = std::result::Result<T, HostError>;

/// Who receives a websocket event (Mattermost's `WebsocketBroadcast`).
#[derive(Debug, Clone, Default)]
pub struct Broadcast {
    pub user_id: String,
    pub channel_id: String,
    pub connection_id: String,
    pub omit_users: Vec<String>,
    pub reliable: bool,
}

impl Broadcast {
    pub fn channel(channel_id: &str) -> Broadcast {
        Broadcast {
            channel_id: channel_id.into(),
            reliable: true,
            ..Default::default()
        }
    }
    pub fn user(user_id: &str) -> Broadcast {
        Broadcast {
            user_id: user_id.into(),
            reliable: true,
            ..Default::default()
        }
    }
    pub fn connection(user_id: &str, conn_id: &str) -> Broadcast {
        Broadcast {
            user_id: user_id.into(),
            connection_id: conn_id.into(),
            reliable: true,
            ..Default::default()
        }
    }
}

#[derive(Clone)]
pub struct HostApi {
    client: HostClient<GrpcChannel>,
}

fn found<T>(v: Option<T>) -> Result<T> {
    v.ok_or(HostError::NotFound)
}

impl HostApi {
    pub async fn connect(addr: &str) -> Result<HostApi> {
        let ch = tonic::transport::Endpoint::from_shared(addr.to_string())
            .map_err(|e| HostError::Rpc(tonic::Status::invalid_argument(e.to_string())))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await?;
        Ok(HostApi {
            client: HostClient::new(ch),
        })
    }

    fn c(&self) -> HostClient<GrpcChannel> {
        self.client.clone()
    }

    pub async fn server_info(&self) -> Result<proto::ServerInfo> {
        Ok(self.c().get_server_info(Empty {}).await?.into_inner())
    }

    pub async fn license(&self) -> Result<proto::License> {
        Ok(self.c().get_license(Empty {}).await?.into_inner())
    }

    pub async fn database_settings(&self) -> Result<proto::DatabaseSettings> {
        Ok(self.c().get_database_settings(Empty {}).await?.into_inner())
    }

    pub async fn plugin_config(&self) -> Result<Vec<u8>> {
        Ok(self
            .c()
            .get_plugin_config(Empty {})
            .await?
            .into_inner()
            .config_json)
    }

    pub async fn user(&self, id: &str) -> Result<proto::User> {
        found(
            self.c()
                .get_user(proto::IdRequest { id: id.into() })
                .await?
                .into_inner()
                .user,
        )
    }

    pub async fn user_by_username(&self, name: &str) -> Result<proto::User> {
        found(
            self.c()
                .get_user_by_username(proto::IdRequest { id: name.into() })
                .await?
                .into_inner()
                .user,
        )
    }

    pub async fn system_admins(&self) -> Result<Vec<proto::User>> {
        Ok(self
            .c()
            .get_system_admins(Empty {})
            .await?
            .into_inner()
            .users)
    }

    pub async fn ensure_bot(
        &self,
        username: &str,
        display: &str,
        desc: &str,
    ) -> Result<proto::User> {
        found(
            self.c()
                .ensure_bot_user(proto::BotRequest {
                    username: username.into(),
                    display_name: display.into(),
                    description: desc.into(),
                })
                .await?
                .into_inner()
                .user,
        )
    }

    pub async fn session(&self, id: &str) -> Result<proto::SessionResponse> {
        Ok(self
            .c()
            .get_session(proto::IdRequest { id: id.into() })
            .await?
            .into_inner())
    }

    /// The channel, or `None` when it does not exist.
    pub async fn channel(&self, id: &str) -> Result<Option<proto::Channel>> {
        match self
            .c()
            .get_channel(proto::IdRequest { id: id.into() })
            .await
        {
            Ok(r) => Ok(r.into_inner().channel),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    pub async fn channel_member(
        &self,
        channel_id: &str,
        user_id: &str,
    ) -> Result<Option<proto::ChannelMember>> {
        Ok(self
            .c()
            .get_channel_member(proto::ChannelMemberRequest {
                channel_id: channel_id.into(),
                user_id: user_id.into(),
            })
            .await?
            .into_inner()
            .member)
    }

    pub async fn channels_for_user(
        &self,
        user_id: &str,
        page: u32,
        per_page: u32,
    ) -> Result<Vec<proto::Channel>> {
        Ok(self
            .c()
            .get_channels_for_user(proto::ChannelsForUserRequest {
                user_id: user_id.into(),
                page,
                per_page,
            })
            .await?
            .into_inner()
            .channels)
    }

    pub async fn users_in_channel(&self, channel_id: &str) -> Result<Vec<proto::User>> {
        Ok(self
            .c()
            .get_users_in_channel(proto::IdRequest {
                id: channel_id.into(),
            })
            .await?
            .into_inner()
            .users)
    }

    pub async fn channel_member_count(&self, channel_id: &str) -> Result<i64> {
        Ok(self
            .c()
            .get_channel_stats(proto::IdRequest {
                id: channel_id.into(),
            })
            .await?
            .into_inner()
            .member_count)
    }

    pub async fn direct_channel(&self, a: &str, b: &str) -> Result<proto::Channel> {
        found(
            self.c()
                .get_direct_channel(proto::DirectChannelRequest {
                    user_id_a: a.into(),
                    user_id_b: b.into(),
                })
                .await?
                .into_inner()
                .channel,
        )
    }

    fn perm(user_id: &str, permission: &str, scope: &str) -> proto::PermissionRequest {
        proto::PermissionRequest {
            user_id: user_id.into(),
            permission: permission.into(),
            scope_id: scope.into(),
        }
    }

    pub async fn has_permission(&self, user_id: &str, permission: &str) -> Result<bool> {
        Ok(self
            .c()
            .has_permission_to(Self::perm(user_id, permission, ""))
            .await?
            .into_inner()
            .allowed)
    }

    pub async fn has_channel_permission(
        &self,
        user_id: &str,
        channel_id: &str,
        permission: &str,
    ) -> Result<bool> {
        Ok(self
            .c()
            .has_permission_to_channel(Self::perm(user_id, permission, channel_id))
            .await?
            .into_inner()
            .allowed)
    }

    pub async fn has_team_permission(
        &self,
        user_id: &str,
        team_id: &str,
        permission: &str,
    ) -> Result<bool> {
        Ok(self
            .c()
            .has_permission_to_team(Self::perm(user_id, permission, team_id))
            .await?
            .into_inner()
            .allowed)
    }

    /// Publishes `custom_com.mattermost.calls_<event>`.
    pub async fn publish(&self, event: &str, data: &Value, b: &Broadcast) -> Result<()> {
        let data_json = serde_json::to_vec(data).unwrap_or_else(|_| b"{}".to_vec());
        self.c()
            .publish_web_socket_event(proto::PublishRequest {
                event: event.into(),
                data_json,
                broadcast: Some(proto::WebSocketBroadcast {
                    user_id: b.user_id.clone(),
                    channel_id: b.channel_id.clone(),
                    connection_id: b.connection_id.clone(),
                    omit_users: b.omit_users.clone(),
                    reliable_cluster_send: b.reliable,
                }),
            })
            .await?;
        Ok(())
    }

    /// `PublishPluginClusterEvent`, reliable: to node `target`, or every other node
    /// for "".
    pub async fn publish_cluster_event(&self, id: &str, data: Vec<u8>, target: &str) -> Result<()> {
        self.c()
            .publish_plugin_cluster_event(proto::ClusterEventRequest {
                id: id.to_string(),
                data,
                target_node_id: target.to_string(),
            })
            .await?;
        Ok(())
    }

    /// The cluster's live nodes (empty on a single host).
    pub async fn cluster_nodes(&self) -> Result<Vec<proto::ClusterNode>> {
        Ok(self
            .c()
            .get_cluster_nodes(Empty {})
            .await?
            .into_inner()
            .nodes)
    }

    pub async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self
            .c()
            .kv_get(proto::KvGetRequest { key: key.into() })
            .await?
            .into_inner();
        Ok(r.found.then_some(r.value))
    }

    pub async fn kv_set(&self, req: proto::KvSetRequest) -> Result<bool> {
        Ok(self.c().kv_set(req).await?.into_inner().written)
    }

    pub async fn kv_delete(&self, key: &str) -> Result<()> {
        self.c()
            .kv_delete(proto::KvGetRequest { key: key.into() })
            .await?;
        Ok(())
    }

    pub async fn create_post(&self, post: proto::Post) -> Result<proto::Post> {
        found(
            self.c()
                .create_post(proto::PostRequest { post: Some(post) })
                .await?
                .into_inner()
                .post,
        )
    }

    pub async fn update_post(&self, post: proto::Post) -> Result<proto::Post> {
        found(
            self.c()
                .update_post(proto::PostRequest { post: Some(post) })
                .await?
                .into_inner()
                .post,
        )
    }

    pub async fn post(&self, id: &str) -> Result<Option<proto::Post>> {
        match self.c().get_post(proto::IdRequest { id: id.into() }).await {
            Ok(r) => Ok(r.into_inner().post),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// A login session for `user_id` (the bot's, for the recorder): (id, token).
    pub async fn create_session(&self, user_id: &str, expires_at: i64) -> Result<(String, String)> {
        let r = self
            .c()
            .create_session(proto::CreateSessionRequest {
                user_id: user_id.into(),
                expires_at,
            })
            .await?
            .into_inner();
        Ok((r.id, r.token))
    }

    pub async fn revoke_session(&self, id: &str) -> Result<()> {
        self.c()
            .revoke_session(proto::IdRequest { id: id.into() })
            .await?;
        Ok(())
    }

    pub async fn create_upload(&self, us: proto::UploadSession) -> Result<proto::UploadSession> {
        found(
            self.c()
                .create_upload_session(proto::UploadSessionRequest { session: Some(us) })
                .await?
                .into_inner()
                .session,
        )
    }

    pub async fn upload_session(&self, id: &str) -> Result<Option<proto::UploadSession>> {
        match self
            .c()
            .get_upload_session(proto::IdRequest { id: id.into() })
            .await
        {
            Ok(r) => Ok(r.into_inner().session),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// Streams an upload's data to the host: the file's info once it is whole.
    pub async fn upload_data(
        &self,
        upload_id: &str,
        data: impl futures_util::Stream<Item = Vec<u8>> + Send + 'static,
    ) -> Result<Option<proto::FileInfo>> {
        use futures_util::StreamExt;
        let first = proto::UploadDataPart {
            upload_id: upload_id.into(),
            data: Vec::new(),
        };
        let parts =
            futures_util::stream::iter([first]).chain(data.map(|d| proto::UploadDataPart {
                upload_id: String::new(),
                data: d,
            }));
        let r = self.c().upload_data(parts).await?.into_inner();
        Ok(if r.complete { r.file_info } else { None })
    }

    pub async fn send_ephemeral(
        &self,
        user_id: &str,
        channel_id: &str,
        message: &str,
    ) -> Result<()> {
        self.c()
            .send_ephemeral_post(proto::EphemeralPostRequest {
                user_id: user_id.into(),
                post: Some(proto::Post {
                    channel_id: channel_id.into(),
                    message: message.into(),
                    ..Default::default()
                }),
            })
            .await?;
        Ok(())
    }
}

/// Serialises a payload for `publish`; payloads are built from our own types.
pub fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl HostApi {
    pub async fn web_socket_connections(&self) -> Result<Vec<proto::WebSocketConnection>> {
        Ok(self
            .c()
            .get_web_socket_connections(Empty {})
            .await?
            .into_inner()
            .connections)
    }
}
