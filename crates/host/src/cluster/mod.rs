//! Cluster mode: several calls-host nodes on one PostgreSQL database, as a Mattermost
//! HA cluster. Users, logins, teams, channels, posts and the plugin KV store are
//! shared through the database already; this module adds what nodes must tell each
//! other, and what else they share:
//! - [`bus`]: messages between nodes on PostgreSQL LISTEN/NOTIFY,
//! - [`message`]: what those messages are,
//! - [`nodes`]: liveness (heartbeats) and the versions each node runs,
//! - here: the shared plugin bundles, and the cluster's handle for the rest of the host.
//!
//! What a received message does is the host's business (`crate::sync`), not this
//! module's: it knows the database and the wire, not plugins or websockets.

pub mod bus;
pub mod message;
pub mod nodes;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use sqlx::postgres::PgPool;
use tokio::sync::mpsc;

use bus::{Bus, BusError, Inbound};
use calls_db::Db;
use calls_wire::ids::now_ms;
pub use message::{Broadcast, Envelope, Message};
use nodes::{Node, Nodes};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--cluster needs a PostgreSQL database (--database-url postgres://...): SQLite is one node's file")]
    NotPostgres,
    #[error("invalid cluster name {0:?}: 1 to 64 letters, digits, '-' or '_'")]
    BadName(String),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("cluster database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Whether a cluster name is acceptable (it appears in logs and in a table's key).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// This node's membership of its cluster.
pub struct Cluster {
    pub name: String,
    pub node_id: String,
    pool: PgPool,
    bus: Bus,
    nodes: Nodes,
    /// Plugin id → version of the plugins this node runs (told in heartbeats).
    plugins: RwLock<BTreeMap<String, String>>,
    started_at: i64,
}

impl Cluster {
    pub fn new(db: &Db, name: &str, node_id: &str) -> Result<Arc<Cluster>, ClusterError> {
        if !valid_name(name) {
            return Err(ClusterError::BadName(name.to_string()));
        }
        let Db::Postgres(pool) = db else {
            return Err(ClusterError::NotPostgres);
        };
        Ok(Arc::new(Cluster {
            name: name.to_string(),
            node_id: node_id.to_string(),
            pool: pool.clone(),
            bus: Bus::new(pool.clone(), name),
            nodes: Nodes::new(pool.clone(), name, node_id),
            plugins: Default::default(),
            started_at: now_ms(),
        }))
    }

    /// Sends `msg` to node `to` (empty: every other node); a failure is logged (the
    /// local side of whatever this announces has happened already).
    pub async fn send(&self, to: &str, msg: Message) {
        let kind = msg.kind();
        let e = Envelope {
            from: self.node_id.clone(),
            to: to.to_string(),
            msg,
        };
        if let Err(e) = self.bus.send(&e).await {
            tracing::error!(kind, error = %e, "cluster message not sent");
        }
    }

    /// Listens, and beats, until the process ends: received messages go to `inbound`.
    /// `address` is what other nodes see of this one (its site URL). Returns once the
    /// node listens (what is sent from then on reaches it), or after 10 s with a
    /// warning when the database does not let it.
    pub async fn start(self: &Arc<Self>, address: String, inbound: mpsc::Sender<Inbound>) {
        let (ready, listening) = tokio::sync::oneshot::channel();
        tokio::spawn(self.bus.clone().listen(inbound, ready));
        let me = self.clone();
        tokio::spawn(async move { me.beat_forever(address).await });
        if tokio::time::timeout(std::time::Duration::from_secs(10), listening)
            .await
            .is_err()
        {
            tracing::warn!("cluster bus not listening yet: messages to this node may be missed");
        }
    }

    async fn beat_forever(&self, address: String) {
        let mut tick = tokio::time::interval(nodes::HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = BTreeMap::new();
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            let plugins = self.plugins.read().clone();
            if let Err(e) = self
                .nodes
                .beat(&address, crate::SERVER_VERSION, &plugins, self.started_at)
                .await
            {
                tracing::warn!(error = %e, "cluster heartbeat not written");
            }
            n += 1;
            if n % 5 == 1 {
                self.report_versions(&mut reported).await;
            }
            if n.is_multiple_of(30) {
                if let Err(e) = self.bus.expire_rows().await {
                    tracing::debug!(error = %e, "old cluster messages not expired");
                }
            }
        }
    }

    /// Logs when the live nodes run different versions (once per distinct mix).
    async fn report_versions(
        &self,
        reported: &mut BTreeMap<String, std::collections::BTreeSet<String>>,
    ) {
        let Ok(live) = self.nodes.live().await else {
            return;
        };
        let mixed = nodes::version_mismatches(&live);
        if mixed != *reported {
            for (what, versions) in &mixed {
                let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
                tracing::warn!(
                    component = what,
                    versions = versions.join(", "),
                    "cluster nodes run different versions"
                );
            }
            if mixed.is_empty() && !reported.is_empty() {
                tracing::info!("cluster nodes run the same versions again");
            }
            *reported = mixed;
        }
    }

    /// The nodes alive now, this one included.
    pub async fn live_nodes(&self) -> Result<Vec<Node>, ClusterError> {
        Ok(self.nodes.live().await?)
    }

    /// A graceful stop: the node leaves the live set at once.
    pub async fn leave(&self) {
        if let Err(e) = self.nodes.leave().await {
            tracing::warn!(error = %e, "cluster node row not removed");
        }
    }

    /// This node runs `plugin` at `version` (or no longer, for `None`).
    pub fn set_plugin_version(&self, plugin: &str, version: Option<&str>) {
        let mut p = self.plugins.write();
        match version {
            Some(v) => p.insert(plugin.to_string(), v.to_string()),
            None => p.remove(plugin),
        };
    }

    /// An installation-wide value: the stored one, or `proposed` if this node is the
    /// first to ask.
    pub async fn system_value(&self, name: &str, proposed: &str) -> Result<String, ClusterError> {
        sqlx::query(
            "INSERT INTO systems (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(proposed)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM systems WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Stores a plugin's bundle for every node.
    pub async fn put_bundle(
        &self,
        plugin: &str,
        version: &str,
        bundle: &[u8],
    ) -> Result<(), ClusterError> {
        sqlx::query(
            "INSERT INTO pluginbundles (pluginid, version, bundle, updateat) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pluginid) DO UPDATE SET version = excluded.version, bundle = excluded.bundle, \
             updateat = excluded.updateat",
        )
        .bind(plugin)
        .bind(version)
        .bind(bundle)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored bundles' plugin ids and versions.
    pub async fn bundle_versions(&self) -> Result<Vec<(String, String)>, ClusterError> {
        Ok(
            sqlx::query_as("SELECT pluginid, version FROM pluginbundles ORDER BY pluginid")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// A stored bundle's version and bytes.
    pub async fn bundle(&self, plugin: &str) -> Result<Option<(String, Vec<u8>)>, ClusterError> {
        Ok(
            sqlx::query_as("SELECT version, bundle FROM pluginbundles WHERE pluginid = $1")
                .bind(plugin)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
