SELECT count(*) FROM {{.OutboxDeadLetters}} WHERE resolved_at IS NOT NULL AND resolved_at < $1
