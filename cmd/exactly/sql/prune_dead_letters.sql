-- One bounded batch of the consumers' dead letters resolved before $1, every
-- scope. Unresolved ones are never deleted.
DELETE FROM {{.DeadLetters}}
WHERE id IN (
	SELECT id FROM {{.DeadLetters}}
	WHERE resolved_at IS NOT NULL AND resolved_at < $1
	ORDER BY resolved_at
	LIMIT $2
)
