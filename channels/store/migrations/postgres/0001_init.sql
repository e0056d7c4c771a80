-- Switchboard event store: initial schema (PostgreSQL).
-- schema_migrations(version, name, applied_at) is created by the runner
-- (channels/store/migrate.py) before any migration file runs.

CREATE TABLE channels (
    name       TEXT PRIMARY KEY,
    -- the head: last seq handed out; never moves back, not even when pruned
    last_seq   BIGINT NOT NULL DEFAULT 0,
    -- lowest seq still retained, moved forward by prune (last_seq + 1 when none is)
    first_seq  BIGINT NOT NULL DEFAULT 1,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE events (
    channel       TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    id            UUID NOT NULL,
    type          TEXT NOT NULL,
    data          JSONB NOT NULL,
    sender        TEXT NOT NULL,
    client_msg_id TEXT,
    -- commit time, truncated to milliseconds: it is the event's ts
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (channel, seq)
);

-- idempotent publish; partial because most publishes carry no client_msg_id
CREATE UNIQUE INDEX events_channel_client_msg_id
    ON events (channel, client_msg_id) WHERE client_msg_id IS NOT NULL;

-- retention by age: prune looks for the newest expired seq of each channel
CREATE INDEX events_channel_created_at ON events (channel, created_at);
