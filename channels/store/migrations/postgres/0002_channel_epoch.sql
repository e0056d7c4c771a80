-- Every channel history gets an epoch: a position is (epoch, seq), and a seq
-- given with another epoch points into another history (a restored backup, a
-- channel row deleted and created again), so it is never recovered from this one.
-- The default is volatile, so PostgreSQL evaluates it per row: each existing
-- channel gets its own epoch now (the table is rewritten once, under a lock that
-- publishes wait for), and every row inserted later, by Switchboard or by hand,
-- gets a fresh one. `UPDATE channels SET epoch = DEFAULT` starts a new epoch
-- (what `python -m server reset-epoch` runs).
ALTER TABLE channels
    ADD COLUMN epoch TEXT NOT NULL DEFAULT left(replace(gen_random_uuid()::text, '-', ''), 12);
