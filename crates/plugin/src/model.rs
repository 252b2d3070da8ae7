//! Call state as stored (reference calls-plugin.md §3.1 and §4): the rows of
//! `calls_channels`, `calls`, `calls_sessions`, `calls_jobs` and the JSON in them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// `calls.props` (all fields omitempty, as upstream).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CallProps {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rtcd_host: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub screen_sharing_session_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dismissed_notification: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub screen_start_at: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub participants: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_locked_user_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub video_start_at: BTreeMap<String, i64>,
}

/// `calls.stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CallStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub screen_duration: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub video_duration: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub has_used_video: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub has_used_screen_share: bool,
}

#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct CallsChannel {
    #[sqlx(rename = "channelid")]
    pub channel_id: String,
    pub enabled: Option<bool>,
    pub props: Json<Value>,
}

#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct Call {
    pub id: String,
    #[sqlx(rename = "channelid")]
    pub channel_id: String,
    #[sqlx(rename = "startat")]
    pub start_at: i64,
    #[sqlx(rename = "endat")]
    pub end_at: i64,
    #[sqlx(rename = "createat")]
    pub create_at: i64,
    #[sqlx(rename = "deleteat")]
    pub delete_at: i64,
    pub title: String,
    #[sqlx(rename = "postid")]
    pub post_id: String,
    #[sqlx(rename = "threadid")]
    pub thread_id: String,
    #[sqlx(rename = "ownerid")]
    pub owner_id: String,
    /// `null` while active, the list of participant user ids once ended.
    pub participants: Json<Value>,
    pub stats: Json<CallStats>,
    pub props: Json<CallProps>,
}

impl Call {
    pub fn host_id(&self) -> &str {
        self.props.hosts.first().map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct Session {
    pub id: String,
    #[sqlx(rename = "callid")]
    pub call_id: String,
    #[sqlx(rename = "userid")]
    pub user_id: String,
    #[sqlx(rename = "joinat")]
    pub join_at: i64,
    pub unmuted: bool,
    #[sqlx(rename = "raisedhand")]
    pub raised_hand: i64,
    pub video: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobProps {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bot_conn_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub err: String,
}

#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct Job {
    pub id: String,
    #[sqlx(rename = "callid")]
    pub call_id: String,
    #[sqlx(rename = "type")]
    pub job_type: String,
    #[sqlx(rename = "creatorid")]
    pub creator_id: String,
    #[sqlx(rename = "initat")]
    pub init_at: i64,
    #[sqlx(rename = "startat")]
    pub start_at: i64,
    #[sqlx(rename = "endat")]
    pub end_at: i64,
    pub props: Json<JobProps>,
}

/// `JobStateClient`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobStateClient {
    #[serde(rename = "type")]
    pub job_type: String,
    pub init_at: i64,
    pub start_at: i64,
    pub end_at: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub err: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionClient {
    pub session_id: String,
    pub user_id: String,
    pub unmuted: bool,
    pub raised_hand: i64,
    pub video: bool,
}

/// `CallStateClient` (reference §1.4).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallStateClient {
    pub id: String,
    pub start_at: i64,
    pub sessions: Vec<SessionClient>,
    pub thread_id: String,
    pub post_id: String,
    pub screen_sharing_session_id: String,
    pub owner_id: String,
    pub host_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<JobStateClient>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcription: Option<JobStateClient>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_captions: Option<JobStateClient>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dismissed_notification: Option<BTreeMap<String, bool>>,
}

/// A call with its sessions and active jobs, as loaded under the call lock.
#[derive(Debug, Clone)]
pub struct CallState {
    pub call: Call,
    pub sessions: BTreeMap<String, Session>,
    pub jobs: BTreeMap<String, Job>,
}

impl CallState {
    /// The client view for `user_id`; `bot_id` sessions are hidden.
    pub fn client_view(&self, user_id: &str, bot_id: &str) -> CallStateClient {
        let mut sessions: Vec<SessionClient> = self
            .sessions
            .values()
            .filter(|s| bot_id.is_empty() || s.user_id != bot_id)
            .map(|s| SessionClient {
                session_id: s.id.clone(),
                user_id: s.user_id.clone(),
                unmuted: s.unmuted,
                raised_hand: s.raised_hand,
                video: s.video,
            })
            .collect();
        sessions.sort_by_key(|s| s.session_id.clone());
        let job = |t: &str| {
            self.jobs
                .get(t)
                .filter(|j| j.end_at == 0)
                .map(|j| JobStateClient {
                    job_type: j.job_type.clone(),
                    init_at: j.init_at,
                    start_at: j.start_at,
                    end_at: j.end_at,
                    err: j.props.err.clone(),
                })
        };
        let dismissed = self
            .call
            .props
            .dismissed_notification
            .get(user_id)
            .copied()
            .filter(|d| *d)
            .map(|d| BTreeMap::from([(user_id.to_string(), d)]));
        CallStateClient {
            id: self.call.id.clone(),
            start_at: self.call.start_at,
            sessions,
            thread_id: self.call.thread_id.clone(),
            post_id: self.call.post_id.clone(),
            screen_sharing_session_id: self.call.props.screen_sharing_session_id.clone(),
            owner_id: self.call.owner_id.clone(),
            host_id: self.call.host_id().to_string(),
            recording: job("recording"),
            transcription: job("transcribing"),
            live_captions: job("captioning"),
            dismissed_notification: dismissed,
        }
    }
}
