UPDATE {{.Table}} AS t SET attempts = t.attempts + 1,
	rejections = t.rejections + f.rejected::int, last_error = f.error
FROM unnest($1::int8[], $2::text[], $3::bool[]) AS f(id, error, rejected)
WHERE t.id = f.id
RETURNING t.id, t.rejections
