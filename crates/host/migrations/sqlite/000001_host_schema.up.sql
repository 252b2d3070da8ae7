CREATE TABLE IF NOT EXISTS users (
    id VARCHAR(26) PRIMARY KEY,
    username VARCHAR(64) NOT NULL UNIQUE,
    email VARCHAR(128) NOT NULL UNIQUE,
    passwordhash VARCHAR(256) NOT NULL,
    firstname VARCHAR(64) NOT NULL DEFAULT '',
    lastname VARCHAR(64) NOT NULL DEFAULT '',
    nickname VARCHAR(64) NOT NULL DEFAULT '',
    roles VARCHAR(256) NOT NULL,
    isbot BOOLEAN NOT NULL DEFAULT FALSE,
    createat BIGINT NOT NULL,
    updateat BIGINT NOT NULL,
    deleteat BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    id VARCHAR(26) PRIMARY KEY,
    tokenhash VARCHAR(64) NOT NULL UNIQUE,
    userid VARCHAR(26) NOT NULL,
    createat BIGINT NOT NULL,
    expiresat BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS teams (
    id VARCHAR(26) PRIMARY KEY,
    name VARCHAR(64) NOT NULL UNIQUE,
    displayname VARCHAR(64) NOT NULL,
    type VARCHAR(1) NOT NULL,
    createat BIGINT NOT NULL,
    deleteat BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS teammembers (
    teamid VARCHAR(26) NOT NULL,
    userid VARCHAR(26) NOT NULL,
    schemeadmin BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (teamid, userid)
);
CREATE TABLE IF NOT EXISTS channels (
    id VARCHAR(26) PRIMARY KEY,
    teamid VARCHAR(26) NOT NULL,
    type VARCHAR(1) NOT NULL,
    name VARCHAR(64) NOT NULL,
    displayname VARCHAR(64) NOT NULL,
    creatorid VARCHAR(26) NOT NULL,
    createat BIGINT NOT NULL,
    deleteat BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_channels_team_name ON channels (teamid, name);
CREATE TABLE IF NOT EXISTS channelmembers (
    channelid VARCHAR(26) NOT NULL,
    userid VARCHAR(26) NOT NULL,
    schemeadmin BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (channelid, userid)
);
CREATE INDEX IF NOT EXISTS idx_channelmembers_user ON channelmembers (userid);
CREATE TABLE IF NOT EXISTS posts (
    id VARCHAR(26) PRIMARY KEY,
    channelid VARCHAR(26) NOT NULL,
    userid VARCHAR(26) NOT NULL,
    rootid VARCHAR(26) NOT NULL DEFAULT '',
    message TEXT NOT NULL,
    type VARCHAR(64) NOT NULL DEFAULT '',
    props TEXT NOT NULL,
    createat BIGINT NOT NULL,
    updateat BIGINT NOT NULL,
    deleteat BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_posts_channel ON posts (channelid);
CREATE TABLE IF NOT EXISTS pluginkeyvaluestore (
    pluginid VARCHAR(190) NOT NULL,
    pkey VARCHAR(150) NOT NULL,
    pvalue BLOB,
    expireat BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (pluginid, pkey)
);
