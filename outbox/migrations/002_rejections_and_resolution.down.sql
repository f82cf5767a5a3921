ALTER TABLE {{.DeadLetters}} DROP COLUMN resolution, DROP COLUMN resolved_at, DROP COLUMN rejections;
ALTER TABLE {{.Table}} DROP COLUMN rejections;
