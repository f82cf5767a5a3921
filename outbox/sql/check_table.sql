-- Whether the outbox table ($1, quoted) exists, and whether it has the
-- column added by the newest migration.
SELECT to_regclass($1) IS NOT NULL,
	EXISTS (SELECT 1 FROM pg_attribute
		WHERE attrelid = to_regclass($1) AND attname = 'rejections' AND NOT attisdropped)
