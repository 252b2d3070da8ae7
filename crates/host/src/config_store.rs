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

    /// Stores `cfg` as the configuration (the file readable by the host's user only;
    /// in the database, a new active row in one transaction).
    pub async fn save(&self, cfg: &Value) -> Result<(), ConfigStoreError> {
        let text = serde_json::to_string_pretty(cfg).unwrap_or_default();
        match self {
            ConfigStore::File(path) => {
                let io = |source| ConfigStoreError::File {
                    path: path.display().to_string(),
                    source,
                };
                let tmp = path.with_extension("json.tmp");
                crate::write_private(&tmp, text.as_bytes()).map_err(io)?;
                std::fs::rename(&tmp, path).map_err(io)
            }
            ConfigStore::Database(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("UPDATE configurations SET active = NULL WHERE active")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO configurations (id, value, createat, active) VALUES ($1, $2, $3, TRUE)",
                )
                .bind(new_id())
                .bind(&text)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    }
}
