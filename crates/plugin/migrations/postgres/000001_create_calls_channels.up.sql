CREATE TABLE IF NOT EXISTS calls_channels (
    channelid VARCHAR(26) PRIMARY KEY,
    enabled BOOLEAN,
    props jsonb NOT NULL
);
