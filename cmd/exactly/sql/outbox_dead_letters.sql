SELECT reason, count(*) FROM {{.OutboxDeadLetters}} WHERE resolved_at IS NULL GROUP BY reason ORDER BY reason
