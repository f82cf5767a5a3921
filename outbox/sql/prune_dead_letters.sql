-- Delete one bounded batch of dead letters resolved before $1. Unresolved
-- ones are never deleted: they are work to do.
DELETE FROM {{.DeadLetters}}
WHERE id IN (
	SELECT id FROM {{.DeadLetters}}
	WHERE resolved_at IS NOT NULL AND resolved_at < $1
	ORDER BY resolved_at
	LIMIT $2
)
