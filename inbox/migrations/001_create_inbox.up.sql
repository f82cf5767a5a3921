-- The inbox: one row per idempotency token claimed in a scope.
-- token is a kind byte followed by the token's body (16 bytes for a UUID), so
-- time-ordered UUIDv7 tokens are appended at the right edge of the primary key
-- instead of being scattered through it.
CREATE TABLE {{.Table}} (
	scope           text COLLATE "C" NOT NULL,
	token           bytea NOT NULL,
	fingerprint     bytea,
	result          bytea,
	kafka_topic     text,
	kafka_partition integer,
	kafka_offset    bigint,
	processed_at    timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT {{.PrimaryKey}} PRIMARY KEY (scope, token)
);

-- Pruning walks tokens of one scope oldest first, in bounded batches.
CREATE INDEX {{.ProcessedAtIndex}} ON {{.Table}} (scope, processed_at);
