WITH moved AS (
	DELETE FROM {{.Table}} WHERE id = $1
	RETURNING id, shard, message_id, topic, key, value, headers, created_at, attempts, rejections
)
INSERT INTO {{.DeadLetters}} (id, shard, message_id, topic, key, value, headers, created_at, attempts, rejections, reason, error)
SELECT id, shard, message_id, topic, key, value, headers, created_at, attempts, rejections, $2, $3 FROM moved
