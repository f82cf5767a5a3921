DELETE FROM {{.Table}}
WHERE id IN (
	SELECT id FROM {{.Table}}
	WHERE published_at IS NOT NULL AND published_at < $1
	ORDER BY published_at
	LIMIT $2
)
