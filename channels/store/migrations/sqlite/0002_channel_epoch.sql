-- Every channel history gets an epoch: a position is (epoch, seq), and a seq
-- given with another epoch points into another history (a restored backup, a
-- channel row deleted and created again), so it is never recovered from this one.
-- SQLite cannot ADD COLUMN with an expression default, so the table is copied;
-- the default is evaluated per row, so each existing channel gets its own epoch,
-- and every row inserted later, by Switchboard or by hand, a fresh one.
-- The runner executes one statement at a time: end each statement at the end of a line.

CREATE TABLE channels_with_epoch (
    name       TEXT PRIMARY KEY,
    -- the head: last seq handed out; never moves back, not even when pruned
    last_seq   INTEGER NOT NULL DEFAULT 0,
    -- lowest seq still retained, moved forward by prune (last_seq + 1 when none is)
    first_seq  INTEGER NOT NULL DEFAULT 1,
    -- milliseconds since the Unix epoch
    created_at INTEGER NOT NULL,
    -- names this history; 12 random hex digits (the same expression resets it)
    epoch      TEXT NOT NULL DEFAULT (lower(hex(randomblob(6))))
) WITHOUT ROWID;

INSERT INTO channels_with_epoch (name, last_seq, first_seq, created_at)
    SELECT name, last_seq, first_seq, created_at FROM channels;

DROP TABLE channels;

ALTER TABLE channels_with_epoch RENAME TO channels;
