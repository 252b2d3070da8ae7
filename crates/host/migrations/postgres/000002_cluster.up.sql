-- What the nodes of a cluster share besides users, channels, posts and the KV store
-- (cluster mode runs on PostgreSQL only).

-- The configuration, as Mattermost's database config store: one active row.
CREATE TABLE IF NOT EXISTS configurations (
    id VARCHAR(26) PRIMARY KEY,
    value TEXT NOT NULL,
    createat BIGINT NOT NULL,
    active BOOLEAN
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_configurations_active ON configurations (active) WHERE active;

-- Installed plugin bundles, so that every node runs what was uploaded to any node.
CREATE TABLE IF NOT EXISTS pluginbundles (
    pluginid VARCHAR(190) PRIMARY KEY,
    version VARCHAR(64) NOT NULL,
    bundle BYTEA NOT NULL,
    updateat BIGINT NOT NULL
);

-- Node liveness: each node writes its row every second (database time).
CREATE TABLE IF NOT EXISTS clusternodes (
    clustername VARCHAR(64) NOT NULL,
    nodeid VARCHAR(26) NOT NULL,
    address VARCHAR(256) NOT NULL,
    version VARCHAR(64) NOT NULL,
    plugins TEXT NOT NULL,
    startedat BIGINT NOT NULL,
    lastpingat BIGINT NOT NULL,
    PRIMARY KEY (clustername, nodeid)
);

-- Cluster messages too large for a NOTIFY payload; the notification names the row.
CREATE TABLE IF NOT EXISTS clustermessages (
    id BIGSERIAL PRIMARY KEY,
    payload TEXT NOT NULL,
    createat BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_clustermessages_createat ON clustermessages (createat);

-- Installation-wide values every node reports the same (Mattermost's Systems table):
-- the diagnostic id, from which plugins derive installation-wide identities such as
-- their rtcd client id.
CREATE TABLE IF NOT EXISTS systems (
    name VARCHAR(64) PRIMARY KEY,
    value TEXT NOT NULL
);
