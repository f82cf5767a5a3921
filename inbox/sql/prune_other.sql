-- Delete one bounded batch of the scope's oldest tokens that carry no time
-- (text, digests, UUIDs other than version 7).
DELETE FROM {{.Other}}
WHERE (scope, token) IN (
	SELECT scope, token FROM {{.Other}}
	WHERE scope = $1 AND processed_at < $2
	ORDER BY processed_at
	LIMIT $3
	FOR UPDATE SKIP LOCKED
)
