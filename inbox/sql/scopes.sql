-- Distinct scopes with a loose index scan over the primary key: one index
-- probe per scope instead of a scan of every token.
WITH RECURSIVE s AS (
	(SELECT scope FROM {{.Table}} ORDER BY scope LIMIT 1)
	UNION ALL
	SELECT (SELECT t.scope FROM {{.Table}} t WHERE t.scope > s.scope ORDER BY t.scope LIMIT 1)
	FROM s WHERE s.scope IS NOT NULL
)
SELECT scope FROM s WHERE scope IS NOT NULL
