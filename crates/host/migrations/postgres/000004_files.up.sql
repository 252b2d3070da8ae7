-- Files attached to posts (Mattermost's FileInfo) and uploads in progress
-- (UploadSessions); the bytes are in the file store, these rows say where.
ALTER TABLE posts ADD COLUMN fileids TEXT NOT NULL DEFAULT '[]';
CREATE TABLE IF NOT EXISTS fileinfo (
    id VARCHAR(26) PRIMARY KEY,
    creatorid VARCHAR(26) NOT NULL,
    postid VARCHAR(26) NOT NULL DEFAULT '',
    channelid VARCHAR(26) NOT NULL,
    createat BIGINT NOT NULL,
    updateat BIGINT NOT NULL,
    deleteat BIGINT NOT NULL DEFAULT 0,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    extension VARCHAR(64) NOT NULL,
    size BIGINT NOT NULL,
    mimetype VARCHAR(256) NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_fileinfo_postid ON fileinfo (postid);
CREATE TABLE IF NOT EXISTS uploadsessions (
    id VARCHAR(26) PRIMARY KEY,
    type VARCHAR(32) NOT NULL,
    createat BIGINT NOT NULL,
    userid VARCHAR(26) NOT NULL,
    channelid VARCHAR(26) NOT NULL,
    filename TEXT NOT NULL,
    path TEXT NOT NULL,
    filesize BIGINT NOT NULL,
    fileoffset BIGINT NOT NULL
);
