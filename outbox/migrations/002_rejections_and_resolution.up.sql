-- ALTER TABLE takes the outbox's strongest lock, briefly; while it waits
-- behind a long transaction every enqueue would queue behind it. Give up
-- after 5s instead (the migration rolls back whole; run it again).
SET LOCAL lock_timeout = '5s';

-- attempts counts every failed publish, outages included; rejections counts
-- only the failures retrying may not fix (too large, unknown topic). A row
-- is dead-lettered after RelayConfig.MaxAttempts rejections, so a long Kafka
-- outage followed by one transient rejection cannot dead-letter it.
ALTER TABLE {{.Table}} ADD COLUMN rejections integer NOT NULL DEFAULT 0;
ALTER TABLE {{.DeadLetters}} ADD COLUMN rejections integer NOT NULL DEFAULT 0;
-- Rows dead-lettered before this migration counted every failure as an
-- attempt, and reached MaxAttempts with a rejection: the best estimate.
UPDATE {{.DeadLetters}} SET rejections = attempts;

-- Dead letters are resolved by an operator (`exactly outbox-dead-letters
-- replay` moves the message back into the outbox; discard does not) rather
-- than deleted, so what happened to each stays visible.
ALTER TABLE {{.DeadLetters}}
	ADD COLUMN resolved_at timestamptz,
	ADD COLUMN resolution text CHECK (resolution IN ('replayed', 'discarded'));

-- Back to the default for whatever the same migration run applies next.
SET LOCAL lock_timeout TO DEFAULT;
