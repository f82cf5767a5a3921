-- Delete one bounded batch of the scope's dead letters resolved before $2.
-- Unresolved ones are never deleted: they are work to do.
DELETE FROM {{.Table}}
WHERE id IN (
	SELECT id FROM {{.Table}}
	WHERE scope = $1 AND resolved_at IS NOT NULL AND resolved_at < $2
	ORDER BY resolved_at
	LIMIT $3
)
