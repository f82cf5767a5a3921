UPDATE {{.DeadLetters}} SET resolved_at = now(), resolution = $2 WHERE id = $1
