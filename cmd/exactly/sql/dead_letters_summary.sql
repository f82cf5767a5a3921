SELECT scope, reason, count(*), min(created_at)
FROM {{.DeadLetters}} WHERE resolved_at IS NULL
GROUP BY scope, reason ORDER BY scope, reason
