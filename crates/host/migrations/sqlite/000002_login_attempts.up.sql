-- Failed logins in a row, as Mattermost's Users.FailedAttempts (shared by every node
-- of a cluster, so that N nodes do not allow N times the guesses).
ALTER TABLE users ADD COLUMN failedattempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN lastfailedat BIGINT NOT NULL DEFAULT 0;
