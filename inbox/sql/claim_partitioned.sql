-- Claim a batch of distinct tokens in the partitioned layout. Tokens at or
-- above the floor are inserted; ON CONFLICT makes a token held by a
-- transaction in flight wait for it, as in the single-table layout.
--
-- Only the tokens that were not inserted come back, with whether they lie
-- below the floor: a batch of fresh tokens returns nothing. Their rows are
-- read by lookup_partitioned.sql, a second statement, and only then. Looking
-- them up here would put every time partition in this statement's plan, and
-- a cached generic plan opens and locks each of them on every execution
-- (measured: 2 ms per batch with 40 partitions, more than the claim saves by
-- having no retention index), while the insert opens only the partitions its
-- rows go to.
WITH input AS (
	SELECT *
	FROM unnest($2::bytea[], $3::bytea[], $4::text[], $5::int4[], $6::int8[])
		AS i(token, fingerprint, kafka_topic, kafka_partition, kafka_offset)
), floor AS (
	SELECT floor_token FROM {{.Floor}}
), inserted AS (
	INSERT INTO {{.Table}} AS t (scope, token, fingerprint, kafka_topic, kafka_partition, kafka_offset)
	SELECT $1, i.token, i.fingerprint, NULLIF(i.kafka_topic, ''), NULLIF(i.kafka_partition, -1), NULLIF(i.kafka_offset, -1)
	FROM input i, floor f
	WHERE i.token >= f.floor_token
	-- Named, so that this statement fails on a single table (whose key is
	-- PrimaryKey) instead of claiming under the wrong keys.
	ON CONFLICT ON CONSTRAINT {{.TokenPrimaryKey}} DO NOTHING
	RETURNING t.token
)
SELECT i.token, i.token < f.floor_token AS expired
FROM input i, floor f
WHERE NOT EXISTS (SELECT FROM inserted ins WHERE ins.token = i.token)
