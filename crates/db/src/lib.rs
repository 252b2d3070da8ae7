//! One database handle over the two supported backends (embedded SQLite by default,
//! PostgreSQL for production) and a small migration runner.
//!
//! Queries are written once with `$N` placeholders (both sqlx drivers accept them);
//! [`db_run!`] instantiates the same code for each pool type. JSON columns are bound as
//! `sqlx::types::Json`, which maps to `jsonb` on PostgreSQL and `TEXT` on SQLite.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database url {0:?}: expected sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: sqlx::Error,
    },
}

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`.
#[macro_export]
macro_rules! db_run {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    };
}

impl Db {
    pub async fn connect(url: &str, max_conns: u32) -> Result<Db, DbError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // Host and plugin are two processes on one file: wait for locks.
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(false);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_conns.max(1))
                .connect_with(opts)
                .await?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(max_conns.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            Ok(Db::Postgres(pool))
        } else {
            Err(DbError::UnsupportedUrl(url.to_string()))
        }
    }

    pub fn driver(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        db_run!(self, |p| p.close().await)
    }

    /// Applies the not yet applied migrations of `set`, in order, each in its own
    /// transaction, recording them in `set.table`. Idempotent; concurrent runners on
    /// PostgreSQL are serialised with an advisory lock held on one connection.
    pub fn migrate<'a>(
        &'a self,
        set: &'a MigrationSet,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<usize, DbError>> + Send + 'a>>
    {
        // Boxed as `Send` here: rustc cannot prove it through callers' generic contexts
        // (the higher-ranked `Executor` lifetimes of `&mut *conn`).
        Box::pin(self.migrate_inner(set))
    }

    async fn migrate_inner(&self, set: &MigrationSet) -> Result<usize, DbError> {
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} (version BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, appliedat BIGINT NOT NULL)",
            set.table
        );
        let select = format!("SELECT version FROM {} WHERE version = $1", set.table);
        let insert = format!(
            "INSERT INTO {} (version, name, appliedat) VALUES ($1, $2, $3)",
            set.table
        );
        let (list, pg) = match self {
            Db::Sqlite(_) => (set.sqlite, false),
            Db::Postgres(_) => (set.postgres, true),
        };
        db_run!(self, |pool| {
            let mut conn = pool.acquire().await?;
            if pg {
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(set.lock_key)
                    .execute(&mut *conn)
                    .await?;
            }
            let mut result: Result<usize, DbError> = Ok(0);
            if let Err(e) = sqlx::Executor::execute(&mut *conn, create.as_str()).await {
                result = Err(e.into());
            }
            for m in list {
                let Ok(applied) = &mut result else { break };
                let done: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(&select)
                    .bind(m.version)
                    .fetch_optional(&mut *conn)
                    .await;
                match done {
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                }
                // One transaction per migration: a failed one leaves no trace. Plain
                // BEGIN/COMMIT on the held connection keeps every step a plain boxed
                // future (sqlx's async-fn based helpers trip rustc's `Send` inference).
                let mut step: Result<(), DbError> = sqlx::Executor::execute(&mut *conn, "BEGIN")
                    .await
                    .map(drop)
                    .map_err(Into::into);
                if step.is_ok() {
                    step = sqlx::Executor::execute(&mut *conn, m.sql)
                        .await
                        .map(drop)
                        .map_err(|e| m.error(e));
                }
                if step.is_ok() {
                    step = sqlx::query(&insert)
                        .bind(m.version)
                        .bind(m.name)
                        .bind(applied_at_ms())
                        .execute(&mut *conn)
                        .await
                        .map(drop)
                        .map_err(Into::into);
                }
                let end = if step.is_ok() { "COMMIT" } else { "ROLLBACK" };
                if let Err(e) = sqlx::Executor::execute(&mut *conn, end).await {
                    step = step.and(Err(e.into()));
                }
                match step {
                    Ok(()) => *applied += 1,
                    Err(e) => result = Err(e),
                }
            }
            if pg {
                // Returning the connection to the pool does not release a session-level
                // advisory lock: unlock explicitly.
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(set.lock_key)
                    .execute(&mut *conn)
                    .await;
            }
            result
        })
    }
}

/// One embedded migration.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    fn error(&self, source: sqlx::Error) -> DbError {
        DbError::Migration {
            version: self.version,
            name: self.name,
            source,
        }
    }
}

/// The migrations of one component, per backend, and where they are recorded.
#[derive(Debug)]
pub struct MigrationSet {
    pub table: &'static str,
    pub lock_key: i64,
    pub sqlite: &'static [Migration],
    pub postgres: &'static [Migration],
}

/// Declares an embedded migration from `migrations/<dir>/<file>`.
#[macro_export]
macro_rules! migration {
    ($version:expr, $dir:literal, $name:literal) => {
        $crate::Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/",
                $dir,
                "/",
                $name,
                ".up.sql"
            )),
        }
    };
}

/// When a migration was applied, in ms since the epoch (as the ids crate counts time;
/// the database layer does not depend on the wire crate for one clock read).
fn applied_at_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
