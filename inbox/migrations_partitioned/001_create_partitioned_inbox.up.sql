-- The partitioned inbox (inbox.LayoutPartitioned): the same rows as the
-- single-table layout, range-partitioned on the token itself, so that the
-- primary key (scope, token) stays one global uniqueness check and a whole
-- period of tokens retires with one DROP instead of a DELETE per row.
--
-- The stored token is a kind byte and the body. Kind 0 holds UUIDv7 tokens
-- only, whose first 48 bits are their millisecond timestamp: kind 0 ordered
-- as bytes is ordered by time. Time partitions {table}_pYYYYMMDD_HHMM take
-- ranges of kind 0 ('\x00' || 48-bit milliseconds) and are created ahead of
-- time by Store.CreatePartitions, dropped by Store.DropPartitions.
CREATE TABLE {{.Table}} (
	scope           text COLLATE "C" NOT NULL,
	token           bytea NOT NULL,
	fingerprint     bytea,
	result          bytea,
	kafka_topic     text,
	kafka_partition integer,
	kafka_offset    bigint,
	processed_at    timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT {{.TokenPrimaryKey}} PRIMARY KEY (scope, token)
) PARTITION BY RANGE (token);

-- Tokens that carry no time: text (kind 1), digests (kind 2) and UUIDs of
-- other versions (kind 3 in this layout). Pruned by processed_at in bounded
-- batches, as the single-table layout is.
CREATE TABLE {{.Other}} PARTITION OF {{.Table}} FOR VALUES FROM ('\x01') TO (MAXVALUE);
CREATE INDEX {{.OtherProcessedAtIndex}} ON {{.Other}} (scope, processed_at);

-- UUIDv7 tokens whose time has no partition: minted before the first
-- partition, far ahead of the clock, or while partitions were not being
-- created. The safe fallback: claims never fail for a missing partition.
-- Pruned by processed_at like the other tokens; the token index lets
-- CreatePartitions find the rows a new partition must take over.
CREATE TABLE {{.Default}} PARTITION OF {{.Table}} DEFAULT;
CREATE INDEX {{.DefaultProcessedAtIndex}} ON {{.Default}} (scope, processed_at);
CREATE INDEX {{.DefaultTokenIndex}} ON {{.Default}} (token);

-- The floor: no token below it is claimed fresh. DropPartitions raises it to
-- the upper bound of every partition it drops, in the transaction that drops
-- it, so a token whose record was dropped can never be applied again: its
-- next delivery is reported Expired instead. Starts below every token.
CREATE TABLE {{.Floor}} (
	singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	floor_token bytea NOT NULL,
	raised_at   timestamptz
);
INSERT INTO {{.Floor}} (floor_token) VALUES ('\x00');
