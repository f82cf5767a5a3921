ALTER TABLE {{.DeadLetters}} DROP COLUMN rejections;
ALTER TABLE {{.Table}} DROP COLUMN rejections;
