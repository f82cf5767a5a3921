-- One bounded batch of the outbox's dead letters resolved before $1.
DELETE FROM {{.OutboxDeadLetters}}
WHERE id IN (
	SELECT id FROM {{.OutboxDeadLetters}}
	WHERE resolved_at IS NOT NULL AND resolved_at < $1
	ORDER BY resolved_at
	LIMIT $2
)
