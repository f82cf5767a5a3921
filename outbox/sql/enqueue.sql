INSERT INTO {{.Table}} (shard, message_id, topic, key, value, headers)
SELECT * FROM unnest($1::int4[], $2::uuid[], $3::text[], $4::bytea[], $5::bytea[], $6::jsonb[])
