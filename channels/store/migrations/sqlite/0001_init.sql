-- Switchboard event store: initial schema (SQLite).
-- schema_migrations(version, name, applied_at) is created by the runner
-- (channels/store/migrate.py) before any migration file runs.
-- The runner executes one statement at a time: end each statement at the end of a line.

CREATE TABLE channels (
    name       TEXT PRIMARY KEY,
    -- the head: last seq handed out; never moves back, not even when pruned
    last_seq   INTEGER NOT NULL DEFAULT 0,
    -- lowest seq still retained, moved forward by prune (last_seq + 1 when none is)
    first_seq  INTEGER NOT NULL DEFAULT 1,
    -- milliseconds since the Unix epoch
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE events (
    channel       TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    id            TEXT NOT NULL,
    type          TEXT NOT NULL,
    -- JSON text exactly as encoded (keeps big integers exact)
    data          TEXT NOT NULL,
    sender        TEXT NOT NULL,
    client_msg_id TEXT,
    -- commit time in milliseconds since the Unix epoch: it is the event's ts
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (channel, seq)
) WITHOUT ROWID;

-- idempotent publish; partial because most publishes carry no client_msg_id
CREATE UNIQUE INDEX events_channel_client_msg_id
    ON events (channel, client_msg_id) WHERE client_msg_id IS NOT NULL;

-- retention by age: prune looks for the newest expired seq of each channel
CREATE INDEX events_channel_created_at ON events (channel, created_at);
