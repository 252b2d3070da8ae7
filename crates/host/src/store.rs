//! The host's own tables: users, sessions, teams, channels, members, posts, plugin KV.

use serde::Serialize;
use sha2::{Digest, Sha256};

use calls_db::{db_run, migration};
use calls_db::{Db, DbError, MigrationSet};
use calls_wire::ids::{new_id, now_ms};

pub static MIGRATIONS: MigrationSet = MigrationSet {
    table: "db_migrations_host",
    lock_key: 0x6d6d_686f_7374_0001,
    sqlite: &[
        migration!(1, "sqlite", "000001_host_schema"),
        migration!(2, "sqlite", "000002_login_attempts"),
        migration!(3, "sqlite", "000003_files"),
    ],
    postgres: &[
        migration!(1, "postgres", "000001_host_schema"),
        migration!(2, "postgres", "000002_cluster"),
        migration!(3, "postgres", "000003_login_attempts"),
        migration!(4, "postgres", "000004_files"),
    ],
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict("record"),
            _ => StoreError::Db(DbError::Sqlx(e)),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    #[serde(skip)]
    #[sqlx(rename = "passwordhash")]
    pub password_hash: String,
    #[sqlx(rename = "firstname")]
    pub first_name: String,
    #[sqlx(rename = "lastname")]
    pub last_name: String,
    pub nickname: String,
    pub roles: String,
    #[sqlx(rename = "isbot")]
    pub is_bot: bool,
    #[sqlx(rename = "createat")]
    pub create_at: i64,
    #[sqlx(rename = "updateat")]
    pub update_at: i64,
    #[sqlx(rename = "deleteat")]
    pub delete_at: i64,
}

impl User {
    pub fn is_system_admin(&self) -> bool {
        self.roles.split_whitespace().any(|r| r == "system_admin")
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Team {
    pub id: String,
    pub name: String,
    #[sqlx(rename = "displayname")]
    pub display_name: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub team_type: String,
    #[sqlx(rename = "createat")]
    pub create_at: i64,
    #[sqlx(rename = "deleteat")]
    pub delete_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Channel {
    pub id: String,
    #[sqlx(rename = "teamid")]
    pub team_id: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub channel_type: String,
    pub name: String,
    #[sqlx(rename = "displayname")]
    pub display_name: String,
    #[sqlx(rename = "creatorid")]
    pub creator_id: String,
    #[sqlx(rename = "createat")]
    pub create_at: i64,
    #[sqlx(rename = "deleteat")]
    pub delete_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Post {
    pub id: String,
    #[sqlx(rename = "channelid")]
    pub channel_id: String,
    #[sqlx(rename = "userid")]
    pub user_id: String,
    #[sqlx(rename = "rootid")]
    pub root_id: String,
    pub message: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub post_type: String,
    pub props: String,
    #[sqlx(rename = "createat")]
    pub create_at: i64,
    #[sqlx(rename = "updateat")]
    pub update_at: i64,
    #[sqlx(rename = "deleteat")]
    pub delete_at: i64,
    /// The attached files' ids, a JSON array.
    #[serde(skip)]
    #[sqlx(rename = "fileids")]
    pub file_ids: String,
}

impl Post {
    pub fn file_id_list(&self) -> Vec<String> {
        serde_json::from_str(&self.file_ids).unwrap_or_default()
    }
}

/// Mattermost's `FileInfo` (the columns of `fileinfo`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FileInfo {
    pub id: String,
    #[serde(rename = "user_id")]
    #[sqlx(rename = "creatorid")]
    pub creator_id: String,
    #[sqlx(rename = "postid")]
    pub post_id: String,
    #[sqlx(rename = "channelid")]
    pub channel_id: String,
    #[sqlx(rename = "createat")]
    pub create_at: i64,
    #[sqlx(rename = "updateat")]
    pub update_at: i64,
    #[sqlx(rename = "deleteat")]
    pub delete_at: i64,
    #[serde(skip)]
    pub path: String,
    pub name: String,
    pub extension: String,
    pub size: i64,
    #[serde(rename = "mime_type")]
    #[sqlx(rename = "mimetype")]
    pub mime_type: String,
}

/// Mattermost's `UploadSession` (the columns of `uploadsessions`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UploadSession {
    pub id: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub upload_type: String,
    #[sqlx(rename = "createat")]
    pub create_at: i64,
    #[sqlx(rename = "userid")]
    pub user_id: String,
    #[sqlx(rename = "channelid")]
    pub channel_id: String,
    pub filename: String,
    #[serde(skip)]
    pub path: String,
    #[sqlx(rename = "filesize")]
    pub file_size: i64,
    #[sqlx(rename = "fileoffset")]
    pub file_offset: i64,
}

pub fn token_hash(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

const USER_COLS: &str = "id, username, email, passwordhash, firstname, lastname, nickname, roles, isbot, createat, updateat, deleteat";
const CHANNEL_COLS: &str = "id, teamid, type, name, displayname, creatorid, createat, deleteat";
const POST_COLS: &str =
    "id, channelid, userid, rootid, message, type, props, createat, updateat, deleteat, fileids";
const FILE_COLS: &str = "id, creatorid, postid, channelid, createat, updateat, deleteat, path, name, extension, size, mimetype";
const UPLOAD_COLS: &str =
    "id, type, createat, userid, channelid, filename, path, filesize, fileoffset";

#[derive(Clone)]
pub struct HostStore {
    pub db: Db,
}

impl HostStore {
    pub async fn migrate(&self) -> Result<usize> {
        Ok(self.db.migrate(&MIGRATIONS).await?)
    }

    pub async fn count_users(&self) -> Result<i64> {
        Ok(db_run!(&self.db, |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE isbot = FALSE"
        )
        .fetch_one(p)
        .await?))
    }

    pub async fn create_user(&self, u: &User) -> Result<()> {
        let sql = "INSERT INTO users (id, username, email, passwordhash, firstname, lastname, nickname, roles, isbot, createat, updateat, deleteat) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)";
        db_run!(&self.db, |p| sqlx::query(sql)
            .bind(&u.id)
            .bind(&u.username)
            .bind(&u.email)
            .bind(&u.password_hash)
            .bind(&u.first_name)
            .bind(&u.last_name)
            .bind(&u.nickname)
            .bind(&u.roles)
            .bind(u.is_bot)
            .bind(u.create_at)
            .bind(u.update_at)
            .bind(u.delete_at)
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, User>(&sql)
            .bind(id)
            .fetch_optional(p)
            .await?))
    }

    pub async fn user_by_login(&self, login: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE username = $1 OR email = $1");
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, User>(&sql)
            .bind(login)
            .fetch_optional(p)
            .await?))
    }

    pub async fn system_admins(&self) -> Result<Vec<User>> {
        let sql = format!(
            "SELECT {USER_COLS} FROM users WHERE roles LIKE '%system_admin%' AND deleteat = 0"
        );
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, User>(&sql)
            .fetch_all(p)
            .await?))
    }

    /// Creates a session; returns the token (only its hash is stored).
    pub async fn create_session(&self, user_id: &str, ttl_ms: i64) -> Result<(String, String)> {
        let id = new_id();
        let token = new_id();
        let now = now_ms();
        let expires = if ttl_ms > 0 { now + ttl_ms } else { 0 };
        db_run!(&self.db, |p| {
            sqlx::query(
            "INSERT INTO sessions (id, tokenhash, userid, createat, expiresat) VALUES ($1,$2,$3,$4,$5)"
        )
        .bind(&id)
        .bind(token_hash(&token))
        .bind(user_id)
        .bind(now)
        .bind(expires)
        .execute(p)
        .await
        .map(drop)?
        });
        Ok((id, token))
    }

    /// (session id, user id) of a valid token.
    pub async fn session_by_token(&self, token: &str) -> Result<Option<(String, String, i64)>> {
        let row: Option<(String, String, i64)> = db_run!(&self.db, |p| sqlx::query_as(
            "SELECT id, userid, expiresat FROM sessions WHERE tokenhash = $1"
        )
        .bind(token_hash(token))
        .fetch_optional(p)
        .await?);
        Ok(row.filter(|(_, _, exp)| *exp == 0 || *exp > now_ms()))
    }

    pub async fn session_by_id(&self, id: &str) -> Result<Option<(String, String, i64)>> {
        let row: Option<(String, String, i64)> = db_run!(&self.db, |p| sqlx::query_as(
            "SELECT id, userid, expiresat FROM sessions WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await?);
        Ok(row.filter(|(_, _, exp)| *exp == 0 || *exp > now_ms()))
    }

    pub async fn delete_session(&self, id: &str) -> Result<()> {
        db_run!(&self.db, |p| sqlx::query(
            "DELETE FROM sessions WHERE id = $1"
        )
        .bind(id)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn create_team(&self, t: &Team) -> Result<()> {
        db_run!(&self.db, |p| {
            sqlx::query(
            "INSERT INTO teams (id, name, displayname, type, createat, deleteat) VALUES ($1,$2,$3,$4,$5,0)"
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.display_name)
        .bind(&t.team_type)
        .bind(t.create_at)
        .execute(p)
        .await
        .map(drop)?
        });
        Ok(())
    }

    pub async fn team(&self, id: &str) -> Result<Option<Team>> {
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Team>(
            "SELECT id, name, displayname, type, createat, deleteat FROM teams WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await?))
    }

    pub async fn team_by_name(&self, name: &str) -> Result<Option<Team>> {
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Team>(
            "SELECT id, name, displayname, type, createat, deleteat FROM teams WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(p)
        .await?))
    }

    pub async fn teams_for_user(&self, user_id: &str) -> Result<Vec<Team>> {
        Ok(db_run!(&self.db, |p| {
            sqlx::query_as::<_, Team>(
            "SELECT t.id, t.name, t.displayname, t.type, t.createat, t.deleteat FROM teams t JOIN teammembers m ON m.teamid = t.id WHERE m.userid = $1 ORDER BY t.name"
        )
        .bind(user_id)
        .fetch_all(p)
        .await?
        }))
    }

    pub async fn add_team_member(&self, team_id: &str, user_id: &str, admin: bool) -> Result<()> {
        db_run!(&self.db, |p| {
            sqlx::query(
            "INSERT INTO teammembers (teamid, userid, schemeadmin) VALUES ($1,$2,$3) ON CONFLICT (teamid, userid) DO NOTHING"
        )
        .bind(team_id)
        .bind(user_id)
        .bind(admin)
        .execute(p)
        .await
        .map(drop)?
        });
        Ok(())
    }

    /// `Some(is_admin)` when the user is a member of the team.
    pub async fn team_member(&self, team_id: &str, user_id: &str) -> Result<Option<bool>> {
        Ok(db_run!(&self.db, |p| sqlx::query_scalar(
            "SELECT schemeadmin FROM teammembers WHERE teamid = $1 AND userid = $2"
        )
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(p)
        .await?))
    }

    pub async fn create_channel(&self, c: &Channel) -> Result<()> {
        db_run!(&self.db, |p| {
            sqlx::query(
            "INSERT INTO channels (id, teamid, type, name, displayname, creatorid, createat, deleteat) VALUES ($1,$2,$3,$4,$5,$6,$7,0)"
        )
        .bind(&c.id)
        .bind(&c.team_id)
        .bind(&c.channel_type)
        .bind(&c.name)
        .bind(&c.display_name)
        .bind(&c.creator_id)
        .bind(c.create_at)
        .execute(p)
        .await
        .map(drop)?
        });
        Ok(())
    }

    pub async fn channel(&self, id: &str) -> Result<Option<Channel>> {
        let sql = format!("SELECT {CHANNEL_COLS} FROM channels WHERE id = $1");
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Channel>(&sql)
            .bind(id)
            .fetch_optional(p)
            .await?))
    }

    pub async fn channel_by_name(&self, team_id: &str, name: &str) -> Result<Option<Channel>> {
        let sql = format!("SELECT {CHANNEL_COLS} FROM channels WHERE teamid = $1 AND name = $2");
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Channel>(&sql)
            .bind(team_id)
            .bind(name)
            .fetch_optional(p)
            .await?))
    }

    pub async fn archive_channel(&self, id: &str) -> Result<()> {
        db_run!(&self.db, |p| sqlx::query(
            "UPDATE channels SET deleteat = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(now_ms())
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn channels_for_user(
        &self,
        user_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Channel>> {
        let sql = "SELECT c.id, c.teamid, c.type, c.name, c.displayname, c.creatorid, c.createat, c.deleteat FROM channels c JOIN channelmembers m ON m.channelid = c.id WHERE m.userid = $1 ORDER BY c.id LIMIT $2 OFFSET $3";
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Channel>(sql)
            .bind(user_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(p)
            .await?))
    }

    pub async fn add_channel_member(
        &self,
        channel_id: &str,
        user_id: &str,
        admin: bool,
    ) -> Result<()> {
        db_run!(&self.db, |p| {
            sqlx::query(
            "INSERT INTO channelmembers (channelid, userid, schemeadmin) VALUES ($1,$2,$3) ON CONFLICT (channelid, userid) DO NOTHING"
        )
        .bind(channel_id)
        .bind(user_id)
        .bind(admin)
        .execute(p)
        .await
        .map(drop)?
        });
        Ok(())
    }

    pub async fn remove_channel_member(&self, channel_id: &str, user_id: &str) -> Result<()> {
        db_run!(&self.db, |p| sqlx::query(
            "DELETE FROM channelmembers WHERE channelid = $1 AND userid = $2"
        )
        .bind(channel_id)
        .bind(user_id)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    /// `Some(is_channel_admin)` when the user is a member.
    pub async fn channel_member(&self, channel_id: &str, user_id: &str) -> Result<Option<bool>> {
        Ok(db_run!(&self.db, |p| sqlx::query_scalar(
            "SELECT schemeadmin FROM channelmembers WHERE channelid = $1 AND userid = $2"
        )
        .bind(channel_id)
        .bind(user_id)
        .fetch_optional(p)
        .await?))
    }

    pub async fn channel_member_ids(&self, channel_id: &str) -> Result<Vec<String>> {
        Ok(db_run!(&self.db, |p| sqlx::query_scalar(
            "SELECT userid FROM channelmembers WHERE channelid = $1"
        )
        .bind(channel_id)
        .fetch_all(p)
        .await?))
    }

    pub async fn create_post(&self, post: &Post) -> Result<()> {
        let sql =
            format!("INSERT INTO posts ({POST_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)");
        db_run!(&self.db, |p| sqlx::query(&sql)
            .bind(&post.id)
            .bind(&post.channel_id)
            .bind(&post.user_id)
            .bind(&post.root_id)
            .bind(&post.message)
            .bind(&post.post_type)
            .bind(&post.props)
            .bind(post.create_at)
            .bind(post.update_at)
            .bind(post.delete_at)
            .bind(&post.file_ids)
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }

    pub async fn update_post(&self, post: &Post) -> Result<()> {
        db_run!(&self.db, |p| sqlx::query(
            "UPDATE posts SET message = $2, props = $3, updateat = $4 WHERE id = $1"
        )
        .bind(&post.id)
        .bind(&post.message)
        .bind(&post.props)
        .bind(post.update_at)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn post(&self, id: &str) -> Result<Option<Post>> {
        let sql = format!("SELECT {POST_COLS} FROM posts WHERE id = $1");
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Post>(&sql)
            .bind(id)
            .fetch_optional(p)
            .await?))
    }

    pub async fn posts_for_channel(&self, channel_id: &str) -> Result<Vec<Post>> {
        let sql = format!(
            "SELECT {POST_COLS} FROM posts WHERE channelid = $1 ORDER BY createat DESC LIMIT 200"
        );
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, Post>(&sql)
            .bind(channel_id)
            .fetch_all(p)
            .await?))
    }

    // ------------------------------------------------------------ files

    pub async fn create_file_info(&self, f: &FileInfo) -> Result<()> {
        let sql = format!(
            "INSERT INTO fileinfo ({FILE_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
        );
        db_run!(&self.db, |p| sqlx::query(&sql)
            .bind(&f.id)
            .bind(&f.creator_id)
            .bind(&f.post_id)
            .bind(&f.channel_id)
            .bind(f.create_at)
            .bind(f.update_at)
            .bind(f.delete_at)
            .bind(&f.path)
            .bind(&f.name)
            .bind(&f.extension)
            .bind(f.size)
            .bind(&f.mime_type)
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }

    pub async fn file_info(&self, id: &str) -> Result<Option<FileInfo>> {
        let sql = format!("SELECT {FILE_COLS} FROM fileinfo WHERE id = $1 AND deleteat = 0");
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, FileInfo>(&sql)
            .bind(id)
            .fetch_optional(p)
            .await?))
    }

    /// Attaches files to a post: only files of the post's channel and author that no
    /// post holds yet (as Mattermost's `attachFilesToPost`); returns the attached ids.
    pub async fn attach_files(&self, post: &Post, ids: &[String]) -> Result<Vec<String>> {
        let mut attached = Vec::new();
        for id in ids {
            let n = db_run!(&self.db, |p| {
                sqlx::query(
                "UPDATE fileinfo SET postid = $2, updateat = $5 WHERE id = $1 AND postid = '' AND channelid = $3 AND creatorid = $4 AND deleteat = 0"
            )
            .bind(id)
            .bind(&post.id)
            .bind(&post.channel_id)
            .bind(&post.user_id)
            .bind(now_ms())
            .execute(p)
            .await?
            .rows_affected()
            });
            if n == 1 {
                attached.push(id.clone());
            }
        }
        Ok(attached)
    }

    pub async fn files_of_post(&self, post_id: &str) -> Result<Vec<FileInfo>> {
        let sql = format!(
            "SELECT {FILE_COLS} FROM fileinfo WHERE postid = $1 AND deleteat = 0 ORDER BY createat, id"
        );
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, FileInfo>(&sql)
            .bind(post_id)
            .fetch_all(p)
            .await?))
    }

    pub async fn create_upload(&self, u: &UploadSession) -> Result<()> {
        let sql = format!(
            "INSERT INTO uploadsessions ({UPLOAD_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
        );
        db_run!(&self.db, |p| sqlx::query(&sql)
            .bind(&u.id)
            .bind(&u.upload_type)
            .bind(u.create_at)
            .bind(&u.user_id)
            .bind(&u.channel_id)
            .bind(&u.filename)
            .bind(&u.path)
            .bind(u.file_size)
            .bind(u.file_offset)
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }

    pub async fn upload(&self, id: &str) -> Result<Option<UploadSession>> {
        let sql = format!("SELECT {UPLOAD_COLS} FROM uploadsessions WHERE id = $1");
        Ok(db_run!(&self.db, |p| sqlx::query_as::<_, UploadSession>(
            &sql
        )
        .bind(id)
        .fetch_optional(p)
        .await?))
    }

    pub async fn set_upload_offset(&self, id: &str, offset: i64) -> Result<()> {
        db_run!(&self.db, |p| sqlx::query(
            "UPDATE uploadsessions SET fileoffset = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(offset)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn delete_upload(&self, id: &str) -> Result<()> {
        db_run!(&self.db, |p| sqlx::query(
            "DELETE FROM uploadsessions WHERE id = $1"
        )
        .bind(id)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let row: Option<(Option<Vec<u8>>, i64)> = db_run!(&self.db, |p| {
            sqlx::query_as(
            "SELECT pvalue, expireat FROM pluginkeyvaluestore WHERE pluginid = $1 AND pkey = $2"
        )
        .bind(plugin)
        .bind(key)
        .fetch_optional(p)
        .await?
        });
        Ok(row
            .filter(|(_, exp)| *exp == 0 || *exp > now_ms())
            .map(|(v, _)| v.unwrap_or_default()))
    }

    pub async fn kv_put(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        expire_at: i64,
    ) -> Result<()> {
        db_run!(&self.db, |p| {
            sqlx::query(
            "INSERT INTO pluginkeyvaluestore (pluginid, pkey, pvalue, expireat) VALUES ($1,$2,$3,$4) ON CONFLICT (pluginid, pkey) DO UPDATE SET pvalue = excluded.pvalue, expireat = excluded.expireat"
        )
        .bind(plugin)
        .bind(key)
        .bind(value)
        .bind(expire_at)
        .execute(p)
        .await
        .map(drop)?
        });
        Ok(())
    }

    /// Counts a login attempt of `user_id` before its password is checked (so that
    /// concurrent guesses cannot all pass), in one statement on the shared table;
    /// false when the user is locked out: `max` failures in a row, the last one less
    /// than `lockout_ms` ago (a lockout that ran out starts the count afresh).
    pub async fn login_attempt(&self, user_id: &str, max: i32, lockout_ms: i64) -> Result<bool> {
        let now = now_ms();
        let sql = "UPDATE users SET \
             failedattempts = CASE WHEN failedattempts >= $2 THEN 1 ELSE failedattempts + 1 END, \
             lastfailedat = $3 \
             WHERE id = $1 AND NOT (failedattempts >= $2 AND lastfailedat > $4)";
        let counted = db_run!(&self.db, |p| sqlx::query(sql)
            .bind(user_id)
            .bind(max)
            .bind(now)
            .bind(now - lockout_ms)
            .execute(p)
            .await?
            .rows_affected());
        Ok(counted == 1)
    }

    /// The password was right: the count starts again.
    pub async fn login_succeeded(&self, user_id: &str) -> Result<()> {
        db_run!(&self.db, |p| sqlx::query(
            "UPDATE users SET failedattempts = 0 WHERE id = $1 AND failedattempts != 0"
        )
        .bind(user_id)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Writes `value` only if the key holds `old` now (`None`: absent or expired), in
    /// one statement, so that processes sharing the database cannot both win (the
    /// plugin's cluster mutex is built on this). True when written.
    pub async fn kv_compare_and_set(
        &self,
        plugin: &str,
        key: &str,
        old: Option<&[u8]>,
        value: &[u8],
        expire_at: i64,
    ) -> Result<bool> {
        let now = now_ms();
        let written = match old {
            None => db_run!(&self.db, |p| {
                sqlx::query(
                "INSERT INTO pluginkeyvaluestore (pluginid, pkey, pvalue, expireat) VALUES ($1,$2,$3,$4) \
                 ON CONFLICT (pluginid, pkey) DO UPDATE SET pvalue = excluded.pvalue, expireat = excluded.expireat \
                 WHERE pluginkeyvaluestore.expireat != 0 AND pluginkeyvaluestore.expireat <= $5"
            )
            .bind(plugin)
            .bind(key)
            .bind(value)
            .bind(expire_at)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
            }),
            Some(old) => db_run!(&self.db, |p| {
                sqlx::query(
                "UPDATE pluginkeyvaluestore SET pvalue = $3, expireat = $4 \
                 WHERE pluginid = $1 AND pkey = $2 AND pvalue = $5 AND (expireat = 0 OR expireat > $6)"
            )
            .bind(plugin)
            .bind(key)
            .bind(value)
            .bind(expire_at)
            .bind(old)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
            }),
        };
        Ok(written == 1)
    }

    pub async fn kv_delete(&self, plugin: &str, key: &str) -> Result<()> {
        db_run!(&self.db, |p| sqlx::query(
            "DELETE FROM pluginkeyvaluestore WHERE pluginid = $1 AND pkey = $2"
        )
        .bind(plugin)
        .bind(key)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh database on the test PostgreSQL (`CALLS_TEST_POSTGRES`), migrated.
    async fn fresh_postgres() -> String {
        let base = std::env::var("CALLS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("calls_test_{}", new_id());
        let admin = sqlx::PgPool::connect(&format!("{base}/postgres"))
            .await
            .expect("PostgreSQL reachable (set CALLS_TEST_POSTGRES)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        format!("{base}/{name}")
    }

    /// Failed logins count across hosts sharing the database: ten attempts in all,
    /// whichever host they go to, then a lockout; a success clears the count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_logins_count_across_hosts() {
        let url = fresh_postgres().await;
        let a = HostStore {
            db: Db::connect(&url, 8).await.unwrap(),
        };
        a.migrate().await.unwrap();
        let b = HostStore {
            db: Db::connect(&url, 8).await.unwrap(),
        };
        let now = now_ms();
        let u = User {
            id: new_id(),
            username: "u".into(),
            email: "u@example.com".into(),
            password_hash: "!".into(),
            first_name: String::new(),
            last_name: String::new(),
            nickname: String::new(),
            roles: "system_user".into(),
            is_bot: false,
            create_at: now,
            update_at: now,
            delete_at: 0,
        };
        a.create_user(&u).await.unwrap();
        let tries = (0..30).map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = u.id.clone();
            tokio::spawn(async move { s.login_attempt(&id, 10, 300_000).await.unwrap() })
        });
        let mut allowed = 0;
        for t in tries {
            allowed += usize::from(t.await.unwrap());
        }
        assert_eq!(allowed, 10, "attempts allowed across two hosts");
        b.login_succeeded(&u.id).await.unwrap();
        assert!(a.login_attempt(&u.id, 10, 300_000).await.unwrap());
        // A lockout that ran out (here: of 0 ms) starts afresh.
        for _ in 0..10 {
            a.login_attempt(&u.id, 10, 300_000).await.unwrap();
        }
        assert!(!b.login_attempt(&u.id, 10, 300_000).await.unwrap());
        assert!(b.login_attempt(&u.id, 10, 0).await.unwrap());
    }

    /// Two hosts on one database (two pools: no process-local lock can help) racing
    /// for the same keys: each compare-and-set has exactly one winner, as the
    /// plugin's cluster mutex needs. A read-then-write would let both win.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compare_and_set_has_one_winner_across_hosts() {
        let url = fresh_postgres().await;
        let a = HostStore {
            db: Db::connect(&url, 8).await.unwrap(),
        };
        a.migrate().await.unwrap();
        let b = HostStore {
            db: Db::connect(&url, 8).await.unwrap(),
        };
        for round in 0..40 {
            let key = format!("mutex_{round}");
            let tries = (0..8).map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                let key = key.clone();
                tokio::spawn(async move {
                    s.kv_compare_and_set("p", &key, None, &[1], now_ms() + 10_000)
                        .await
                        .unwrap()
                })
            });
            let mut winners = 0;
            for t in tries {
                winners += usize::from(t.await.unwrap());
            }
            assert_eq!(winners, 1, "round {round}: {winners} holders of one lock");
            // Refresh by the holder's compare-and-set: old value 1 → 1 wins once.
            let refreshes = futures_util::future::join_all(
                (0..4).map(|_| a.kv_compare_and_set("p", &key, Some(&[1]), &[2], 0)),
            )
            .await;
            assert_eq!(refreshes.iter().filter(|r| *r.as_ref().unwrap()).count(), 1);
        }
        // An expired lock is free again.
        assert!(a
            .kv_compare_and_set("p", "gone", None, &[1], now_ms() - 1)
            .await
            .unwrap());
        assert!(b
            .kv_compare_and_set("p", "gone", None, &[1], 0)
            .await
            .unwrap());
        assert!(!a
            .kv_compare_and_set("p", "gone", None, &[1], 0)
            .await
            .unwrap());
    }
}
