//! The `Host` gRPC service: the Mattermost plugin API subset the Calls plugin uses.

use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use super::cluster::Message;
use super::store::{self, Channel, Post, User};
use super::{auth, hub, uploads};
use super::{Host, CALLS_PLUGIN_ID, SERVER_VERSION};
use calls_wire::ids::{new_id, now_ms};
use calls_wire::proto::host_server::Host as HostService;
use calls_wire::proto::{self, Empty};

#[derive(Clone)]
pub struct HostGrpc(pub Host);

fn internal(e: store::StoreError) -> Status {
    tracing::error!(error = %e, "host api store error");
    Status::internal(e.to_string())
}

pub fn user_proto(u: &User) -> proto::User {
    proto::User {
        id: u.id.clone(),
        username: u.username.clone(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        nickname: u.nickname.clone(),
        email: u.email.clone(),
        roles: u.roles.clone(),
        delete_at: u.delete_at,
        is_bot: u.is_bot,
    }
}

pub fn channel_proto(c: &Channel) -> proto::Channel {
    proto::Channel {
        id: c.id.clone(),
        team_id: c.team_id.clone(),
        r#type: c.channel_type.clone(),
        name: c.name.clone(),
        display_name: c.display_name.clone(),
        delete_at: c.delete_at,
    }
}

fn post_proto(p: &Post) -> proto::Post {
    proto::Post {
        id: p.id.clone(),
        channel_id: p.channel_id.clone(),
        user_id: p.user_id.clone(),
        root_id: p.root_id.clone(),
        message: p.message.clone(),
        r#type: p.post_type.clone(),
        props_json: p.props.clone().into_bytes(),
        create_at: p.create_at,
        update_at: p.update_at,
        delete_at: p.delete_at,
        file_ids: p.file_id_list(),
    }
}

/// The post as Mattermost clients get it over the websocket / API (`file_ids` only
/// when it has files, as Mattermost's `omitempty`).
pub fn post_json(p: &Post) -> Value {
    let props: Value = serde_json::from_str(&p.props).unwrap_or(json!({}));
    let mut v = json!({
        "id": p.id, "channel_id": p.channel_id, "user_id": p.user_id, "root_id": p.root_id,
        "message": p.message, "type": p.post_type, "props": props,
        "create_at": p.create_at, "update_at": p.update_at, "delete_at": p.delete_at,
    });
    let files = p.file_id_list();
    if !files.is_empty() {
        v["file_ids"] = json!(files);
    }
    v
}

pub fn file_info_proto(f: &store::FileInfo) -> proto::FileInfo {
    proto::FileInfo {
        id: f.id.clone(),
        user_id: f.creator_id.clone(),
        channel_id: f.channel_id.clone(),
        post_id: f.post_id.clone(),
        name: f.name.clone(),
        extension: f.extension.clone(),
        size: f.size,
        mime_type: f.mime_type.clone(),
        create_at: f.create_at,
    }
}

fn upload_proto(u: &store::UploadSession) -> proto::UploadSession {
    proto::UploadSession {
        id: u.id.clone(),
        r#type: u.upload_type.clone(),
        create_at: u.create_at,
        user_id: u.user_id.clone(),
        channel_id: u.channel_id.clone(),
        filename: u.filename.clone(),
        file_size: u.file_size,
        file_offset: u.file_offset,
    }
}

/// An upload failure as the plugin API reports it (Mattermost's AppError statuses).
fn upload_status(e: uploads::UploadError) -> Status {
    use uploads::UploadError as E;
    match e {
        E::NotFound => Status::not_found(e.to_string()),
        E::TooLarge(_) => Status::out_of_range(e.to_string()),
        E::BadType | E::BadChannel | E::BadSize | E::Overflow | E::Busy => {
            Status::invalid_argument(e.to_string())
        }
        E::Store(s) => internal(s),
        E::File(f) => {
            tracing::error!(error = %f, "file store error");
            Status::internal(f.to_string())
        }
    }
}

/// Finds or creates the DM channel of two users.
pub async fn direct_channel(host: &Host, a: &str, b: &str) -> Result<Channel, store::StoreError> {
    let mut ids = [a, b];
    ids.sort_unstable();
    let name = format!("{}__{}", ids[0], ids[1]);
    if let Some(c) = host.store.channel_by_name("", &name).await? {
        return Ok(c);
    }
    let c = Channel {
        id: new_id(),
        team_id: String::new(),
        channel_type: "D".into(),
        name,
        display_name: String::new(),
        creator_id: a.to_string(),
        create_at: now_ms(),
        delete_at: 0,
    };
    host.store.create_channel(&c).await?;
    host.store.add_channel_member(&c.id, a, false).await?;
    if a != b {
        host.store.add_channel_member(&c.id, b, false).await?;
    }
    Ok(c)
}

/// Sends an event to the connections a Mattermost broadcast selects, on every node:
/// here, and through the cluster on the others (unless the one connection it names is
/// here).
pub async fn publish(
    host: &Host,
    event: &str,
    data: &Value,
    b: &proto::WebSocketBroadcast,
) -> Result<(), store::StoreError> {
    let delivered_here = publish_local(host, event, data, b).await?;
    if let Some(c) = &host.cluster {
        // A connection named and found here is nowhere else.
        if !delivered_here || b.connection_id.is_empty() {
            c.send(
                "",
                Message::WsEvent {
                    event: event.to_string(),
                    data: data.clone(),
                    broadcast: b.into(),
                },
            )
            .await;
        }
    }
    Ok(())
}

/// Sends an event to this node's connections the broadcast selects; true when there
/// was at least one.
pub async fn publish_local(
    host: &Host,
    event: &str,
    data: &Value,
    b: &proto::WebSocketBroadcast,
) -> Result<bool, store::StoreError> {
    let members = if hub::needs_channel_members(b) {
        let ids = host.store.channel_member_ids(&b.channel_id).await?;
        Some(
            ids.into_iter()
                .collect::<std::collections::HashSet<String>>(),
        )
    } else {
        None
    };
    let conns = host.hub.select(b, members.as_ref());
    let broadcast = hub::broadcast_field(b);
    for c in &conns {
        c.send_event(event, data, &broadcast);
    }
    Ok(!conns.is_empty())
}

#[tonic::async_trait]
impl HostService for HostGrpc {
    async fn get_server_info(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<proto::ServerInfo>, Status> {
        let h = &self.0;
        let locale = h
            .config
            .read()
            .pointer("/LocalizationSettings/DefaultClientLocale")
            .and_then(Value::as_str)
            .unwrap_or("en")
            .to_string();
        Ok(Response::new(proto::ServerInfo {
            version: SERVER_VERSION.into(),
            diagnostic_id: h.diagnostic_id.clone(),
            site_url: h.site_url.clone(),
            cluster_id: h.node_id().to_string(),
            show_full_name: h.show_full_name(),
            default_client_locale: locale,
        }))
    }

    async fn get_license(&self, _: Request<Empty>) -> Result<Response<proto::License>, Status> {
        Ok(Response::new(self.0.license.clone()))
    }

    async fn get_database_settings(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<proto::DatabaseSettings>, Status> {
        Ok(Response::new(proto::DatabaseSettings {
            driver: self.0.store.db.driver().into(),
            url: self.0.database_url.clone(),
            max_open_conns: 100,
            query_timeout_seconds: 30,
        }))
    }

    async fn get_plugin_config(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<proto::PluginConfigResponse>, Status> {
        let cfg = self.0.plugin_settings(CALLS_PLUGIN_ID);
        Ok(Response::new(proto::PluginConfigResponse {
            config_json: serde_json::to_vec(&cfg).unwrap_or_default(),
        }))
    }

    async fn get_user(
        &self,
        r: Request<proto::IdRequest>,
    ) -> Result<Response<proto::UserResponse>, Status> {
        let u = self
            .0
            .store
            .user(&r.into_inner().id)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::UserResponse {
            user: u.as_ref().map(user_proto),
        }))
    }

    async fn get_user_by_username(
        &self,
        r: Request<proto::IdRequest>,
    ) -> Result<Response<proto::UserResponse>, Status> {
        let u = self
            .0
            .store
            .user_by_login(&r.into_inner().id)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::UserResponse {
            user: u.as_ref().map(user_proto),
        }))
    }

    async fn get_system_admins(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<proto::UsersResponse>, Status> {
        let users = self.0.store.system_admins().await.map_err(internal)?;
        Ok(Response::new(proto::UsersResponse {
            users: users.iter().map(user_proto).collect(),
        }))
    }

    async fn ensure_bot_user(
        &self,
        r: Request<proto::BotRequest>,
    ) -> Result<Response<proto::UserResponse>, Status> {
        let r = r.into_inner();
        if let Some(u) = self
            .0
            .store
            .user_by_login(&r.username)
            .await
            .map_err(internal)?
        {
            return Ok(Response::new(proto::UserResponse {
                user: Some(user_proto(&u)),
            }));
        }
        let now = now_ms();
        let u = User {
            id: new_id(),
            username: r.username.clone(),
            email: format!("{}@bots.localhost", r.username),
            // A bot cannot log in: no password hash ever verifies against this.
            password_hash: "!".into(),
            first_name: r.display_name,
            last_name: String::new(),
            nickname: r.description,
            roles: "system_user".into(),
            is_bot: true,
            create_at: now,
            update_at: now,
            delete_at: 0,
        };
        self.0.store.create_user(&u).await.map_err(internal)?;
        Ok(Response::new(proto::UserResponse {
            user: Some(user_proto(&u)),
        }))
    }

    async fn get_session(
        &self,
        r: Request<proto::IdRequest>,
    ) -> Result<Response<proto::SessionResponse>, Status> {
        let s = self
            .0
            .store
            .session_by_id(&r.into_inner().id)
            .await
            .map_err(internal)?;
        Ok(Response::new(match s {
            Some((_, user_id, expires_at)) => proto::SessionResponse {
                valid: true,
                user_id,
                expires_at,
            },
            None => proto::SessionResponse::default(),
        }))
    }

    async fn get_channel(
        &self,
        r: Request<proto::IdRequest>,
    ) -> Result<Response<proto::ChannelResponse>, Status> {
        match self
            .0
            .store
            .channel(&r.into_inner().id)
            .await
            .map_err(internal)?
        {
            Some(c) => Ok(Response::new(proto::ChannelResponse {
                channel: Some(channel_proto(&c)),
            })),
            None => Err(Status::not_found("channel not found")),
        }
    }

    async fn get_channel_member(
        &self,
        r: Request<proto::ChannelMemberRequest>,
    ) -> Result<Response<proto::ChannelMemberResponse>, Status> {
        let r = r.into_inner();
        let m = self
            .0
            .store
            .channel_member(&r.channel_id, &r.user_id)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::ChannelMemberResponse {
            member: m.map(|admin| proto::ChannelMember {
                channel_id: r.channel_id.clone(),
                user_id: r.user_id.clone(),
                roles: if admin {
                    "channel_user channel_admin".into()
                } else {
                    "channel_user".into()
                },
            }),
        }))
    }

    async fn get_channels_for_user(
        &self,
        r: Request<proto::ChannelsForUserRequest>,
    ) -> Result<Response<proto::ChannelsResponse>, Status> {
        let r = r.into_inner();
        let per_page = i64::from(r.per_page.clamp(1, 1000));
        let chans = self
            .0
            .store
            .channels_for_user(&r.user_id, per_page, i64::from(r.page) * per_page)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::ChannelsResponse {
            channels: chans.iter().map(channel_proto).collect(),
        }))
    }

    async fn get_users_in_channel(
        &self,
        r: Request<proto::IdRequest>,
    ) -> Result<Response<proto::UsersResponse>, Status> {
        let ids = self
            .0
            .store
            .channel_member_ids(&r.into_inner().id)
            .await
            .map_err(internal)?;
        let mut users = Vec::new();
        for id in ids {
            if let Some(u) = self.0.store.user(&id).await.map_err(internal)? {
                users.push(user_proto(&u));
            }
        }
        Ok(Response::new(proto::UsersResponse { users }))
    }

    async fn get_channel_stats(
        &self,
        r: Request<proto::IdRequest>,
    ) -> Result<Response<proto::ChannelStatsResponse>, Status> {
        let ids = self
            .0
            .store
            .channel_member_ids(&r.into_inner().id)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::ChannelStatsResponse {
            member_count: ids.len() as i64,
        }))
    }

    async fn get_direct_channel(
        &self,
        r: Request<proto::DirectChannelRequest>,
    ) -> Result<Response<proto::ChannelResponse>, Status> {
        let r = r.into_inner();
        let c = direct_channel(&self.0, &r.user_id_a, &r.user_id_b)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::ChannelResponse {
            channel: Some(channel_proto(&c)),
        }))
    }

    async fn has_permission_to(
        &self,
        r: Request<proto::PermissionRequest>,
    ) -> Result<Response<proto::PermissionResponse>, Status> {
        let r = r.into_inner();
        let allowed = auth::has_permission(&self.0.store, &r.user_id, &r.permission)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::PermissionResponse { allowed }))
    }

    async fn has_permission_to_channel(
        &self,
        r: Request<proto::PermissionRequest>,
    ) -> Result<Response<proto::PermissionResponse>, Status> {
        let r = r.into_inner();
        let allowed =
            auth::has_channel_permission(&self.0.store, &r.user_id, &r.scope_id, &r.permission)
                .await
                .map_err(internal)?;
        Ok(Response::new(proto::PermissionResponse { allowed }))
    }

    async fn has_permission_to_team(
        &self,
        r: Request<proto::PermissionRequest>,
    ) -> Result<Response<proto::PermissionResponse>, Status> {
        let r = r.into_inner();
        let allowed =
            auth::has_team_permission(&self.0.store, &r.user_id, &r.scope_id, &r.permission)
                .await
                .map_err(internal)?;
        Ok(Response::new(proto::PermissionResponse { allowed }))
    }

    async fn publish_web_socket_event(
        &self,
        r: Request<proto::PublishRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = r.into_inner();
        let data: Value = serde_json::from_slice(&r.data_json)
            .map_err(|e| Status::invalid_argument(format!("data_json: {e}")))?;
        let event = format!("custom_{CALLS_PLUGIN_ID}_{}", r.event);
        publish(&self.0, &event, &data, &r.broadcast.unwrap_or_default())
            .await
            .map_err(internal)?;
        Ok(Response::new(Empty {}))
    }

    async fn publish_plugin_cluster_event(
        &self,
        r: Request<proto::ClusterEventRequest>,
    ) -> Result<Response<Empty>, Status> {
        use base64::Engine;
        let r = r.into_inner();
        // One node: there is nobody else to deliver to (as Mattermost without a cluster).
        if let Some(c) = &self.0.cluster {
            c.send(
                &r.target_node_id,
                Message::PluginEvent {
                    plugin_id: CALLS_PLUGIN_ID.to_string(),
                    id: r.id,
                    data: base64::engine::general_purpose::STANDARD.encode(&r.data),
                },
            )
            .await;
        }
        Ok(Response::new(Empty {}))
    }

    async fn get_cluster_nodes(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<proto::ClusterNodesResponse>, Status> {
        let Some(c) = &self.0.cluster else {
            return Ok(Response::new(proto::ClusterNodesResponse::default()));
        };
        let live = c.live_nodes().await.map_err(|e| {
            tracing::error!(error = %e, "cluster nodes not read");
            Status::unavailable(e.to_string())
        })?;
        let nodes = live
            .iter()
            .map(|n| proto::ClusterNode {
                id: n.id.clone(),
                version: n.version.clone(),
                plugin_version: n
                    .plugin_versions()
                    .remove(CALLS_PLUGIN_ID)
                    .unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(proto::ClusterNodesResponse { nodes }))
    }

    async fn get_web_socket_connections(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<proto::WebSocketConnectionsResponse>, Status> {
        let connections = self
            .0
            .hub
            .all()
            .iter()
            .map(|c| proto::WebSocketConnection {
                connection_id: c.id.clone(),
                user_id: c.user_id.clone(),
                active: c.is_active(),
            })
            .collect();
        Ok(Response::new(proto::WebSocketConnectionsResponse {
            connections,
        }))
    }

    async fn kv_get(
        &self,
        r: Request<proto::KvGetRequest>,
    ) -> Result<Response<proto::KvGetResponse>, Status> {
        let v = self
            .0
            .store
            .kv_get(CALLS_PLUGIN_ID, &r.into_inner().key)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::KvGetResponse {
            found: v.is_some(),
            value: v.unwrap_or_default(),
        }))
    }

    async fn kv_set(
        &self,
        r: Request<proto::KvSetRequest>,
    ) -> Result<Response<proto::KvSetResponse>, Status> {
        let r = r.into_inner();
        let expire_at = if r.expire_in_seconds > 0 {
            now_ms() + r.expire_in_seconds * 1000
        } else {
            0
        };
        let written = if r.atomic {
            let old = (!r.old_value_is_nil).then_some(r.old_value.as_slice());
            self.0
                .store
                .kv_compare_and_set(CALLS_PLUGIN_ID, &r.key, old, &r.value, expire_at)
                .await
                .map_err(internal)?
        } else {
            self.0
                .store
                .kv_put(CALLS_PLUGIN_ID, &r.key, &r.value, expire_at)
                .await
                .map_err(internal)?;
            true
        };
        Ok(Response::new(proto::KvSetResponse { written }))
    }

    async fn kv_delete(&self, r: Request<proto::KvGetRequest>) -> Result<Response<Empty>, Status> {
        self.0
            .store
            .kv_delete(CALLS_PLUGIN_ID, &r.into_inner().key)
            .await
            .map_err(internal)?;
        Ok(Response::new(Empty {}))
    }

    async fn create_post(
        &self,
        r: Request<proto::PostRequest>,
    ) -> Result<Response<proto::PostResponse>, Status> {
        let p = r
            .into_inner()
            .post
            .ok_or_else(|| Status::invalid_argument("post"))?;
        let now = now_ms();
        let post = Post {
            id: new_id(),
            channel_id: p.channel_id,
            user_id: p.user_id,
            root_id: p.root_id,
            message: p.message,
            post_type: p.r#type,
            props: if p.props_json.is_empty() {
                "{}".into()
            } else {
                String::from_utf8_lossy(&p.props_json).into_owned()
            },
            create_at: now,
            update_at: now,
            delete_at: 0,
            file_ids: "[]".into(),
        };
        if p.file_ids.len() > 10 {
            return Err(Status::invalid_argument("a post holds at most 10 files"));
        }
        let mut post = post;
        if !p.file_ids.is_empty() {
            // Only the author's own unattached files of the channel (Mattermost's rule),
            // attached before the post is stored: nobody reads the post without them.
            let attached = self
                .0
                .store
                .attach_files(&post, &p.file_ids)
                .await
                .map_err(internal)?;
            post.file_ids = json!(attached).to_string();
        }
        self.0.store.create_post(&post).await.map_err(internal)?;
        let b = proto::WebSocketBroadcast {
            channel_id: post.channel_id.clone(),
            ..Default::default()
        };
        let data = json!({"post": post_json(&post).to_string(), "channel_type": ""});
        publish(&self.0, "posted", &data, &b)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::PostResponse {
            post: Some(post_proto(&post)),
        }))
    }

    async fn update_post(
        &self,
        r: Request<proto::PostRequest>,
    ) -> Result<Response<proto::PostResponse>, Status> {
        let p = r
            .into_inner()
            .post
            .ok_or_else(|| Status::invalid_argument("post"))?;
        let Some(mut post) = self.0.store.post(&p.id).await.map_err(internal)? else {
            return Err(Status::not_found("post not found"));
        };
        post.message = p.message;
        post.props = String::from_utf8_lossy(&p.props_json).into_owned();
        post.update_at = now_ms();
        self.0.store.update_post(&post).await.map_err(internal)?;
        let b = proto::WebSocketBroadcast {
            channel_id: post.channel_id.clone(),
            ..Default::default()
        };
        publish(
            &self.0,
            "post_edited",
            &json!({"post": post_json(&post).to_string()}),
            &b,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(proto::PostResponse {
            post: Some(post_proto(&post)),
        }))
    }

    async fn get_post(
        &self,
        r: Request<proto::IdRequest>,
    ) -> Result<Response<proto::PostResponse>, Status> {
        match self
            .0
            .store
            .post(&r.into_inner().id)
            .await
            .map_err(internal)?
        {
            Some(p) => Ok(Response::new(proto::PostResponse {
                post: Some(post_proto(&p)),
            })),
            None => Err(Status::not_found("post not found")),
        }
    }

    async fn send_ephemeral_post(
        &self,
        r: Request<proto::EphemeralPostRequest>,
    ) -> Result<Response<proto::PostResponse>, Status> {
        let r = r.into_inner();
        let p = r.post.unwrap_or_default();
        let now = now_ms();
        let post = Post {
            id: new_id(),
            channel_id: p.channel_id,
            user_id: p.user_id,
            root_id: p.root_id,
            message: p.message,
            post_type: "system_ephemeral".into(),
            props: "{}".into(),
            create_at: now,
            update_at: now,
            delete_at: 0,
            file_ids: "[]".into(),
        };
        let b = proto::WebSocketBroadcast {
            user_id: r.user_id,
            ..Default::default()
        };
        publish(
            &self.0,
            "ephemeral_message",
            &json!({"post": post_json(&post).to_string()}),
            &b,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(proto::PostResponse {
            post: Some(post_proto(&post)),
        }))
    }

    async fn create_session(
        &self,
        r: Request<proto::CreateSessionRequest>,
    ) -> Result<Response<proto::CreateSessionResponse>, Status> {
        let r = r.into_inner();
        if self
            .0
            .store
            .user(&r.user_id)
            .await
            .map_err(internal)?
            .is_none()
        {
            return Err(Status::not_found("user not found"));
        }
        let ttl = if r.expires_at > 0 {
            (r.expires_at - now_ms()).max(1)
        } else {
            0
        };
        let (id, token) = self
            .0
            .store
            .create_session(&r.user_id, ttl)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::CreateSessionResponse { id, token }))
    }

    async fn revoke_session(
        &self,
        r: Request<proto::IdRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.0
            .store
            .delete_session(&r.into_inner().id)
            .await
            .map_err(internal)?;
        Ok(Response::new(Empty {}))
    }

    async fn create_upload_session(
        &self,
        r: Request<proto::UploadSessionRequest>,
    ) -> Result<Response<proto::UploadSessionResponse>, Status> {
        let u = r.into_inner().session.unwrap_or_default();
        let us = uploads::create(
            &self.0,
            &u.r#type,
            &u.user_id,
            &u.channel_id,
            &u.filename,
            u.file_size,
        )
        .await
        .map_err(upload_status)?;
        Ok(Response::new(proto::UploadSessionResponse {
            session: Some(upload_proto(&us)),
        }))
    }

    async fn get_upload_session(
        &self,
        r: Request<proto::IdRequest>,
    ) -> Result<Response<proto::UploadSessionResponse>, Status> {
        let us = uploads::session(&self.0, &r.into_inner().id)
            .await
            .map_err(upload_status)?;
        Ok(Response::new(proto::UploadSessionResponse {
            session: Some(upload_proto(&us)),
        }))
    }

    async fn upload_data(
        &self,
        r: Request<tonic::Streaming<proto::UploadDataPart>>,
    ) -> Result<Response<proto::UploadDataResponse>, Status> {
        let mut parts = r.into_inner();
        let mut us: Option<store::UploadSession> = None;
        let mut _writing = None;
        // One request carries at most MaxFileSize bytes, as Mattermost's UploadData.
        let (max, mut got) = (self.0.max_file_size(), 0i64);
        while let Some(part) = parts.message().await? {
            let cur = match &mut us {
                Some(u) => u,
                None => {
                    _writing =
                        Some(uploads::begin(&self.0, &part.upload_id).map_err(upload_status)?);
                    us.insert(
                        uploads::session(&self.0, &part.upload_id)
                            .await
                            .map_err(upload_status)?,
                    )
                }
            };
            got += part.data.len() as i64;
            if got > max {
                return Err(upload_status(uploads::UploadError::TooLarge(max)));
            }
            uploads::append(&self.0, cur, &part.data)
                .await
                .map_err(upload_status)?;
        }
        let us = us.ok_or_else(|| Status::invalid_argument("no upload session named"))?;
        if us.file_offset < us.file_size {
            return Ok(Response::new(proto::UploadDataResponse {
                complete: false,
                file_info: None,
            }));
        }
        let info = uploads::finish(&self.0, &us).await.map_err(upload_status)?;
        Ok(Response::new(proto::UploadDataResponse {
            complete: true,
            file_info: Some(file_info_proto(&info)),
        }))
    }

    async fn get_file_info(
        &self,
        r: Request<proto::IdRequest>,
    ) -> Result<Response<proto::FileInfo>, Status> {
        match self
            .0
            .store
            .file_info(&r.into_inner().id)
            .await
            .map_err(internal)?
        {
            Some(f) => Ok(Response::new(file_info_proto(&f))),
            None => Err(Status::not_found("file not found")),
        }
    }
}
