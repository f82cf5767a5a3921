UPDATE {{.Table}} AS t SET attempts = t.attempts + 1, last_error = f.error
FROM unnest($1::int8[], $2::text[]) AS f(id, error)
WHERE t.id = f.id
RETURNING t.id, t.attempts
