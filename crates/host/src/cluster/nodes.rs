//! Node liveness: every node writes its row of `clusternodes` each second, with the
//! database's clock (so that the nodes' clocks need not agree); a node whose row is
//! older than [`GONE_AFTER`] is gone. The rows also carry each node's host and plugin
//! versions, so that a cluster running mixed versions says so in its logs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sqlx::postgres::PgPool;

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node silent this long is gone.
pub const GONE_AFTER: Duration = Duration::from_secs(10);

/// The database's clock, in ms since the epoch.
pub(super) const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// A live node, as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Node {
    #[sqlx(rename = "nodeid")]
    pub id: String,
    pub address: String,
    pub version: String,
    /// Plugin id → version of the plugins it runs, as JSON.
    pub plugins: String,
}

impl Node {
    pub fn plugin_versions(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.plugins).unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct Nodes {
    pool: PgPool,
    cluster: String,
    node_id: String,
}

impl Nodes {
    pub fn new(pool: PgPool, cluster: &str, node_id: &str) -> Nodes {
        Nodes {
            pool,
            cluster: cluster.to_string(),
            node_id: node_id.to_string(),
        }
    }

    /// This node's heartbeat.
    pub async fn beat(
        &self,
        address: &str,
        version: &str,
        plugins: &BTreeMap<String, String>,
        started_at: i64,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO clusternodes (clustername, nodeid, address, version, plugins, startedat, lastpingat) \
             VALUES ($1, $2, $3, $4, $5, $6, {DB_NOW_MS}) \
             ON CONFLICT (clustername, nodeid) DO UPDATE SET address = excluded.address, \
             version = excluded.version, plugins = excluded.plugins, startedat = excluded.startedat, \
             lastpingat = excluded.lastpingat"
        );
        sqlx::query(&sql)
            .bind(&self.cluster)
            .bind(&self.node_id)
            .bind(address)
            .bind(version)
            .bind(serde_json::to_string(plugins).unwrap_or_default())
            .bind(started_at)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// The nodes heard from within [`GONE_AFTER`], this one included, by id.
    pub async fn live(&self) -> Result<Vec<Node>, sqlx::Error> {
        let sql = format!(
            "SELECT nodeid, address, version, plugins FROM clusternodes \
             WHERE clustername = $1 AND lastpingat > {DB_NOW_MS} - $2 ORDER BY nodeid"
        );
        sqlx::query_as::<_, Node>(&sql)
            .bind(&self.cluster)
            .bind(GONE_AFTER.as_millis() as i64)
            .fetch_all(&self.pool)
            .await
    }

    /// A node shutting down leaves at once instead of going silent.
    pub async fn leave(&self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM clusternodes WHERE clustername = $1 AND nodeid = $2")
            .bind(&self.cluster)
            .bind(&self.node_id)
            .execute(&self.pool)
            .await
            .map(drop)
    }
}

/// The versions that differ between live nodes: host versions under "calls-host",
/// then each plugin run by some node, with the versions seen (a node without the
/// plugin counts as "not running"). Empty when the cluster agrees.
pub fn version_mismatches(nodes: &[Node]) -> BTreeMap<String, BTreeSet<String>> {
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let per_node: Vec<BTreeMap<String, String>> = nodes.iter().map(Node::plugin_versions).collect();
    let plugins: BTreeSet<&String> = per_node.iter().flat_map(|m| m.keys()).collect();
    for n in nodes {
        seen.entry("calls-host".into())
            .or_default()
            .insert(n.version.clone());
    }
    for p in plugins {
        for m in &per_node {
            seen.entry(p.clone())
                .or_default()
                .insert(m.get(p).cloned().unwrap_or_else(|| "not running".into()));
        }
    }
    seen.retain(|_, v| v.len() > 1);
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, version: &str, plugins: &str) -> Node {
        Node {
            id: id.into(),
            address: String::new(),
            version: version.into(),
            plugins: plugins.into(),
        }
    }

    #[test]
    fn mixed_plugin_versions_are_found_and_an_agreeing_cluster_has_none() {
        let a = node("a", "1.0", r#"{"com.mattermost.calls":"1.2.0"}"#);
        let b = node("b", "1.0", r#"{"com.mattermost.calls":"1.2.0"}"#);
        assert!(version_mismatches(&[a.clone(), b.clone()]).is_empty());
        let c = node("c", "1.0", r#"{"com.mattermost.calls":"1.3.0"}"#);
        let d = node("d", "1.1", "{}");
        let m = version_mismatches(&[a, b, c, d]);
        assert_eq!(
            m["com.mattermost.calls"],
            ["1.2.0", "1.3.0", "not running"]
                .into_iter()
                .map(String::from)
                .collect()
        );
        assert_eq!(m["calls-host"].len(), 2);
    }
}
