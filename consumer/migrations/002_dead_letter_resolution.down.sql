ALTER TABLE {{.Table}} DROP COLUMN resolution, DROP COLUMN resolved_at;
