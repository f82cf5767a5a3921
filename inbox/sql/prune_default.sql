-- Delete one bounded batch of the scope's oldest tokens in the default
-- partition (UUIDv7 tokens that had no time partition). Time partitions are
-- dropped whole instead.
DELETE FROM {{.Default}}
WHERE (scope, token) IN (
	SELECT scope, token FROM {{.Default}}
	WHERE scope = $1 AND processed_at < $2
	ORDER BY processed_at
	LIMIT $3
	FOR UPDATE SKIP LOCKED
)
