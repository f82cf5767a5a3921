-- Kafka header keys are bytes; a producer may send a NUL or invalid UTF-8,
-- which a text column refuses. Such keys are kept here as received, while
-- header_keys holds them escaped for people. NULL when every key is text.
ALTER TABLE {{.Table}} ADD COLUMN header_keys_raw bytea[];
