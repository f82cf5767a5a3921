SELECT id, message_id, topic, key, value, headers, created_at
FROM {{.Table}}
WHERE id = ANY ($1::int8[]) AND published_at IS NULL
ORDER BY id
