SELECT count(*) FROM {{.DeadLetters}} WHERE resolved_at IS NOT NULL AND resolved_at < $1
