-- Unresolved consumer dead letters by scope and reason, with the oldest and
-- newest: `exactly status` and the console's overview.
SELECT scope, reason, count(*), min(created_at), max(created_at)
FROM {{.DeadLetters}} WHERE resolved_at IS NULL
GROUP BY scope, reason ORDER BY scope, reason
