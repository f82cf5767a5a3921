-- Dead letters are resolved by an operator (replayed through the outbox, or
-- discarded) rather than deleted, so what happened to each stays visible.
ALTER TABLE {{.Table}}
	ADD COLUMN resolved_at timestamptz,
	ADD COLUMN resolution text CHECK (resolution IN ('replayed', 'discarded'));
