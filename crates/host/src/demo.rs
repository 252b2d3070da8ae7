//! The demo a fresh `make run` brings: an admin, two users, a team with *Town Square*
//! and *Calls*. Calls stay in test mode, as on a fresh Mattermost (Town Square shows
//! it: only the admin may start a call there), and the *Calls* channel is enabled for
//! everyone, so the README's first flow (two users, start and join) works as written.
//!
//! Enabling a channel is the plugin's business (its own table, its own permission
//! check): the host asks the plugin as the admin would, through the plugin's route
//! `POST /{channel_id}`, once the plugin runs. Until it has answered, the request is
//! kept in the data dir (`demo-pending.json`) and made again at the next start, so a
//! bundle installed later (from the System Console) gets it too.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::{insert_user, NewUserFields};
use crate::store::{Channel, Team};
use crate::{Host, CALLS_PLUGIN_ID};
use calls_wire::ids::{new_id, now_ms};
use calls_wire::proto;

/// The demo accounts: username, first and last name; the password is `<username>-password`.
pub const USERS: [(&str, &str, &str); 3] = [
    ("admin", "Ada", "Admin"),
    ("alice", "Alice", "Liddell"),
    ("bob", "Bob", "Builder"),
];

const PENDING_FILE: &str = "demo-pending.json";

/// The channel to enable for calls, and the admin to ask as.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Pending {
    admin_id: String,
    channel_id: String,
}

/// Creates the demo on an empty host (no users yet); true when it did.
pub async fn seed(host: &Host) -> Result<bool, Box<dyn std::error::Error>> {
    if host.store.count_users().await? > 0 {
        return Ok(false);
    }
    let mut ids = Vec::new();
    for (name, first, last) in USERS {
        let u = insert_user(
            host,
            NewUserFields {
                username: name.into(),
                email: format!("{name}@example.com"),
                password: format!("{name}-password"),
                first_name: first.into(),
                last_name: last.into(),
                nickname: String::new(),
            },
        )
        .await
        .map_err(|e| format!("seeding {name}: {e:?}"))?;
        ids.push(u.id);
    }
    let team = Team {
        id: new_id(),
        name: "demo".into(),
        display_name: "Demo".into(),
        team_type: "O".into(),
        create_at: now_ms(),
        delete_at: 0,
    };
    host.store.create_team(&team).await?;
    for (i, id) in ids.iter().enumerate() {
        host.store.add_team_member(&team.id, id, i == 0).await?;
    }
    let mut calls_channel = String::new();
    for (name, display) in [("town-square", "Town Square"), ("calls", "Calls")] {
        let c = Channel {
            id: new_id(),
            team_id: team.id.clone(),
            channel_type: "O".into(),
            name: name.into(),
            display_name: display.into(),
            creator_id: ids[0].clone(),
            create_at: now_ms(),
            delete_at: 0,
        };
        host.store.create_channel(&c).await?;
        for (i, id) in ids.iter().enumerate() {
            host.store.add_channel_member(&c.id, id, i == 0).await?;
        }
        if name == "calls" {
            calls_channel = c.id;
        }
    }
    let pending = Pending {
        admin_id: ids[0].clone(),
        channel_id: calls_channel,
    };
    crate::write_private(
        &host.data_dir.join(PENDING_FILE),
        &serde_json::to_vec(&pending)?,
    )?;
    Ok(true)
}

/// Enables the demo's *Calls* channel once the Calls plugin runs, if that is still to
/// do (a task that ends when done, or when the host has no such request).
pub fn enable_calls_channel_when_ready(host: Host) {
    let path = host.data_dir.join(PENDING_FILE);
    let Some(pending) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Pending>(&b).ok())
    else {
        return;
    };
    tokio::spawn(async move {
        let mut logged = false;
        loop {
            if let Some(client) = activated_calls_plugin(&host) {
                match enable_channel(client, &pending).await {
                    Ok(()) => {
                        tracing::info!(
                            channel_id = pending.channel_id,
                            "demo: calls enabled in the Calls channel"
                        );
                        let _ = std::fs::remove_file(&path);
                        return;
                    }
                    Err(e) if !logged => {
                        tracing::warn!(
                            error = e,
                            "demo: cannot enable calls in the Calls channel yet"
                        );
                        logged = true;
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

fn activated_calls_plugin(
    host: &Host,
) -> Option<proto::plugin_client::PluginClient<tonic::transport::Channel>> {
    let state = host.plugin_state.read().get(CALLS_PLUGIN_ID).cloned()?;
    let s = state.lock();
    if s.activated {
        s.client.clone()
    } else {
        None
    }
}

/// The admin's `POST /plugins/com.mattermost.calls/{channel_id}` `{"enabled": true}`.
async fn enable_channel(
    mut client: proto::plugin_client::PluginClient<tonic::transport::Channel>,
    p: &Pending,
) -> Result<(), String> {
    use proto::http_request_part::Part;
    let head = proto::HttpRequest {
        method: "POST".into(),
        uri: format!("/{}", p.channel_id),
        headers: vec![proto::Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        body: Vec::new(),
        user_id: p.admin_id.clone(),
        session_id: String::new(),
    };
    let parts = [
        Part::Head(head),
        Part::Body(br#"{"enabled":true}"#.to_vec()),
    ]
    .map(|part| proto::HttpRequestPart { part: Some(part) });
    let r = client
        .serve_http(futures_util::stream::iter(parts))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    if r.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            r.status,
            String::from_utf8_lossy(&r.body).trim()
        ))
    }
}
