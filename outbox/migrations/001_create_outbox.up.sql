-- Messages waiting to be published. id orders publication within a shard;
-- xid records the enqueuing transaction so the relay reads a row only once
-- no older transaction can still add a row with a smaller id.
CREATE TABLE {{.Table}} (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	xid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
	shard        integer NOT NULL,
	message_id   uuid NOT NULL,
	topic        text NOT NULL,
	key          bytea,
	value        bytea,
	headers      jsonb NOT NULL DEFAULT '[]',
	created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
	attempts     integer NOT NULL DEFAULT 0,
	last_error   text,
	published_at timestamptz
);

-- The relay's read: the oldest unpublished rows of one shard.
CREATE INDEX {{.PendingIndex}} ON {{.Table}} (shard, id) WHERE published_at IS NULL;
-- Retention of published rows kept for audit.
CREATE INDEX {{.PublishedIndex}} ON {{.Table}} (published_at) WHERE published_at IS NOT NULL;

-- A queue table: rows are inserted, then deleted soon after. Vacuum it
-- often so dead rows do not pile up in front of the relay's index scans.
ALTER TABLE {{.Table}} SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
	autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);

-- Rows that could not be published after the relay's MaxAttempts.
CREATE TABLE {{.DeadLetters}} (
	id          bigint PRIMARY KEY,
	shard       integer NOT NULL,
	message_id  uuid NOT NULL,
	topic       text NOT NULL,
	key         bytea,
	value       bytea,
	headers     jsonb NOT NULL,
	created_at  timestamptz NOT NULL,
	attempts    integer NOT NULL,
	reason      text NOT NULL,
	error       text NOT NULL,
	dead_at     timestamptz NOT NULL DEFAULT now()
);
