//! The cluster's message bus on PostgreSQL LISTEN/NOTIFY: every node listens on the
//! cluster's channel; a message is one notification, or, when it is larger than a
//! notification may carry, a row of `clustermessages` that the notification names.
//!
//! Guarantees (PostgreSQL's): a notification reaches every node listening when it is
//! committed, in commit order, at most once. A node whose listening connection is
//! down misses what is sent meanwhile; it reconnects and then re-reads the state
//! messages only announce (configuration, bundles), see [`Inbound::Resync`].

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::mpsc;

use super::message::Envelope;
use super::nodes::DB_NOW_MS;

/// PostgreSQL refuses a payload of 8000 bytes or more; what is larger goes by row.
const INLINE_LIMIT: usize = 7900;
/// How long a large message's row is kept for nodes to fetch it.
const ROW_TTL_MS: i64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cluster bus: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cluster message could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What the listener hands the node.
#[derive(Debug)]
pub enum Inbound {
    Message(Box<Envelope>),
    /// The listener was disconnected and listens again: what was announced meanwhile
    /// is lost, re-read the shared state.
    Resync,
}

/// The notification channel of a cluster: a fixed-form identifier whatever the name.
pub fn channel_name(cluster: &str) -> String {
    let d = Sha256::digest(cluster.as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("calls_cluster_{hex}")
}

#[derive(Clone)]
pub struct Bus {
    pool: PgPool,
    channel: String,
}

/// A notification that names a row instead of carrying the message.
#[derive(serde::Serialize, serde::Deserialize)]
struct RowRef {
    #[serde(rename = "ref")]
    row: i64,
}

impl Bus {
    pub fn new(pool: PgPool, cluster: &str) -> Bus {
        Bus {
            pool,
            channel: channel_name(cluster),
        }
    }

    /// Sends one message to the nodes listening now (and, harmlessly, to the sender).
    pub async fn send(&self, e: &Envelope) -> Result<(), BusError> {
        let text = serde_json::to_string(e)?;
        let payload = if text.len() <= INLINE_LIMIT {
            text
        } else {
            // The database's clock, as the expiry's: nodes' clocks need not agree.
            let sql = format!(
                "INSERT INTO clustermessages (payload, createat) VALUES ($1, {DB_NOW_MS}) RETURNING id"
            );
            let row: i64 = sqlx::query_scalar(&sql)
                .bind(&text)
                .fetch_one(&self.pool)
                .await?;
            serde_json::to_string(&RowRef { row })?
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(&payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops the rows of large messages every node has had time to fetch.
    pub async fn expire_rows(&self) -> Result<u64, BusError> {
        let sql = format!("DELETE FROM clustermessages WHERE createat < {DB_NOW_MS} - $1");
        Ok(sqlx::query(&sql)
            .bind(ROW_TTL_MS)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// The message a notification carries or names; `None` (logged once per window by
    /// the caller) when it does not decode.
    async fn decode(&self, payload: &str) -> Result<Envelope, String> {
        if let Ok(RowRef { row }) = serde_json::from_str::<RowRef>(payload) {
            let text: Option<String> =
                sqlx::query_scalar("SELECT payload FROM clustermessages WHERE id = $1")
                    .bind(row)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| e.to_string())?;
            let text = text.ok_or_else(|| format!("message row {row} is gone"))?;
            return serde_json::from_str(&text).map_err(|e| e.to_string());
        }
        serde_json::from_str(payload).map_err(|e| e.to_string())
    }

    /// Listens until `to` closes or the pool is closed, reconnecting when the
    /// connection drops.
    /// `ready` is told once the first LISTEN is in place.
    pub async fn listen(self, to: mpsc::Sender<Inbound>, ready: tokio::sync::oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let repeats = calls_service::log_limit::Repeats::default();
        let mut first = true;
        while !self.pool.is_closed() {
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster bus: cannot connect; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(&self.channel).await {
                tracing::warn!(error = %e, "cluster bus: cannot listen; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            if !first && to.send(Inbound::Resync).await.is_err() {
                return;
            }
            first = false;
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => match self.decode(n.payload()).await {
                        Ok(e) => {
                            if to.send(Inbound::Message(Box::new(e))).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            if let Some(left_out) = repeats.admit("cluster message undecodable") {
                                tracing::warn!(
                                    error,
                                    left_out,
                                    "cluster message dropped: it does not decode"
                                );
                            }
                        }
                    },
                    // The listener connected and listens again (its eager reconnect):
                    // what was sent in between is lost.
                    Ok(None) => {
                        tracing::warn!("cluster bus: the connection was lost and is back");
                        if to.send(Inbound::Resync).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster bus: connection failed; reconnecting");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
