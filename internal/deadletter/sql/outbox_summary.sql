-- Unresolved outbox dead letters by reason, with the oldest and newest.
SELECT reason, count(*), min(dead_at), max(dead_at)
FROM {{.OutboxDeadLetters}} WHERE resolved_at IS NULL
GROUP BY reason ORDER BY reason
