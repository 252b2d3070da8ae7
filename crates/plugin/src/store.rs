//! Persistence of call state (reference calls-plugin.md §4) on SQLite or PostgreSQL.
//! Every method records `store_ops_total` / `store_methods_time` under upstream's names.

use std::collections::BTreeMap;

use sqlx::types::Json;

use calls_db::db_run;
use calls_db::migration;
use calls_db::{Db, DbError, MigrationSet};

use super::metrics::Metrics;
use super::model::{Call, CallsChannel, Job, Session};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(DbError::Sqlx(e))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub static MIGRATIONS: MigrationSet = MigrationSet {
    table: "db_migrations_calls",
    // Any constant shared by all plugin processes; derived from "mm-calls-migrations-lock-key".
    lock_key: 0x6d6d_6361_6c6c_7301,
    sqlite: &[
        migration!(1, "sqlite", "000001_create_calls_channels"),
        migration!(2, "sqlite", "000002_create_calls"),
        migration!(3, "sqlite", "000003_create_calls_sessions"),
        migration!(4, "sqlite", "000004_create_calls_jobs"),
        migration!(5, "sqlite", "000005_add_calls_sessions_video"),
    ],
    postgres: &[
        migration!(1, "postgres", "000001_create_calls_channels"),
        migration!(2, "postgres", "000002_create_calls"),
        migration!(3, "postgres", "000003_create_calls_sessions"),
        migration!(4, "postgres", "000004_create_calls_jobs"),
        migration!(5, "postgres", "000005_add_calls_sessions_video"),
    ],
};

const CALL_COLUMNS: &str = "id, channelid, startat, endat, createat, deleteat, COALESCE(title, '') AS title, COALESCE(postid, '') AS postid, COALESCE(threadid, '') AS threadid, COALESCE(ownerid, '') AS ownerid, participants, stats, props";
const SESSION_COLUMNS: &str =
    "id, callid, userid, joinat, COALESCE(unmuted, FALSE) AS unmuted, COALESCE(raisedhand, 0) AS raisedhand, COALESCE(video, FALSE) AS video";
const ACTIVE: &str = "endat = 0 AND startat > 0 AND deleteat = 0";

#[derive(Clone)]
pub struct Store {
    db: Db,
    metrics: Metrics,
}

/// Times one store method and counts it.
struct Op<'a> {
    metrics: &'a Metrics,
    method: &'static str,
    start: std::time::Instant,
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        self.metrics.store_op(self.method, self.start.elapsed());
    }
}

impl Store {
    pub fn new(db: Db, metrics: Metrics) -> Store {
        Store { db, metrics }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    fn op(&self, method: &'static str) -> Op<'_> {
        Op {
            metrics: &self.metrics,
            method,
            start: std::time::Instant::now(),
        }
    }

    pub async fn migrate(&self) -> Result<usize> {
        Ok(self.db.migrate(&MIGRATIONS).await?)
    }

    // ------------------------------------------------------------ calls_channels

    pub async fn get_calls_channel(&self, channel_id: &str) -> Result<Option<CallsChannel>> {
        let _op = self.op("GetCallsChannel");
        let sql = "SELECT channelid, enabled, props FROM calls_channels WHERE channelid = $1";
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, CallsChannel>(
            sql
        )
        .bind(channel_id)
        .fetch_optional(p)
        .await?))
    }

    pub async fn get_all_calls_channels(&self) -> Result<Vec<CallsChannel>> {
        let _op = self.op("GetAllCallsChannels");
        let sql = "SELECT channelid, enabled, props FROM calls_channels";
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, CallsChannel>(
            sql
        )
        .fetch_all(p)
        .await?))
    }

    pub async fn upsert_calls_channel(&self, ch: &CallsChannel) -> Result<()> {
        let _op = self.op("UpdateCallsChannel");
        if !calls_wire::ids::is_valid_id(&ch.channel_id) {
            return Err(StoreError::Invalid("channel id"));
        }
        let sql = "INSERT INTO calls_channels (channelid, enabled, props) VALUES ($1, $2, $3) \
                   ON CONFLICT (channelid) DO UPDATE SET enabled = excluded.enabled, props = excluded.props";
        db_run!(&self.db, |p| sqlx::query(sql)
            .bind(&ch.channel_id)
            .bind(ch.enabled)
            .bind(&ch.props)
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }

    // ------------------------------------------------------------ calls

    pub async fn create_call(&self, c: &Call) -> Result<()> {
        let _op = self.op("CreateCall");
        validate_call(c)?;
        let sql = "INSERT INTO calls (id, channelid, startat, endat, createat, deleteat, title, postid, threadid, ownerid, participants, stats, props) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
        db_run!(&self.db, |p| sqlx::query(sql)
            .bind(&c.id)
            .bind(&c.channel_id)
            .bind(c.start_at)
            .bind(c.end_at)
            .bind(c.create_at)
            .bind(c.delete_at)
            .bind(&c.title)
            .bind(&c.post_id)
            .bind(&c.thread_id)
            .bind(&c.owner_id)
            .bind(&c.participants)
            .bind(&c.stats)
            .bind(&c.props)
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }

    pub async fn update_call(&self, c: &Call) -> Result<()> {
        let _op = self.op("UpdateCall");
        validate_call(c)?;
        let sql = "UPDATE calls SET endat = $2, deleteat = $3, threadid = $4, postid = $5, participants = $6, stats = $7, props = $8 WHERE id = $1";
        db_run!(&self.db, |p| sqlx::query(sql)
            .bind(&c.id)
            .bind(c.end_at)
            .bind(c.delete_at)
            .bind(&c.thread_id)
            .bind(&c.post_id)
            .bind(&c.participants)
            .bind(&c.stats)
            .bind(&c.props)
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }

    pub async fn get_call(&self, id: &str) -> Result<Option<Call>> {
        let _op = self.op("GetCall");
        let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = $1");
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Call>(&sql)
            .bind(id)
            .fetch_optional(p)
            .await?))
    }

    pub async fn get_active_call_by_channel(&self, channel_id: &str) -> Result<Option<Call>> {
        let _op = self.op("GetActiveCallByChannelID");
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE channelid = $1 AND {ACTIVE} ORDER BY startat DESC, id LIMIT 1"
        );
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Call>(&sql)
            .bind(channel_id)
            .fetch_optional(p)
            .await?))
    }

    pub async fn get_all_active_calls(&self) -> Result<Vec<Call>> {
        let _op = self.op("GetAllActiveCalls");
        let sql =
            format!("SELECT {CALL_COLUMNS} FROM calls WHERE {ACTIVE} ORDER BY startat DESC, id");
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Call>(&sql)
            .fetch_all(p)
            .await?))
    }

    pub async fn is_call_active(&self, channel_id: &str) -> Result<bool> {
        let _op = self.op("GetCallActive");
        let sql = format!("SELECT COUNT(*) FROM calls WHERE channelid = $1 AND {ACTIVE}");
        let n: i64 = db_run!(&self.db, |p| sqlx::query_scalar(&sql)
            .bind(channel_id)
            .fetch_one(p)
            .await?);
        Ok(n > 0)
    }

    // ------------------------------------------------------------ sessions

    pub async fn create_session(&self, s: &Session) -> Result<()> {
        let _op = self.op("CreateCallSession");
        if s.id.is_empty() || s.call_id.is_empty() || s.user_id.is_empty() || s.join_at <= 0 {
            return Err(StoreError::Invalid("session"));
        }
        let sql = "INSERT INTO calls_sessions (id, callid, userid, joinat, unmuted, raisedhand, video) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        db_run!(&self.db, |p| sqlx::query(sql)
            .bind(&s.id)
            .bind(&s.call_id)
            .bind(&s.user_id)
            .bind(s.join_at)
            .bind(s.unmuted)
            .bind(s.raised_hand)
            .bind(s.video)
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }

    pub async fn update_session(&self, s: &Session) -> Result<()> {
        let _op = self.op("UpdateCallSession");
        let sql =
            "UPDATE calls_sessions SET unmuted = $2, raisedhand = $3, video = $4 WHERE id = $1";
        db_run!(&self.db, |p| sqlx::query(sql)
            .bind(&s.id)
            .bind(s.unmuted)
            .bind(s.raised_hand)
            .bind(s.video)
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }

    pub async fn delete_session(&self, id: &str) -> Result<()> {
        let _op = self.op("DeleteCallSession");
        db_run!(&self.db, |p| sqlx::query(
            "DELETE FROM calls_sessions WHERE id = $1"
        )
        .bind(id)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn delete_sessions_of_call(&self, call_id: &str) -> Result<()> {
        let _op = self.op("DeleteCallsSessions");
        db_run!(&self.db, |p| sqlx::query(
            "DELETE FROM calls_sessions WHERE callid = $1"
        )
        .bind(call_id)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn get_sessions(&self, call_id: &str) -> Result<BTreeMap<String, Session>> {
        let _op = self.op("GetCallSessions");
        let sql = format!("SELECT {SESSION_COLUMNS} FROM calls_sessions WHERE callid = $1");
        let rows: Vec<Session> = db_run!(&self.db, |p| sqlx::query_as::<_, Session>(&sql)
            .bind(call_id)
            .fetch_all(p)
            .await?);
        Ok(rows.into_iter().map(|s| (s.id.clone(), s)).collect())
    }

    pub async fn get_session(&self, id: &str) -> Result<Option<Session>> {
        let _op = self.op("GetCallSession");
        let sql = format!("SELECT {SESSION_COLUMNS} FROM calls_sessions WHERE id = $1");
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Session>(&sql)
            .bind(id)
            .fetch_optional(p)
            .await?))
    }

    /// All sessions of active calls (used to reap sessions whose connections are gone).
    pub async fn get_sessions_of_active_calls(&self) -> Result<Vec<Session>> {
        let _op = self.op("GetCallSessions");
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM calls_sessions WHERE callid IN (SELECT id FROM calls WHERE {ACTIVE})"
        );
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Session>(&sql)
            .fetch_all(p)
            .await?))
    }

    // ------------------------------------------------------------ jobs

    /// Active jobs of a call by type: the newest (`startat DESC, id`) per type wins.
    pub async fn get_active_jobs(&self, call_id: &str) -> Result<BTreeMap<String, Job>> {
        let _op = self.op("GetActiveCallJobs");
        let sql = "SELECT id, callid, type, creatorid, initat, startat, endat, props FROM calls_jobs WHERE callid = $1 AND endat = 0 ORDER BY startat DESC, id";
        let rows: Vec<Job> = db_run!(&self.db, |p| sqlx::query_as::<_, Job>(sql)
            .bind(call_id)
            .fetch_all(p)
            .await?);
        let mut out = BTreeMap::new();
        for j in rows {
            out.entry(j.job_type.clone()).or_insert(j);
        }
        Ok(out)
    }

    pub async fn create_job(&self, j: &Job) -> Result<()> {
        let _op = self.op("CreateCallJob");
        db_run!(&self.db, |p| {
            sqlx::query(
            "INSERT INTO calls_jobs (id, callid, type, creatorid, initat, startat, endat, props) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
        )
        .bind(&j.id)
        .bind(&j.call_id)
        .bind(&j.job_type)
        .bind(&j.creator_id)
        .bind(j.init_at)
        .bind(j.start_at)
        .bind(j.end_at)
        .bind(&j.props)
        .execute(p)
        .await
        .map(drop)?
        });
        Ok(())
    }

    pub async fn update_job(&self, j: &Job) -> Result<()> {
        let _op = self.op("UpdateCallJob");
        db_run!(&self.db, |p| sqlx::query(
            "UPDATE calls_jobs SET startat = $2, endat = $3, props = $4 WHERE id = $1"
        )
        .bind(&j.id)
        .bind(j.start_at)
        .bind(j.end_at)
        .bind(&j.props)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn get_job(&self, id: &str) -> Result<Option<Job>> {
        let _op = self.op("GetCallJob");
        let sql = "SELECT id, callid, type, creatorid, initat, startat, endat, props FROM calls_jobs WHERE id = $1";
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Job>(sql)
            .bind(id)
            .fetch_optional(p)
            .await?))
    }

    pub async fn end_active_jobs(&self, call_id: &str, now: i64) -> Result<()> {
        let _op = self.op("UpdateCallJob");
        db_run!(&self.db, |p| sqlx::query(
            "UPDATE calls_jobs SET endat = $2 WHERE callid = $1 AND endat = 0"
        )
        .bind(call_id)
        .bind(now)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    // ------------------------------------------------------------ stats

    pub async fn stats(&self) -> Result<Stats> {
        let _op = self.op("GetCallsStats");
        let completed = "endat > startat AND deleteat = 0";
        let q_total = format!("SELECT COUNT(*) FROM calls WHERE {completed}");
        let q_active = "SELECT COUNT(*) FROM calls WHERE endat = 0 AND deleteat = 0";
        let q_sessions = "SELECT COUNT(*) FROM calls_sessions WHERE callid IN (SELECT id FROM calls WHERE endat = 0 AND deleteat = 0)";
        let q_dur = format!(
            "SELECT CAST(COALESCE(ROUND(AVG(endat - startat) / 1000.0), 0) AS BIGINT) FROM calls WHERE {completed}"
        );
        let q_starts = "SELECT startat FROM calls WHERE deleteat = 0 AND startat > 0";
        let q_parts = format!("SELECT participants FROM calls WHERE {completed}");
        let q_stats = "SELECT stats FROM calls WHERE deleteat = 0";
        let q_rec = "SELECT startat FROM calls_jobs WHERE type = 'recording' AND endat > startat";
        db_run!(&self.db, |p| {
            let total_calls: i64 = sqlx::query_scalar(&q_total).fetch_one(p).await?;
            let total_active_calls: i64 = sqlx::query_scalar(q_active).fetch_one(p).await?;
            let total_active_sessions: i64 = sqlx::query_scalar(q_sessions).fetch_one(p).await?;
            let avg_duration: i64 = sqlx::query_scalar(&q_dur).fetch_one(p).await?;
            let starts: Vec<i64> = sqlx::query_scalar(q_starts).fetch_all(p).await?;
            let parts: Vec<Json<serde_json::Value>> =
                sqlx::query_scalar(&q_parts).fetch_all(p).await?;
            let stats: Vec<Json<super::model::CallStats>> =
                sqlx::query_scalar(q_stats).fetch_all(p).await?;
            let rec_starts: Vec<i64> = sqlx::query_scalar(q_rec).fetch_all(p).await?;
            Ok(Stats {
                total_calls,
                total_active_calls,
                total_active_sessions,
                avg_duration,
                call_starts: starts,
                participant_counts: parts
                    .iter()
                    .filter_map(|j| j.0.as_array().map(|a| a.len() as i64))
                    .collect(),
                call_stats: stats.into_iter().map(|j| j.0).collect(),
                recording_starts: rec_starts,
            })
        })
    }
}

impl Store {
    /// Completed calls per channel (the caller maps channels to their types).
    pub async fn completed_calls_by_channel(&self) -> Result<Vec<(String, i64)>> {
        let _op = self.op("GetCallsStats");
        let sql = "SELECT channelid, COUNT(*) FROM calls WHERE endat > startat AND deleteat = 0 GROUP BY channelid";
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, (String, i64)>(
            sql
        )
        .fetch_all(p)
        .await?))
    }
}

/// Raw aggregates; `api::stats` shapes them into upstream's `CallsStats`.
#[derive(Debug, Default)]
pub struct Stats {
    pub total_calls: i64,
    pub total_active_calls: i64,
    pub total_active_sessions: i64,
    pub avg_duration: i64,
    pub call_starts: Vec<i64>,
    pub participant_counts: Vec<i64>,
    pub call_stats: Vec<super::model::CallStats>,
    pub recording_starts: Vec<i64>,
}

fn validate_call(c: &Call) -> Result<()> {
    if !calls_wire::ids::is_valid_id(&c.id) {
        return Err(StoreError::Invalid("call id"));
    }
    if !calls_wire::ids::is_valid_id(&c.channel_id) {
        return Err(StoreError::Invalid("channel id"));
    }
    if c.start_at <= 0 || c.create_at <= 0 {
        return Err(StoreError::Invalid("call timestamps"));
    }
    if c.owner_id.is_empty() {
        return Err(StoreError::Invalid("owner id"));
    }
    Ok(())
}
