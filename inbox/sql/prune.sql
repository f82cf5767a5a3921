-- Delete one bounded batch of the oldest tokens of a scope. SKIP LOCKED lets
-- pruning run beside consumers without waiting on them.
DELETE FROM {{.Table}}
WHERE (scope, token) IN (
	SELECT scope, token FROM {{.Table}}
	WHERE scope = $1 AND processed_at < $2
	ORDER BY processed_at
	LIMIT $3
	FOR UPDATE SKIP LOCKED
)
