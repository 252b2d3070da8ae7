//! Where the host's configuration lives: `config.json` in the data dir for one node,
//! or, for a cluster, the database (Mattermost's database config store: the active
//! row of `configurations`), so that a setting saved on any node is every node's.

use std::path::PathBuf;

use serde_json::Value;

use calls_db::Db;
use calls_wire::ids::{new_id, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum ConfigStoreError {
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("configuration in the database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("configuration in the database does not parse: {0}")]
    DbParse(serde_json::Error),
}

pub enum ConfigStore {
    File(PathBuf),
    /// PostgreSQL only (cluster mode).
    Database(sqlx::PgPool),
}

impl ConfigStore {
    /// The database store when `db` is PostgreSQL; `None` for SQLite.
    pub fn database(db: &Db) -> Option<ConfigStore> {
        match db {
            Db::Postgres(p) => Some(ConfigStore::Database(p.clone())),
            Db::Sqlite(_) => None,
        }
    }

    /// The stored configuration, `None` when there is none yet.
    pub async fn load(&self) -> Result<Option<Value>, ConfigStoreError> {
        match self {
            ConfigStore::File(path) => {
                match std::fs::read(path) {
                    Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|source| {
                        ConfigStoreError::Parse {
                            path: path.display().to_string(),
                            source,
                        }
                    }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(ConfigStoreError::File {
                        path: path.display().to_string(),
                        source,
                    }),
                }
            }
            ConfigStore::Database(pool) => {
                let row: Option<String> =
                    sqlx::query_scalar("SELECT value FROM configurations WHERE active")
                        .fetch_optional(pool)
                        .await?;
                row.map(|v| serde_json::from_str(&v).map_err(ConfigStoreError::DbParse))
                    .transpose()
            }
        }
    }

    /// Replaces the stored configuration with what `f` makes of it (`None`: leave
    /// it); returns the configuration stored afterwards. In the database this is one
    /// transaction under an advisory lock, so that two nodes saving at once neither
    /// fail nor lose each other's change (each `f` sees the other's result).
    pub async fn update(
        &self,
        f: impl FnOnce(Option<Value>) -> Option<Value>,
    ) -> Result<Option<Value>, ConfigStoreError> {
        match self {
            ConfigStore::File(path) => {
                let cur = self.load().await?;
                let Some(new) = f(cur.clone()) else {
                    return Ok(cur);
                };
                let io = |source| ConfigStoreError::File {
                    path: path.display().to_string(),
                    source,
                };
                let text = serde_json::to_string_pretty(&new).unwrap_or_default();
                let tmp = path.with_extension("json.tmp");
                crate::write_private(&tmp, text.as_bytes()).map_err(io)?;
                std::fs::rename(&tmp, path).map_err(io)?;
                Ok(Some(new))
            }
            ConfigStore::Database(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(CONFIG_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let cur: Option<String> =
                    sqlx::query_scalar("SELECT value FROM configurations WHERE active")
                        .fetch_optional(&mut *tx)
                        .await?;
                let cur = cur
                    .map(|v| serde_json::from_str(&v).map_err(ConfigStoreError::DbParse))
                    .transpose()?;
                let Some(new) = f(cur.clone()) else {
                    return Ok(cur);
                };
                sqlx::query("UPDATE configurations SET active = NULL WHERE active")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO configurations (id, value, createat, active) VALUES ($1, $2, $3, TRUE)",
                )
                .bind(new_id())
                .bind(serde_json::to_string_pretty(&new).unwrap_or_default())
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(new))
            }
        }
    }
}

/// The advisory lock serialising configuration saves across nodes.
const CONFIG_LOCK: i64 = 0x6d6d_636f_6e66_0001;
