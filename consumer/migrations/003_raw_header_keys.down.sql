ALTER TABLE {{.Table}} DROP COLUMN header_keys_raw;
