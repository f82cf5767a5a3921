-- Retire one time partition, first step. The caller holds the table's
-- ACCESS EXCLUSIVE lock and raised the floor above this range in the same
-- transaction; detaching is a catalog change, so claims wait milliseconds.
-- The partition's files are unlinked by drop_detached.sql, in a transaction
-- of its own that claims do not wait for (unlinking 135 MB took 130 ms).
ALTER TABLE {{.Table}} DETACH PARTITION {{.Partition}};
