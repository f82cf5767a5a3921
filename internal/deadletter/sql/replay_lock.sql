-- One replay or discard at a time per outbox table, across terminals, for
-- the rest of the transaction: replays enqueue in the order they run, and
-- two operators working through the same dead letters must not enqueue a
-- key's later message before its earlier one.
SELECT pg_advisory_xact_lock(hashtextextended('exactly.replay:' || $1, 0))
